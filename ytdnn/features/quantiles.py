"""QuantileNormalizer: continuous features -> their empirical CDF in [0, 1) (paper §4.1).

The paper maps a continuous feature x to x̃ = CDF(x), approximated by linear interpolation
between quantiles computed in one pass over the training data before training, and also feeds
x̃² and √x̃. Here:

- ``fit`` sorts each column once and reads off ``num_quantiles + 1`` cut points at
  probabilities 0, 1/Q, ..., 1 (the linear, "type 7", quantile: the one ``np.quantile`` uses by
  default), so for the data 0, 1, ..., 100 the cut point at probability p is 100 p.
- ``transform`` inverts that: x -> the probability interpolated linearly between the cut points
  around x. For the data 0..100, x = 25 -> 0.25.
- Ties: when several cut points share one value v (a heavy mass such as many zeros, or a constant
  column), the CDF steps at v, as the true one does: v itself maps to the middle of the run's
  probabilities (its mid-rank), values just below v interpolate up to the start of the run and
  values just above v continue from its end. So a tied value always gets one consistent x̃ and
  the map stays monotone. With 60% zeros: 0 -> 0.3 and 1e-9 -> about 0.6. A constant column
  maps its value to 0.5.
- Clamp: x below the training minimum -> 0; x at or above the training maximum -> the largest
  float32 below 1 (1 - 2**-24), so x̃ stays in [0, 1) even after a cast to float32.
- NaN is an error (in ``fit`` and ``transform``); ±inf is an error in ``fit`` and clamps like any
  out-of-range value in ``transform``. Impute missing values before normalizing.

Outputs are float32: they feed the network.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ytdnn.features._fitted import check_fitted
from ytdnn.modeldir import load_errors

ONE_BELOW = float(np.nextafter(np.float32(1.0), np.float32(0.0)))  # 1 - 2**-24
_JSON_FORMAT = "ytdnn.quantile_normalizer"


class QuantileNormalizer:
    """Per-column empirical CDF. ``num_quantiles``: number of equal-probability intervals Q.

    Fitted attribute: ``quantiles_`` (float64 [F, Q + 1], cut points at probabilities k / Q,
    non-decreasing along each row; first = column minimum, last = column maximum).
    """

    def __init__(self, num_quantiles: int = 1000) -> None:
        if not isinstance(num_quantiles, int) or num_quantiles < 1:
            raise ValueError(f"num_quantiles must be an int >= 1, got {num_quantiles!r}")
        self.num_quantiles = num_quantiles
        self.quantiles_: np.ndarray | None = None

    @property
    def num_features(self) -> int:
        check_fitted(self, "quantiles_")
        return self.quantiles_.shape[0]

    def fit(self, x: Any) -> QuantileNormalizer:
        """``x``: [N] (one feature) or [N, F]; every value finite. One sort per column."""
        columns = _as_columns(x, "fit")  # [N, F]
        if columns.shape[0] == 0:
            raise ValueError("cannot fit a QuantileNormalizer on 0 rows")
        if not np.isfinite(columns).all():
            bad = np.flatnonzero(~np.isfinite(columns).all(axis=0)).tolist()
            raise ValueError(f"fit: column(s) {bad} hold NaN or infinite values; impute first")
        ordered = np.sort(columns, axis=0)  # [N, F]
        num_rows = ordered.shape[0]
        position = self._probabilities() * (num_rows - 1)  # [Q + 1], exact at both ends
        low = np.floor(position).astype(np.int64)
        high = np.minimum(low + 1, num_rows - 1)
        fraction = (position - low)[:, None]  # [Q + 1, 1]
        cuts = ordered[low] + (ordered[high] - ordered[low]) * fraction  # [Q + 1, F]
        # rounding in the interpolation can break monotonicity by an ulp; np.interp needs it
        cuts = np.maximum.accumulate(cuts, axis=0)
        self._set_quantiles(np.ascontiguousarray(cuts.T))
        return self

    def _probabilities(self) -> np.ndarray:
        return np.arange(self.num_quantiles + 1, dtype=np.float64) / self.num_quantiles

    def _set_quantiles(self, quantiles: np.ndarray) -> None:
        self.quantiles_ = quantiles  # [F, Q + 1]
        probabilities = self._probabilities()
        knots = [_tie_knots(row, probabilities) for row in quantiles]
        # every column's knots in one array: after one binary search per column, the CDF of all
        # columns is a few whole-array operations (serving normalises ~40 columns of a few
        # hundred candidates per request, where per-column NumPy calls cost more than the work)
        self._columns = [values for values, _, _ in knots]
        values, run_start, run_end = (np.concatenate(parts) for parts in zip(*knots))
        self._knots = (values, run_start, run_end, (run_start + run_end) / 2,
                       np.r_[0, np.cumsum([len(v) for v in self._columns])])

    def transform(self, x: Any) -> np.ndarray:
        """``x``: [N] (when F == 1) or [N, F] -> x̃ = CDF(x) in [0, 1), float32, same shape."""
        check_fitted(self, "quantiles_")
        columns = _as_columns(x, "transform")  # [N, F]
        if columns.shape[1] != self.num_features:
            raise ValueError(
                f"transform: expected {self.num_features} feature column(s), got {columns.shape[1]}"
            )
        if np.isnan(columns).any():
            bad = np.flatnonzero(np.isnan(columns).any(axis=0)).tolist()
            raise ValueError(f"transform: column(s) {bad} hold NaN; impute first")
        by_feature = np.ascontiguousarray(columns.T)  # [F, N]: searchsorted is faster on rows
        cdf = _empirical_cdf(by_feature, self._columns, *self._knots)  # [F, N]
        np.minimum(cdf, ONE_BELOW, out=cdf)  # the maximum itself maps to exactly 1
        return np.ascontiguousarray(cdf.T, dtype=np.float32).reshape(np.shape(x))

    def transform_with_powers(self, x: Any) -> np.ndarray:
        """``x``: [N] or [N, F] -> float32 [N, 3F] = [x̃ (F columns), x̃² (F), √x̃ (F)]."""
        cdf = self.transform(x).astype(np.float64).reshape(-1, self.num_features)  # [N, F]
        # powers in float64, then one cast: √(1 - 2**-24) rounds to 1.0 if taken in float32
        return np.concatenate([cdf, cdf**2, np.sqrt(cdf)], axis=1).astype(np.float32)

    # ---- persistence (JSON, never pickle) ------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        check_fitted(self, "quantiles_")
        return {
            "format": _JSON_FORMAT,
            "version": 1,
            "num_quantiles": self.num_quantiles,
            "quantiles": self.quantiles_.tolist(),  # floats: JSON repr round-trips exactly
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantileNormalizer:
        if data.get("format") != _JSON_FORMAT or data.get("version") != 1:
            raise ValueError(
                f"not a version-1 {_JSON_FORMAT} document: format={data.get('format')!r}, "
                f"version={data.get('version')!r}"
            )
        normalizer = cls(num_quantiles=data["num_quantiles"])
        quantiles = np.asarray(data["quantiles"], dtype=np.float64)
        expected = normalizer.num_quantiles + 1
        if quantiles.ndim != 2 or quantiles.shape[1] != expected or quantiles.shape[0] == 0:
            raise ValueError(f"quantiles must be [F, {expected}], got shape {quantiles.shape}")
        if not np.isfinite(quantiles).all() or (np.diff(quantiles, axis=1) < 0).any():
            raise ValueError("quantiles must be finite and non-decreasing along each row")
        normalizer._set_quantiles(quantiles)
        return normalizer

    @classmethod
    def from_cut_points(cls, cuts: Any) -> QuantileNormalizer:
        """A normalizer from cut points computed elsewhere (e.g. a distributed quantile sketch):
        [Q + 1] or [F, Q + 1] at probabilities 0, 1/Q, ..., 1, non-decreasing."""
        cuts = np.atleast_2d(np.asarray(cuts, dtype=np.float64))
        return cls.from_dict({"format": _JSON_FORMAT, "version": 1, "num_quantiles": cuts.shape[1] - 1,
                              "quantiles": cuts.tolist()})

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()) + "\n")

    @classmethod
    def from_json(cls, path: str | Path) -> QuantileNormalizer:
        """The normalizer ``to_json`` wrote; any failure is a ModelDirError naming ``path``."""
        with load_errors(path):
            return cls.from_dict(json.loads(Path(path).read_text()))


def _as_columns(x: Any, where: str) -> np.ndarray:
    """[N] or [N, F] numbers -> float64 [N, F] (a view when possible)."""
    array = np.asarray(x, dtype=np.float64)
    if array.ndim == 1:
        return array[:, None]
    if array.ndim == 2:
        return array
    raise ValueError(f"{where}: x must be [N] or [N, F], got shape {array.shape}")


def _tie_knots(
    cuts: np.ndarray, probabilities: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[Q + 1] sorted cut points -> distinct values [K] with the first and last probability of
    each value's run of cut points [K], [K] (equal unless the value is tied)."""
    values, first, counts = np.unique(cuts, return_index=True, return_counts=True)
    return values, probabilities[first], probabilities[first + counts - 1]


