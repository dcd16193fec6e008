"""Data-parallel training over processes and machines: torchrun + DistributedDataParallel.

`torchrun --nproc_per_node N -m ytdnn train ...` (or `ytdnn train ... --nproc N`, which starts
torchrun) runs N copies of the same command; ``process_group`` joins them into one gloo group (NCCL
for CUDA tensors). Nothing else changes for the caller of ``fit``: the loop asks this module

- which part of the data this process reads (``current_shard``: each global batch of
  cfg.batch_size examples is cut into N parts, ``ytdnn.samples.sharding.Shard``);
- how to step (``DataParallel``): the loss runs through DistributedDataParallel, which all-reduces
  the dense gradients; the sparse embedding tables' gradients are gathered row-wise after backward
  (``reduce_sparse``: every rank receives the union of the rows touched anywhere, summed
  identically), so RowAdam and Adam apply the same update on every rank. Each rank's mean loss is scaled by its share of the step's
  examples, so the reduced gradient is that of the global batch's mean loss, whatever the split;
- what only rank 0 does: read and write checkpoints (``broadcast_checkpoint`` hands the one read
  to the others), validate (``from_main``: the metrics, hence the early-stopping decision, are
  broadcast), draw the progress bar, write TensorBoard.

Randomness: the shuffling generator is seeded from (seed, epoch) on every rank, so all ranks cut
the same epoch; torch's global generator (dropout, sampled negatives from the same background
distribution) is seeded from (seed, epoch, rank), so ranks draw different negatives
(``batches.seed_epoch``). Each rank's sampled softmax keeps its own log-Q correction log(N q).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ytdnn.samples.sharding import Shard
from ytdnn.train.checkpoint import CheckpointParts

# Collectives wait at most this long for the other ranks. A rank that dies closes its sockets and
# the others fail at once ("Connection closed by peer"), and torchrun stops the job; the timeout
# is for a rank that hangs. It must outlast rank 0's validation, which the others wait for.
DEFAULT_TIMEOUT = datetime.timedelta(minutes=15)


def launched() -> bool:
    """True in a process torchrun started as one of several (WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextlib.contextmanager
def process_group(timeout: datetime.timedelta | None = None) -> Iterator[Shard]:
    """Join the job torchrun started (rendezvous from its environment) for the block; yields this
    process's Shard. Outside torchrun, or in a group already joined, it does nothing."""
    if not launched() or (dist.is_available() and dist.is_initialized()):
        yield current_shard()
        return
    backend = "gloo"
    if torch.cuda.is_available():  # sparse all-reduce is gloo's: CPU tensors stay on gloo
        backend = "cpu:gloo,cuda:nccl"
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=timeout or DEFAULT_TIMEOUT)
    try:
        yield current_shard()
        dist.barrier()  # nobody tears the group down while another rank still needs it
    finally:
        dist.destroy_process_group()


def current_shard() -> Shard:
    """This process's Shard of the default process group; Shard() (all data) without one."""
    if dist.is_available() and dist.is_initialized():
        return Shard(dist.get_rank(), dist.get_world_size())
    return Shard()


def is_main() -> bool:
    """True on rank 0, and in a process that is not part of a group: the one that writes."""
    return current_shard().index == 0


