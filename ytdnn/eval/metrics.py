"""Top-K ranking metrics: one implementation for every protocol.

Definitions (per evaluated user u with test items T_u, top-K list L_u; then averaged over the
users with at least one test item; a user with |T_u| = 0 is not evaluated):

- HR@K       = 1 if any item of T_u is in L_u, else 0.
- Recall@K   = |T_u ∩ L_u| / |T_u|. Dividing by |T_u| (not min(|T_u|, K)) is the peers'
               definition: on ml-1m P-RANDOM it caps an oracle at Recall@20 = 0.757, the figure
               they quote. With one test item per user (P-TEMPORAL) Recall@K = HR@K.
- NDCG@K     = DCG@K / IDCG@K with binary relevance, DCG@K = sum_{i<=K} rel_i / log2(i + 1),
               IDCG@K the DCG of a perfect list, which holds min(|T_u|, K) relevant items.
               (It reproduces the peers' EASE NDCG@20 = 0.42 on ml-1m P-RANDOM next to
               Recall@20 = 0.276; an IDCG over all |T_u| items would give 0.30.)
- MAP@K      = AP@K averaged, AP@K = sum_{i<=K} precision@i * rel_i / min(|T_u|, K).
- Coverage@K = share of the catalogue that appears in at least one evaluated user's top K.

Ranking: excluded items score -inf; ties are broken towards the lower item index, so results do
not depend on torch.topk's unspecified tie order. Positions that only -inf items could fill are
returned as -1 (never a hit).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ytdnn.eval.interactions import Interactions
from ytdnn.eval.protocols import Stage

METRICS = ("HR", "Recall", "NDCG", "MAP", "Coverage")
ScoreFn = Callable[[np.ndarray], "torch.Tensor | np.ndarray"]


def top_k(scores: torch.Tensor | np.ndarray, k: int) -> torch.Tensor:
    """scores: [B, I] -> item indices [B, min(k, I)], best first, ties to the lower index.

    -inf entries are only taken when nothing else is left, and come back as -1.
    """
    scores = torch.as_tensor(scores)
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN")
    k = min(k, scores.shape[1])
    values, idx = torch.topk(scores, k, dim=1)  # [B, k]; the order among ties is unspecified
    kth = values[:, -1:]  # [B, 1] the K-th best score
    # rows where more than k items reach the K-th score: which tied items get in is a choice
    crowded = ((scores >= kth).sum(dim=1) > k).nonzero().squeeze(1)
    if len(crowded):
        idx[crowded] = _lowest_tied(scores[crowded], kth[crowded], k)
    idx = idx.sort(dim=1).values  # ascending index, so the stable sort below breaks ties by it
    values = scores.gather(1, idx)
    order = torch.sort(values, dim=1, descending=True, stable=True).indices
    idx, values = idx.gather(1, order), values.gather(1, order)
    return idx.masked_fill(values == float("-inf"), -1)


def _lowest_tied(scores: torch.Tensor, kth: torch.Tensor, k: int) -> torch.Tensor:
    """scores [R, I], kth [R, 1] -> [R, k]: all items above kth, then the lowest-index ties."""
    above = scores > kth
    tied = scores == kth
    room = k - above.sum(dim=1, keepdim=True)
    chosen = above | (tied & (torch.cumsum(tied, dim=1) <= room))  # exactly k per row
    return chosen.nonzero()[:, 1].view(len(scores), k)


def _targets_mask(
    top: torch.Tensor, targets: Sequence[Iterable[int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """top [B, K], B target lists -> (relevance [B, K] float, number of targets [B] float)."""
    lists = [np.unique(np.asarray(list(t), dtype=np.int64)) for t in targets]
    if len(lists) != len(top):
        raise ValueError(f"{len(top)} ranked lists but {len(lists)} target lists")
    lengths = np.array([len(t) for t in lists], dtype=np.int64)
    flat = np.concatenate(lists) if lists else np.zeros(0, np.int64)
    width = int(max(top.max().item() if top.numel() else 0, flat.max() if len(flat) else 0)) + 1
    mask = torch.zeros((len(lists), width + 1), dtype=torch.bool)  # last column: the -1 slot
    mask[torch.from_numpy(np.repeat(np.arange(len(lists)), lengths)), torch.from_numpy(flat)] = True
    return _relevance(top, mask), torch.from_numpy(lengths).float()


def _relevance(top: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """top [B, K] (-1 = empty), target_mask [B, >= I + 1] bool -> relevance [B, K] float."""
    # -1 indexes the mask's last column, which is never a target
    return target_mask.gather(1, top.where(top >= 0, target_mask.shape[1] - 1)).float()


def _discounts(k: int) -> torch.Tensor:
    return 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float64))  # [k]: 1/log2(i + 1)


def _per_user(rel: torch.Tensor, num_targets: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    """rel: [B, >= k] relevance of the ranked lists; num_targets: [B] -> {metric: [B] float64}."""
    rel = rel[:, :k].double()
    n = num_targets.double()
    hits = rel.sum(dim=1)
    ideal = torch.minimum(n, torch.tensor(float(rel.shape[1]))).clamp(min=1)  # min(|T_u|, K)
    disc = _discounts(rel.shape[1])
    idcg = torch.cumsum(disc, 0)[ideal.long() - 1]
    precision = torch.cumsum(rel, dim=1) / torch.arange(1, rel.shape[1] + 1, dtype=torch.float64)
    return {
        "HR": (hits > 0).double(),
        "Recall": hits / n.clamp(min=1),
        "NDCG": (rel * disc).sum(dim=1) / idcg,
        "MAP": (precision * rel).sum(dim=1) / ideal,
    }


def hit_rate_at_k(top, targets, k: int) -> np.ndarray:
    """top: [B, >= k] ranked item indices; targets: B lists of item indices -> HR@k per user [B]."""
    return _per_user(*_targets_mask(torch.as_tensor(top), targets), k)["HR"].numpy()


def recall_at_k(top, targets, k: int) -> np.ndarray:
    """Hits in the top k / number of the user's targets, per user [B]."""
    return _per_user(*_targets_mask(torch.as_tensor(top), targets), k)["Recall"].numpy()


