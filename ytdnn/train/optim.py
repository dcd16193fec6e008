"""Optimizers, the learning-rate schedule and gradient clipping used by `ytdnn.train.fit`.

Kept out of loop.py so the loop reads top to bottom; each function here is small and tested alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from ytdnn.train.config import TrainConfig


class MultiOptimizer:
    """Several torch optimizers stepped together, each over its own parameters.

    Used for "sparse_adam": RowAdam over the sparse embedding tables + Adam over the rest.
    Offers the parts of the torch.optim.Optimizer interface the loop and checkpoints use.
    """

    def __init__(self, optimizers: list[torch.optim.Optimizer]):
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict]:
        return [group for optimizer in self.optimizers for group in optimizer.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()

    def state_dict(self) -> dict:
        return {"optimizers": [optimizer.state_dict() for optimizer in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        for optimizer, optimizer_state in zip(self.optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(optimizer_state)


Optimizer = torch.optim.Optimizer | MultiOptimizer


class RowAdam(torch.optim.Optimizer):
    """Adam for tables with sparse gradients that updates only the rows a step touches ("lazy"
    Adam): on those rows it is exactly torch.optim.Adam; untouched rows keep their moments.

    Used for "sparse_adam" instead of torch.optim.SparseAdam, which goes through sparse_mask twice
    per step: on 2 cores, 30k touched rows of a 45k x 256 table take 31 ms here against 51 ms.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                rows, grad = _rows(p.grad)  # [R], [R, d]
                state = self.state[p]
                if not state:
                    state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                state["step"] += 1
                m = state["exp_avg"].index_select(0, rows).mul_(beta1).add_(grad, alpha=1 - beta1)
                v = state["exp_avg_sq"].index_select(0, rows).mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                state["exp_avg"].index_copy_(0, rows, m)
                state["exp_avg_sq"].index_copy_(0, rows, v)
                correction1, correction2 = 1 - beta1 ** state["step"], 1 - beta2 ** state["step"]
                denom = v.sqrt_().div_(correction2**0.5).add_(group["eps"])
                p.index_add_(0, rows, m.div_(denom), alpha=-group["lr"] / correction1)


def _rows(grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row ids [R] and their summed gradients [R, ...] (a row hit twice in a batch counts once)."""
    if not grad.is_sparse:
        return torch.arange(len(grad)), grad
    grad = grad.coalesce()
    return grad.indices()[0], grad.values()


def sparse_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Weights of the model's `nn.Embedding`/`nn.EmbeddingBag` layers built with sparse=True."""
    found: dict[int, nn.Parameter] = {}  # by id: a table shared by two layers is listed once
    for module in model.modules():
        is_sparse_table = isinstance(module, (nn.Embedding, nn.EmbeddingBag)) and module.sparse
        if is_sparse_table and module.weight.requires_grad:
            found[id(module.weight)] = module.weight
    return list(found.values())


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> Optimizer:
    """The optimizer cfg.optimizer names, over the model's trainable parameters.

    Raises ValueError when the choice cannot work with the model (e.g. "adam" on sparse tables),
    before any training, rather than torch failing at the first step.
    """
    params = [p for p in model.parameters() if p.requires_grad]  # parameters() dedups tied ones
    if not params:
        raise ValueError("the model has no trainable parameters")
    sparse = sparse_parameters(model)
    choice = ("sparse_adam" if sparse else "adam") if cfg.optimizer == "auto" else cfg.optimizer
    if choice == "adam":
        if sparse:
            raise ValueError(
                "optimizer='adam' cannot take sparse embedding gradients "
                "(nn.Embedding(sparse=True)); use optimizer='sparse_adam' or 'adagrad'"
            )
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=_fusable(params))
    if choice == "adagrad":
        if sparse and cfg.weight_decay > 0:
            raise ValueError("optimizer='adagrad' with sparse embeddings needs weight_decay=0")
        fused = _fusable(params) and not sparse  # the fused kernel takes dense gradients only
        return torch.optim.Adagrad(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    # "sparse_adam"
    if not sparse:
        raise ValueError(
            "optimizer='sparse_adam' found no nn.Embedding/nn.EmbeddingBag with sparse=True; "
            "use optimizer='adam'"
        )
    sparse_ids = {id(p) for p in sparse}
    dense = [p for p in params if id(p) not in sparse_ids]
    optimizers: list[torch.optim.Optimizer] = [RowAdam(sparse, lr=cfg.lr)]
    if dense:
        optimizers.append(torch.optim.Adam(dense, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=_fusable(dense)))
    return MultiOptimizer(optimizers)


def _fusable(params: list[nn.Parameter]) -> bool:
    """One fused kernel per step instead of a loop of small ops per tensor: on 2 cores, an Adam
    step over 28M embedding weights takes 90 ms fused against 850 ms (bench/results/speed.md)."""
    return all(p.dtype in (torch.float32, torch.float64) and p.device.type in ("cpu", "cuda") for p in params)


def set_learning_rate(optimizer: Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def learning_rate(cfg: TrainConfig, step: int, total_steps: int | None) -> float:
    """The learning rate for 0-based `step` out of `total_steps` of the whole run.

    Warmup: steps 0 .. warmup_steps-1 ramp linearly, lr * (step + 1) / warmup_steps, so the first
    step already moves. After it, progress p runs from 0 to 1 over the remaining steps and
        constant:      lr
        linear_decay:  lr * (1 - (1 - min_lr_ratio) * p)
        cosine:        lr * (min_lr_ratio + (1 - min_lr_ratio) * (1 + cos(pi * p)) / 2)
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    if total_steps is None:
        raise ValueError(f"lr_schedule={cfg.lr_schedule!r} needs the total number of steps")
    decay_steps = max(1, total_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / decay_steps)
    if cfg.lr_schedule == "linear_decay":
        fraction = 1.0 - progress
    else:  # cosine
        fraction = 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.lr * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * fraction)


def clip_grad_norm(params: Iterable[nn.Parameter], max_norm: float) -> float:
    """Scale all gradients so their global L2 norm is at most max_norm; returns the norm before.

    Unlike torch.nn.utils.clip_grad_norm_, this accepts sparse gradients (nn.Embedding(sparse=True)):
    they are coalesced first so a row hit twice in a batch counts once, with its summed gradient.
    """
    grads = []
    for p in params:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            p.grad = p.grad.coalesce()
            grads.append(p.grad.values())
        else:
            grads.append(p.grad)
    if not grads:
        return 0.0
    total = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(g.detach(), dtype=torch.float32) for g in grads])
    )
    coefficient = max_norm / (total + 1e-6)
    if coefficient < 1:  # one device sync per step; clipping is opt-in
        for g in grads:
            g.detach().mul_(coefficient.to(g.dtype))
    return float(total)
