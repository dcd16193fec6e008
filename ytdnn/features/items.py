"""Item features of the ranker (paper §4.1): "impression" features that describe the video.

The items table's string columns (channel, language, ...) become ids of their own vocabulary
(0 = unknown or missing), the multivalent ``categories`` become a bag that the model averages,
and ``upload_time`` / ``duration`` stay raw seconds here (the ranker normalises them by their CDF
together with its other continuous features). Every array is aligned with an item vocabulary
(row i = item id i of that vocabulary, row 0 = the OOV item, which has no features), so a batch
gathers its items' features with one fancy index.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ytdnn.features._fitted import check_fitted
from ytdnn.features.vocab import Vocabulary
from ytdnn.modeldir import ModelDir

_FORMAT = "ytdnn.item_features"
_SKIPPED = ("item_id", "title", "categories", "upload_time", "duration")  # not categorical ids


class ItemFeatureEncoder:
    """Per-item categorical ids, category bags, upload time and duration over ``items`` [V].

    ``max_categories``: vocabulary cap of each categorical column. Fitted: ``categorical_``
    {column: Vocabulary}, ``categories_`` (Vocabulary of the category strings, or None),
    ``categorical_ids_`` int64 [V, C], ``category_ids_`` int64 [M] with ``category_offsets_``
    int64 [V + 1] (CSR bags), ``upload_time_`` float64 [V] and ``duration_`` float64 [V]
    (NaN where unknown).
    """

    def __init__(self, max_categories: int = 100_000) -> None:
        self.max_categories = max_categories
        self.categorical_ids_: np.ndarray | None = None

    def fit(self, items: pa.Table | None, item_vocab: Vocabulary) -> ItemFeatureEncoder:
        """items: the canonical items table (or None); item_vocab: the id space to align with."""
        num_items = len(item_vocab)
        self.categorical_, self.categories_ = {}, None
        if items is None:
            items = pa.table({"item_id": item_vocab.token_array.slice(0, 0)})
        rows = item_vocab.encode(items.column("item_id"))  # [R] vocabulary id of every table row
        known = rows > 0  # items outside the vocabulary keep no features
        names = [c for c in items.column_names if c not in _SKIPPED and _is_string(items.column(c).type)]
        self.categorical_ids_ = np.zeros((num_items, len(names)), np.int64)
        for j, name in enumerate(names):
            vocab = Vocabulary(max_size=self.max_categories).fit(items.column(name))
            self.categorical_[name] = vocab
            self.categorical_ids_[rows[known], j] = vocab.encode(items.column(name))[known]
        self._fit_categories(items, rows, known, num_items)
        self.upload_time_ = _aligned(items, "upload_time", rows, known, num_items)
        self.duration_ = _aligned(items, "duration", rows, known, num_items)
        return self

    def _fit_categories(self, items: pa.Table, rows: np.ndarray, known: np.ndarray, num_items: int) -> None:
        lengths = np.zeros(num_items, np.int64)
        values = np.zeros(0, np.int64)
        if "categories" in items.column_names and len(items):
            column = items.column("categories").combine_chunks()
            flat = pc.list_flatten(column)
            if len(flat):
                self.categories_ = Vocabulary(max_size=self.max_categories).fit(flat)
                per_row = pc.fill_null(pc.list_value_length(column), 0).to_numpy().astype(np.int64)
                ids = self.categories_.encode(flat)  # [M] in table row order
                row_of = np.repeat(rows, per_row)  # [M] vocabulary id of each value's item
                keep = (row_of > 0) & (ids > 0)
                order = np.argsort(row_of[keep], kind="stable")
                values = ids[keep][order]
                lengths = np.bincount(row_of[keep], minlength=num_items)
        self.category_ids_ = values
        self.category_offsets_ = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

    # ---- what the model is built for ----------------------------------------------------------

    @property
    def categorical_sizes(self) -> list[int]:
        """Embedding table size of each categorical column (id 0 included)."""
        check_fitted(self, "categorical_ids_")
        return [len(v) for v in self.categorical_.values()]

    @property
    def num_categories(self) -> int:
        """Size of the category bag's table (1 = no categories: only the padding row)."""
        return 1 if self.categories_ is None else len(self.categories_)

    def column_index(self, name: str) -> int | None:
        """Position of categorical column ``name`` in ``categorical_ids_`` (None if absent)."""
        names = list(self.categorical_)
        return names.index(name) if name in names else None

    # ---- persistence: vocabularies as JSON, arrays as .npz (never pickled) --------------------

    def save(self, directory: str | Path) -> None:
        check_fitted(self, "categorical_ids_")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": _FORMAT, "max_categories": self.max_categories,
            "categorical": {k: v.to_dict() for k, v in self.categorical_.items()},
            "categories": None if self.categories_ is None else self.categories_.to_dict(),
        }
        (directory / "item_features.json").write_text(json.dumps(meta))
        np.savez(directory / "item_features.npz", categorical_ids=self.categorical_ids_,
                 category_ids=self.category_ids_, category_offsets=self.category_offsets_,
                 upload_time=self.upload_time_, duration=self.duration_)

    @classmethod
    def load(cls, directory: str | Path) -> ItemFeatureEncoder:
        """What ``save`` wrote into ``directory``: files confined to it, any failure a ModelDirError
        naming the file (ytdnn.modeldir)."""
        md = ModelDir(directory, what="item features")
        with md.loading():
            meta = md.read_json("item_features.json")
            if meta.get("format") != _FORMAT:
                raise md.error(f"not an item feature encoder: format {meta.get('format')!r}")
            enc = cls(max_categories=meta["max_categories"])
            enc.categorical_ = {k: Vocabulary.from_dict(v) for k, v in meta["categorical"].items()}
            categories = meta["categories"]
            enc.categories_ = None if categories is None else Vocabulary.from_dict(categories)
            with np.load(md.file("item_features.npz"), allow_pickle=False) as arrays:
                enc.categorical_ids_ = arrays["categorical_ids"]
                enc.category_ids_ = arrays["category_ids"]
                enc.category_offsets_ = arrays["category_offsets"]
                enc.upload_time_, enc.duration_ = arrays["upload_time"], arrays["duration"]
        return enc


def _is_string(arrow_type: pa.DataType) -> bool:
    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)


def _aligned(items: pa.Table, name: str, rows: np.ndarray, known: np.ndarray, num_items: int) -> np.ndarray:
    """Numeric column ``name`` as float64 [V] aligned with the vocabulary; NaN where unknown."""
    out = np.full(num_items, np.nan)
    if name in items.column_names:
        values = items.column(name).cast(pa.float64()).to_numpy(zero_copy_only=False)
        out[rows[known]] = values[known]
    return out
