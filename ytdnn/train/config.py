"""TrainConfig: every setting of the one training loop, validated before anything runs."""

from __future__ import annotations

import dataclasses
import math

from ytdnn.config import Config

OPTIMIZERS = ("auto", "adam", "adagrad", "sparse_adam")
LR_SCHEDULES = ("constant", "cosine", "linear_decay")
MONITOR_MODES = ("max", "min")

# Settings that change the trajectory of training: resuming a checkpoint written under other values
# would silently mix two different runs, so `fit(resume=True)` refuses. The others (max_epochs,
# patience, logging, threads) may change between a run and its resumption.
TRAJECTORY_SETTINGS = (
    "optimizer", "lr", "weight_decay", "lr_schedule", "warmup_steps", "min_lr_ratio",
    "batch_size", "grad_clip", "seed", "monitor", "monitor_mode", "min_delta",
)


@dataclasses.dataclass(frozen=True)
class TrainConfig(Config):
    """Settings of `ytdnn.train.fit`, shared by the candidate generator and the ranker.

    optimizer:
        "auto"        "sparse_adam" when the model has sparse tables, else "adam".
        "adam"        torch.optim.Adam over all parameters (dense gradients only).
        "adagrad"     torch.optim.Adagrad; accepts sparse embedding gradients, but then
                      weight_decay must be 0 (torch cannot decay a sparse gradient).
        "sparse_adam" for models whose big tables are `nn.Embedding(..., sparse=True)` /
                      `nn.EmbeddingBag(..., sparse=True)`: RowAdam (train/optim.py) updates only the
                      rows a batch touched (lazy Adam), plain Adam (with weight_decay) updates every
                      other parameter. weight_decay does not apply to the sparse tables.
    """

    optimizer: str = "auto"  # "auto", "adam", "adagrad" or "sparse_adam" (the class docstring)
    lr: float = 1e-3  # the learning rate (peak, with a schedule)
    weight_decay: float = 0.0  # L2 on dense parameters (Adam/Adagrad's coupled weight decay)
    lr_schedule: str = "constant"  # "constant", "cosine" or "linear_decay" over all the steps
    warmup_steps: int = 0  # linear ramp from lr/warmup_steps to lr, before the schedule starts
    min_lr_ratio: float = 0.0  # where "cosine"/"linear_decay" end, as a fraction of lr
    batch_size: int = 256  # read by the caller's batch iterator and by the schedule's step count
    max_epochs: int = 10  # passes over the examples, at most
    monitor: str | None = None  # validation metric that picks the best epoch, e.g. "NDCG@10"
    monitor_mode: str = "max"  # "max": higher is better (NDCG, recall); "min": lower (loss)
    patience: int | None = None  # stop after this many epochs without improvement; None = never
    min_delta: float = 0.0  # an improvement must beat the best by more than this
    restore_best: bool = True  # leave the model with the best epoch's weights when fit returns
    grad_clip: float | None = None  # max global L2 norm of all gradients; None = no clipping
    seed: int = 0  # initial weights, the examples drawn and their order: same seed, same weights
    log_every: int = 50  # steps between log dicts (progress bar, TensorBoard, on_log)
    progress: bool = True  # tqdm bar per epoch; shown only when stderr is a terminal
    tensorboard: bool = False  # training curves under out_dir/tb (needs out_dir): tensorboard --logdir MODEL
    # torch intra-op threads while fit runs, restored when it returns; None = leave them as they are
    num_threads: int | None = None
    deterministic: bool = True  # torch.use_deterministic_algorithms(warn_only=True) during fit

    def validate(self) -> None:
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _check_choice("monitor_mode", self.monitor_mode, MONITOR_MODES)
        _check_number("lr", self.lr, minimum=0.0, strict=True)
        _check_number("weight_decay", self.weight_decay, minimum=0.0)
        _check_number("min_lr_ratio", self.min_lr_ratio, minimum=0.0)
        if self.min_lr_ratio > 1.0:
            raise ValueError(f"TrainConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        _check_number("min_delta", self.min_delta, minimum=0.0)
        _check_int("warmup_steps", self.warmup_steps, minimum=0)
        _check_int("batch_size", self.batch_size, minimum=1)
        _check_int("max_epochs", self.max_epochs, minimum=1)
        _check_int("seed", self.seed, minimum=0)
        _check_int("log_every", self.log_every, minimum=1)
        if self.patience is not None:
            # without a monitor, the component picks its metric (CandidateGenerator: Recall@20 on
            # a validation split it carves itself); a refit can then keep the same config
            _check_int("patience", self.patience, minimum=1)
        if self.monitor is not None and (not isinstance(self.monitor, str) or not self.monitor):
            raise ValueError(f"TrainConfig.monitor must be a metric name, got {self.monitor!r}")
        if self.grad_clip is not None:
            _check_number("grad_clip", self.grad_clip, minimum=0.0, strict=True)
        if self.num_threads is not None:
            _check_int("num_threads", self.num_threads, minimum=1)
        for name in ("restore_best", "progress", "tensorboard", "deterministic"):
            if not isinstance(getattr(self, name), bool):
                # ValueError like every other bad setting: callers catch one kind of error.
                raise ValueError(f"TrainConfig.{name} must be true or false")  # noqa: TRY004


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"TrainConfig.{name} must be one of {list(choices)}, got {value!r}")


def _check_int(name: str, value: object, minimum: int) -> None:
    # bool is an int subclass: `max_epochs=True` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"TrainConfig.{name} must be an integer >= {minimum}, got {value!r}")


def _check_number(name: str, value: object, minimum: float, strict: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = value > minimum if strict else value >= minimum
    if not ok:
        bound = ">" if strict else ">="
        raise ValueError(f"TrainConfig.{name} must be a finite number {bound} {minimum}, got {value!r}")
