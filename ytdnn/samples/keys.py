"""Seeded hash keys: random draws that depend on nothing but a user's own events.

The per-user cap of the candidate examples, the requests of built pages and their kept negatives
are drawn with keys instead of a random generator. A key is a hash of (seed, user id, a position
in the user's events, ...), so a draw gives the same answer however the users are split into
partitions or shards (``ytdnn prepare``, local or Spark), and in memory.
"""

from __future__ import annotations

import hashlib

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer on uint64 [N] (wrapping arithmetic): a seeded hash, no RNG state."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def id_hashes(ids: list) -> np.ndarray:
    """A stable uint64 per user id [U]: the integer itself, or 8 bytes of the string's BLAKE2b
    (Python's hash() of a str changes with every process)."""
    if not ids or isinstance(ids[0], int | np.integer):
        return np.asarray(ids, np.int64).view(np.uint64)
    digests = b"".join(hashlib.blake2b(str(i).encode(), digest_size=8).digest() for i in ids)
    return np.frombuffer(digests, np.uint64).copy()


def user_keys(seed: int, user_hash: np.ndarray, position: np.ndarray, purpose: int = 0) -> np.ndarray:
    """int64 [N] keys of (seed, user, position): user_hash [N] (``id_hashes``), position [N] the
    event's index among the user's own (time-ordered) events. ``purpose`` > 0 gives a draw
    independent of purpose 0's for the same seed (the pages' requests must not be the examples
    the cap kept, which the generator learned as labels)."""
    salt = np.uint64(seed) ^ (mix(np.uint64(purpose)) if purpose else np.uint64(0))
    with np.errstate(over="ignore"):
        return mix(mix(salt ^ user_hash) + np.asarray(position).astype(np.uint64)).view(np.int64)


def unit_interval(keys: np.ndarray) -> np.ndarray:
    """Keys (any integer array) -> float64 in [0, 1): their top 53 bits."""
    return (np.asarray(keys).view(np.uint64) >> np.uint64(11)).astype(np.float64) / 2.0**53


def smallest_per_group(groups: np.ndarray, keys: np.ndarray, cap: int | None) -> np.ndarray:
    """Indices of the ``cap`` smallest keys of each group (all when cap is None). groups, keys: [E]."""
    if cap is None:
        return np.arange(len(groups))
    order = np.lexsort((keys, groups))
    ordered = groups[order]
    rank = np.arange(len(order)) - np.searchsorted(ordered, ordered, side="left")
    return order[rank < cap]
