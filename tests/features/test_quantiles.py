import json

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from ytdnn.features import NotFittedError, QuantileNormalizer
from ytdnn.features.quantiles import ONE_BELOW


def test_data_0_to_100_maps_x_to_x_over_100():
    normalizer = QuantileNormalizer().fit(np.arange(101.0))  # cut at probability p = 100 p
    x_tilde = normalizer.transform([25.0, 50.5, 0.0, 99.0])
    assert x_tilde.dtype == np.float32
    assert_allclose(x_tilde, [0.25, 0.505, 0.0, 0.99], rtol=1e-6)


def test_interpolates_between_coarse_quantiles():
    # Q = 4 over 0, 10, 20, 30, 40: cut points are the data; 5 is halfway from p 0 to 0.25
    normalizer = QuantileNormalizer(num_quantiles=4).fit([40, 0, 20, 10, 30])
    assert_array_equal(normalizer.quantiles_, [[0, 10, 20, 30, 40]])
    assert_allclose(normalizer.transform([5, 10, 35]), [0.125, 0.25, 0.875])


def test_clamps_below_the_minimum_to_0_and_from_the_maximum_to_just_below_1():
    normalizer = QuantileNormalizer(num_quantiles=4).fit([0, 10, 20, 30, 40])
    x_tilde = normalizer.transform([-5, 40, 41, np.inf, -np.inf])
    assert_array_equal(x_tilde, np.float32([0, ONE_BELOW, ONE_BELOW, ONE_BELOW, 0]))
    assert ONE_BELOW == 1 - 2**-24 and x_tilde.max() < 1


def test_fit_matches_numpy_linear_quantiles_in_one_sort():
    rng = np.random.default_rng(0)
    x = rng.lognormal(size=(5000, 3))  # [N, F]
    normalizer = QuantileNormalizer(num_quantiles=100).fit(x)
    expected = np.quantile(x, np.linspace(0, 1, 101), axis=0).T  # [F, Q + 1]
    assert normalizer.quantiles_.shape == (3, 101)
    assert_allclose(normalizer.quantiles_, expected, rtol=1e-12)


def test_approximates_the_empirical_cdf_and_is_monotone():
    rng = np.random.default_rng(1)
    x = rng.normal(size=100_000)
    x_tilde = QuantileNormalizer().fit(x).transform(x)
    ranks = np.argsort(np.argsort(x)) / len(x)  # true empirical CDF, up to 1/N
    assert np.abs(x_tilde - ranks).max() < 2e-3
    grid = np.linspace(-6, 6, 10_001)
    on_grid = QuantileNormalizer(num_quantiles=50).fit(x).transform(grid)
    assert (np.diff(on_grid) >= 0).all() and on_grid.min() == 0 and on_grid.max() < 1


def test_columns_are_normalized_independently():
    first = np.arange(11.0)
    x = np.stack([first, first * 1000 - 7, -first], axis=1)  # [11, 3]
    x_tilde = QuantileNormalizer(num_quantiles=10).fit(x).transform(x)
    assert x_tilde.shape == (11, 3)
    assert_allclose(x_tilde[:, 0], np.minimum(first / 10, ONE_BELOW))
    assert_array_equal(x_tilde[:, 1], x_tilde[:, 0])
    assert_allclose(x_tilde[:, 2], (10 - first) / 10, atol=1e-7)


def test_powers_are_laid_out_as_cdf_block_then_square_then_root():
    normalizer = QuantileNormalizer(num_quantiles=4).fit(
        [[0, 0], [4, 40], [8, 80], [12, 120], [16, 160]]
    )
    out = normalizer.transform_with_powers([[4, 120], [16, 0]])  # x̃ = [[.25, .75], [1-, 0]]
    assert out.shape == (2, 6) and out.dtype == np.float32
    assert_allclose(out[0], [0.25, 0.75, 0.0625, 0.5625, 0.5, np.sqrt(0.75)], rtol=1e-6)
    assert out[1, 0] == np.float32(ONE_BELOW) and out[1, 1] == 0
    assert (out < 1).all()  # √(1 - 2**-24) must not round up to 1 in float32
    one_feature = QuantileNormalizer(num_quantiles=4).fit([0, 4, 8, 12, 16])
    assert_allclose(one_feature.transform_with_powers([4]), [[0.25, 0.0625, 0.5]])


