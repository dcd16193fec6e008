"""Batches as the loop sees them, and the per-epoch seeds that make their shuffling reproducible.

The loop assumes nothing about a batch's type: these helpers count its examples and move its
tensors to the model's device, for tensors, tuples, lists, dicts, dataclasses and objects with
their own `num_examples` / `__len__` / `.to(device)`.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A 63-bit seed for (seed, epoch, stream); SeedSequence mixes them so nearby inputs differ."""
    state = np.random.SeedSequence([seed, epoch, stream]).generate_state(1, dtype=np.uint64)[0]
    return int(state >> np.uint64(1))


def seed_epoch(seed: int, epoch: int) -> torch.Generator:
    """Reseed torch, numpy and random for `epoch`; returns the generator for shuffling batches."""
    torch.manual_seed(epoch_seed(seed, epoch, 1))  # also seeds every CUDA device
    np.random.seed(epoch_seed(seed, epoch, 2) % 2**32)
    random.seed(epoch_seed(seed, epoch, 3))
    return torch.Generator().manual_seed(epoch_seed(seed, epoch, 0))


def count_examples(batch: Any) -> int:
    """Examples in a batch: batch.num_examples, else len(batch), else its first tensor's rows.

    Tuples, lists and dicts are containers of tensors, so their own len() is not the batch size.
    """
    if hasattr(batch, "num_examples"):
        return int(batch.num_examples)
    if torch.is_tensor(batch):
        return int(batch.shape[0])
    if not isinstance(batch, (tuple, list, dict)) and hasattr(batch, "__len__"):
        return len(batch)
    if isinstance(batch, (tuple, list, dict)) or dataclasses.is_dataclass(batch):
        first = next(_tensors(batch), None)
        if first is not None and first.dim() > 0:
            return int(first.shape[0])
    raise TypeError(f"cannot count the examples of a {type(batch).__name__} batch: "
                    "give it a num_examples attribute or __len__")


def to_device(batch: Any, device: torch.device) -> Any:
    """The batch with its tensors on `device` (a no-op for tensors already there)."""
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(item, device) for item in batch)
    if isinstance(batch, dict):
        return {key: to_device(value, device) for key, value in batch.items()}
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        moved = {f.name: to_device(getattr(batch, f.name), device)
                 for f in dataclasses.fields(batch) if f.init}
        return dataclasses.replace(batch, **moved)
    if hasattr(batch, "to") and callable(batch.to):
        return batch.to(device)
    return batch


def _tensors(batch: Any) -> Iterator[torch.Tensor]:
    values = batch.values() if isinstance(batch, dict) else (
        [getattr(batch, f.name) for f in dataclasses.fields(batch)]
        if dataclasses.is_dataclass(batch) else batch)
    return (value for value in values if torch.is_tensor(value))
