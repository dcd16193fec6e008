import math

import numpy as np
import pytest
import torch

from ytdnn.models.sampling import NegativeSampler

# counts ** (1/3) = [_, 1, 2, 0, 3]; id 0 is padding -> weights [0, 1, 2, 0, 3], total 6
COUNTS = np.array([100, 1, 8, 0, 27])
EXPECTED_Q = np.array([0, 1 / 6, 2 / 6, 0, 3 / 6])


def test_background_distribution_is_count_to_the_alpha_without_padding():
    sampler = NegativeSampler(COUNTS, num_negatives=4, alpha=1 / 3)
    np.testing.assert_allclose(sampler.probabilities_.numpy(), EXPECTED_Q, atol=1e-12)


def test_sample_shapes_and_log_expected_counts():
    sampler = NegativeSampler(COUNTS, num_negatives=7, alpha=1 / 3)
    negatives, log_q = sampler.sample(torch.Generator().manual_seed(0))
    assert negatives.shape == (7,) and negatives.dtype == torch.int64
    assert log_q.shape == (7,) and log_q.dtype == torch.float32
    # log_q = log(N * q_i), the expected count of id i among N draws
    expected = np.log(7 * EXPECTED_Q[negatives.numpy()])
    np.testing.assert_allclose(log_q.numpy(), expected, rtol=1e-6)
    assert torch.equal(sampler.log_q(negatives), log_q)


def test_empirical_frequencies_match_q_and_padding_is_never_drawn():
    sampler = NegativeSampler(COUNTS, num_negatives=60_000, alpha=1 / 3)
    negatives, _ = sampler.sample(torch.Generator().manual_seed(1))
    frequencies = np.bincount(negatives.numpy(), minlength=5) / 60_000
    assert frequencies[0] == 0 and frequencies[3] == 0  # padding, and a zero-count item
    np.testing.assert_allclose(frequencies, EXPECTED_Q, atol=0.01)


def test_alpha_zero_is_uniform_over_every_real_id():
    sampler = NegativeSampler(COUNTS, num_negatives=4, alpha=0.0)
    np.testing.assert_allclose(sampler.probabilities_.numpy(), [0, 0.25, 0.25, 0.25, 0.25])


def test_deterministic_given_a_generator_and_fresh_every_step():
    sampler = NegativeSampler(np.arange(1000), num_negatives=64, seed=3)
    a, _ = sampler.sample(torch.Generator().manual_seed(5))
    b, _ = sampler.sample(torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    # without a generator: the sampler's own, seeded by `seed`, advancing between steps
    first, second = sampler.sample()[0], sampler.sample()[0]
    assert not torch.equal(first, second)
    again = NegativeSampler(np.arange(1000), num_negatives=64, seed=3)
    assert torch.equal(again.sample()[0], first) and torch.equal(again.sample()[0], second)


def test_large_vocabulary_draws_stay_in_range():
    counts = np.random.default_rng(0).zipf(1.3, size=1_000_000).astype(np.float64)
    sampler = NegativeSampler(counts, num_negatives=4096)
    negatives, log_q = sampler.sample(torch.Generator().manual_seed(0))
    assert int(negatives.min()) >= 1 and int(negatives.max()) < 1_000_000
    assert torch.isfinite(log_q).all()
    assert math.isclose(float(sampler.probabilities_.sum()), 1.0, rel_tol=1e-9)


@pytest.mark.parametrize(
    "counts, kwargs",
    [
        ([0, -1, 2], {}),  # negative count
        ([0, 1, 2], {"num_negatives": 0}),
        ([5, 0, 0], {}),  # nothing but padding has a count
        ([1], {}),  # no id besides padding
        ([0, 1, 2], {"alpha": -0.5}),
    ],
)
def test_bad_settings_raise(counts, kwargs):
    with pytest.raises(ValueError):
        NegativeSampler(np.array(counts), **{"num_negatives": 3, **kwargs})
