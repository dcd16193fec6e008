"""Item features of the ranker (paper §4.1): "impression" features that describe the video.

The items table's string columns (channel, language, ...) become ids of their own vocabulary
(0 = unknown or missing), the multivalent ``categories`` become a bag that the model averages,
and ``upload_time`` / ``duration`` stay raw seconds here (the ranker normalises them by their CDF
together with its other continuous features). Every array is aligned with an item vocabulary
(row i = item id i of that vocabulary, row 0 = the OOV item, which has no features), so a batch
gathers its items' features with one fancy index.

Extra columns are features by their type (``ytdnn.data.schema.feature_kind``): text is
categorical like channel; numbers stay raw here (``numeric_``, NaN where unknown) and the ranker
normalises them with its continuous features; lists of text are bags of their own (CSR per
column), which the ranker reads as averaged one-hots (features/lists.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ytdnn.data.schema import CATEGORICAL, LIST, NUMERIC, feature_column, feature_kind
from ytdnn.features._fitted import check_fitted
from ytdnn.features.lists import (
    MAX_LIST_VALUES,
    averaged_one_hot,
    fit_list_vocabulary,
    list_ids,
    value_names,
)
from ytdnn.features.vocab import Vocabulary
from ytdnn.modeldir import ModelDir

_FORMAT = "ytdnn.item_features"
# built-in columns with features of their own (title: none), so never extra features
_BUILT_IN = ("item_id", "title", "categories", "upload_time", "duration")


class ItemFeatureEncoder:
    """Per-item categorical ids, category bags, upload time and duration over ``items`` [V].

    ``max_categories``: vocabulary cap of each categorical column. Fitted: ``categorical_``
    {column: Vocabulary}, ``categories_`` (Vocabulary of the category strings, or None),
    ``categorical_ids_`` int64 [V, C], ``category_ids_`` int64 [M] with ``category_offsets_``
    int64 [V + 1] (CSR bags), ``upload_time_`` float64 [V] and ``duration_`` float64 [V]
    (NaN where unknown); of the extra columns, ``numeric_names_`` with ``numeric_`` float64
    [V, K] (NaN where unknown) and ``numeric_fill_`` [K] (each column's median over the known
    items, what the ranker feeds for an unknown value beside its missing flag), and ``lists_``
    {column: Vocabulary} with ``list_bags_`` {column: (ids [M], offsets [V + 1])}.
    """

    def __init__(self, max_categories: int = 100_000, max_list_values: int = MAX_LIST_VALUES) -> None:
        self.max_categories = max_categories
        self.max_list_values = max_list_values
        self.categorical_ids_: np.ndarray | None = None

    def fit(self, items: pa.Table | None, item_vocab: Vocabulary) -> ItemFeatureEncoder:
        """items: the canonical items table (or None); item_vocab: the id space to align with."""
        num_items = len(item_vocab)
        self.categorical_, self.categories_ = {}, None
        if items is None:
            items = pa.table({"item_id": item_vocab.token_array.slice(0, 0)})
        rows = item_vocab.encode(items.column("item_id"))  # [R] vocabulary id of every table row
        known = rows > 0  # items outside the vocabulary keep no features
        extra = {c: feature_column(items.column(c), c, "<items>") for c in items.column_names if c not in _BUILT_IN}
        kinds = {c: feature_kind(column.type) for c, column in extra.items()}
        names = [c for c, kind in kinds.items() if kind == CATEGORICAL]
        self.categorical_ids_ = np.zeros((num_items, len(names)), np.int64)
        for j, name in enumerate(names):
            vocab = Vocabulary(max_size=self.max_categories).fit(extra[name])
            self.categorical_[name] = vocab
            self.categorical_ids_[rows[known], j] = vocab.encode(extra[name])[known]
        self._fit_categories(items, rows, known, num_items)
        self.upload_time_ = _aligned(items, "upload_time", rows, known, num_items)
        self.duration_ = _aligned(items, "duration", rows, known, num_items)
        self.numeric_names_ = [c for c, kind in kinds.items() if kind == NUMERIC]
        self.numeric_ = np.full((num_items, len(self.numeric_names_)), np.nan)
        for j, name in enumerate(self.numeric_names_):
            self.numeric_[:, j] = _aligned(extra, name, rows, known, num_items)
        present = ~np.isnan(self.numeric_[1:])
        self.numeric_fill_ = np.array([np.median(self.numeric_[1:, j][present[:, j]]) if present[:, j].any() else 0.0
                                       for j in range(len(self.numeric_names_))])
        self.lists_, self.list_bags_ = {}, {}
        for name in (c for c, kind in kinds.items() if kind == LIST):
            self.lists_[name] = vocab = fit_list_vocabulary(extra[name].filter(pa.array(known)), self.max_list_values)
            ids, offsets = list_ids(extra[name], vocab)  # [M], [R + 1] by table row
            lengths = np.zeros(num_items, np.int64)
            lengths[rows[known]] = np.diff(offsets)[known]
            value_rows = np.repeat(rows, np.diff(offsets))  # [M] vocabulary id of each value's item
            order = np.argsort(value_rows, kind="stable")
            keep = value_rows[order] > 0
            self.list_bags_[name] = (ids[order][keep], np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
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

    @property
    def num_list_values(self) -> int:
        """Width of ``list_features``: one column per kept value of every list column."""
        return sum(len(v) - 1 for v in self.lists_.values())

    def list_names(self) -> list[str]:
        """The names of the columns of ``list_features``, in order ("genres=Drama", ...)."""
        return [n for name, vocab in self.lists_.items() for n in value_names(name, vocab)]

    def list_features(self, items: np.ndarray) -> np.ndarray:
        """items [Q] vocabulary ids -> float32 [Q, num_list_values]: every list column's averaged
        one-hot, side by side."""
        blocks = [averaged_one_hot(*self.list_bags_[name], items, len(vocab) - 1) for name, vocab in self.lists_.items()]
        return np.concatenate([np.zeros((len(items), 0), np.float32), *blocks], axis=1)

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
            "numeric": self.numeric_names_, "max_list_values": self.max_list_values,
            "lists": {k: v.to_dict() for k, v in self.lists_.items()},  # in the order of list_bags_j
        }
        (directory / "item_features.json").write_text(json.dumps(meta))
        bags = {}
        for j, (ids, offsets) in enumerate(self.list_bags_.values()):  # npz keys by position: any
            bags[f"list_ids_{j}"], bags[f"list_offsets_{j}"] = ids, offsets  # column name is fine
        np.savez(directory / "item_features.npz", categorical_ids=self.categorical_ids_,
                 category_ids=self.category_ids_, category_offsets=self.category_offsets_,
                 upload_time=self.upload_time_, duration=self.duration_,
                 numeric=self.numeric_, numeric_fill=self.numeric_fill_, **bags)

    @classmethod
    def load(cls, directory: str | Path) -> ItemFeatureEncoder:
        """What ``save`` wrote into ``directory``: files confined to it, any failure a ModelDirError
        naming the file (ytdnn.modeldir)."""
        md = ModelDir(directory, what="item features")
        with md.loading():
            meta = md.read_json("item_features.json")
            if meta.get("format") != _FORMAT:
                raise md.error(f"not an item feature encoder: format {meta.get('format')!r}")
            enc = cls(max_categories=meta["max_categories"],
                      max_list_values=meta.get("max_list_values", MAX_LIST_VALUES))
            enc.categorical_ = {k: Vocabulary.from_dict(v) for k, v in meta["categorical"].items()}
            categories = meta["categories"]
            enc.categories_ = None if categories is None else Vocabulary.from_dict(categories)
            # directories saved before extra numbers and lists were features have neither
            enc.numeric_names_ = list(meta.get("numeric", []))
            enc.lists_ = {k: Vocabulary.from_dict(v) for k, v in meta.get("lists", {}).items()}
            with np.load(md.file("item_features.npz"), allow_pickle=False) as arrays:
                enc.categorical_ids_ = arrays["categorical_ids"]
                enc.category_ids_ = arrays["category_ids"]
                enc.category_offsets_ = arrays["category_offsets"]
                enc.upload_time_, enc.duration_ = arrays["upload_time"], arrays["duration"]
                num_items = len(enc.upload_time_)
                width = len(enc.numeric_names_)
                enc.numeric_ = arrays["numeric"] if width else np.full((num_items, 0), np.nan)
                enc.numeric_fill_ = arrays["numeric_fill"] if width else np.zeros(0)
                enc.list_bags_ = {name: (arrays[f"list_ids_{j}"], arrays[f"list_offsets_{j}"])
                                  for j, name in enumerate(enc.lists_)}
            _check_extras(md, enc, num_items)
        return enc


def _check_extras(md: ModelDir, enc: ItemFeatureEncoder, num_items: int) -> None:
    """ModelDirError unless the extra features' arrays fit the item vocabulary and their own."""
    md.current = "item_features.npz"
    if enc.numeric_.shape != (num_items, len(enc.numeric_names_)) or enc.numeric_fill_.shape != (len(enc.numeric_names_),):
        raise md.error(f"numeric features are not [{num_items}, {len(enc.numeric_names_)}]")
    for name, (ids, offsets) in enc.list_bags_.items():
        width = len(enc.lists_[name]) - 1
        if (offsets.shape != (num_items + 1,) or offsets[0] != 0 or offsets[-1] != len(ids)
                or (np.diff(offsets) < 0).any() or ids.dtype.kind not in "iu"
                or (len(ids) and not 1 <= ids.min() <= ids.max() <= width)):
            raise md.error(f"the bags of list column {name!r} do not fit {num_items} items and {width} values")


def _aligned(items: pa.Table | dict, name: str, rows: np.ndarray, known: np.ndarray, num_items: int) -> np.ndarray:
    """Numeric column ``name`` of a table (or of {name: column}) as float64 [V] aligned with the
    vocabulary; NaN where unknown."""
    out = np.full(num_items, np.nan)
    names = items.column_names if isinstance(items, pa.Table) else items
    if name in names:
        column = items.column(name) if isinstance(items, pa.Table) else items[name]
        values = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
        out[rows[known]] = values[known]
    return out
