"""Several candidate sources behind one ranker (paper §4, fig. 2): which sources nominated a
candidate, and the score and rank each gave it, are features the ranker compares them by.

    view = SourceView.of(sources, ctx, items)            # items [B, n] -> per-source features
    candidates, view = blend(sources, ctx, first)        # union of every source's top n_s

A source is a ``(Retriever, n_s)`` pair: the source and how many candidates it nominates per
request. For every candidate and every source the ranker reads:

- ``nominated``: whether the candidate is in that source's top n_s (watched items excluded);
- ``score``: the source's own score of the candidate, whether nominated or not (a real score,
  never a placeholder: "not nominated" is the flag's job; where a source cannot score an item at
  all, e.g. past EASE's item cap, the row's lowest score);
- ``rank``: its 1-based position in that source's list, n_s + 1 when not nominated.

The same function computes these for the pages the ranker learns on and for a request, so
training sees what serving sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ytdnn.retrieval.base import Context, Retriever
from ytdnn.samples.ranking import group_rows

Sources = list[tuple[Retriever, int]]


def parse_sources(text: str, default_n: int = 100) -> list[tuple[str, int]]:
    """``"ease:200,cooc"`` -> [("ease", 200), ("cooc", default_n)]; "" -> []."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, n = part.partition(":")
        if n and (not n.isdigit() or int(n) < 1):
            raise ValueError(f"a source is 'name' or 'name:n' with n >= 1, got {part!r}")
        out.append((name.strip(), int(n) if n else default_n))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise ValueError(f"a source is listed twice in {text!r}")
    return out


@dataclass
class SourceView:
    """What each of S sources says about [B, n] candidates: nominated bool [B, n, S], scores
    float64 [B, n, S], ranks float64 [B, n, S] (n_s + 1 where not nominated); names [S]."""

    names: tuple[str, ...]
    nominated: np.ndarray
    scores: np.ndarray
    ranks: np.ndarray

    @classmethod
    def of(cls, sources: Sources, ctx: Context, items: np.ndarray,
           lists: list[np.ndarray] | None = None, states: list | None = None) -> SourceView:
        """items int64 [B, n] catalogue ids (0 = empty slot) of the users in ``ctx``.
        lists: each source's top n_s ids [B, n_s] when already retrieved (else retrieved here,
        the context's watched items excluded); states: each source's ``encode(ctx)`` when
        already computed (None entries: encoded here)."""
        exclude = ctx.watched() if lists is None else None
        b, n, s = items.shape[0], items.shape[1], len(sources)
        nominated, scores = np.zeros((b, n, s), bool), np.zeros((b, n, s))
        ranks = np.zeros((b, n, s))
        for j, (source, budget) in enumerate(sources):
            state = source.encode(ctx) if states is None or states[j] is None else states[j]
            top = source.retrieve(state, budget, exclude)[0] if lists is None else lists[j]
            position = _positions(top, items)  # [B, n] 0-based, -1 = not in the list
            nominated[:, :, j] = position >= 0
            ranks[:, :, j] = np.where(position >= 0, position + 1, budget + 1)
            scores[:, :, j] = _finite(source.score(state, items).astype(np.float64))
        scores[items == 0] = 0.0  # empty slots: no candidate, nothing to score
        return cls(tuple(source.name for source, _ in sources), nominated, scores, ranks)

    def rows(self, mask: np.ndarray) -> SourceView:
        """The candidates where mask [B, n] holds, flattened: arrays [Q, S]."""
        return SourceView(self.names, self.nominated[mask], self.scores[mask], self.ranks[mask])


def blend(sources: Sources, ctx: Context, lists: list[np.ndarray | None] | None = None,
          states: list | None = None) -> tuple[np.ndarray, SourceView]:
    """The union of every source's top n_s for the users of ``ctx``, watched items excluded:
    -> (candidates int64 [B, N] catalogue ids, 0 = empty slot, SourceView [B, N, S]).

    The candidates come in source order, each list best first, duplicates dropped. lists: a
    source's top list [B, n_s] where already retrieved (e.g. the generator's, by its index), None
    for the sources to ask here; states: a source's ``encode(ctx)`` where already computed.
    """
    exclude = ctx.watched()
    lists = list(lists) if lists is not None else [None] * len(sources)
    states = list(states) if states is not None else [None] * len(sources)
    for j, (source, budget) in enumerate(sources):
        if states[j] is None:
            states[j] = source.encode(ctx)
        if lists[j] is None:
            lists[j] = source.retrieve(states[j], budget, exclude)[0]
    candidates = merge_lists(np.concatenate(lists, axis=1)) if lists else np.zeros((len(ctx), 0), np.int64)
    return candidates, SourceView.of(sources, ctx, candidates, lists, states)


