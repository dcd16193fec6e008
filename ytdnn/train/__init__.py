"""Training: the one loop shared by the candidate generator and the ranker, and its checkpoints.

    history = fit(model, TrainConfig(optimizer="sparse_adam", monitor="NDCG@10", patience=3),
                  train_batches, validate, out_dir="runs/candidates", num_examples=len(examples))
"""

from ytdnn.train.batches import count_examples, epoch_seed, seed_epoch, to_device
from ytdnn.train.checkpoint import (
    checkpoint_state,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    snapshot,
)
from ytdnn.train.config import TrainConfig
from ytdnn.train.loop import History, fit
from ytdnn.train.optim import MultiOptimizer, clip_grad_norm, learning_rate, make_optimizer

__all__ = [
    "History",
    "MultiOptimizer",
    "TrainConfig",
    "checkpoint_state",
    "clip_grad_norm",
    "count_examples",
    "epoch_seed",
    "fit",
    "latest_checkpoint",
    "learning_rate",
    "load_checkpoint",
    "make_optimizer",
    "save_checkpoint",
    "seed_epoch",
    "snapshot",
    "to_device",
]
