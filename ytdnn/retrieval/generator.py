"""The candidate generator as a source (paper §3, fig. 2): top k by u · v_item + b_item.

The softmax of the generator scores an item by the inner product of the user vector u and the
item vector v plus the item's bias b. Nearest-neighbour search knows only inner products, so the
bias rides as one more dimension: items are [v, b], queries [u, 1], and [u, 1] · [v, b] = u·v + b.
The functions below are the one place of the package where that is coded; whatever builds or
searches an item index of a candidate model, or scores items with it, goes through them:

    item_table(model)       (v [V, d], b [V] or None) numpy: every id's vector and bias
    item_matrix(model)      [V - 1, d (+ 1)] the index rows [v, b] of ids 1..V-1
    index_width(model)      d (+ 1): how wide those rows (and the queries) are
    queries(u, model)       [B, d (+ 1)]: [u, 1]; ``bias_slot=0`` gives [u, 0] (item-to-item: u·v)
    logits(u, model)        torch [B, V]: u · v + b over every id, column 0 included (the torch
                            arithmetic of the model's own ``scores``: exact corpus ranks agree)

A ``GeneratorSource`` is saved as the generator's own model directory (``CandidateGenerator.save``):
it has no state of its own besides the fitted generator.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ytdnn.features import NotFittedError
from ytdnn.models.layers import eval_mode
from ytdnn.retrieval.base import Context, check_exclude, check_items, check_k
from ytdnn.samples.candidate import assemble_batch

if TYPE_CHECKING:  # candidates.py imports the functions below from here: no import cycle
    from ytdnn.candidates import CandidateGenerator
    from ytdnn.models.candidate import CandidateModel

BATCH_USERS = 4096  # user vectors per forward pass
SCORE_BLOCK = 256  # users per block when gathering item vectors in ``score``


@torch.no_grad()
def item_table(model: CandidateModel) -> tuple[np.ndarray, np.ndarray | None]:
    """(v float32 [V, d], b float32 [V] or None): every id's output vector and its bias when the
    model has item biases; row 0 is the padding. Views of the model's weights (no copy): read only."""
    v = model.item_vectors().detach().numpy()  # [V, d]
    bias = model.item_biases()
    return v, None if bias is None else bias.detach().numpy()  # [V]