def ndcg_at_k(top, targets, k: int) -> np.ndarray:
    """Binary-relevance NDCG@k per user [B], ideal DCG over min(|targets|, k) items."""
    return _per_user(*_targets_mask(torch.as_tensor(top), targets), k)["NDCG"].numpy()


def map_at_k(top, targets, k: int) -> np.ndarray:
    """AP@k per user [B], normalised by min(|targets|, k)."""
    return _per_user(*_targets_mask(torch.as_tensor(top), targets), k)["MAP"].numpy()


def coverage_at_k(top, num_items: int, k: int) -> float:
    """Share of the num_items catalogue items found in at least one row of top[:, :k]."""
    items = torch.as_tensor(top)[:, :k].flatten()
    return len(torch.unique(items[items >= 0])) / num_items


def _score_batch(score_fn: ScoreFn, users: np.ndarray, num_items: int) -> torch.Tensor:
    scores = score_fn(users)
    # on the CPU, where the targets live; a copy, because we write -inf into it
    scores = torch.as_tensor(scores).detach().to("cpu", torch.float32, copy=True)
    if scores.shape != (len(users), num_items):
        raise ValueError(
            f"score function returned {tuple(scores.shape)}, expected {(len(users), num_items)}"
        )
    return scores


def _exclude(scores: torch.Tensor, exclude: Interactions, users: np.ndarray) -> None:
    batch_row, items = exclude.batch_pairs(users)
    scores[torch.from_numpy(batch_row), torch.from_numpy(items)] = float("-inf")


def evaluate(
    score_fn: ScoreFn | object,
    stage: Stage,
    ks: Sequence[int] = (10, 50, 100),
    metrics: Sequence[str] = ("HR", "Recall", "NDCG"),
    batch_size: int = 1024,
    progress: bool = False,
) -> dict[str, float]:
    """Rank the whole catalogue for every user with a target and average the metrics.

    score_fn(user_idx [B]) -> scores [B, num_items] (torch or numpy), or an object with such a
    ``score`` method (a fitted baseline). The stage's excluded items are set to -inf first.
    Returns {"HR@10": ..., "NDCG@10": ...} for every metric and k, metrics outer, k inner.
    """
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {list(METRICS)}")
    score_fn = getattr(score_fn, "score", score_fn)
    users = stage.eval_users()
    max_k = min(max(ks), stage.num_items)
    sums = {(m, k): 0.0 for m in metrics if m != "Coverage" for k in ks}
    seen = {k: torch.zeros(stage.num_items + 1, dtype=torch.bool) for k in ks}  # last: the -1 slot
    batches = range(0, len(users), batch_size)
    for start in tqdm(batches, desc=f"evaluate ({stage.name})", disable=not progress, leave=False):
        batch = users[start : start + batch_size]
        scores = _score_batch(score_fn, batch, stage.num_items)
        _exclude(scores, stage.exclude, batch)
        top = top_k(scores, max_k)  # [B, max_k]
        rel = _relevance(top, _padded(stage.target.dense(batch, torch.bool)))
        num_targets = torch.from_numpy(stage.target.counts_per_user()[batch]).float()
        for k in ks:
            for name, values in _per_user(rel, num_targets, k).items():
                if (name, k) in sums:
                    sums[(name, k)] += values.sum().item()
            seen[k][top[:, :k].flatten()] = True  # -1 lands in the last slot
    out = {}
    for m in metrics:
        for k in ks:
            if m == "Coverage":
                out[f"{m}@{k}"] = seen[k][:-1].sum().item() / stage.num_items
            else:
                out[f"{m}@{k}"] = sums[(m, k)] / len(users) if len(users) else float("nan")
    return out


