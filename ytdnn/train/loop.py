"""The one training loop of ytdnn, for the candidate generator and the ranker alike.

What the loop needs from its caller (nothing else is assumed about models or batches):

    model          an nn.Module on the device to train on.
    loss           `loss_fn(model, batch) -> scalar tensor`; by default `model.loss(batch)`. The
                   sampled softmax of the candidate generator and the weighted logistic loss of
                   the ranker both live behind it.
    train_batches  `train_batches(epoch, generator) -> Iterable[batch]`: one epoch of batches of
                   about cfg.batch_size examples, shuffled with `generator` (a torch.Generator
                   seeded from (cfg.seed, epoch)). A batch is any object; its size is read as
                   `batch.num_examples`, else `len(batch)`, else the first dimension of its first
                   tensor. Tensors in tuples, lists, dicts and dataclasses are moved to the model's
                   device; other objects through their own `.to(device)`.
    validate       `validate(model) -> {"NDCG@10": 0.31, ...}`, run once per epoch in eval mode
                   under torch.no_grad(); cfg.monitor names the metric that picks the best epoch.

Randomness: at the start of every epoch, torch's global generator (dropout, negative sampling)
and the `generator` given to train_batches are seeded from (cfg.seed, epoch). A run resumed after
epoch k therefore continues exactly as if never stopped, as long as the caller draws randomness
from these (or from generators seeded from `generator`), not from numpy's or Python's global
generators, which fit never seeds. fit leaves the process as it found it: torch's global
generators are restored when it returns (`private_rng`), and so are the thread count and the
deterministic-algorithms switch, which it sets only while it runs.

Data parallelism: inside a torchrun job (``ytdnn.train.distributed.process_group``) the same fit
runs on every rank. train_batches then yields this rank's part of each global batch of
cfg.batch_size examples (callers cut it with ``distributed.current_shard()``), the gradient is
all-reduced to that of the global batch, the global generator is seeded per rank, and only rank 0
validates, checkpoints, logs and draws the progress bar; History holds the global figures.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Self

import torch
from torch import nn
from tqdm.auto import tqdm

from ytdnn.train import checkpoint
from ytdnn.train.batches import count_examples, private_rng, seed_epoch, to_device
from ytdnn.train.config import TRAJECTORY_SETTINGS, TrainConfig
from ytdnn.train.distributed import DataParallel, broadcast_checkpoint, is_main
from ytdnn.train.optim import (
    Optimizer,
    clip_grad_norm,
    learning_rate,
    make_optimizer,
    set_learning_rate,
)

log = logging.getLogger(__name__)

TENSORBOARD_DIR = "tb"  # under out_dir: `tensorboard --logdir MODEL/tb`
LossFn = Callable[[nn.Module, Any], torch.Tensor]
TrainBatches = Callable[[int, torch.Generator], Iterable[Any]]
Validate = Callable[[nn.Module], dict[str, float]]


@dataclasses.dataclass
class History:
    """What happened in fit, one record per finished epoch (epochs count from 0).

    epochs[i]: {"epoch", "train_loss" (example-weighted mean), "examples", "seconds",
    "examples_per_second", "lr" (at the epoch's last step), "step" (steps so far), "val" (metrics)}.
    best_epoch, best_metric: the best epoch by cfg.monitor and its value (None while no epoch had
    a finite value); without a monitor, the last epoch and None.
    stopped_early: patience ran out before max_epochs.
    """

    epochs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    best_epoch: int | None = None
    best_metric: float | None = None
    stopped_early: bool = False

    @property
    def train_loss(self) -> list[float]:
        return [record["train_loss"] for record in self.epochs]

    @property
    def val_metrics(self) -> list[dict[str, float]]:
        return [record["val"] for record in self.epochs]

    @property
    def examples_per_second(self) -> list[float]:
        return [record["examples_per_second"] for record in self.epochs]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> History:
        return cls(**values)


@dataclasses.dataclass
class _Run:
    """The loop's mutable state; all of it goes into the checkpoint."""

    history: History = dataclasses.field(default_factory=History)
    step: int = 0  # optimizer steps over the whole run; drives the lr schedule
    epochs_without_improvement: int = 0
    best_state: dict[str, torch.Tensor] | None = None  # CPU copy of the best weights


def fit(
    model: nn.Module,
    cfg: TrainConfig,
    train_batches: TrainBatches,
    validate: Validate | None = None,
    out_dir: str | Path | None = None,
    resume: bool = True,
    *,
    loss_fn: LossFn | None = None,
    num_examples: int | None = None,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    data_key: str | None = None,
    model_settings: dict[str, Any] | None = None,
) -> History:
    """Train `model` in place for up to cfg.max_epochs epochs; returns the History.

    out_dir: where checkpoints (out_dir/checkpoint/) and, with cfg.tensorboard, the TensorBoard
        scalars (out_dir/tb/: per step train/loss, train/lr, train/examples_per_second; per epoch
        epoch/*, and val/<metric> when validate is given) go; None trains without writing anything.
    resume: continue from the last checkpoint in out_dir when there is one (weights, optimizer,
        schedule position, epoch, early-stopping state). resume=False starts over and replaces it.
    num_examples: examples per epoch; sizes the progress bar, and the lr schedule's horizon
        (max_epochs * ceil(num_examples / batch_size) steps), so "cosine"/"linear_decay" need it.
    on_log: called with every log dict: per step {"epoch", "step", "loss", "lr",
        "examples_per_second"} every cfg.log_every steps, and each epoch's History record.
    data_key, model_settings: a digest of the training data (``checkpoint.data_fingerprint``)
        and the model's settings, kept in the checkpoints: a checkpoint of other data or of
        another model is refused rather than resumed.

    When fit returns, the model holds the best epoch's weights if cfg.monitor is set and
    cfg.restore_best (default), else those of the last epoch.
    """
    if cfg.monitor is not None and validate is None:
        raise ValueError(f"cfg.monitor={cfg.monitor!r} needs a validate function")
    if cfg.lr_schedule != "constant" and num_examples is None:
        raise ValueError(f"lr_schedule={cfg.lr_schedule!r} needs num_examples to know its length")
    optimizer = make_optimizer(model, cfg)
    total_steps = None
    if num_examples is not None:
        total_steps = cfg.max_epochs * math.ceil(num_examples / cfg.batch_size)
    run = _start(model, optimizer, cfg, out_dir, resume, data_key, model_settings)
    device = _model_device(model)
    parallel = DataParallel(model, loss_fn or _model_loss)  # one process: no communication
    main = parallel.is_main

    with _torch_settings(cfg), private_rng(device), _Logger(cfg, out_dir, on_log, main) as logger:
        for epoch in range(len(run.history.epochs), cfg.max_epochs):
            if run.history.stopped_early:
                break  # a resumed run that had already stopped
            generator = seed_epoch(cfg.seed, epoch, device, parallel.shard.index)
            batches = train_batches(epoch, generator)
            # 1) lr   2) forward + loss   3) backward + clip + step   5) log: per step, inside
            record = _train_epoch(model, optimizer, cfg, run, parallel, batches, epoch,
                                  total_steps, num_examples, logger)
            # 4) end of epoch: validate (rank 0, its metrics broadcast so every rank takes the
            #    same early-stopping decision), best weights, checkpoint (rank 0)
            record["val"] = parallel.from_main(lambda: _validation_metrics(model, validate))
            run.history.epochs.append(record)
            _track_best(run, cfg, model, epoch, record["val"])
            if out_dir is not None and main:
                _save(out_dir, model, optimizer, cfg, run, epoch, data_key, model_settings)
            logger.epoch(record, run.history)

    if cfg.monitor is not None and cfg.restore_best and run.best_state is not None:
        model.load_state_dict(run.best_state)
    return run.history


def _train_epoch(
    model: nn.Module, optimizer: Optimizer, cfg: TrainConfig, run: _Run, parallel: DataParallel,
    batches: Iterable[Any], epoch: int, total_steps: int | None, num_examples: int | None,
    logger: _Logger,
) -> dict[str, Any]:
    """One pass over `batches`; returns the epoch's record (without validation metrics)."""
    model.train()
    device = _model_device(model)
    params = [p for p in model.parameters() if p.requires_grad]
    show = cfg.progress and parallel.is_main
    bar = tqdm(total=num_examples, desc=f"epoch {epoch + 1}/{cfg.max_epochs}", unit="ex",
               unit_scale=True, disable=None if show else True, dynamic_ncols=True)
    # Losses are summed on the device and read every log_every steps: no sync per step.
    epoch_loss, window_loss = torch.zeros((), device=device), torch.zeros((), device=device)
    examples = window_examples = 0
    lr = learning_rate(cfg, run.step, total_steps)
    start = time.perf_counter()
    iterator = iter(batches)
    while True:
        # 0) the next batch; with several ranks, every rank's examples of this step (an epoch
        #    ends on all ranks together, when any has no batch left)
        batch = next(iterator, None)
        batch_size = None if batch is None else count_examples(batch)
        step_examples = parallel.agree(batch_size)
        if batch is None or step_examples is None:
            break
        batch = to_device(batch, device)
        # 1) learning rate for this step
        lr = learning_rate(cfg, run.step, total_steps)
        set_learning_rate(optimizer, lr)
        # 2) forward + loss: scalar, mean over this rank's examples; `objective` is scaled so
        #    that the all-reduced gradient is the global batch's
        loss, objective = parallel.loss(batch, batch_size, step_examples)
        # 3) backward (+ all-reduce across ranks) + clip + step
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        parallel.reduce_sparse()
        if cfg.grad_clip is not None:
            clip_grad_norm(params, cfg.grad_clip)
        optimizer.step()
        run.step += 1
        epoch_loss += loss.detach() * batch_size
        window_loss += loss.detach() * batch_size
        examples += batch_size
        window_examples += batch_size
        bar.update(step_examples)
        # 5) every log_every steps, one log dict: progress bar, TensorBoard, on_log
        if run.step % cfg.log_every == 0:
            elapsed = time.perf_counter() - start
            total_loss, total_window, total_examples = parallel.sum([window_loss, window_examples, examples])
            logger.step(bar, {"epoch": epoch, "step": run.step, "lr": lr,
                              "loss": _finite(total_loss / total_window, epoch, run.step),
                              "examples_per_second": total_examples / max(elapsed, 1e-9)})
            window_loss, window_examples = torch.zeros((), device=device), 0
    seconds = time.perf_counter() - start
    bar.close()
    total_loss, examples = parallel.sum([epoch_loss, examples])  # over all ranks
    examples = int(examples)
    if examples == 0:
        raise ValueError(f"train_batches(epoch={epoch}, generator) yielded no examples")
    return {"epoch": epoch, "train_loss": _finite(total_loss / examples, epoch, run.step),
            "examples": examples, "seconds": seconds,
            "examples_per_second": examples / max(seconds, 1e-9), "lr": lr, "step": run.step}


def _validation_metrics(model: nn.Module, validate: Validate | None) -> dict[str, float]:
    if validate is None:
        return {}
    model.eval()
    try:
        with torch.no_grad():
            metrics = validate(model)
    finally:
        model.train()
    return {str(name): float(value) for name, value in metrics.items()}


def _track_best(run: _Run, cfg: TrainConfig, model: nn.Module, epoch: int,
                metrics: dict[str, float]) -> None:
    """Early-stopping bookkeeping: best epoch and metric, its weights, epochs since, stop flag."""
    history = run.history
    if cfg.monitor is None:
        history.best_epoch = epoch  # nothing to choose by: the last weights are the result
        return
    if cfg.monitor not in metrics:
        raise ValueError(f"validate() returned {sorted(metrics)}, not cfg.monitor={cfg.monitor!r}")
    value = metrics[cfg.monitor]
    best = history.best_metric
    if cfg.monitor_mode == "max":
        improved = best is None or value > best + cfg.min_delta  # False for NaN
    else:
        improved = best is None or value < best - cfg.min_delta
    if improved and not math.isnan(value):
        history.best_epoch, history.best_metric = epoch, value
        run.epochs_without_improvement = 0
        if cfg.restore_best:
            run.best_state = checkpoint.snapshot(model)
    else:
        run.epochs_without_improvement += 1
        if cfg.patience is not None and run.epochs_without_improvement >= cfg.patience:
            history.stopped_early = True


# ---- checkpoints ----


def _save(out_dir: str | Path, model: nn.Module, optimizer: Optimizer, cfg: TrainConfig,
          run: _Run, epoch: int, data_key: str | None, model_settings: dict | None) -> None:
    state = {"step": run.step, "epochs_without_improvement": run.epochs_without_improvement,
             "history": run.history.to_dict(), "config": cfg.to_dict(), "data": data_key,
             "model": model_settings}
    # The best weights need a file of their own only when they are not the current ones.
    best = run.best_state if run.history.best_epoch != epoch else None
    checkpoint.save_checkpoint(out_dir, epoch + 1, model, optimizer, state, best)


_START_OVER = ("train into another directory, or start over in this one (resume=False; on the command "
               "line, --overwrite)")


def _start(model: nn.Module, optimizer: Optimizer, cfg: TrainConfig,
           out_dir: str | Path | None, resume: bool, data_key: str | None,
           model_settings: dict | None) -> _Run:
    """A fresh run, or the one checkpointed in out_dir (checked against cfg before loading)."""
    if out_dir is None or not resume:
        return _Run()
    # rank 0 reads; the others receive its checkpoint (no shared filesystem needed)
    parts = broadcast_checkpoint(checkpoint.read_checkpoint(out_dir) if is_main() else None)
    if parts is None:
        return _Run()
    saved = parts.document["loop"]["config"]
    changed = [k for k in TRAJECTORY_SETTINGS if saved.get(k) != getattr(cfg, k)]
    if changed:
        raise ValueError(
            f"the checkpoint in {out_dir} was trained with other settings "
            f"({', '.join(f'{k}: {saved.get(k)!r} -> {getattr(cfg, k)!r}' for k in changed)}); "
            f"{_START_OVER}"
        )
    saved_model = parts.document["loop"].get("model")
    if model_settings is not None and saved_model is not None and saved_model != model_settings:
        changed = sorted(k for k in model_settings.keys() | saved_model.keys()
                         if saved_model.get(k) != model_settings.get(k))
        raise ValueError(
            f"the checkpoint in {out_dir} holds another model "
            f"({', '.join(f'{k}: {saved_model.get(k)!r} -> {model_settings.get(k)!r}' for k in changed)}); "
            f"{_START_OVER}")
    saved_key = parts.document["loop"].get("data")
    if data_key is not None and saved_key is not None and saved_key != data_key:
        raise ValueError(f"the checkpoint in {out_dir} was trained on other data or example settings; "
                         f"{_START_OVER}")
    try:
        state, best_state = checkpoint.apply_checkpoint(parts, model, optimizer)
    except RuntimeError as err:  # load_state_dict: the checkpoint's tensors have other names or shapes
        raise ValueError(
            f"the checkpoint in {out_dir} holds another model (other layers or vocabulary sizes: "
            f"{str(err).strip().splitlines()[-1].strip()}); {_START_OVER}"
        ) from err
    run = _Run(history=History.from_dict(state["history"]), step=state["step"],
               epochs_without_improvement=state["epochs_without_improvement"])
    last = len(run.history.epochs) - 1
    if best_state is None and cfg.monitor is not None and run.history.best_epoch == last:
        best_state = checkpoint.snapshot(model)  # the best weights are the ones just loaded
    run.best_state = best_state if cfg.restore_best else None
    log.info("resumed from %s after epoch %d, step %d", out_dir, last, run.step)
    return run


def _model_loss(model: nn.Module, batch: Any) -> torch.Tensor:
    return model.loss(batch)


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _finite(total: float, epoch: int, step: int) -> float:
    value = float(total)
    if not math.isfinite(value):
        raise FloatingPointError(f"training loss is {value} at epoch {epoch}, step {step}; "
                                 "lower lr or set grad_clip")
    return value


@contextlib.contextmanager
def _torch_settings(cfg: TrainConfig) -> Iterator[None]:
    """Thread count and deterministic algorithms for the duration of fit, restored after.

    Both are process-wide in torch (no per-call setting exists), so other threads see them while
    fit runs; setting them here rather than only in the CLI keeps cfg.num_threads meaning the
    same from Python and from the command line. Only what cfg changes is touched, and restored.
    """
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    set_threads = cfg.num_threads is not None and cfg.num_threads != threads
    set_deterministic = cfg.deterministic and not (deterministic and warn_only)
    if set_threads:
        torch.set_num_threads(cfg.num_threads)
    if set_deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        if set_threads:
            torch.set_num_threads(threads)
        if set_deterministic:
            torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


class _Logger:
    """Sends log dicts to the progress bar, TensorBoard (when enabled), on_log and `logging`."""

    def __init__(self, cfg: TrainConfig, out_dir: str | Path | None,
                 on_log: Callable[[dict[str, Any]], None] | None, main: bool = True):
        self.on_log = on_log if main else None  # rank 0 alone reports for a data-parallel job
        self.writer = None
        self.main = main
        if main and cfg.tensorboard and out_dir is None:
            log.warning("cfg.tensorboard is set but fit got no out_dir: no TensorBoard logs")
        elif main and cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # slow import, only when asked

            self.writer = SummaryWriter(log_dir=str(Path(out_dir) / TENSORBOARD_DIR))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.writer is not None:
            self.writer.close()

    def step(self, bar: Any, entry: dict[str, Any]) -> None:
        bar.set_postfix(loss=f"{entry['loss']:.4f}", lr=f"{entry['lr']:.2e}",
                        ex_per_s=f"{entry['examples_per_second']:.0f}", refresh=False)
        self._scalars("train", entry, entry["step"])
        if self.on_log is not None:
            self.on_log(entry)

    def epoch(self, record: dict[str, Any], history: History) -> None:
        self._scalars("epoch", record, record["step"])
        self._scalars("val", record["val"], record["step"])
        if self.on_log is not None:
            self.on_log(record)
        if not self.main:
            return
        val = ", ".join(f"{name} {value:.4f}" for name, value in record["val"].items())
        log.info("epoch %d: loss %.4f, %.0f examples/s%s%s", record["epoch"], record["train_loss"],
                 record["examples_per_second"], f", {val}" if val else "",
                 ", stopping early" if history.stopped_early else "")

    def _scalars(self, prefix: str, values: dict[str, Any], step: int) -> None:
        if self.writer is None:
            return
        for name, value in values.items():
            if name not in ("epoch", "step") and isinstance(value, (int, float)):
                self.writer.add_scalar(f"{prefix}/{name}", value, global_step=step)
