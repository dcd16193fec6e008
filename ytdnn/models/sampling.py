"""Negative sampling for the candidate generator's sampled softmax (paper §3, "Efficient training").

The background distribution is the smoothed unigram distribution q_i ∝ count_i ** alpha over item
ids. alpha = 0.75 is the word2vec choice (Mikolov et al. 2013): it flattens the head of a Zipf
distribution so popular items are still sampled often, yet the tail is not ignored; alpha = 1 is the
raw unigram, alpha = 0 uniform. Id 0 is padding / out-of-vocabulary and is never sampled (q_0 = 0);
with alpha > 0 an item with count 0 is never sampled either.

Negatives are drawn *with replacement*, fresh at every step, and shared by the whole batch. The log-Q
correction term returned with them is the log of each id's *expected count* in the sample,
log(N * q_i): the convention of Jean et al. (2015) and of TensorFlow's ``sampled_softmax_loss``
(``_compute_sampled_logits`` subtracts log(expected_count)). Yi et al. (2019) subtract log q_i
instead; the two differ by the constant log N, so they give the same softmax when the positive is
corrected too, and only log(N * q_i) makes the uncorrected-positive estimate of the partition
function unbiased (see ``losses.sampled_softmax_loss``).
"""

from __future__ import annotations

import math

import numpy as np
import torch


class NegativeSampler:
    """Draws ``num_negatives`` ids from q ∝ count ** alpha in O(N log V) per step.

    counts: [V] non-negative item frequencies (index = item id; counts[0] is ignored).
    A cumulative table is built once; each draw is a binary search of a uniform number in it
    (``torch.searchsorted``), so a step costs O(N log V) instead of ``torch.multinomial``'s O(V),
    which matters at V = 1M. Deterministic given a ``torch.Generator``.
    """

    def __init__(
        self,
        counts: np.ndarray | torch.Tensor,
        num_negatives: int,
        alpha: float = 0.75,  # word2vec's smoothing: flattens the popular head
        seed: int = 0,
    ) -> None:
        counts = torch.as_tensor(np.asarray(counts), dtype=torch.float64)
        if counts.ndim != 1 or counts.numel() < 2:
            raise ValueError(
                f"counts must be 1-D with at least 2 ids (0 = padding), got {tuple(counts.shape)}"
            )
        if not torch.isfinite(counts).all() or (counts < 0).any():
            raise ValueError("counts must be finite and non-negative")
        if num_negatives <= 0:
            raise ValueError(f"num_negatives must be positive, got {num_negatives}")
        if not math.isfinite(alpha) or alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        weights = counts.pow(alpha)  # 0 ** 0 == 1: alpha = 0 is uniform over every id but 0
        weights[0] = 0.0  # padding / OOV is never a negative
        total = weights.sum()
        if total <= 0:
            raise ValueError("every id other than 0 has count 0: nothing to sample")
        self.num_negatives = int(num_negatives)
        self.alpha = float(alpha)
        self.seed = int(seed)
        self.probabilities_ = weights / total  # [V] float64, q
        cdf = torch.cumsum(self.probabilities_, 0)
        self._cdf = cdf / cdf[-1]  # [V]; exact 1.0 at the end despite rounding
        # [V]; -inf for ids that are never drawn (0 and zero-count items)
        self.log_expected_counts_ = torch.log(self.num_negatives * self.probabilities_).float()
        self.generator_ = torch.Generator().manual_seed(self.seed)

    @property
    def num_items(self) -> int:
        return self.probabilities_.numel()

    def sample(self, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (negatives [N] int64, log_q [N] float32), log_q = log(N * q_negative).

        generator: the source of randomness; None uses the sampler's own, seeded with ``seed``.
        """
        generator = self.generator_ if generator is None else generator
        uniform = torch.rand(self.num_negatives, generator=generator, dtype=torch.float64)  # [N]
        # right=True picks the first id whose cdf exceeds u: ids with q = 0 (equal consecutive cdf
        # values, including id 0 whose cdf is 0) can never be picked, and u < 1 = cdf[-1] keeps
        # every result below V.
        negatives = torch.searchsorted(self._cdf, uniform, right=True)  # [N]
        return negatives, self.log_expected_counts_[negatives]

    def log_q(self, ids: torch.Tensor) -> torch.Tensor:
        """log(N * q_id) for any ids [...] (e.g. the batch's positives, for TF's convention)."""
        return self.log_expected_counts_[ids]
