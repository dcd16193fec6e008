"""Losses of the two networks: full and sampled softmax (paper §3), weighted logistic (paper §4.2).

Shapes: B = batch size, d = embedding width, V = number of item ids (id 0 = padding / OOV, never a
class), N = number of sampled negatives.

``item_embeddings`` may be a [V, d] tensor or a module that maps ids to rows (an ``nn.Embedding``,
possibly ``sparse=True``): the sampled loss then looks up only the rows it uses, so only those get a
gradient. ``item_bias`` likewise: a [V] tensor or a module mapping ids to [..., 1] or [...].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Table = torch.Tensor | nn.Module


def _lookup(table: Table, ids: torch.Tensor) -> torch.Tensor:
    """Rows of ``table`` for ``ids`` [...] -> [..., d] (or [...] for a bias vector)."""
    if isinstance(table, torch.Tensor):
        return table[ids]
    rows = table(ids)
    return rows.squeeze(-1) if rows.ndim == ids.ndim + 1 and rows.shape[-1] == 1 else rows


def _full_table(table: Table) -> torch.Tensor:
    return table if isinstance(table, torch.Tensor) else table.weight.squeeze(-1)


def _check_positives(positives: torch.Tensor) -> None:
    if positives.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"positives must be integer ids, got {positives.dtype}")
    if bool((positives == 0).any()):
        raise ValueError("a positive is id 0 (padding / OOV), which is never a class")


def _weighted_mean(losses: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Σ w_l · loss_l / Σ w_l; the plain mean when weights is None. losses, weights: [L]."""
    if weights is None:
        return losses.mean()
    weights = weights.to(losses.dtype)
    return (weights * losses).sum() / weights.sum()