def scorer_from_lists(item_ids: np.ndarray, users: np.ndarray, lists: Sequence[np.ndarray]) -> ScoreFn:
    """A score_fn for ``evaluate`` that reproduces ranked lists (a served top k, say).

    item_ids [I]: the split's catalogue (``Split.item_ids``, sorted); users [U] dense user indices
    and lists U arrays of original item ids, best first. Items of a list outside the catalogue,
    and every item not in a list, score -inf.
    """
    item_ids = np.asarray(item_ids)
    position = {int(u): i for i, u in enumerate(np.asarray(users).tolist())}
    columns = []
    for items in lists:
        items = np.asarray(items, dtype=item_ids.dtype)
        col = np.minimum(np.searchsorted(item_ids, items), max(len(item_ids) - 1, 0))
        known = item_ids[col] == items if len(item_ids) else np.zeros(len(items), bool)
        columns.append((col[known], np.flatnonzero(known)))

    def score(batch: np.ndarray) -> torch.Tensor:
        out = torch.full((len(batch), len(item_ids)), float("-inf"))
        for b, u in enumerate(np.asarray(batch).tolist()):
            col, place = columns[position[u]]
            out[b, torch.from_numpy(col)] = -torch.from_numpy(place).float()  # first = best
        return out

    return score


def _padded(mask: torch.Tensor) -> torch.Tensor:
    """[B, I] -> [B, I + 1] with a False column for the -1 (empty) slot."""
    return torch.cat([mask, torch.zeros((len(mask), 1), dtype=torch.bool)], dim=1)


def weighted_per_user_loss(
    scores: np.ndarray, clicked: np.ndarray, watch_time: np.ndarray, pages: np.ndarray
) -> float:
    """Paper table 1: the share of watch time in a page's positive/negative pairs ordered wrongly.

    scores, clicked, watch_time, pages: [N] impressions (pages: one user's page each). Every pair
    (clicked p, unclicked n) on one page weighs p's watch time; it is mispredicted when n scores
    higher than p, and half mispredicted on a tie. The result is the mispredicted weight over the
    weight of all pairs, summed over every page (NaN when there is no pair with watch time).
    """
    scores, clicked = np.asarray(scores, np.float64), np.asarray(clicked, bool)
    watch_time, pages = np.asarray(watch_time, np.float64), np.asarray(pages)
    if not (scores.shape == clicked.shape == watch_time.shape == pages.shape) or scores.ndim != 1:
        raise ValueError("scores, clicked, watch_time and pages must be 1-d arrays of one length")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    page = np.unique(pages, return_inverse=True)[1].astype(np.int64)
    rank = np.unique(scores, return_inverse=True)[1].astype(np.int64)  # dense: ties share a rank
    span = int(rank.max(initial=0)) + 1
    negatives = np.sort(page[~clicked] * span + rank[~clicked])  # [Nn] sorted by (page, score)
    p_page, p_code = page[clicked], page[clicked] * span + rank[clicked]
    page_end = np.searchsorted(negatives, (p_page + 1) * span, side="left")
    above = page_end - np.searchsorted(negatives, p_code, side="right")  # negatives scoring higher
    tied = np.searchsorted(negatives, p_code, side="right") - np.searchsorted(negatives, p_code, side="left")
    pairs = page_end - np.searchsorted(negatives, p_page * span, side="left")  # negatives on the page
    weight = watch_time[clicked]
    total = float((weight * pairs).sum())
    return float((weight * (above + 0.5 * tied)).sum()) / total if total > 0 else float("nan")
