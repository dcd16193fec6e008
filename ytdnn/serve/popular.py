"""Fresh, popular items: what a user the model knows nothing about is served.

A user with no history, no stored features and none sent with the request gets the same cold-start
vector as every other such user, so the model adds nothing over a plain list. The list used here
is the fresh-popular candidate source (``ytdnn.retrieval.popular.PopularSource``) fitted on the
generator's training streams: each watch counts ``2 ** (-age / half_life)`` by its age at the end
of the training window, the half-life a share of that window (``half_life_share``; paper §3.3:
users prefer fresh content, and a new upload's draw decays quickly), so it means the same on a
log of seconds over 7 months as on one of 20 years: an item watched a lot lately outranks one
watched as much long before. For a log without timestamps every watch weighs 1, i.e. plain
popularity. Only items watched at least once are listed.

The list is computed once per model (at load, so a reload refreshes it); it does not follow the
events posted since, whose timestamps need not share the training log's clock.
"""

from __future__ import annotations

import numpy as np

from ytdnn.retrieval.popular import PopularConfig, PopularSource


class PopularItems:
    """``fit(generator)`` -> ``top(k)``: (item ids, scores) best first, at most k.

    Fitted: ``source_`` (the ``PopularSource``: ``counts_`` float64 [V] decayed watch counts,
    index = item vocabulary id, 0 = OOV; ``order_`` the watched ids best first, ties to the lower
    id, i.e. more watches overall first).
    """

    def __init__(self, half_life_share: float = PopularConfig.half_life_share) -> None:
        self.cfg = PopularConfig(half_life_share=half_life_share)  # ValueError for a share <= 0

    @property
    def half_life_share(self) -> float:
        return self.cfg.half_life_share

    def fit(self, generator) -> PopularItems:
        """On a fitted CandidateGenerator's training streams and window."""
        self.source_ = PopularSource.from_generator(generator, self.cfg)
        self._decode = generator.featurizer_.items_.decode
        return self

    def top(self, k: int) -> tuple[list, np.ndarray]:
        """The k freshest-and-most-popular items: (original ids, decayed watch counts float32);
        fewer when fewer items were ever watched."""
        ids, scores = self.source_.retrieve(1, k)  # [1, k], padded with id 0 / -inf
        keep = ids[0] > 0
        return self._decode(ids[0][keep]), scores[0][keep]
