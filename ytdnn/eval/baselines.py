"""Baselines every model is compared with: popularity and EASE (Steck, WWW 2019).

Both follow the estimator convention: ``fit(interactions, num_users, num_items)`` computes the
fitted attributes (ending in ``_``) and returns ``self``; ``score(user_idx [B]) -> [B, num_items]``.
Hyperparameters are chosen with ``choose_on_validation`` (validation stage only) and the reported
figure comes from ``refit_and_test`` (train + valid, test stage).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ytdnn.config import Config
from ytdnn.eval.interactions import Interactions
from ytdnn.eval.metrics import evaluate
from ytdnn.eval.protocols import Split
from ytdnn.features import check_fitted

L2_GRID = (10.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0)


def _check_catalogue(interactions: Interactions, num_users: int, num_items: int) -> None:
    if (interactions.num_users, interactions.num_items) != (num_users, num_items):
        raise ValueError(
            f"interactions are over {interactions.num_users} x {interactions.num_items}, "
            f"not {num_users} x {num_items}"
        )


class Popularity:
    """Scores every item by its number of users in the fit set; the same list for everybody."""

    def fit(self, interactions: Interactions, num_users: int, num_items: int) -> Popularity:
        _check_catalogue(interactions, num_users, num_items)
        self.item_counts_ = torch.from_numpy(interactions.counts_per_item()).float()  # [I]
        return self

    def score(self, user_idx: np.ndarray) -> torch.Tensor:
        """user_idx: [B] -> [B, I], the training counts repeated per user."""
        check_fitted(self, "item_counts_")
        return self.item_counts_.expand(len(user_idx), -1)


@dataclass(frozen=True)
class EASEConfig(Config):
    l2: float = 500.0  # lambda; chosen per dataset from L2_GRID on the validation stage
    dtype: str = "float64"  # the inverse of the Gram matrix; float32 is faster, a little less exact
    chunk_users: int = 4096  # users per block when accumulating X^T X, to bound memory

    def validate(self) -> None:
        if self.l2 <= 0:
            raise ValueError(f"l2 must be > 0, got {self.l2}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")


def _gram(interactions: Interactions, dtype: torch.dtype, chunk_users: int) -> torch.Tensor:
    """X^T X [I, I] for the binary user x item matrix X, a block of users at a time.

    X^T is taken sparse: the product costs (pairs x items) rather than (users x items^2).
    """
    num_items = interactions.num_items
    gram = torch.zeros((num_items, num_items), dtype=dtype)
    for start in range(0, interactions.num_users, chunk_users):
        users = np.arange(start, min(start + chunk_users, interactions.num_users))
        batch_row, items = interactions.batch_pairs(users)
        x_t = torch.sparse_coo_tensor(  # [I, b]
            torch.from_numpy(np.stack([items, batch_row])),
            torch.ones(len(items), dtype=dtype),
            (num_items, len(users)),
            check_invariants=False,  # built from valid indices just above
        )
        gram += torch.sparse.mm(x_t, interactions.dense(users, dtype))  # [I, b] @ [b, I]
    return gram


class EASE:
    """Closed-form linear item-item model: B = argmin ||X - XB||^2 + l2 ||B||^2, diag(B) = 0.

    G = X^T X + l2 I, P = G^-1, B_ij = -P_ij / P_jj, B_jj = 0. Scores are X_u B. The weights
    matrix is dense [I, I]; fine for tens of thousands of items, not for millions.
    """

    def __init__(self, cfg: EASEConfig = EASEConfig()):
        self.cfg = cfg

    def fit(self, interactions: Interactions, num_users: int, num_items: int) -> EASE:
        _check_catalogue(interactions, num_users, num_items)
        dtype = getattr(torch, self.cfg.dtype)
        gram = _gram(interactions, dtype, self.cfg.chunk_users)  # [I, I] = X^T X
        gram.diagonal().add_(self.cfg.l2)
        p = torch.linalg.inv(gram)
        weights = -p / p.diagonal()  # divides column j by P_jj
        weights.diagonal().zero_()
        self.weights_ = weights.float()  # [I, I]
        self.history_ = interactions
        return self

    def score(self, user_idx: np.ndarray) -> torch.Tensor:
        """user_idx: [B] -> [B, I] = X[user_idx] @ B."""
        check_fitted(self, "weights_")
        return self.history_.dense(np.asarray(user_idx)) @ self.weights_


@dataclass
class Selection:
    """The outcome of a validation search: the best value and every value's validation figures."""

    best: Any
    metric: str
    scores: dict[Any, dict[str, float]] = field(default_factory=dict)


def choose_on_validation(
    make_model: Callable[[Any], Any],
    grid: Sequence[Any],
    split: Split,
    metric: str,
    ks: Sequence[int] = (10, 20, 50, 100),
    metrics: Sequence[str] = ("HR", "Recall", "NDCG"),
    progress: bool = False,
) -> Selection:
    """Fit ``make_model(value)`` on train for each value; keep the best ``metric`` on valid.

    Only ``split.stage("valid")`` is touched, so the test set can never steer a choice. Ties go
    to the earlier value of the grid.
    """
    stage = split.stage("valid")
    selection = Selection(best=None, metric=metric)
    for value in tqdm(grid, desc="validation grid", disable=not progress):
        model = make_model(value).fit(stage.fit, stage.num_users, stage.num_items)
        selection.scores[value] = evaluate(model, stage, ks=ks, metrics=metrics, progress=progress)
        if metric not in selection.scores[value]:
            raise ValueError(
                f"selection metric {metric!r} is not among {list(selection.scores[value])}"
            )
        if (
            selection.best is None
            or selection.scores[value][metric] > selection.scores[selection.best][metric]
        ):
            selection.best = value
    return selection


def refit_and_test(
    model: Any,
    split: Split,
    ks: Sequence[int] = (10, 50, 100),
    metrics: Sequence[str] = ("HR", "Recall", "NDCG"),
    progress: bool = False,
) -> tuple[dict[str, float], dict[str, float]]:
    """Fit on train + valid, rank all but the user's train + valid items, score the test targets.

    Returns (metrics, seconds) with seconds {"fit": ..., "eval": ...}.
    """
    stage = split.stage("test")
    start = time.perf_counter()
    model.fit(stage.fit, stage.num_users, stage.num_items)
    fitted = time.perf_counter()
    figures = evaluate(model, stage, ks=ks, metrics=metrics, progress=progress)
    return figures, {"fit": fitted - start, "eval": time.perf_counter() - fitted}
