import numpy as np
from contracts import IndexContract

from ytdnn.index import BruteForceIndex, ExactIndex


class TestExactIndex(IndexContract):
    expected_exact = True

    def make_index(self):
        return ExactIndex()


def test_hand_checked_top_k_with_ids_and_exclusion():
    # query [2, 1] against [1, 0], [0, 1], [1, 1] -> inner products 2, 1, 3
    index = ExactIndex().build(
        np.array([[1, 0], [0, 1], [1, 1]], np.float32), np.array([10, 20, 30])
    )
    scores, ids = index.search(np.array([[2.0, 1.0]], np.float32), 2)
    assert ids.tolist() == [[30, 10]] and scores.tolist() == [[3.0, 2.0]]
    scores, ids = index.search(np.array([[2.0, 1.0]], np.float32), 3, exclude=[[30]])
    assert ids.tolist() == [[10, 20, -1]] and scores.tolist() == [[2.0, 1.0, -np.inf]]


def test_default_ids_are_positions():
    vectors = np.eye(4, dtype=np.float32)
    _, ids = ExactIndex().build(vectors).search(vectors, 1)
    assert ids[:, 0].tolist() == [0, 1, 2, 3]


def test_brute_force_is_the_same_class():
    assert BruteForceIndex is ExactIndex
