import numpy as np
import pytest

from ytdnn.config import Config
from ytdnn.features import NotFittedError
from ytdnn.retrieval import Context, EASESource, EASESourceConfig

from .contracts import RetrieverContract, V, streams_of, tiny_streams


class TestEASEContract(RetrieverContract):
    name = "ease"

    def make(self):
        streams = tiny_streams()
        return EASESource(EASESourceConfig(l2=2.0)).fit(streams, V), streams


def closed_form(x: np.ndarray, l2: float) -> np.ndarray:
    """Steck 2019, eq. 8 in numpy float64: B = I - P diagMat(1 / diag(P)), P = (X^T X + l2 I)^-1."""
    p = np.linalg.inv(x.T @ x + l2 * np.eye(x.shape[1]))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


# 4 users over catalogue ids 1..4 (V = 5); user 0 watches item 1 twice: one indicator, not two
EASE_HISTORIES = {0: [1, 1, 2], 1: [2, 3], 2: [1, 3, 4], 3: [4, 2]}
X = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 1, 1], [0, 1, 0, 1]], np.float64)  # [U, items 1..4]


def test_scores_equal_the_closed_form_on_four_items():
    streams = streams_of(EASE_HISTORIES)
    source = EASESource(EASESourceConfig(l2=3.0, dtype="float64")).fit(streams, 5)
    np.testing.assert_array_equal(source.items_, [1, 2, 3, 4])
    np.testing.assert_allclose(source.weights_, closed_form(X, 3.0), rtol=1e-6, atol=1e-7)
    ctx = Context.whole(streams, np.arange(4))
    state = source.encode(ctx)
    expected = X @ closed_form(X, 3.0)  # [U, 4]
    got = source.score(state, np.tile(np.arange(1, 5), (4, 1)))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    ids, scores = source.retrieve(state, 4)
    order = np.lexsort((np.arange(4)[None].repeat(4, 0), -expected.astype(np.float32)), axis=1)
    np.testing.assert_array_equal(ids, order + 1)
    # float32 (the default) agrees to float32 precision
    f32 = EASESource(EASESourceConfig(l2=3.0)).fit(streams, 5)
    np.testing.assert_allclose(f32.score(f32.encode(ctx), ids), scores, rtol=1e-5, atol=1e-6)


def test_max_items_keeps_the_items_with_most_users():
    # users per item: 1 -> 2, 2 -> 3, 3 -> 2, 4 -> 2: the cap of 2 keeps 2 and, of the tied
    # 1, 3, 4, the lower id 1
    streams = streams_of(EASE_HISTORIES)
    source = EASESource(EASESourceConfig(l2=3.0, max_items=2, dtype="float64")).fit(streams, 5)
    np.testing.assert_array_equal(source.items_, [1, 2])
    np.testing.assert_allclose(source.weights_, closed_form(X[:, :2], 3.0), rtol=1e-6)
    state = source.encode(Context.whole(streams, np.arange(4)))
    ids, _ = source.retrieve(state, 4)
    assert set(ids.ravel()) <= {0, 1, 2}
    np.testing.assert_array_equal(np.isneginf(source.score(state, np.tile([1, 2, 3, 4], (4, 1)))),
                                  np.tile([False, False, True, True], (4, 1)))
    # user 1 (items 2, 3) has only item 2 among the kept: its row of X is [0, 1]
    expected = np.array([0.0, 1.0]) @ closed_form(X[:, :2], 3.0)
    np.testing.assert_allclose(source.score(state, np.array([[1, 2]] * 4))[1], expected, rtol=1e-5, atol=1e-7)


def test_items_nobody_watched_are_not_kept():
    streams = streams_of({1: [1, 2], 2: [2]})
    source = EASESource().fit(streams, 6)  # ids 3..5 in the catalogue, never watched
    np.testing.assert_array_equal(source.items_, [1, 2])
    ids, _ = source.retrieve(source.encode(Context.whole(streams, [0])), 5)
    assert set(ids[0]) == {0, 1, 2}


def test_bad_settings_and_inputs():
    assert issubclass(EASESourceConfig, Config)
    with pytest.raises(ValueError, match="l2"):
        EASESourceConfig(l2=0.0)
    with pytest.raises(ValueError, match="max_items"):
        EASESourceConfig(max_items=0)
    with pytest.raises(ValueError, match="dtype"):
        EASESourceConfig(dtype="float16")
    with pytest.raises(ValueError, match="catalogue ids"):
        EASESource().fit(tiny_streams(), 5)  # the streams hold ids up to 8
    with pytest.raises(NotFittedError, match="not fitted"):
        EASESource().encode(Context.whole(tiny_streams(), [1]))


def test_scoring_many_candidates_densely_equals_scoring_few_by_gathering():
    # 4 kept items: one candidate per row gathers rows of B, 4 or more per row multiply densely
    streams = streams_of(EASE_HISTORIES)
    source = EASESource(EASESourceConfig(l2=3.0, dtype="float64")).fit(streams, 5)
    state = source.encode(Context.whole(streams, np.arange(4)))
    wide = np.array([[1, 2, 3, 4, 0, 2, 1, 3]] * 4)
    dense = source.score(state, wide)
    gathered = np.concatenate([source.score(state, wide[:, j : j + 1]) for j in range(wide.shape[1])], axis=1)
    np.testing.assert_allclose(dense, gathered, rtol=1e-6, atol=1e-7)
    expected = (X @ closed_form(X, 3.0))[:, np.maximum(wide[0] - 1, 0)]
    np.testing.assert_allclose(dense[:, wide[0] > 0], expected[:, wide[0] > 0], rtol=1e-5, atol=1e-6)
    assert np.isneginf(dense[:, 4]).all()
