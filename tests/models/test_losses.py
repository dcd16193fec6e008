import math

import pytest
import torch
from torch import nn

from ytdnn.models.losses import (
    full_softmax_loss,
    log_q_correction,
    page_softmax_loss,
    remove_accidental_hits,
    sampled_softmax_loss,
    watch_time_weights,
    weighted_logistic_loss,
)
from ytdnn.models.sampling import NegativeSampler


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    # Tiny ops: torch's spinning intra-op threads made the gradient-convergence test 30x slower on
    # a shared 2-core machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# Ids 0..3. Id 0 is padding: its huge logits must never count.
ITEMS = torch.tensor([[9.0, 9.0], [1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
USERS = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
LN2 = math.log(2.0)


def test_full_softmax_exact_value_masks_padding():
    # user [1, 0]: logits over ids 1..3 = [1, 0, 2]; positive id 1
    # loss = -1 + log(e^1 + e^0 + e^2)
    expected = -1 + math.log(math.e + 1 + math.e**2)
    loss = full_softmax_loss(USERS[:1], ITEMS, torch.tensor([1]))
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_full_softmax_with_item_bias():
    # bias [0, 0, 1, 0] -> logits [1, 1, 2]; positive id 2 -> loss = -1 + log(e + e + e^2)
    bias = torch.tensor([5.0, 0.0, 1.0, 0.0])
    expected = -1 + math.log(2 * math.e + math.e**2)
    loss = full_softmax_loss(USERS[:1], ITEMS, torch.tensor([2]), item_bias=bias)
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_sampled_softmax_exact_value():
    # negatives [3, 1], log_q [ln 2, 0]; positives [1, 2]
    # row 0 (user [1, 0], positive 1, logit 1): negatives -> [2 - ln2, hit -> -inf]
    #   loss0 = -1 + log(e^1 + e^2 / 2)
    # row 1 (user [0, 1], positive 2, logit 1): negatives -> [0 - ln2, 0 - 0]
    #   loss1 = -1 + log(e^1 + 1/2 + 1)
    loss0 = -1 + math.log(math.e + math.e**2 / 2)
    loss1 = -1 + math.log(math.e + 1.5)
    loss = sampled_softmax_loss(
        USERS, ITEMS, torch.tensor([1, 2]), torch.tensor([3, 1]), torch.tensor([LN2, 0.0])
    )
    assert loss.item() == pytest.approx((loss0 + loss1) / 2, abs=1e-6)


def test_sampled_softmax_corrects_the_positive_when_given_its_log_q():
    # as above, positive logits corrected by [ln 3, 0], hits kept:
    # row 0: positive 1 - ln3; negatives [2 - ln2, 1 - 0] -> loss0 = -(1 - ln3) + log(e/3 + e^2/2 + e)
    # row 1: positive 1;       negatives [-ln2, 0]        -> loss1 = -1 + log(e + 1/2 + 1)
    loss0 = -(1 - math.log(3)) + math.log(math.e / 3 + math.e**2 / 2 + math.e)
    loss1 = -1 + math.log(math.e + 1.5)
    loss = sampled_softmax_loss(
        USERS,
        ITEMS,
        torch.tensor([1, 2]),
        torch.tensor([3, 1]),
        torch.tensor([LN2, 0.0]),
        log_q_positives=torch.tensor([math.log(3), 0.0]),
        remove_accidental_hits=False,
    )
    assert loss.item() == pytest.approx((loss0 + loss1) / 2, abs=1e-6)


def test_sampled_softmax_with_item_bias():
    # bias [0, 0.5, 0, -1]; row 0 only: positive 1 -> 1.5; negative 3 -> 2 - 1 - ln2; negative 1 hit
    # loss = -1.5 + log(e^1.5 + e^1 / 2)
    bias = torch.tensor([0.0, 0.5, 0.0, -1.0])
    expected = -1.5 + math.log(math.exp(1.5) + math.e / 2)
    loss = sampled_softmax_loss(
        USERS[:1],
        ITEMS,
        torch.tensor([1]),
        torch.tensor([3, 1]),
        torch.tensor([LN2, 0.0]),
        item_bias=bias,
    )
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_log_q_correction_subtracts_per_column():
    logits = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    corrected = log_q_correction(logits, torch.tensor([0.5, -1.0]))
    assert torch.equal(corrected, torch.tensor([[0.5, 3.0], [2.5, 5.0]]))


def test_remove_accidental_hits_changes_exactly_the_hit_entries():
    logits = torch.arange(12.0).reshape(3, 4)
    positives = torch.tensor([7, 5, 9])
    negatives = torch.tensor([5, 7, 5, 8])
    masked = remove_accidental_hits(logits, positives, negatives)
    hits = torch.tensor(
        [[False, True, False, False], [True, False, True, False], [False, False, False, False]]
    )
    assert torch.all(masked[hits] == float("-inf"))
    assert torch.equal(masked[~hits], logits[~hits])


def test_embedding_module_gives_the_same_loss_and_sparse_gradients():
    table = nn.Embedding(4, 2, sparse=True)
    with torch.no_grad():
        table.weight.copy_(ITEMS)
    args = (torch.tensor([1, 2]), torch.tensor([3, 1]), torch.tensor([LN2, 0.0]))
    loss = sampled_softmax_loss(USERS, table, *args)
    assert loss.item() == pytest.approx(sampled_softmax_loss(USERS, ITEMS, *args).item())
    loss.backward()
    assert table.weight.grad.is_sparse
    assert set(table.weight.grad.coalesce().indices()[0].tolist()) == {1, 2, 3}  # never id 0


def test_positive_padding_id_is_an_error():
    with pytest.raises(ValueError, match="id 0"):
        full_softmax_loss(USERS[:1], ITEMS, torch.tensor([0]))
    with pytest.raises(ValueError, match="id 0"):
        sampled_softmax_loss(USERS[:1], ITEMS, torch.tensor([0]), torch.tensor([1]), torch.zeros(1))


def _double_inputs(seed=0, num_users=3, num_items=6, dim=4):
    g = torch.Generator().manual_seed(seed)
    users = torch.randn(num_users, dim, generator=g, dtype=torch.float64, requires_grad=True)
    items = torch.randn(num_items, dim, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(num_items, generator=g, dtype=torch.float64, requires_grad=True)
    return users, items, bias


def test_gradcheck_full_softmax():
    users, items, bias = _double_inputs()
    positives = torch.tensor([1, 5, 3])
    assert torch.autograd.gradcheck(
        lambda u, v, b: full_softmax_loss(u, v, positives, item_bias=b), (users, items, bias)
    )


@pytest.mark.parametrize("correct_positive", [False, True])
def test_gradcheck_sampled_softmax(correct_positive):
    users, items, bias = _double_inputs()
    positives, negatives = torch.tensor([1, 5, 3]), torch.tensor([2, 5, 4, 2])
    log_q = torch.tensor([0.1, -0.3, 0.7, 0.1], dtype=torch.float64)
    log_q_pos = torch.tensor([0.2, -0.3, 0.5], dtype=torch.float64) if correct_positive else None
    assert torch.autograd.gradcheck(
        lambda u, v, b: sampled_softmax_loss(
            u, v, positives, negatives, log_q, log_q_pos, item_bias=b
        ),
        (users, items, bias),
    )


def _gradient(loss_fn, users, items):
    users = users.detach().clone().requires_grad_()
    items = items.detach().clone().requires_grad_()
    loss_fn(users, items).backward()
    return torch.cat([users.grad.flatten(), items.grad.flatten()])


def _sampled_gradient_error(num_negatives, correct_positive, remove_hits, num_draws=30):
    """Relative error of the sampled-softmax gradient, averaged over draws, vs the full softmax's."""
    g = torch.Generator().manual_seed(0)
    num_items, dim, batch = 50, 8, 16
    users = 0.7 * torch.randn(batch, dim, generator=g, dtype=torch.float64)
    items = 0.7 * torch.randn(num_items, dim, generator=g, dtype=torch.float64)
    positives = torch.randint(1, num_items, (batch,), generator=g)
    counts = torch.randint(1, 100, (num_items,), generator=g)
    full = _gradient(lambda u, v: full_softmax_loss(u, v, positives), users, items)
    sampler = NegativeSampler(counts.numpy(), num_negatives=num_negatives, seed=1)
    log_q_pos = sampler.log_q(positives) if correct_positive else None
    total = torch.zeros_like(full)
    for _ in range(num_draws):
        negatives, log_q = sampler.sample()
        total += _gradient(
            lambda u, v, negatives=negatives, log_q=log_q: sampled_softmax_loss(
                u, v, positives, negatives, log_q, log_q_pos, remove_accidental_hits=remove_hits
            ),
            users,
            items,
        )
    return float((total / num_draws - full).norm() / full.norm())


@pytest.mark.parametrize(
    "correct_positive, remove_hits",
    [(False, True), (True, False)],
    ids=["raw-positive+hits-removed", "corrected-positive+hits-kept"],
)
def test_sampled_gradient_approaches_full_softmax_gradient(correct_positive, remove_hits):
    errors = [_sampled_gradient_error(n, correct_positive, remove_hits) for n in (10, 100, 10_000)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.01  # measured ~0.002 for both conventions


def test_tf_default_pairing_converges_to_a_different_softmax():
    # Correcting the positive *and* removing hits (tf.nn.sampled_softmax_loss defaults) leaves the
    # positive's share of the partition function at exp(o_t) / (N q_t) -> 0: documented, not a bug.
    assert _sampled_gradient_error(10_000, correct_positive=True, remove_hits=True) > 0.05


def test_weighted_logistic_exact_value():
    # logits [3, -4], labels [1, 0], weights [2, 1]:
    # loss = (2 * -log σ(3) + 1 * -log(1 - σ(-4))) / 3 = (2 softplus(-3) + softplus(-4)) / 3
    softplus = lambda x: math.log1p(math.exp(x))
    expected = (2 * softplus(-3) + softplus(-4)) / 3
    loss = weighted_logistic_loss(
        torch.tensor([3.0, -4.0]), torch.tensor([1, 0]), torch.tensor([2.0, 1.0])
    )
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_gradcheck_weighted_logistic():
    logits = torch.tensor([0.3, -1.2, 2.0, 0.0], dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    weights = torch.tensor([4.0, 1.0, 0.5, 1.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(weighted_logistic_loss, (logits, labels, weights))


def test_watch_time_weighting_makes_the_odds_the_expected_watch_time():
    # Paper §4.2: N = 10 impressions, k = 3 clicked with watch times T = [2, 5, 11].
    # A constant model's fitted odds e^b = Σ T_i / (N - k) = 18 / 7.
    labels = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    watch_time = torch.tensor([2.0, 5.0, 11.0, 0, 0, 0, 0, 0, 0, 0], dtype=torch.float64)
    weights = watch_time_weights(labels, watch_time)
    assert weights.tolist() == [2.0, 5.0, 11.0] + [1.0] * 7
    bias = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([bias], lr=1.0, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = weighted_logistic_loss(bias.expand(10), labels, weights)
        loss.backward()
        return loss

    optimizer.step(closure)
    assert math.exp(bias.item()) == pytest.approx(18 / 7, rel=1e-5)


def test_weighted_logistic_rejects_bad_weights_and_shapes():
    logits, labels = torch.zeros(2), torch.tensor([1, 0])
    with pytest.raises(ValueError):
        weighted_logistic_loss(logits, labels, torch.tensor([-1.0, 1.0]))
    with pytest.raises(ValueError):
        weighted_logistic_loss(logits, labels, torch.zeros(2))
    with pytest.raises(ValueError):
        weighted_logistic_loss(logits, labels, torch.ones(3))


# Page softmax: logits [2, 0, 1 | 3, -1 | 0.5] on pages 7, 9, 11; positives at 0, 3, 5 (weights 2, 1, 1).
PAGE_LOGITS = [2.0, 0.0, 1.0, 3.0, -1.0, 0.5]
PAGE_LABELS = [1.0, 0.0, 0.0, 1.0, 0.0, 1.0]
PAGE_WEIGHTS = [2.0, 1.0, 1.0, 1.0, 1.0, 1.0]
PAGES = [7, 7, 7, 9, 9, 11]


def test_page_softmax_exact_value():
    # page 7: -log(e^2 / (e^2 + e^0 + e^1)); page 9: -log(e^3 / (e^3 + e^-1)); page 11 has no
    # negative: 0. Weighted mean over the positives: (2 a + b + 0) / 4.
    a = -(2 - math.log(math.exp(2) + 1 + math.exp(1)))
    b = -(3 - math.log(math.exp(3) + math.exp(-1)))
    loss = page_softmax_loss(*(torch.tensor(v) for v in (PAGE_LOGITS, PAGE_LABELS, PAGE_WEIGHTS, PAGES)))
    assert loss.item() == pytest.approx((2 * a + b) / 4, abs=1e-6)


def test_page_softmax_ignores_a_constant_per_page_and_pages_apart():
    logits, labels, weights, pages = (torch.tensor(v) for v in (PAGE_LOGITS, PAGE_LABELS, PAGE_WEIGHTS, PAGES))
    base = page_softmax_loss(logits, labels, weights, pages)
    shifted = logits + torch.tensor([40.0, 40.0, 40.0, -7.0, -7.0, 3.0])
    assert page_softmax_loss(shifted, labels, weights, pages).item() == pytest.approx(base.item(), abs=1e-5)
    # the same rows as one page: each positive now also meets the other page's negatives
    merged = page_softmax_loss(logits, labels, weights, torch.zeros(6, dtype=torch.long))
    assert merged.item() > base.item()
    no_positive = page_softmax_loss(logits.requires_grad_(), torch.zeros(6), weights, pages)
    assert no_positive.item() == 0.0 and no_positive.requires_grad


def test_gradcheck_page_softmax():
    logits = torch.tensor(PAGE_LOGITS, dtype=torch.float64, requires_grad=True)
    rest = (torch.tensor(PAGE_LABELS, dtype=torch.float64), torch.tensor(PAGE_WEIGHTS, dtype=torch.float64),
            torch.tensor(PAGES))
    assert torch.autograd.gradcheck(lambda x: page_softmax_loss(x, *rest), (logits,))


def test_page_softmax_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="one shape"):
        page_softmax_loss(torch.zeros(3), torch.zeros(3), torch.ones(3), torch.zeros(2, dtype=torch.long))
