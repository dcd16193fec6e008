"""Per-user event streams: every watch and search token, encoded and sorted by (user, time).

The candidate examples and the serving-time features are both windows over these streams, so a
history is never copied per example: an example is (user, where its history ends), and a batch
gathers the last <= H events before that point with one vectorized index computation.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ytdnn.data.schema import DataError, has_timestamps
from ytdnn.features.quantiles import QuantileNormalizer
from ytdnn.features.text import tokenize_many
from ytdnn.features.users import UserFeatureEncoder
from ytdnn.features.vocab import ARROW_TYPES, Vocabulary


@dataclass
class EventStreams:
    """CSR-style per-user streams. Row 0 of the user space is the unknown user (no events).

    watch_items [W], watch_times [W] (int64 seconds; 0 for unordered logs), watch_offsets [U + 1];
    tokens [T], token_times [T], token_offsets [U + 1]; user_categorical [U, C] int64 ids,
    user_continuous [U, Fc] float32. Events of user u are [offsets[u], offsets[u + 1]).
    """

    watch_items: np.ndarray
    watch_times: np.ndarray
    watch_offsets: np.ndarray
    tokens: np.ndarray
    token_times: np.ndarray
    token_offsets: np.ndarray
    user_categorical: np.ndarray
    user_continuous: np.ndarray
    ordered: bool

    @property
    def num_users(self) -> int:
        return len(self.watch_offsets) - 1

    def watch_users(self) -> np.ndarray:
        """[W] the user row of every watch."""
        return np.repeat(np.arange(self.num_users), np.diff(self.watch_offsets))


class Featurizer:
    """Fits the vocabularies of candidate generation on training logs and encodes logs to streams.

    Fitted: ``items_`` (item ids, top ``max_items`` by watch count), ``tokens_`` (search tokens),
    ``users_`` (every user id seen; 0 = unknown), ``user_features_``, ``ordered_`` (whether the log
    has timestamps), ``window_start_`` / ``window_end_`` (seconds; the training window),
    ``example_age_`` (the CDF of the example ages, None for unordered logs).

    The example age (paper §3.3) is fed as its empirical CDF over the training watches, fit here
    (§4.1: networks are sensitive to the scale and distribution of their inputs). The input is then
    the same whatever the unit or span of the timestamps: a 7-month log and a 20-year one both
    give ages in [0, 1), where a fixed scale in days gave the 20-year log inputs of ~270 (square
    ~75,000) and a training loss above 300.
    """

    AGE_QUANTILES = 1000

    def __init__(self, max_items: int | None = 1_000_000, max_tokens: int | None = 1_000_000):
        self.max_items = max_items  # paper §3.5: 1M videos, 1M search tokens
        self.max_tokens = max_tokens

    def fit(self, watches: pa.Table, searches: pa.Table | None = None, users: pa.Table | None = None) -> Featurizer:
        self.ordered_ = has_timestamps(watches)
        if self.ordered_ and watches.column("timestamp").null_count:
            raise DataError("some watches have a timestamp and some do not", column="timestamp")
        self.items_ = Vocabulary(max_size=self.max_items).fit(watches.column("item_id"))
        user_ids = watches.column("user_id")
        if users is not None:
            user_ids = pa.chunked_array(user_ids.chunks + users.column("user_id").chunks)
        self.users_ = Vocabulary().fit(user_ids)
        self.tokens_ = None
        if searches is not None and len(searches):
            token_values = tokenize_many(searches.column("query")).flatten()
            if len(token_values):
                self.tokens_ = Vocabulary(max_size=self.max_tokens).fit(token_values)
        self.user_features_ = UserFeatureEncoder().fit(users)
        if self.ordered_:
            times = watches.column("timestamp")
            self.window_start_, self.window_end_ = int(pc.min(times).as_py()), int(pc.max(times).as_py())
            ages = self.window_end_ - _times(watches).astype(np.float64)  # [W] seconds
            self.example_age_ = QuantileNormalizer(self.AGE_QUANTILES).fit(ages)
        else:
            self.window_start_ = self.window_end_ = 0
            self.example_age_ = None
        return self

    def fit_counted(self, ordered: bool, items: tuple, users: tuple, tokens: tuple | None,
                    user_features: UserFeatureEncoder, window: tuple[int, int],
                    example_age: QuantileNormalizer | None) -> Featurizer:
        """Fit from parts counted elsewhere, e.g. in one distributed pass (ytdnn.scale.spark):
        items, users, tokens: (distinct ids [N], counts [N]) as ``Vocabulary.fit_counts`` takes
        them; window: (first, last) timestamp; example_age: fitted on the watches' ages."""
        self.ordered_ = ordered
        self.items_ = Vocabulary(max_size=self.max_items).fit_counts(*items)
        self.users_ = Vocabulary().fit_counts(*users)
        self.tokens_ = None if tokens is None else Vocabulary(max_size=self.max_tokens).fit_counts(*tokens)
        self.user_features_ = user_features
        self.window_start_, self.window_end_ = window
        self.example_age_ = example_age
        return self

    def for_users(self, user_ids: pa.ChunkedArray | pa.Array) -> Featurizer:
        """A copy whose user rows cover only ``user_ids`` (the users of one partition), so the
        streams of a few users are not as long as the whole user vocabulary."""
        part = copy.copy(self)
        part.users_ = Vocabulary().fit(user_ids)
        return part

    def example_age(self, age_seconds) -> np.ndarray:
        """Example ages [N] (seconds before the end of the training window) -> float32 [N] in
        [0, 1), the model's input. 0 for unordered logs, which have no age."""
        age_seconds = np.asarray(age_seconds, dtype=np.float64)
        if self.example_age_ is None:
            return np.zeros(age_seconds.shape, np.float32)
        return self.example_age_.transform(age_seconds)

    @property
    def serving_age(self) -> float:
        """The normalized example age of "now" (age 0), which serving feeds (§3.3)."""
        return float(self.example_age(np.zeros(1))[0])

    @property
    def num_items(self) -> int:
        return len(self.items_)

    @property
    def num_tokens(self) -> int:
        return 1 if self.tokens_ is None else len(self.tokens_)

    def no_watches(self) -> pa.Table:
        """An empty watches table of the vocabularies' id types: the streams of no events."""
        return pa.table({"user_id": pa.array([], ARROW_TYPES[self.users_.token_type_]),
                         "item_id": pa.array([], ARROW_TYPES[self.items_.token_type_]),
                         "timestamp": pa.array([], pa.int64())})

    def streams(self, watches: pa.Table, searches: pa.Table | None = None, users: pa.Table | None = None) -> EventStreams:
        """Encode logs into per-user streams sorted by (user, time, item id)."""
        num_users = len(self.users_)
        w_user = self.users_.encode(watches.column("user_id"))
        w_item = self.items_.encode(watches.column("item_id"))
        w_time = _times(watches) if self.ordered_ else np.zeros(len(watches), np.int64)
        item_rank = _rank(watches.column("item_id"))  # ties in time: numeric item id order
        order = np.lexsort((item_rank, w_time, w_user))
        watch_offsets = _offsets(w_user[order], num_users)
        tokens, token_times, token_offsets = self._token_stream(searches, num_users)
        cat = np.zeros((num_users, len(self.user_features_.categorical_)), np.int64)
        cont = np.zeros((num_users, self.user_features_.num_continuous), np.float32)
        if users is not None and len(users):
            rows = self.users_.encode(users.column("user_id"))
            cat[rows], cont[rows] = self.user_features_.transform(users)
            cat[0], cont[0] = 0, 0.0
        return EventStreams(
            watch_items=w_item[order], watch_times=w_time[order], watch_offsets=watch_offsets,
            tokens=tokens, token_times=token_times, token_offsets=token_offsets,
            user_categorical=cat, user_continuous=cont, ordered=self.ordered_,
        )

    def _token_stream(self, searches: pa.Table | None, num_users: int):
        if searches is None or len(searches) == 0 or self.tokens_ is None:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(num_users + 1, np.int64)
        token_lists = tokenize_many(searches.column("query"))
        per_query = np.diff(token_lists.offsets.to_numpy())
        s_user = np.repeat(self.users_.encode(searches.column("user_id")), per_query)
        s_time = np.repeat(_times(searches), per_query)
        s_token = self.tokens_.encode(token_lists.flatten())
        order = np.lexsort((s_time, s_user))  # stable: token order within a query is kept
        return s_token[order], s_time[order], _offsets(s_user[order], num_users)

    def to_dict(self) -> dict:
        return {
            "max_items": self.max_items, "max_tokens": self.max_tokens, "ordered": self.ordered_,
            "window_start": self.window_start_, "window_end": self.window_end_,
        }

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "featurizer.json").write_text(json.dumps(self.to_dict(), indent=2))
        self.items_.to_json(directory / "items.json")
        self.users_.to_json(directory / "users.json")
        if self.tokens_ is not None:
            self.tokens_.to_json(directory / "tokens.json")
        self.user_features_.to_json(directory / "user_features.json")
        if self.example_age_ is not None:
            self.example_age_.to_json(directory / "example_age.json")

    @classmethod
    def load(cls, directory: str | Path) -> Featurizer:
        directory = Path(directory)
        meta = json.loads((directory / "featurizer.json").read_text())
        f = cls(max_items=meta["max_items"], max_tokens=meta["max_tokens"])
        f.ordered_, f.window_start_, f.window_end_ = meta["ordered"], meta["window_start"], meta["window_end"]
        f.items_ = Vocabulary.from_json(directory / "items.json")
        f.users_ = Vocabulary.from_json(directory / "users.json")
        tokens = directory / "tokens.json"
        f.tokens_ = Vocabulary.from_json(tokens) if tokens.exists() else None
        f.user_features_ = UserFeatureEncoder.from_json(directory / "user_features.json")
        f.example_age_ = QuantileNormalizer.from_json(directory / "example_age.json") if f.ordered_ else None
        return f


