from typing import ClassVar

import numpy as np
import pyarrow as pa
import pytest
import torch

from ytdnn.eval.baselines import EASE, EASEConfig, Popularity, choose_on_validation, refit_and_test
from ytdnn.eval.interactions import Interactions
from ytdnn.eval.protocols import temporal_split
from ytdnn.features import NotFittedError


def matrix(dense: list[list[int]]) -> Interactions:
    x = np.array(dense)
    u, i = np.nonzero(x)
    return Interactions.from_pairs(u, i, *x.shape)


def test_popularity_ranks_by_training_counts():
    x = matrix([[1, 1, 0, 0], [0, 1, 1, 0], [0, 1, 0, 1], [0, 0, 1, 0]])
    model = Popularity().fit(x, 4, 4)
    scores = model.score(np.array([0, 3]))
    assert scores.tolist() == [[1, 3, 2, 1]] * 2
    with pytest.raises(ValueError, match="not 5 x 4"):
        Popularity().fit(x, 5, 4)


def test_ease_two_items_by_hand():
    # X = [[1, 1], [1, 0], [0, 1]], l2 = 1: G = X^T X + I = [[3, 1], [1, 3]]
    # P = G^-1 = 1/8 [[3, -1], [-1, 3]];  B_01 = -P_01 / P_11 = (1/8) / (3/8) = 1/3, diag 0
    model = EASE(EASEConfig(l2=1.0)).fit(matrix([[1, 1], [1, 0], [0, 1]]), 3, 2)
    torch.testing.assert_close(model.weights_, torch.tensor([[0.0, 1 / 3], [1 / 3, 0.0]]))
    assert model.score(np.array([1]))[0].tolist() == pytest.approx(
        [0.0, 1 / 3]
    )  # user 1 has item 0


def test_ease_matches_the_numpy_formula():
    rng = np.random.default_rng(0)
    x = (rng.random((30, 12)) < 0.3).astype(np.int64)
    g = x.T @ x + 7.0 * np.eye(12)
    p = np.linalg.inv(g)
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0)
    for dtype in ("float64", "float32"):
        model = EASE(EASEConfig(l2=7.0, dtype=dtype, chunk_users=8)).fit(matrix(x.tolist()), 30, 12)
        np.testing.assert_allclose(model.weights_.numpy(), b, atol=1e-5)
        np.testing.assert_allclose(model.score(np.arange(30)).numpy(), x @ b, atol=1e-4)


def test_ease_config_and_fitted_checks():
    with pytest.raises(ValueError, match="l2"):
        EASEConfig(l2=0.0)
    with pytest.raises(NotFittedError, match="not fitted"):
        EASE().score(np.array([0]))


def tiny_split():
    # 4 users watch items 0..5 in the same order: valid target item 4, test target item 5;
    # user 9 watches items 6 and 7 (training only), so the catalogue is items 0..7
    rows = [(u, i, i) for u in range(4) for i in range(6)] + [(9, 6, 0), (9, 7, 1)]
    u, i, t = zip(*rows)
    return temporal_split(pa.table({"user_id": list(u), "item_id": list(i), "timestamp": list(t)}))


class Planted:
    """Puts item ``value`` on top, then prefers higher items; records what it was fitted on."""

    fitted_on: ClassVar[list] = []

    def __init__(self, value):
        self.value = value

    def fit(self, interactions, num_users, num_items):
        Planted.fitted_on.append(len(interactions))
        self.num_items_ = num_items
        return self

    def score(self, users):
        scores = torch.arange(self.num_items_, dtype=torch.float32).expand(len(users), -1).clone()
        scores[:, self.value] = self.num_items_
        return scores


class ValidationOnly:
    """A split whose test stage must not be touched."""

    def __init__(self, split):
        self.split = split

    def stage(self, name):
        assert name == "valid", "a hyperparameter search looked at the test stage"
        return self.split.stage(name)


def test_choice_uses_only_the_validation_stage():
    Planted.fitted_on = []
    # value 4 plants the validation target, value 5 the test target, value 3 a training item
    # (excluded, so item 7 comes first): validation must pick 4
    selection = choose_on_validation(
        Planted, [5, 4, 3], ValidationOnly(tiny_split()), "HR@1", ks=(1,)
    )
    assert selection.best == 4
    assert {v: s["HR@1"] for v, s in selection.scores.items()} == {5: 0.0, 4: 1.0, 3: 0.0}
    assert Planted.fitted_on == [18, 18, 18]  # 4 users x 4 training items + user 9's 2


def test_refit_uses_train_plus_valid_and_excludes_both():
    Planted.fitted_on = []
    figures, seconds = refit_and_test(Planted(5), tiny_split(), ks=(1,), metrics=("HR",))
    assert figures == {"HR@1": 1.0} and set(seconds) == {"fit", "eval"}
    assert Planted.fitted_on == [22]  # 4 users x (4 training + 1 validation item) + 2
    figures, _ = refit_and_test(Planted(4), tiny_split(), ks=(1,), metrics=("HR",))
    assert figures == {"HR@1": 0.0}  # the validation item is excluded, so item 7 comes first