def full_softmax_loss(
    user_vectors: torch.Tensor,
    item_embeddings: Table,
    positives: torch.Tensor,
    item_bias: Table | None = None,
    rows: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    excluded: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of softmax(u · v_j + b_j) over all ids but 0 (paper §3.1).

    user_vectors: [B, d]; item_embeddings: [V, d]; positives: [L] in 1..V-1; item_bias: [V] | None;
    rows: [L] the user vector of each positive (None: L == B, positive b is row b's), so several
    labels of one context share one [V] softmax; weights: [L] | None (a weighted mean);
    excluded: ([X] rows, [X] ids) | None, classes left out of those rows' softmax (never a positive
    of that row).
    Returns a scalar. Exact but O(B·V·d): for small corpora, and as the reference the sampled loss
    estimates.
    """
    _check_positives(positives)
    logits = user_vectors @ _full_table(item_embeddings).T  # [B, V]
    if item_bias is not None:
        logits = logits + _full_table(item_bias)  # [B, V]
    logits = logits.index_fill(1, logits.new_zeros(1, dtype=torch.long), float("-inf"))  # id 0
    if excluded is not None:
        logits = logits.index_put(excluded, logits.new_full((), float("-inf")))  # [B, V]
    if rows is None and weights is None:
        return F.cross_entropy(logits, positives)
    rows = torch.arange(len(positives), device=positives.device) if rows is None else rows
    log_p = torch.log_softmax(logits, dim=1)  # [B, V]
    return _weighted_mean(-log_p[rows, positives], weights)  # [L] -> scalar


def log_q_correction(logits: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """logits - log_q: importance-weights sampled classes by 1 / (expected count).

    logits: [B, N]; log_q: [N] (shared negatives) or [B, N]. Returns [B, N].
    With log_q = log(N · q_j), Σ_samples exp(logit - log_q) is an unbiased estimate of
    Σ_j exp(logit_j) over the whole corpus (Bengio & Senécal 2008; Jean et al. 2015).
    """
    return logits - log_q.to(logits.dtype)


def remove_accidental_hits(
    logits: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor
) -> torch.Tensor:
    """Set logits[b, n] = -inf, in place, where negatives[n] == positives[b]; returns ``logits``.

    logits: [B, N]; positives: [B]; negatives: [N]. A sampled negative that is the row's own
    positive would otherwise push the model away from the right answer. Only the few hit positions
    are written (found by ``excluded_positions``): a copy of the [B, N] logits costs about as much
    as the matmul that made them.
    """
    rows = torch.arange(len(positives), device=positives.device)
    return logits.index_put_(excluded_positions(rows, positives, negatives), logits.new_tensor(float("-inf")))


def exclusion_mask(
    excluded_rows: torch.Tensor, excluded_ids: torch.Tensor, negatives: torch.Tensor, num_rows: int
) -> torch.Tensor:
    """[num_rows, N] bool, True where negatives[n] is one of row r's excluded ids.

    excluded_rows, excluded_ids: [X] (row, id) pairs; negatives: [N], duplicates allowed. Sorting
    the negatives finds every draw of an excluded id without an [X, N] comparison.
    """
    mask = torch.zeros(num_rows, len(negatives), dtype=torch.bool, device=negatives.device)
    mask[excluded_positions(excluded_rows, excluded_ids, negatives)] = True
    return mask


def excluded_positions(
    excluded_rows: torch.Tensor, excluded_ids: torch.Tensor, negatives: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows [M], columns [M]) of every entry ``exclusion_mask`` sets, one per draw of an id."""
    order = torch.argsort(negatives)
    sorted_negatives = negatives[order]  # [N]
    first = torch.searchsorted(sorted_negatives, excluded_ids)  # [X]
    counts = torch.searchsorted(sorted_negatives, excluded_ids, right=True) - first  # [X] draws of each
    rows = torch.repeat_interleave(excluded_rows, counts)  # [M] one per masked entry
    starts = torch.repeat_interleave(first - (torch.cumsum(counts, 0) - counts), counts)
    return rows, order[starts + torch.arange(len(rows), device=negatives.device)]


_mask_accidental_hits = remove_accidental_hits  # the loss's keyword argument shadows the name


def sampled_softmax_loss(
    user_vectors: torch.Tensor,
    item_embeddings: Table,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    log_q_negatives: torch.Tensor,
    log_q_positives: torch.Tensor | None = None,
    remove_accidental_hits: bool = True,
    item_bias: Table | None = None,
    weights: torch.Tensor | None = None,
    excluded: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean sampled-softmax cross-entropy over [positive] + N shared negatives (paper §3.1).

    user_vectors: [B, d]; item_embeddings: [V, d]; positives: [B]; negatives: [N] (drawn with
    replacement, duplicates kept: each draw is one importance-sampling term); log_q_negatives: [N]
    = log(N · q) from ``NegativeSampler``; log_q_positives: [B] | None; item_bias: [V] | None;
    weights: [B] | None (a weighted mean); excluded: [B, N] bool | None, negatives left out of
    that row's softmax (``exclusion_mask``). Returns a scalar.

    Log-Q convention. Negatives are always corrected by their log expected count. Two pairings of
    the other two choices make the loss and its gradient converge to the full softmax's as N grows
    (tests/models/test_losses.py measures both):
    - log_q_positives=None with accidental hits removed (the default): the positive keeps its raw
      logit, so exp(o_t) + Σ_n exp(o_n - log N q_n) over the non-hit negatives is an unbiased
      estimate of the full partition function Σ_j exp(o_j) (Bengio & Senécal 2008).
    - log_q_positives=``sampler.log_q(positives)`` with remove_accidental_hits=False: the positive
      is treated as one more sampled class and corrected by its expected count, as in Jean et al.
      (2015); the sampled copies of the positive then carry its share of the partition function,
      and the loss converges up to the constant log(N q_t).
    TensorFlow's ``tf.nn.sampled_softmax_loss`` defaults to correcting the positive *and* removing
    hits; with both, the positive's share shrinks like 1 / (N q_t) and the limit is a softmax whose
    denominator leaves the positive out, not the full softmax.
    """
    _check_positives(positives)
    positive_embeddings = _lookup(item_embeddings, positives)  # [B, d]
    negative_embeddings = _lookup(item_embeddings, negatives)  # [N, d]
    positive_logits = (user_vectors * positive_embeddings).sum(-1)  # [B]
    # Every per-negative term (bias, -log Q) is one [N] row added inside the matmul: each extra
    # pass over the [B, N] logits costs about as much as the matmul's own output on 2 cores.
    offset = -log_q_negatives.to(user_vectors.dtype)  # [N]
    if item_bias is not None:
        positive_logits = positive_logits + _lookup(item_bias, positives)
        offset = offset + _lookup(item_bias, negatives)
    negative_logits = torch.addmm(offset[None, :], user_vectors, negative_embeddings.T)  # [B, N]
    if log_q_positives is not None:
        positive_logits = log_q_correction(positive_logits, log_q_positives)  # [B]
    if remove_accidental_hits:  # in place: addmm keeps no output for its backward
        negative_logits = _mask_accidental_hits(negative_logits, positives, negatives)
    if excluded is not None:
        negative_logits = negative_logits.masked_fill(excluded, float("-inf"))  # [B, N]
    partition = torch.logaddexp(positive_logits, torch.logsumexp(negative_logits, dim=1))  # [B]
    return _weighted_mean(partition - positive_logits, weights)


def weighted_logistic_loss(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Σ_i w_i · BCE(logit_i, label_i) / Σ_i w_i: the ranker's loss (paper §4.2).

    logits: [B]; labels: [B] 0/1 (clicked); weights: [B] >= 0, watch time for clicked impressions
    and 1 for the others (``watch_time_weights``). Normalising by the sum of weights rather than by
    B keeps the loss's scale independent of the unit of watch time and of the batch's click rate.
    With these weights the fitted odds exp(logit) estimate Σ T_i / (N - k) ≈ expected watch time.
    """
    if not (logits.shape == labels.shape == weights.shape):
        raise ValueError(
            f"logits, labels, weights must have one shape, got "
            f"{tuple(logits.shape)}, {tuple(labels.shape)}, {tuple(weights.shape)}"
        )
    weights = weights.to(logits.dtype)
    if bool((weights < 0).any()) or not bool(weights.sum() > 0):
        raise ValueError("weights must be non-negative with a positive sum")
    per_example = F.binary_cross_entropy_with_logits(
        logits, labels.to(logits.dtype), reduction="none"
    )  # [B]
    return (weights * per_example).sum() / weights.sum()


def page_softmax_loss(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, pages: torch.Tensor
) -> torch.Tensor:
    """Σ_i w_i · -log softmax_i over {i} ∪ negatives of page(i), / Σ_i w_i, over the positives i.

    logits, labels (0/1), weights, pages [B]. Each positive competes only with the negatives shown
    beside it (conditional logit): a constant added to one page's logits leaves the loss
    unchanged, so the model spends nothing on how many positives a user's page holds, which
    ranking one user's candidates never needs. A positive whose page has no negative in the batch
    costs 0; a batch without positives gives 0 (still in the graph).
    """
    if not (logits.shape == labels.shape == weights.shape == pages.shape):
        raise ValueError("logits, labels, weights and pages must have one shape")
    page = torch.unique(pages, return_inverse=True)[1]  # [B] 0..P-1
    positive = labels.bool()
    negative_logits = logits.masked_fill(positive, float("-inf"))  # [B]
    count = int(page.max()) + 1 if len(page) else 0
    shift = torch.full((count,), float("-inf"), dtype=logits.dtype).scatter_reduce(
        0, page, negative_logits.detach(), "amax")  # [P] a shift only: the loss does not depend on it
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    total = torch.zeros(count, dtype=logits.dtype).index_add(0, page, torch.exp(negative_logits - shift[page]))
    negatives_lse = torch.log(total) + shift  # [P] -inf where a page has no negative
    positive_logits = logits[positive]  # [Pos]
    w = weights[positive].to(logits.dtype)
    if not len(positive_logits) or not bool(w.sum() > 0):
        return 0.0 * logits.sum()
    losses = torch.logaddexp(positive_logits, negatives_lse[page[positive]]) - positive_logits
    return (w * losses).sum() / w.sum()


def watch_time_weights(labels: torch.Tensor, watch_time: torch.Tensor) -> torch.Tensor:
    """Weights of ``weighted_logistic_loss``: watch time where labels == 1, else 1. [B] -> [B]."""
    watch_time = watch_time if watch_time.is_floating_point() else watch_time.float()
    return torch.where(labels.bool(), watch_time, torch.ones_like(watch_time))
