"""User features (paper §3.3): categorical ones embedded, continuous ones normalized to [0, 1).

String columns of the users table (geo, device, language, gender, occupation, ...) become ids of
their own vocabulary (0 = unknown or missing). Numeric columns (age, ...) go through the quantile
normalizer; a missing value becomes 0 and sets a per-column "missing" flag, so the network can
tell "unknown" from "youngest".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ytdnn.features.quantiles import QuantileNormalizer
from ytdnn.features.vocab import Vocabulary
from ytdnn.modeldir import load_errors

_FORMAT = "ytdnn.user_features"


class UserFeatureEncoder:
    """Encodes a users table into categorical ids [U, C] and continuous values [U, 2N].

    ``columns``: which feature columns to use (None = every column but ``user_id``).
    Fitted: ``categorical_`` {column: Vocabulary}, ``continuous_`` list of numeric columns,
    ``normalizer_`` (QuantileNormalizer over them, or None).
    """

    def __init__(self, columns: list[str] | None = None, max_categories: int = 100_000) -> None:
        self.columns = columns
        self.max_categories = max_categories
        self.categorical_: dict[str, Vocabulary] | None = None
        self.continuous_: list[str] | None = None
        self.normalizer_: QuantileNormalizer | None = None

    def fit(self, users: pa.Table | None) -> UserFeatureEncoder:
        self.categorical_, self.continuous_, self.normalizer_ = {}, [], None
        if users is None:
            return self
        names = (
            self.columns
            if self.columns is not None
            else [c for c in users.column_names if c != "user_id"]
        )
        for name in names:
            column = users.column(name)
            if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                self.categorical_[name] = Vocabulary(max_size=self.max_categories).fit(column)
            elif pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
                self.continuous_.append(name)
        if self.continuous_:
            values = self._numeric(users)
            present = ~np.isnan(values)
            # fit each column on its present values only; an all-missing column gets a flat CDF
            filled = np.where(
                present, values, np.nanmedian(np.where(present.any(0), values, 0.0), axis=0)
            )
            self.normalizer_ = QuantileNormalizer(num_quantiles=min(1000, len(values))).fit(filled)
        return self

    @property
    def categorical_sizes(self) -> list[int]:
        """Embedding table size of each categorical column, id 0 included."""
        return [len(v) for v in self.categorical_.values()]

    @property
    def num_continuous(self) -> int:
        """Width of the continuous block: each column's CDF value and its missing flag."""
        return 2 * len(self.continuous_)

    def _numeric(self, users: pa.Table) -> np.ndarray:
        cols = []
        for name in self.continuous_:
            if name in users.column_names:
                cols.append(users.column(name).cast(pa.float64()).to_numpy(zero_copy_only=False))
            else:
                cols.append(np.full(len(users), np.nan))
        return np.stack(cols, axis=1)  # [U, N], NaN where missing

    def transform(self, users: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        """users [U rows] -> (categorical ids int64 [U, C], continuous float32 [U, 2N])."""
        n = len(users)
        cat = np.zeros((n, len(self.categorical_)), dtype=np.int64)
        for j, (name, vocab) in enumerate(self.categorical_.items()):
            if name in users.column_names:
                cat[:, j] = vocab.encode(users.column(name))
        if not self.continuous_:
            return cat, np.zeros((n, 0), dtype=np.float32)
        values = self._numeric(users)
        missing = np.isnan(values)
        cdf = self.normalizer_.transform(
            np.where(missing, self.normalizer_.quantiles_[:, 0], values)
        )
        cdf = np.where(missing, 0.0, cdf.reshape(n, -1))
        return cat, np.concatenate([cdf, missing], axis=1).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "columns": self.columns,
            "max_categories": self.max_categories,
            "categorical": {k: v.to_dict() for k, v in self.categorical_.items()},
            "continuous": self.continuous_,
            "normalizer": None if self.normalizer_ is None else self.normalizer_.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UserFeatureEncoder:
        if data.get("format") != _FORMAT:
            raise ValueError(f"not a user feature encoder: format {data.get('format')!r}")
        enc = cls(columns=data["columns"], max_categories=data["max_categories"])
        enc.categorical_ = {k: Vocabulary.from_dict(v) for k, v in data["categorical"].items()}
        enc.continuous_ = list(data["continuous"])
        enc.normalizer_ = (
            None if data["normalizer"] is None else QuantileNormalizer.from_dict(data["normalizer"])
        )
        return enc

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def from_json(cls, path: str | Path) -> UserFeatureEncoder:
        """The encoder ``to_json`` wrote; any failure is a ModelDirError naming ``path``."""
        with load_errors(path):
            return cls.from_dict(json.loads(Path(path).read_text()))