def nearest_items(index, model: CandidateModel, rows: np.ndarray, k: int,
                  vectors: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The k items nearest each item row [B] (> 0) by inner product in the output space v (what
    the softmax scores with), each itself left out, through ``index``: (scores [B, k], ids [B, k],
    0 = none). vectors: the model's v [V, d] (``item_table``) when the caller holds it."""
    v = item_table(model)[0] if vectors is None else vectors
    query = queries(v[rows], model, bias_slot=0.0)  # [B, d (+ 1)]: the index holds [v, b]; 0 leaves v_i . v_j
    return index.search(query, k, exclude=[np.array([row]) for row in rows])


def index_width(model: CandidateModel) -> int:
    """d (+ 1): the width of ``item_matrix`` rows and of ``queries``."""
    return int(model.item_vectors().shape[1]) + (model.item_bias is not None)


def item_matrix(model: CandidateModel) -> np.ndarray:
    """float32 [V - 1, d (+ 1)], a copy: row i - 1 is item id i's vector v_i, with its bias b_i
    appended when the model has item biases (id 0, padding, is left out)."""
    v, bias = item_table(model)
    if bias is None:
        return np.array(v[1:], dtype=np.float32)  # [V - 1, d]
    return np.concatenate([v[1:], bias[1:, None]], axis=1).astype(np.float32, copy=False)  # [V - 1, d + 1]


def queries(vectors: np.ndarray, model: CandidateModel, bias_slot: float = 1.0) -> np.ndarray:
    """User vectors u [B, d] -> float32 [B, d (+ 1)]: [u, 1] when the model has item biases, so
    that [u, 1] · ``item_matrix`` rows = u · v + b. ``bias_slot=0``: [u, 0], whose inner
    products with the rows are u · v alone (an item vector as the query: nearest items)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if model.item_bias is not None:
        slot = np.full((len(vectors), 1), bias_slot, np.float32)
        vectors = np.concatenate([vectors, slot], axis=1)
    return np.ascontiguousarray(vectors)


@torch.no_grad()
def logits(user_vectors: torch.Tensor, model: CandidateModel) -> torch.Tensor:
    """u [B, d] -> float32 [B, V]: u · v + b for every id, column 0 (padding) included, computed
    as the model's softmax computes them (one matmul, then the bias added in place)."""
    out = user_vectors @ model.item_vectors().T  # [B, V]
    bias = model.item_biases()
    if bias is not None:
        out += bias
    return out


class GeneratorSource:
    """A fitted ``CandidateGenerator`` behind the ``Retriever`` protocol.

    encode(ctx) -> float32 [B, d] user vectors at serving time (example age 0), from the history
    the context ends at; retrieve searches ``generator.index_`` (built on first use when the
    generator has none); score is u · v + b. Ties among the k returned go to the lower id; which
    of several items tied at the k-th score is returned is the index's choice.
    """

    name = "generator"

    def __init__(self, generator: CandidateGenerator):
        if getattr(generator, "model_", None) is None:
            raise NotFittedError("GeneratorSource needs a fitted CandidateGenerator: call fit() (or load) first")
        self.generator = generator
        self.num_items = int(generator.featurizer_.num_items)
        self._items: np.ndarray | None = None  # item_matrix, computed on first score()

    # ---- state --------------------------------------------------------------------------------

    @torch.no_grad()
    def encode(self, ctx: Context) -> np.ndarray:
        """The users' vectors u for their histories up to ``ctx.watch_end`` / ``ctx.token_end``
        -> float32 [B, d]. An unordered log's bag is the whole history (as ``serving_batch``)."""
        g = self.generator
        model = eval_mode(g.model_)
        s, cfg = ctx.streams, g.example_cfg
        starts = s.watch_offsets[ctx.rows]  # [B]
        if not s.ordered:  # no "most recent": the bag is every watch of the history
            cfg = cfg.replace(max_watch_history=max(int((ctx.watch_end - starts).max(initial=1)), 1))
        age = g.featurizer_.serving_age
        out = []
        for i in range(0, len(ctx), BATCH_USERS):
            part = slice(i, i + BATCH_USERS)
            batch = assemble_batch(s, cfg, ctx.rows[part], s.watch_items, ctx.watch_end[part],
                                   ctx.token_end[part], np.full(len(ctx.rows[part]), age, np.float32), None)
            out.append(model.user_vector(batch).numpy())
        if not out:
            return np.zeros((0, g.model_cfg.output_dim), np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)

    # ---- retrieval ----------------------------------------------------------------------------

    def retrieve(self, state: np.ndarray, k: int, exclude: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """state [B, d] -> (ids int64 [B, k], scores float32 [B, k]) through the generator's index."""
        k = check_k(k)
        exclude = check_exclude(exclude, len(state))
        g = self.generator
        if getattr(g, "index_", None) is None:
            g.build_index()
        q = queries(state, g.model_)  # [B, d (+ 1)]
        if g.index_.dim_ != q.shape[1]:
            raise ValueError(f"the generator's index holds vectors of width {g.index_.dim_}, its "
                             f"model's queries are {q.shape[1]} wide: rebuild the index")
        scores, ids = g.index_.search(q, k, exclude=exclude)  # padded with -inf / -1
        ids = np.where(ids > 0, ids, 0).astype(np.int64)
        scores = np.where(ids > 0, scores, -np.inf).astype(np.float32)
        order = np.lexsort((ids, -scores), axis=1)  # best first, ties to the lower id
        return np.take_along_axis(ids, order, axis=1), np.take_along_axis(scores, order, axis=1)

    def score(self, state: np.ndarray, items: np.ndarray) -> np.ndarray:
        """state [B, d], items int64 [B, n] -> float32 [B, n] = u · v + b; id 0 -> -inf."""
        items = check_items(items, self.num_items, len(state))
        if self._items is None:
            self._items = item_matrix(self.generator.model_)
        q = queries(state, self.generator.model_)  # [B, d (+ 1)]
        out = np.empty(items.shape, np.float32)
        for i in range(0, len(items), SCORE_BLOCK):
            block = items[i : i + SCORE_BLOCK]
            vectors = self._items[np.maximum(block, 1) - 1]  # [b, n, d (+ 1)]
            out[i : i + SCORE_BLOCK] = np.einsum("bd,bnd->bn", q[i : i + SCORE_BLOCK], vectors)
        out[items == 0] = -np.inf
        return out

    # ---- model directory ----------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """The generator's model directory (config.json of kind "ytdnn.candidates")."""
        return self.generator.save(directory)

    @classmethod
    def load(cls, directory: str | Path) -> GeneratorSource:
        from ytdnn.candidates import CandidateGenerator  # lazy: candidates may import this module

        return cls(CandidateGenerator.load(directory))
