"""Several labels sharing one context (holdout examples): rows, weights and excluded classes."""

import math

import numpy as np
import pyarrow as pa
import pytest
import torch

from ytdnn.models.candidate import CandidateConfig, CandidateModel, CandidateSizes
from ytdnn.models.losses import exclusion_mask, full_softmax_loss, sampled_softmax_loss
from ytdnn.samples.candidate import CandidateExamples, ExampleConfig
from ytdnn.samples.streams import Featurizer

# Ids 0..3. Id 0 is padding: its huge logits must never count.
ITEMS = torch.tensor([[9.0, 9.0], [1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
USERS = torch.tensor([[1.0, 0.0], [0.0, 1.0]])


def test_rows_score_several_labels_against_one_softmax():
    # user 0 logits over ids 1..3 = [1, 0, 2]: labels 1 and 3 -> -1 + Z0 and -2 + Z0,
    # Z0 = log(e + 1 + e^2); user 1 logits [0, 1, 0]: label 2 -> -1 + Z1, Z1 = log(2 + e)
    z0, z1 = math.log(math.e + 1 + math.e**2), math.log(2 + math.e)
    per_label = [-1 + z0, -2 + z0, -1 + z1]
    rows, positives = torch.tensor([0, 0, 1]), torch.tensor([1, 3, 2])
    loss = full_softmax_loss(USERS, ITEMS, positives, rows=rows)
    assert loss.item() == pytest.approx(sum(per_label) / 3, abs=1e-6)
    # the same as repeating each user vector once per label
    assert loss.item() == pytest.approx(full_softmax_loss(USERS[rows], ITEMS, positives).item(), abs=1e-6)


def test_weights_give_a_weighted_mean():
    # "user" weighting: user 0's two labels weigh 1/2 each, user 1's one label weighs 1
    z0, z1 = math.log(math.e + 1 + math.e**2), math.log(2 + math.e)
    expected = (0.5 * (-1 + z0) + 0.5 * (-2 + z0) + 1.0 * (-1 + z1)) / 2.0
    weights = torch.tensor([0.5, 0.5, 1.0])
    loss = full_softmax_loss(USERS, ITEMS, torch.tensor([1, 3, 2]), rows=torch.tensor([0, 0, 1]), weights=weights)
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_excluded_classes_leave_the_softmax_of_their_row_only():
    # row 0 excludes id 3: logits [1, 0] over ids 1, 2 -> label 1: -1 + log(e + 1)
    # row 1 keeps all of ids 1..3: logits [0, 1, 0] -> label 2: -1 + log(2 + e)
    expected = (-1 + math.log(math.e + 1) - 1 + math.log(2 + math.e)) / 2
    excluded = (torch.tensor([0]), torch.tensor([3]))
    loss = full_softmax_loss(USERS, ITEMS, torch.tensor([1, 2]), excluded=excluded)
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_exclusion_mask_finds_every_draw_of_an_excluded_id():
    # negatives [3, 1, 3, 2]; row 0 excludes 3 (drawn twice), row 1 excludes 2 and 5 (not drawn)
    mask = exclusion_mask(torch.tensor([0, 1, 1]), torch.tensor([3, 2, 5]), torch.tensor([3, 1, 3, 2]), num_rows=3)
    assert mask.tolist() == [[True, False, True, False], [False, False, False, True], [False] * 4]


def test_sampled_softmax_leaves_excluded_negatives_out():
    # negatives [3, 1], log_q 0; row 0 (logit of positive 1: 1) excludes 3 and 1 is a hit:
    #   loss0 = -1 + log(e^1) = 0; row 1 (positive 2, logit 1; negatives 3, 1 -> 0, 0):
    #   loss1 = -1 + log(e + 2)
    excluded = torch.tensor([[True, False], [False, False]])
    loss = sampled_softmax_loss(
        USERS, ITEMS, torch.tensor([1, 2]), torch.tensor([3, 1]), torch.zeros(2), excluded=excluded
    )
    assert loss.item() == pytest.approx((0 - 1 + math.log(math.e + 2)) / 2, abs=1e-6)


def test_sampled_softmax_weights():
    positives, negatives, log_q = torch.tensor([1, 2]), torch.tensor([3, 1]), torch.zeros(2)
    per_row = [
        sampled_softmax_loss(USERS[i : i + 1], ITEMS, positives[i : i + 1], negatives, log_q).item() for i in range(2)
    ]
    weights = torch.tensor([3.0, 1.0])
    loss = sampled_softmax_loss(USERS, ITEMS, positives, negatives, log_q, weights=weights)
    assert loss.item() == pytest.approx((3 * per_row[0] + per_row[1]) / 4, abs=1e-6)


def test_gradcheck_full_softmax_with_rows_weights_and_exclusions():
    gen = torch.Generator().manual_seed(0)
    users = torch.randn(2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    items = torch.randn(5, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    rows, positives = torch.tensor([0, 0, 1]), torch.tensor([1, 4, 2])
    weights = torch.tensor([0.5, 0.5, 1.0], dtype=torch.float64)
    excluded = (torch.tensor([0, 1]), torch.tensor([2, 3]))
    assert torch.autograd.gradcheck(
        lambda u, v: full_softmax_loss(u, v, positives, rows=rows, weights=weights, excluded=excluded), (users, items)
    )


@pytest.mark.parametrize("num_negatives", [None, 3])
def test_candidate_model_loss_on_holdout_batches(num_negatives):
    # three users of 8, 5 and 12 distinct items, no timestamps: an unordered log
    users = np.repeat([1, 2, 3], [8, 5, 12]).astype(np.int64)
    watches = pa.table({"user_id": users, "item_id": np.arange(len(users), dtype=np.int64),
                        "timestamp": pa.array([None] * len(users), pa.int64())})
    f = Featurizer().fit(watches)
    cfg = ExampleConfig(unordered_mode="holdout", holdout_keep=0.5, holdout_exclude_kept=True,
                        holdout_weighting="user")
    examples = CandidateExamples(f.streams(watches), cfg)
    torch.manual_seed(0)
    cfg = CandidateConfig(embedding_dim=4, output_dim=4, depth=0, num_negatives=num_negatives, use_searches=False)
    model = CandidateModel(cfg, CandidateSizes(num_items=26, num_tokens=1))
    for batch in examples.batches(2, np.random.default_rng(0)):
        loss = model.loss(batch)
        loss.backward()
        assert torch.isfinite(loss)
    if num_negatives is None:  # the full softmax: the same as one row per label, kept watches masked
        u = model.user_vector(batch)[batch.label_rows]
        rows = torch.arange(len(batch.labels))
        excluded_rows = torch.cat([rows[batch.label_rows == r] for r in batch.excluded_rows.tolist()])
        excluded_ids = torch.cat([batch.excluded_ids[i].repeat(int((batch.label_rows == r).sum()))
                                  for i, r in enumerate(batch.excluded_rows.tolist())])
        expected = full_softmax_loss(u, model.item_vectors(), batch.labels, model.item_biases(),
                                     weights=batch.label_weights, excluded=(excluded_rows, excluded_ids))
        assert model.loss(batch).item() == pytest.approx(expected.item(), abs=1e-5)
