"""A candidate source with a fixed score per item, for hand-checked blends."""

import numpy as np

from ytdnn.retrieval.base import top_k


class Fixed:
    """A source with a fixed score per item (the same for every user): top_k of a dense row."""

    def __init__(self, name: str, scores: list[float]):
        self.name, self.num_items = name, len(scores)
        self.scores = np.array(scores, np.float32)

    def encode(self, ctx):
        return len(ctx)

    def retrieve(self, state, k, exclude=None):
        return top_k(np.tile(self.scores, (state, 1)), k, exclude)

    def score(self, state, items):
        return np.where(items > 0, self.scores[items], -np.inf).astype(np.float32)