def _finite(scores: np.ndarray) -> np.ndarray:
    """[B, n] scores with those a source cannot give (-inf: an item past EASE's cap, an empty
    slot) replaced by the row's lowest real score, as the generator's score of an item unknown
    to it is (samples.ranking.candidate_features); 0 in a row with none."""
    real = np.isfinite(scores)
    lowest = np.where(real, scores, np.inf).min(axis=1, keepdims=True)
    return np.where(real, scores, np.where(np.isfinite(lowest), lowest, 0.0))


def merge_lists(ids: np.ndarray) -> np.ndarray:
    """[B, m] ids -> [B, N] the distinct non-zero ids of each row in first-seen order, padded with 0."""
    b = len(ids)
    order = np.argsort(ids, axis=1, kind="stable")
    ranked = np.take_along_axis(ids, order, axis=1)
    repeat = np.zeros_like(ranked, bool)
    repeat[:, 1:] = ranked[:, 1:] == ranked[:, :-1]
    keep = np.zeros_like(ids, bool)
    np.put_along_axis(keep, order, ~repeat, axis=1)
    keep &= ids > 0
    width = int(keep.sum(axis=1).max(initial=0))
    out = np.zeros((b, width), np.int64)
    slot = np.cumsum(keep, axis=1) - 1
    rows = np.broadcast_to(np.arange(b)[:, None], ids.shape)
    out[rows[keep], slot[keep]] = ids[keep]
    return out


def _positions(top: np.ndarray, items: np.ndarray) -> np.ndarray:
    """top [B, k] ids (0 = empty), items [B, n] -> [B, n] each item's index in its row of top, -1
    where absent (and for id 0)."""
    b, k = top.shape
    order = np.argsort(top, axis=1, kind="stable")
    ranked = np.take_along_axis(top, order, axis=1)
    if k == 0:
        return np.full(items.shape, -1, np.int64)
    width = int(max(top.max(initial=0), items.max(initial=0))) + 1
    keys = (np.arange(b)[:, None] * width + ranked).ravel()
    queries = np.arange(b)[:, None] * width + items
    at = np.clip(np.searchsorted(keys, queries), 0, len(keys) - 1)
    found = (keys[at] == queries) & (items > 0)
    return np.where(found, order.ravel()[at], -1)


def view_of_rows(sources: Sources, streams, users: np.ndarray, watch_end: np.ndarray, token_end: np.ndarray,
                 now: np.ndarray, items: np.ndarray, contexts_per_chunk: int = 512) -> SourceView:
    """``SourceView.of`` for Q (user, history end, item) rows, e.g. the impressions a ranker learns
    from: rows sharing a context (one page) are asked together. users, watch_end, token_end, now,
    items [Q] -> SourceView of arrays [Q, S]."""
    first, context = group_rows(users, watch_end, token_end)  # [C], [Q]
    order = np.argsort(context, kind="stable")
    counts = np.bincount(context, minlength=len(first))
    slot = np.empty(len(context), np.int64)
    slot[order] = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
    s = len(sources)
    nominated, scores, ranks = np.zeros((len(users), s), bool), np.zeros((len(users), s)), np.zeros((len(users), s))
    for c0 in range(0, len(first), contexts_per_chunk):
        ctx_rows = first[c0 : c0 + contexts_per_chunk]
        ctx = Context(streams, users[ctx_rows], watch_end[ctx_rows], token_end[ctx_rows], now[ctx_rows])
        mine = (context >= c0) & (context < c0 + len(ctx_rows))
        local = context[mine] - c0
        matrix = np.zeros((len(ctx_rows), int(counts[c0 : c0 + len(ctx_rows)].max(initial=1))), np.int64)
        matrix[local, slot[mine]] = items[mine]
        view = SourceView.of(sources, ctx, matrix)
        nominated[mine] = view.nominated[local, slot[mine]]
        scores[mine] = view.scores[local, slot[mine]]
        ranks[mine] = view.ranks[local, slot[mine]]
    return SourceView(tuple(source.name for source, _ in sources), nominated, scores, ranks)
