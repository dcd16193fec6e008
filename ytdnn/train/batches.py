"""Batches as the loop sees them, and the per-epoch seeds that make their shuffling reproducible.

Library code leaves the process's random state as it found it: ``private_rng`` restores torch's
global generators after the block that seeds them, and numpy's and Python's global generators
are never touched (code that needs randomness takes a Generator).

The loop assumes nothing about a batch's type: these helpers count its examples and move its
tensors to the model's device, for tensors, tuples, lists, dicts, dataclasses and objects with
their own `num_examples` / `__len__` / `.to(device)`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch


def epoch_seed(seed: int, epoch: int, stream: int = 0, rank: int = 0) -> int:
    """A 63-bit seed for (seed, epoch, stream[, rank]); SeedSequence mixes them so nearby inputs
    differ. Rank 0 draws what a single process draws."""
    entropy = [seed, epoch, stream] + ([rank] if rank else [])
    state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]
    return int(state >> np.uint64(1))


def seed_epoch(seed: int, epoch: int, device: torch.device | None = None, rank: int = 0) -> torch.Generator:
    """Seed torch's global generator for `epoch` and data-parallel `rank` (the CPU's, and
    `device`'s when it is a CUDA device: dropout and negative sampling draw from it, differently
    on each rank); returns the generator for shuffling the epoch's batches, the same on every rank
    so that all cut the same epoch. Call it inside ``private_rng(device)``, which undoes the seeding."""
    torch.default_generator.manual_seed(epoch_seed(seed, epoch, 1, rank))
    if device is not None and device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(epoch_seed(seed, epoch, 1, rank))
    return torch.Generator().manual_seed(epoch_seed(seed, epoch, 0))


@contextlib.contextmanager
def private_rng(device: torch.device | None = None, seed: int | None = None) -> Iterator[None]:
    """Inside: torch's global generators, the CPU's seeded with `seed` when given. After: the
    CPU's (and `device`'s, when it is a CUDA device) exactly as they were before, so the caller's
    random state is untouched. For code that can only draw from the global generator:
    nn.Module initialisation, dropout."""
    devices = []
    if device is not None and device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        if seed is not None:
            torch.default_generator.manual_seed(seed)
        yield


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
