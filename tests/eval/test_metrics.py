import math

import numpy as np
import pyarrow as pa
import pytest
import torch

from ytdnn.eval.metrics import (
    coverage_at_k,
    evaluate,
    hit_rate_at_k,
    map_at_k,
    ndcg_at_k,
    recall_at_k,
    top_k,
)
from ytdnn.eval.protocols import temporal_split

INF = float("inf")


def test_top_k_breaks_ties_towards_the_lower_index():
    scores = torch.tensor([[1.0, 3.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0], [2.0, 5.0, 2.0, 2.0]])
    assert top_k(scores, 2).tolist() == [[1, 2], [0, 1], [1, 0]]
    assert top_k(scores, 3).tolist() == [[1, 2, 0], [0, 1, 2], [1, 0, 2]]


def test_top_k_matches_a_full_stable_sort():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=(40, 30)).astype(np.float32)  # many ties
    expected = np.lexsort((np.tile(np.arange(30), (40, 1)), -scores), axis=1)[:, :7]
    np.testing.assert_array_equal(top_k(torch.from_numpy(scores), 7).numpy(), expected)


def test_top_k_marks_excluded_filler_and_rejects_nan():
    scores = torch.tensor([[-INF, 1.0, -INF]])
    assert top_k(scores, 3).tolist() == [[1, -1, -1]]
    assert top_k(scores, 10).shape == (1, 3)  # k is capped by the catalogue
    with pytest.raises(ValueError, match="NaN"):
        top_k(torch.tensor([[0.0, float("nan")]]), 1)


# Two ranked lists; user 0 has targets {1, 4, 7}, user 1 has {5}.
TOP = [[3, 1, 4, 0], [2, 0, 1, 3]]
TARGETS = [[1, 4, 7], [5]]
L2, L3 = 1 / math.log2(3), 1 / math.log2(4)  # discounts of ranks 2 and 3


def test_hand_computed_at_4():
    # user 0: relevance [0, 1, 1, 0], 2 hits of 3 targets
    #   HR = 1, Recall = 2/3
    #   DCG = 1/log2(3) + 1/log2(4); IDCG over min(3, 4) = 3 items = 1 + 1/log2(3) + 1/log2(4)
    #   AP = (P@2 * 1 + P@3 * 1) / min(3, 4) = (1/2 + 2/3) / 3 = 0.3889
    # user 1: no hit -> all 0
    np.testing.assert_allclose(hit_rate_at_k(TOP, TARGETS, 4), [1, 0])
    np.testing.assert_allclose(recall_at_k(TOP, TARGETS, 4), [2 / 3, 0])
    np.testing.assert_allclose(ndcg_at_k(TOP, TARGETS, 4), [(L2 + L3) / (1 + L2 + L3), 0])
    np.testing.assert_allclose(map_at_k(TOP, TARGETS, 4), [(1 / 2 + 2 / 3) / 3, 0])


def test_hand_computed_at_2():
    # user 0, top 2 = [3, 1]: relevance [0, 1]
    #   Recall = 1/3 (divided by |T| = 3, not min(|T|, K) = 2)
    #   NDCG = (1/log2(3)) / (1 + 1/log2(3)); IDCG over min(3, 2) = 2 items
    #   AP = (P@2 = 1/2) / min(3, 2) = 0.25
    np.testing.assert_allclose(recall_at_k(TOP, TARGETS, 2), [1 / 3, 0])
    np.testing.assert_allclose(ndcg_at_k(TOP, TARGETS, 2), [L2 / (1 + L2), 0])
    np.testing.assert_allclose(map_at_k(TOP, TARGETS, 2), [0.25, 0])


def test_perfect_list_scores_one_and_empty_slots_never_hit():
    top = [[4, 1, -1]]
    assert ndcg_at_k(top, [[1, 4]], 3)[0] == pytest.approx(1.0)
    assert map_at_k(top, [[1, 4]], 3)[0] == pytest.approx(1.0)
    assert recall_at_k([[-1, -1]], [[0]], 2)[0] == 0


def test_coverage_counts_distinct_items_in_the_top_k():
    top = [[0, 1], [1, 2], [1, -1]]
    assert coverage_at_k(top, num_items=5, k=2) == pytest.approx(3 / 5)  # {0, 1, 2}
    assert coverage_at_k(top, num_items=5, k=1) == pytest.approx(2 / 5)  # {0, 1}


def small_stage():
    # per user (time order): u1: 1, 2, 3 | u2: 2, 3, 4 | u3: 1, 4 (training only)
    rows = [(1, 1, 1), (1, 2, 2), (1, 3, 3), (2, 2, 1), (2, 3, 2), (2, 4, 3), (3, 1, 1), (3, 4, 2)]
    u, i, t = zip(*rows)
    split = temporal_split(pa.table({"user_id": list(u), "item_id": list(i), "timestamp": list(t)}))
    return split.stage("test")  # items 1..4 -> 0..3; test targets: u1 -> 3 (idx 2), u2 -> 4 (idx 3)


def test_evaluate_excludes_known_items_and_skips_users_without_targets():
    stage = small_stage()
    seen_users = []

    def score(users):
        seen_users.extend(users.tolist())
        # the best score goes to item idx 1 (item 2), which both users know: it must never count
        return torch.tensor([[3.0, 9.0, 2.0, 1.0]]).expand(len(users), -1)

    figures = evaluate(score, stage, ks=(1, 2), metrics=("HR", "Recall", "NDCG", "Coverage"))
    assert sorted(seen_users) == [0, 1]  # user 3 has no target
    # u1 (knows items 1, 2): ranking [item 3, item 4] -> target idx 2 at rank 1
    # u2 (knows items 2, 3): ranking [item 1, item 4] -> target idx 3 at rank 2
    assert figures["HR@1"] == pytest.approx(0.5) and figures["HR@2"] == pytest.approx(1.0)
    assert figures["NDCG@2"] == pytest.approx((1 + L2) / 2)
    assert figures["Coverage@1"] == pytest.approx(2 / 4)  # items idx 2 and 0


def test_evaluate_in_batches_equals_one_batch():
    stage = small_stage()
    rng = np.random.default_rng(1)
    table = torch.from_numpy(rng.random((stage.num_users, stage.num_items)).astype(np.float32))
    score = lambda users: table[torch.from_numpy(users)]
    one = evaluate(
        score, stage, ks=(1, 2, 3), metrics=("HR", "NDCG", "MAP", "Coverage"), batch_size=100
    )
    single = evaluate(
        score, stage, ks=(1, 2, 3), metrics=("HR", "NDCG", "MAP", "Coverage"), batch_size=1
    )
    assert one == pytest.approx(single)


def test_evaluate_rejects_unknown_metrics_and_wrong_shapes():
    stage = small_stage()
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate(lambda u: torch.zeros(len(u), 4), stage, metrics=("AUC",))
    with pytest.raises(ValueError, match="expected"):
        evaluate(lambda u: torch.zeros(len(u), 3), stage)


def test_scorer_from_lists_reproduces_the_lists_and_drops_unknown_items():
    from ytdnn.eval.metrics import scorer_from_lists

    catalogue = np.array([10, 20, 30, 40])
    score = scorer_from_lists(catalogue, np.array([5, 2]), [np.array([30, 99, 10]), np.array([40])])
    out = score(np.array([2, 5]))
    assert out.shape == (2, 4)
    np.testing.assert_array_equal(top_k(out, 2).numpy(), [[3, -1], [2, 0]])
    assert torch.isinf(out[1, 1]) and torch.isinf(out[1, 3])  # 20, 40 not in user 5's list