def test_heavy_ties_get_their_mid_rank_and_the_cdf_steps_over_them():
    # 6 zeros then 1, 2, 3, 4 with Q = 4: cut points at positions 0, 2.25, 4.5, 6.75, 9
    # -> 0, 0, 0, 1 + 0.75 * (2 - 1) = 1.75, 4. Zero owns p 0..0.5 -> mid-rank 0.25; just above
    # zero continues from 0.5; x = 1 -> 0.5 + (0.75 - 0.5) * (1 - 0) / 1.75 = 0.642857...
    normalizer = QuantileNormalizer(num_quantiles=4).fit([0, 0, 0, 0, 0, 0, 1, 2, 3, 4])
    assert_allclose(normalizer.quantiles_, [[0, 0, 0, 1.75, 4]])
    x_tilde = normalizer.transform([-1, 0, 0, 1e-12, 1, 1.75])
    assert_allclose(x_tilde, [0, 0.25, 0.25, 0.5, 0.5 + 0.25 / 1.75, 0.75], rtol=1e-6)


def test_many_zeros_map_to_one_consistent_value():
    # 600 zeros + 1..400, Q = 1000: cut k sits at position 0.999 k, zero while <= 599,
    # i.e. k <= 599 -> zero owns p 0..0.599 -> mid-rank 0.2995
    x = np.concatenate([np.zeros(600), np.arange(1.0, 401.0)])
    x_tilde = QuantileNormalizer().fit(x).transform(x)
    assert_allclose(x_tilde[:600], 0.2995, rtol=1e-6)
    assert x_tilde[600] > 0.599 and (np.diff(x_tilde) >= 0).all()


def test_constant_column_maps_its_value_to_one_half():
    normalizer = QuantileNormalizer(num_quantiles=10).fit(np.full((7, 1), 3.0))
    assert_array_equal(
        normalizer.transform([[2.0], [3.0], [4.0]]), np.float32([[0], [0.5], [ONE_BELOW]])
    )


def test_nan_and_infinity_are_clear_errors():
    with pytest.raises(ValueError, match=r"column\(s\) \[1\]"):
        QuantileNormalizer().fit([[0.0, np.nan], [1.0, 2.0]])
    with pytest.raises(ValueError, match="infinite"):
        QuantileNormalizer().fit([0.0, np.inf])
    normalizer = QuantileNormalizer().fit([0.0, 1.0])
    with pytest.raises(ValueError, match="NaN"):
        normalizer.transform([0.5, np.nan])


def test_shape_and_state_errors():
    with pytest.raises(NotFittedError, match="not fitted yet"):
        QuantileNormalizer().transform([1.0])
    with pytest.raises(ValueError, match="0 rows"):
        QuantileNormalizer().fit(np.empty((0, 2)))
    normalizer = QuantileNormalizer().fit(np.ones((3, 2)))
    with pytest.raises(ValueError, match="2 feature"):
        normalizer.transform([1.0, 2.0])  # [N] needs F == 1
    with pytest.raises(ValueError, match=r"\[N\] or \[N, F\]"):
        normalizer.transform(np.ones((2, 2, 2)))
    assert normalizer.transform_with_powers(np.empty((0, 2))).shape == (0, 6)
    for bad in (0, 2.0):
        with pytest.raises(ValueError):
            QuantileNormalizer(num_quantiles=bad)


def test_json_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(3)
    x = np.column_stack([rng.exponential(size=999), rng.integers(0, 3, size=999)])
    normalizer = QuantileNormalizer(num_quantiles=37).fit(x)
    normalizer.to_json(tmp_path / "quantiles.json")
    again = QuantileNormalizer.from_json(tmp_path / "quantiles.json")
    assert again.num_quantiles == 37
    assert_array_equal(again.quantiles_, normalizer.quantiles_)
    probe = np.column_stack([np.linspace(-1, 8, 500), np.linspace(-1, 3, 500)])
    assert_array_equal(again.transform_with_powers(probe), normalizer.transform_with_powers(probe))


def test_from_dict_rejects_malformed_documents():
    document = QuantileNormalizer(num_quantiles=2).fit([0.0, 1.0, 2.0]).to_dict()
    assert json.loads(json.dumps(document)) == document
    for quantiles in ([[0, 2, 1]], [[0, 1]], [], [[0, float("nan"), 1]]):
        with pytest.raises(ValueError):
            QuantileNormalizer.from_dict({**document, "quantiles": quantiles})
