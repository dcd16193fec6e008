"""User features (paper §3.3): categorical ones embedded, continuous ones normalized to [0, 1).

Every column of the users table but ``user_id`` is a feature, the built-in ones (age, gender, geo,
...) and any extra ones alike, its kind set by its type (``ytdnn.data.schema.feature_kind``):

- text (geo, device, language, gender, occupation, ...) becomes ids of its own vocabulary
  (0 = unknown or missing), which the towers embed;
- numbers go through the quantile normalizer, fed as x̃; a missing value gives 0 there and sets
  a per-column "missing" flag, so the network can tell "unknown" from "youngest". An extra
  numeric column is also fed as x̃² and √x̃, §4.1's rule for continuous features; ``age``, the
  paper's own user feature, stays as §3.3 has it (x̃ alone);
- lists of text become averaged bags, as averaged one-hots (features/lists.py).

The numbers and the lists make the dense block (``user_continuous``), named column by column by
``dense_names``. The candidate tower and the ranker both read this encoder's output, so a new
column reaches both without a change to either model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ytdnn.data.schema import (
    CATEGORICAL,
    LIST,
    NUMERIC,
    USERS,
    DataError,
    feature_column,
    feature_kind,
)
from ytdnn.features.lists import (
    MAX_LIST_VALUES,
    averaged_one_hot,
    fit_list_vocabulary,
    list_ids,
    value_names,
)
from ytdnn.features.quantiles import QuantileNormalizer
from ytdnn.features.vocab import Vocabulary
from ytdnn.modeldir import load_errors

_FORMAT = "ytdnn.user_features"


class UserFeatureEncoder:
    """Encodes a users table into categorical ids [U, C] and a dense block [U, Fc].

    ``columns``: which feature columns to use (None = every column but ``user_id``).
    ``max_list_values``: values kept per list column (each one a column of the dense block).
    Fitted: ``categorical_`` {column: Vocabulary}, ``continuous_`` list of numeric columns,
    ``normalizer_`` (QuantileNormalizer over them, or None), ``powered_`` the extra numeric
    columns (fed with x̃² and √x̃ too), ``lists_`` {column: Vocabulary}.
    """

    def __init__(self, columns: list[str] | None = None, max_categories: int = 100_000,
                 max_list_values: int = MAX_LIST_VALUES) -> None:
        self.columns = columns
        self.max_categories = max_categories
        self.max_list_values = max_list_values
        self.categorical_: dict[str, Vocabulary] | None = None
        self.continuous_: list[str] | None = None
        self.normalizer_: QuantileNormalizer | None = None
        self.lists_: dict[str, Vocabulary] | None = None
        self.powered_: list[str] | None = None

    def fit(self, users: pa.Table | None) -> UserFeatureEncoder:
        self.categorical_, self.continuous_, self.normalizer_, self.lists_ = {}, [], None, {}
        self.powered_ = []
        if users is None:
            return self
        names = (
            self.columns
            if self.columns is not None
            else [c for c in users.column_names if c != "user_id"]
        )
        for name in names:
            column = _feature(users, name)
            kind = feature_kind(column.type)
            if kind == CATEGORICAL:
                self.categorical_[name] = Vocabulary(max_size=self.max_categories).fit(column)
            elif kind == NUMERIC:
                self.continuous_.append(name)
                if name not in USERS.names:
                    self.powered_.append(name)
            elif kind == LIST:
                self.lists_[name] = fit_list_vocabulary(column, self.max_list_values)
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
        """Width of the dense block: each numeric column's x̃ and missing flag, the extra ones'
        x̃² and √x̃, then each list column's one-hot."""
        return 2 * len(self.continuous_) + 2 * len(self.powered_) + sum(len(v) - 1 for v in self.lists_.values())

    def dense_names(self) -> list[str]:
        """The name of every column of the dense block, in order: "age", "income", "age missing",
        "income missing", "income^2", "sqrt(income)", then "interests=music", ..."""
        names = list(self.continuous_) + [f"{c} missing" for c in self.continuous_]
        names += [f"{c}^2" for c in self.powered_] + [f"sqrt({c})" for c in self.powered_]
        for name, vocab in self.lists_.items():
            names += value_names(name, vocab)
        return names

    def _numeric(self, users: pa.Table) -> np.ndarray:
        cols = []
        for name in self.continuous_:
            if name in users.column_names:
                values = _feature(users, name)
                if feature_kind(values.type) != NUMERIC:
                    raise DataError(f"expected numbers, got {values.type}", column=name)
                cols.append(values.cast(pa.float64()).to_numpy(zero_copy_only=False))
            else:
                cols.append(np.full(len(users), np.nan))
        return np.stack(cols, axis=1)  # [U, N], NaN where missing

    def transform(self, users: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        """users [U rows] -> (categorical ids int64 [U, C], dense float32 [U, num_continuous]).

        A column the table lacks is missing for every user (0 ids, missing flags, empty bags)."""
        n = len(users)
        cat = np.zeros((n, len(self.categorical_)), dtype=np.int64)
        for j, (name, vocab) in enumerate(self.categorical_.items()):
            if name in users.column_names:
                cat[:, j] = vocab.encode(_feature(users, name))
        dense = [self._numeric_block(users)] if self.continuous_ else []
        for name, vocab in self.lists_.items():
            if name in users.column_names:
                ids, offsets = list_ids(_feature(users, name), vocab)
                dense.append(averaged_one_hot(ids, offsets, np.arange(n), len(vocab) - 1))
            else:
                dense.append(np.zeros((n, len(vocab) - 1), np.float32))
        return cat, np.concatenate([np.zeros((n, 0), np.float32), *dense], axis=1).astype(np.float32)

    def _numeric_block(self, users: pa.Table) -> np.ndarray:
        """[U, 2N + 2P] = x̃ (0 where missing), missing flags, then x̃² and √x̃ of the P powered
        columns: the layout of encoders saved before there were powers, with the powers after."""
        values = self._numeric(users)
        missing = np.isnan(values)  # [U, N]
        filled = np.where(missing, self.normalizer_.quantiles_[:, 0], values)
        cdf = np.where(missing, 0.0, self.normalizer_.transform(filled).reshape(len(values), -1))  # [U, N]
        powered = cdf[:, [self.continuous_.index(c) for c in self.powered_]].astype(np.float64)  # [U, P]
        # in float64, then one cast: √(1 - 2**-24) rounds to 1.0 if taken in float32 (quantiles.py)
        return np.concatenate([cdf, missing, powered**2, np.sqrt(powered)], axis=1).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "columns": self.columns,
            "max_categories": self.max_categories,
            "categorical": {k: v.to_dict() for k, v in self.categorical_.items()},
            "continuous": self.continuous_,
            "normalizer": None if self.normalizer_ is None else self.normalizer_.to_dict(),
            "powered": self.powered_,
            "max_list_values": self.max_list_values,
            "lists": {k: v.to_dict() for k, v in self.lists_.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UserFeatureEncoder:
        if data.get("format") != _FORMAT:
            raise ValueError(f"not a user feature encoder: format {data.get('format')!r}")
        # encoders saved before extra columns had powers and lists were fed have neither key
        enc = cls(columns=data["columns"], max_categories=data["max_categories"],
                  max_list_values=data.get("max_list_values", MAX_LIST_VALUES))
        enc.powered_ = list(data.get("powered", []))
        enc.categorical_ = {k: Vocabulary.from_dict(v) for k, v in data["categorical"].items()}
        enc.continuous_ = list(data["continuous"])
        enc.normalizer_ = (
            None if data["normalizer"] is None else QuantileNormalizer.from_dict(data["normalizer"])
        )
        enc.lists_ = {k: Vocabulary.from_dict(v) for k, v in data.get("lists", {}).items()}
        return enc

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def from_json(cls, path: str | Path) -> UserFeatureEncoder:
        """The encoder ``to_json`` wrote; any failure is a ModelDirError naming ``path``."""
        with load_errors(path):
            return cls.from_dict(json.loads(Path(path).read_text()))


def _feature(users: pa.Table, name: str) -> pa.ChunkedArray:
    """Column ``name`` as its feature type (a table that skipped validation, such as the features
    of a request, may hold large or dictionary-encoded types); DataError for no feature type."""
    return feature_column(users.column(name), name, "<users>")
