"""Fresh, popular items: what a user the model knows nothing about is served.

A user with no history, no stored features and none sent with the request gets the same cold-start
vector as every other such user, so the model adds nothing over a plain list. The list used here
is the training log's watches counted with an exponential decay by age at the end of the training
window (``half_life_days``; paper §3.3: users prefer fresh content, and a new upload's draw decays
quickly): an item watched a lot last week outranks one watched as much two months ago. For a log
without timestamps every watch weighs 1, i.e. plain popularity.

The list is computed once per model (at load, so a reload refreshes it); it does not follow the
events posted since, whose timestamps need not share the training log's clock.
"""

from __future__ import annotations

import numpy as np

DAY = 86_400


class PopularItems:
    """``fit(generator)`` -> ``top(k)``: (item ids [k], scores [k]) best first.

    Fitted: ``scores_`` float64 [V] (decayed watch counts; index = item vocabulary id, 0 = OOV),
    ``order_`` int64 [V - 1] vocabulary ids by score, descending (ties: the vocabulary's order,
    i.e. more watches overall first).
    """

    def __init__(self, half_life_days: float = 7.0) -> None:
        if not half_life_days > 0:
            raise ValueError(f"half_life_days must be > 0, got {half_life_days!r}")
        self.half_life_days = half_life_days

    def fit(self, generator) -> PopularItems:
        f, s = generator.featurizer_, generator.streams_
        age = np.maximum(f.window_end_ - s.watch_times, 0).astype(np.float64)  # [W] seconds
        weight = np.exp2(-age / (self.half_life_days * DAY)) if f.ordered_ else np.ones(len(age))
        self.scores_ = np.bincount(s.watch_items, weights=weight, minlength=f.num_items)
        self.scores_[0] = -np.inf  # never serve the OOV row
        self.order_ = 1 + np.argsort(-self.scores_[1:], kind="stable")
        self._decode = f.items_.decode
        return self

    def top(self, k: int) -> tuple[list, np.ndarray]:
        """The k freshest-and-most-popular items: (original ids, decayed watch counts)."""
        ids = self.order_[:k]
        return self._decode(ids), self.scores_[ids]