def _times(table: pa.Table) -> np.ndarray:
    return table.column("timestamp").to_numpy(zero_copy_only=False).astype(np.int64)


def _rank(ids: pa.ChunkedArray) -> np.ndarray:
    """[N] rank of each id in sorted id order (numeric for integer ids)."""
    return np.unique(ids.to_numpy(zero_copy_only=False), return_inverse=True)[1].astype(np.int64)


def _offsets(sorted_rows: np.ndarray, num_rows: int) -> np.ndarray:
    """[N] sorted row ids -> [num_rows + 1] CSR offsets."""
    return np.searchsorted(sorted_rows, np.arange(num_rows + 1), side="left").astype(np.int64)


def windows(stream: np.ndarray, start: np.ndarray, end: np.ndarray, max_len: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The last <= max_len values of stream[start_b:end_b] for every b.

    stream [S]; start, end [B] -> (values [sum of lengths], offsets [B]) ready for EmbeddingBag.
    """
    positions, offsets = window_positions(start, end, max_len)
    return stream[positions], offsets


def window_positions(start: np.ndarray, end: np.ndarray, max_len: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Stream positions of ``windows``: (the last <= max_len of start_b..end_b - 1 for every b,
    concatenated [sum of lengths]; offsets [B] where each b's run begins)."""
    begin = start if max_len is None else np.maximum(start, end - max_len)
    lengths = np.maximum(end - begin, 0)
    offsets = np.zeros(len(lengths), np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    return np.repeat(begin - offsets, lengths) + np.arange(int(lengths.sum())), offsets