def _empirical_cdf(x: np.ndarray, columns: list[np.ndarray], values: np.ndarray, run_start: np.ndarray,
                   run_end: np.ndarray, mid: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """x [F, N] -> CDF(x) [F, N] in [0, 1]: 0 below the first value, 1 above the last, the mid-rank
    on a value, and linear from the end of one value's run to the start of the next between.

    columns: each column's distinct values [K_f]; values, run_start, run_end, mid: those of all
    columns one after another [sum K_f] (mid = the mid-rank of each value's run); starts [F + 1]:
    where each column's knots begin in them."""
    left = np.empty(x.shape, np.int64)  # [F, N] last value <= x in its column; -1 below all
    for f, column in enumerate(columns):
        left[f] = np.searchsorted(column, x[f], side="right") - 1
    n = x.shape[1]
    left, x = left.ravel(), x.ravel()  # [F N]
    knot = left + np.repeat(starts[:-1], n)  # [F N] position in the flat knots
    found = left >= 0
    between = found & (left < np.repeat(np.diff(starts), n) - 1)
    # every element computed, then chosen: whole-array gathers beat boolean-mask copies, and the
    # values chosen are those the masked arithmetic gave
    j = np.clip(knot, 0, max(len(values) - 2, 0))
    on_value = found & (values[np.maximum(knot, 0)] == x)
    with np.errstate(divide="ignore", invalid="ignore"):  # elements not between: discarded
        slope = (run_start[j + 1] - run_end[j]) / (values[j + 1] - values[j]) if len(values) > 1 else 0.0
        cdf = np.where(between, run_end[j] + slope * (x - values[j]), np.where(found, 1.0, 0.0))
    cdf = np.where(on_value, mid[np.maximum(knot, 0)], cdf)  # mid-rank of a (tied) value
    return cdf.reshape(len(columns), -1)