class _Objective(nn.Module):
    """The loss as a module's forward: DistributedDataParallel prepares its gradient reduction in
    forward, and the models' loss is a method (`model.loss(batch)`), not their forward."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, Any], torch.Tensor]):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch: Any) -> torch.Tensor:
        return self.loss_fn(self.model, batch)


class DataParallel:
    """The training loop's view of the process group; with one process every method is the
    identity and nothing is communicated, so single-process training is unchanged."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, Any], torch.Tensor]):
        self.shard = current_shard()
        self.model, self.loss_fn = model, loss_fn
        self.ddp, self.sparse = None, []
        if self.shard.count > 1:
            device = next(model.parameters()).device
            # forward_sync_buffers=False: the ranks' buffers are equal (no batch-norm statistics here),
            # so rank 0's need not be sent before every forward. find_unused_parameters=False spares
            # a traversal of the graph per step: both models put every parameter in every loss
            # (the ranker's rating heads included); a model that does not fails at its second
            # step with DDP's error naming the unused parameters.
            objective = _Objective(model, loss_fn)
            # The sparse tables' gradients are reduced by reduce_sparse, not by DDP: DDP's sparse
            # all-reduce on gloo crashed rank 0 (SIGSEGV in backward) on ml-100k with sampled
            # negatives, where the ranks' gradients touch different numbers of rows.
            self.sparse = [(n, p) for n, p in objective.named_parameters() if _has_sparse_grad(objective, n)]
            nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                objective, [n for n, _ in self.sparse])
            self.ddp = nn.parallel.DistributedDataParallel(
                objective, device_ids=[device] if device.type == "cuda" else None,
                forward_sync_buffers=False, find_unused_parameters=False)

    @property
    def is_main(self) -> bool:
        return self.shard.index == 0

    def agree(self, num_examples: int | None) -> int | None:
        """This step's examples over all ranks, given this rank's (None: its batches ran out).

        None ends the epoch on every rank when any rank has nothing left: a collective waited
        for by a rank that left the loop would hang. One all-reduce of two integers per step.
        """
        if self.ddp is None:
            return num_examples
        counts = torch.tensor([num_examples or 0, int(not num_examples)], dtype=torch.int64)
        dist.all_reduce(counts)
        return None if counts[1] > 0 else int(counts[0])

    def loss(self, batch: Any, num_examples: int, total: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(this rank's mean loss, the loss to call backward on).

        DDP averages the ranks' gradients; scaling rank r's mean loss by n_r * N / total makes the
        average Σ_r n_r g_r / total, the gradient of the global batch's mean loss even when the
        ranks' parts differ in size (the last batch of an epoch).
        """
        if self.ddp is None:
            loss = self.loss_fn(self.model, batch)
            return loss, loss
        loss = self.ddp(batch)
        scale = num_examples * self.shard.count / total
        return loss, (loss * scale if scale != 1.0 else loss)

    def reduce_sparse(self) -> None:
        """After backward: every sparse table's gradient becomes the mean over the ranks of theirs,
        identical on every rank. Each rank's rows (indices [n_r], values [n_r, D]) are gathered in
        rank order and summed by one coalesce, so every rank adds the same numbers in the same
        order."""
        for _, param in self.sparse:
            grad = param.grad
            if grad is not None and not grad.is_sparse:  # a table also used densely (tied weights)
                dist.all_reduce(grad)
                grad /= self.shard.count
                continue
            if grad is None:
                grad = torch.sparse_coo_tensor(torch.zeros(1, 0, dtype=torch.int64),
                                               param.new_zeros(0, *param.shape[1:]), param.shape)
            grad = grad.coalesce()
            rows, values = grad.indices()[0], grad.values()
            counts = _all_gather(torch.tensor([len(rows)]))
            longest = int(max(counts))
            all_rows = _all_gather(_padded(rows, longest))
            all_values = _all_gather(_padded(values, longest))
            rows = torch.cat([r[: int(c)] for r, c in zip(all_rows, counts)])
            values = torch.cat([v[: int(c)] for v, c in zip(all_values, counts)])
            param.grad = torch.sparse_coo_tensor(rows[None], values / self.shard.count, param.shape,
                                                 check_invariants=False).coalesce()

    def sum(self, values: list[float | torch.Tensor]) -> list[float]:
        """Element-wise sums over the ranks (one all-reduce), as floats."""
        flat = torch.tensor([float(v) for v in values], dtype=torch.float64)
        if self.ddp is not None:
            dist.all_reduce(flat)
        return flat.tolist()

    def from_main(self, compute: Callable[[], Any]) -> Any:
        """``compute()`` run on rank 0 only, its JSON-able result given to every rank."""
        if self.ddp is None:
            return compute()
        return broadcast_json(compute() if self.is_main else None)


def _has_sparse_grad(module: nn.Module, name: str) -> bool:
    """Whether parameter ``name`` of ``module`` belongs to an embedding with sparse gradients."""
    owner = module.get_submodule(name.rpartition(".")[0])
    return isinstance(owner, (nn.Embedding, nn.EmbeddingBag)) and owner.sparse


def _padded(x: torch.Tensor, length: int) -> torch.Tensor:
    """x [n, ...] zero-padded to [length, ...] (all_gather needs equal shapes)."""
    return torch.cat([x, x.new_zeros(length - len(x), *x.shape[1:])]) if len(x) < length else x


def _all_gather(x: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's x, in rank order."""
    out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x)
    return out


def broadcast_json(value: Any) -> Any:
    """Rank 0's JSON-able ``value`` on every rank (as UTF-8 bytes: no pickle); the identity
    without a process group."""
    if current_shard().count == 1:
        return value
    data = torch.frombuffer(bytearray(json.dumps(value).encode()), dtype=torch.uint8) if is_main() else None
    size = torch.tensor([0 if data is None else len(data)], dtype=torch.int64)
    dist.broadcast(size, src=0)
    if data is None:
        data = torch.empty(int(size), dtype=torch.uint8)
    dist.broadcast(data, src=0)
    return json.loads(bytes(data.tolist()).decode())


def broadcast_checkpoint(parts: CheckpointParts | None) -> CheckpointParts | None:
    """Rank 0's checkpoint (read by it alone; the others pass None) on every rank, so a job
    resumes the same whether or not its machines share a filesystem."""
    if current_shard().count == 1:
        return parts
    groups = ("model", "optimizer", "best")
    spec = None
    if parts is not None:
        spec = {"document": parts.document,
                **{g: {name: [str(t.dtype).removeprefix("torch."), list(t.shape)]
                       for name, t in (getattr(parts, g) or {}).items()} for g in groups},
                "has_best": parts.best is not None}
    spec = broadcast_json(spec if is_main() else None)
    if spec is None:
        return None
    received = {}
    for group in groups:
        tensors = {}
        for name, (dtype, shape) in spec[group].items():
            tensor = getattr(parts, group)[name].contiguous() if is_main() else torch.empty(
                shape, dtype=getattr(torch, dtype))
            dist.broadcast(tensor, src=0)
            tensors[name] = tensor
        received[group] = tensors
    return CheckpointParts(spec["document"], received["model"], received["optimizer"],
                           received["best"] if spec["has_best"] else None)
