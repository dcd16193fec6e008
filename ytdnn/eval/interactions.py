"""Interactions: unique (user, item) pairs in dense indices, stored row-compressed by user.

Every protocol hands its splits to models and metrics in this one form, so a baseline, a neural
model and the metrics all read the same thing: ``user_idx`` / ``item_idx`` (int64, sorted by user
then item, no duplicate pair) and ``indptr`` so that user ``u``'s items are
``item_idx[indptr[u]:indptr[u + 1]]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Interactions:
    """Unique (user, item) pairs over a fixed catalogue of ``num_users`` x ``num_items``.

    user_idx, item_idx: [N] int64, sorted by (user, item); indptr: [num_users + 1];
    rows: [N] int64, the row of each pair in the source table the split was built from (the
    first occurrence), so a model can go back to timestamps, watch times, ...
    """

    user_idx: np.ndarray
    item_idx: np.ndarray
    indptr: np.ndarray
    rows: np.ndarray
    num_users: int
    num_items: int

    @classmethod
    def from_pairs(
        cls,
        user_idx: np.ndarray,
        item_idx: np.ndarray,
        num_users: int,
        num_items: int,
        rows: np.ndarray | None = None,
    ) -> Interactions:
        """Build from [N] index arrays in any order; a repeated pair keeps its first listing."""
        user_idx = np.asarray(user_idx, dtype=np.int64)
        item_idx = np.asarray(item_idx, dtype=np.int64)
        rows = (
            np.arange(len(user_idx), dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
        )
        if not (len(user_idx) == len(item_idx) == len(rows)):
            raise ValueError("user_idx, item_idx and rows must have the same length")
        if len(user_idx) and (user_idx.min() < 0 or user_idx.max() >= num_users):
            raise ValueError(f"user index outside [0, {num_users})")
        if len(item_idx) and (item_idx.min() < 0 or item_idx.max() >= num_items):
            raise ValueError(f"item index outside [0, {num_items})")
        key = user_idx * num_items + item_idx
        # np.unique's return_index is the first position of each key in the given order
        _, first = np.unique(key, return_index=True)  # sorted by key = (user, item)
        counts = np.bincount(user_idx[first], minlength=num_users)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(user_idx[first], item_idx[first], indptr, rows[first], num_users, num_items)

    @classmethod
    def empty(cls, num_users: int, num_items: int) -> Interactions:
        none = np.zeros(0, dtype=np.int64)
        return cls.from_pairs(none, none, num_users, num_items)

    def __len__(self) -> int:
        return len(self.user_idx)

    def __add__(self, other: Interactions) -> Interactions:
        """Union of two sets of pairs over the same catalogue (train + valid)."""
        if (self.num_users, self.num_items) != (other.num_users, other.num_items):
            raise ValueError("cannot add interactions over different catalogues")
        return Interactions.from_pairs(
            np.concatenate([self.user_idx, other.user_idx]),
            np.concatenate([self.item_idx, other.item_idx]),
            self.num_users,
            self.num_items,
            np.concatenate([self.rows, other.rows]),
        )

    def counts_per_user(self) -> np.ndarray:
        """[num_users] number of items of each user."""
        return np.diff(self.indptr)

    def counts_per_item(self) -> np.ndarray:
        """[num_items] number of users of each item."""
        return np.bincount(self.item_idx, minlength=self.num_items)

    def users(self) -> np.ndarray:
        """Users with at least one item, ascending."""
        return np.flatnonzero(self.counts_per_user())

    def items_of(self, user: int) -> np.ndarray:
        return self.item_idx[self.indptr[user] : self.indptr[user + 1]]

    def batch_pairs(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row in the batch, item) of every pair of the given users; users: [B] -> two [M] arrays."""
        users = np.asarray(users, dtype=np.int64)
        starts, ends = self.indptr[users], self.indptr[users + 1]
        lengths = ends - starts
        batch_row = np.repeat(np.arange(len(users)), lengths)
        # position of each pair = its user's start + its offset within that user's run
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return batch_row, self.item_idx[np.repeat(starts, lengths) + offsets]

    def dense(self, users: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The users' rows of the user x item matrix: users [B] -> [B, num_items] (1 = interaction)."""
        batch_row, items = self.batch_pairs(users)
        out = torch.zeros((len(users), self.num_items), dtype=dtype)
        out[torch.from_numpy(batch_row), torch.from_numpy(items)] = 1
        return out
