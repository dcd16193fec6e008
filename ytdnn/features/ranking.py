"""RankingFeaturizer: the ranker's vocabularies and feature computation (paper §4.1).

It owns the ranker's own id spaces, so a ranker can be trained with the features of one candidate
generator and serve behind another (a generator refit on more data) as long as both encode user
features alike (``check_generator``):

- ``items_``: the ranker's item vocabulary, top ``max_items`` by frequency over the watches and
  impressions it was fitted on; OOV -> 0, the zero embedding. Generator item ids are mapped into
  it through the original ids (``item_map``).
- ``item_features_``: channel, language, ... ids, category bags, upload time, duration, and the
  items table's extra columns.
- the impression log (CSR by user): what ``num_earlier_impressions`` (churn) counts.
- the watch log by item (sorted (item, time) codes): what ``item_watches_recent`` counts.
- ``normalizer_``: the quantile normalizer of the raw continuous features (``continuous_names``),
  fitted in one pass over the training impressions' raw values.

Every raw feature is one named entry of a table, ``CONTINUOUS`` or ``BINARY`` (fed as they are),
in column order: its name and how it is computed from ``FeatureInputs`` (the queries and what
their features share, each computed once). Adding a feature is adding an entry. An entry may be
a block of columns named from the fitted featurizer: one per extra item column or per candidate
source. The names of the columns a featurizer was fitted with are saved with it
(ranking_features.json) and checked against the table when it is loaded, so a ranker never reads
columns in another order than it learned them.

The items' extra columns reach the ranker as the users' do (features/users.py): text through
``item_categorical``, numbers among the continuous features (x̃, x̃², √x̃, a missing flag), lists
as averaged one-hots among the binary ones, fed as they are (``binary_names``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from ytdnn.data.schema import ITEMS
from ytdnn.features.items import ItemFeatureEncoder
from ytdnn.features.quantiles import QuantileNormalizer
from ytdnn.features.vocab import Vocabulary
from ytdnn.samples.ranking import (
    NEVER,
    RECENT_SHARE,
    FeatureTables,
    earlier_events,
    user_events,
)
from ytdnn.samples.streams import EventStreams, windows

if TYPE_CHECKING:
    from ytdnn.retrieval.blend import SourceView

_FORMAT = "ytdnn.ranking_features"


@dataclass
class Queries:
    """Q (user, item, time) rows to featurize. users [Q] stream rows of ``streams``; gen_items [Q]
    generator ids; items [Q] ranker ids; times [Q] int64 seconds; watch_end, token_end [Q] where
    each user's history before ``times`` ends in the streams; imp_rows [Q] rows of the impression log."""

    users: np.ndarray
    gen_items: np.ndarray
    items: np.ndarray
    times: np.ndarray
    watch_end: np.ndarray
    token_end: np.ndarray
    imp_rows: np.ndarray


@dataclass
class FeatureInputs:
    """What the features of Q queries read: the queries, the generator's score and rank [Q] of
    each, the candidate sources' view (arrays [Q, S], or None), extra logged impressions; and
    what several features share, each computed once, on first use."""

    featurizer: RankingFeaturizer
    generator: Any
    streams: EventStreams
    q: Queries
    score: np.ndarray
    rank: np.ndarray
    view: SourceView | None = None
    impressions: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @cached_property
    def t(self) -> np.ndarray:
        """[Q] float64 times."""
        return self.q.times.astype(np.float64)

    @cached_property
    def watches(self) -> dict[str, np.ndarray]:
        """The user's earlier watches: counts and last times (``RankingFeaturizer._watch_counts``)."""
        return self.featurizer._watch_counts(self.generator, self.streams, self.q)

    @cached_property
    def item_numbers(self) -> tuple[np.ndarray, np.ndarray]:
        """The items' extra numeric columns [Q, K] and their missing flags [Q, K]."""
        return self.featurizer._item_numbers(self.q.items)

    @property
    def item_features(self) -> ItemFeatureEncoder:
        return self.featurizer.item_features_

    def since(self, then: np.ndarray) -> np.ndarray:
        """[Q] time from ``then`` to each query; NEVER where ``then`` is NaN."""
        return _since(self.t, then)


@dataclass(frozen=True)
class Feature:
    """One entry of a feature table: ``name`` the column's name, or for a block of columns a
    function of the fitted featurizer giving their names (one per extra item column, per
    source, ...); ``compute(x: FeatureInputs)`` its values, [Q] (or [Q, k] for a block of k)."""

    name: str | Callable[[RankingFeaturizer], Sequence[str]]
    compute: Callable[[FeatureInputs], np.ndarray]

    def names(self, f: RankingFeaturizer) -> tuple[str, ...]:
        return (self.name,) if isinstance(self.name, str) else tuple(self.name(f))


def _source_names(*kinds: str) -> Callable[[RankingFeaturizer], list[str]]:
    """Names of a per-source block: source_<name>_<kind> for each source, then each kind."""
    return lambda f: [f"source_{s}_{kind}" for s in f.source_names_ for kind in kinds]


# The raw continuous features, in column order (each normalised to x̃, and x̃², √x̃ with powers).
CONTINUOUS: tuple[Feature, ...] = (
    Feature("candidate_score", lambda x: x.score),  # the generator's logit (samples.ranking.candidate_features)
    Feature("candidate_rank", lambda x: x.rank),  # its corpus rank, 1 = best (samples.ranking.corpus_ranks)
    Feature("seconds_since_last_watch", lambda x: x.since(x.watches["last"])),
    Feature("num_earlier_watches", lambda x: x.watches["count"]),
    Feature("num_earlier_impressions", lambda x: x.featurizer._churn(x.q, x.impressions)),
    Feature("seconds_since_upload", lambda x: np.maximum(x.since(x.item_features.upload_time_[x.q.items]), 0.0)),
    Feature("num_channel_watches", lambda x: x.watches["channel_count"]),
    Feature("seconds_since_channel_watch", lambda x: x.since(x.watches["channel_last"])),
    Feature("num_item_watches", lambda x: x.watches["item_count"]),
    Feature("duration", lambda x: np.nan_to_num(x.item_features.duration_[x.q.items], nan=0.0)),
    Feature("category_watch_share", lambda x: x.watches["category_share"]),
    Feature("seconds_since_category_watch", lambda x: x.since(x.watches["category_last"])),
    Feature("item_watches_recent", lambda x: x.featurizer._recent_watches(x.q)),
    # the items' extra numbers (an unknown value: the column's median, with its flag set)
    Feature(lambda f: f.item_features_.numeric_names_, lambda x: x.item_numbers[0]),
    # the user's history with each extra categorical column's value, as with the channel
    Feature(lambda f: [n for c in _extra_categorical(f.item_features_)
                       for n in (f"num_{c}_watches", f"seconds_since_{c}_watch")],
            lambda x: x.watches["extra_categorical"]),
    # and with each list column's values, as with the categories
    Feature(lambda f: [n for c in f.item_features_.lists_ for n in (f"{c}_watch_share", f"seconds_since_{c}_watch")],
            lambda x: x.watches["extra_lists"]),
    # what each candidate source says (retrieval.blend.SourceView): its score and rank
    Feature(_source_names("score", "rank"), lambda x: np.stack([x.view.scores, x.view.ranks], axis=2)),
)
# The binary features, in column order: fed as they are, after the normalised continuous ones.
BINARY: tuple[Feature, ...] = (
    Feature("same_language", lambda x: x.featurizer._same_language(x.generator, x.streams, x.q)),
    Feature(lambda f: [f"{c} missing" for c in f.item_features_.numeric_names_], lambda x: x.item_numbers[1]),
    # the items' list columns, as averaged one-hots
    Feature(lambda f: f.item_features_.list_names(), lambda x: x.item_features.list_features(x.q.items)),
    Feature(_source_names("nominated"), lambda x: x.view.nominated),
)
# read when used, so that a table replaced at run time (a test's extra feature) is the one checked
_TABLES = {"continuous": lambda: CONTINUOUS, "binary": lambda: BINARY}


class RankingFeaturizer:
    def __init__(self, max_items: int | None = 1_000_000, use_powers: bool = True, num_quantiles: int = 1000):
        self.max_items = max_items
        self.use_powers = use_powers  # feed x̃² and √x̃ as well (§4.1); off for the ablation
        self.num_quantiles = num_quantiles
        self._maps: dict[tuple[int, int], tuple[Vocabulary, Vocabulary, np.ndarray]] = {}

    def fit(self, item_ids: pa.ChunkedArray, impressions: pa.Table, items: pa.Table | None,
            user_features: dict, sources: tuple[str, ...] = ()) -> RankingFeaturizer:
        """item_ids: every watched and impressed item id; user_features: the generator's encoder;
        sources: the names of the candidate sources whose view (retrieval.blend.SourceView) the
        ranker reads, in column order (none: the generator's score and rank only)."""
        self.items_ = Vocabulary(max_size=self.max_items).fit(item_ids)
        self.item_features_ = ItemFeatureEncoder().fit(items, self.items_)
        self.user_features_ = _canonical(user_features)  # what check_generator compares against
        self.set_impression_log(impressions)
        self.source_names_ = tuple(sources)
        self.__dict__.pop("columns_", None)  # a refit records its own
        self.columns_ = self._live_columns()  # what ``save`` records and ``load`` checks
        return self

    def set_impression_log(self, impressions: pa.Table) -> None:
        """Keep (user, item, time) of ``impressions`` as a CSR log by user for the churn counts."""
        self.impression_users_ = Vocabulary().fit(impressions.column("user_id"))
        rows = self.impression_users_.encode(impressions.column("user_id"))
        items = self.items_.encode(impressions.column("item_id"))
        times = impressions.column("timestamp").to_numpy().astype(np.int64)
        order = np.lexsort((times, rows))
        self.log_items_, self.log_times_ = items[order], times[order]
        self.log_offsets_ = np.searchsorted(rows[order], np.arange(len(self.impression_users_) + 1)).astype(np.int64)

    def set_watch_log(self, items: np.ndarray, times: np.ndarray) -> None:
        """Every logged watch as ranker item ids [W] and seconds [W], sorted into one int64 code
        per watch (item, then time), so a window count per item is two binary searches."""
        self.log_start_ = int(times.min()) if len(times) else 0
        span = int(times.max()) - self.log_start_ if len(times) else 0
        # a code holds (item, seconds after the start): one more than the span fits every watch,
        # and every later query time clamps to after the last watch
        self.time_codes_ = span + 2
        self.recent_window_ = span * RECENT_SHARE  # float: it scales exactly with the time axis
        self.watch_log_ = np.sort(self._watch_codes(items, times))
        self._recent_at = None  # counts kept for the former log

    def _watch_codes(self, items: np.ndarray, times: np.ndarray) -> np.ndarray:
        offset = np.clip(np.asarray(times, np.int64) - self.log_start_, 0, self.time_codes_ - 1)
        return np.asarray(items, np.int64) * self.time_codes_ + offset

    def keep_recent_watches(self, time: int) -> None:
        """Count "item_watches_recent" of every item at ``time`` once (two binary searches per
        item), so that queries at that time read it instead of searching the watch log (1.5M
        codes on the serving bench's model) per candidate. At serving most users are answered
        at one time, just after the training window."""
        items = np.arange(len(self.items_))
        self._recent_at = (int(time), self._count_recent(items, np.full(len(items), time, np.int64)))

    def _recent_watches(self, q: Queries) -> np.ndarray:
        """[Q] watches of each query's item by anyone in the ``recent_window_`` before its time."""
        kept = getattr(self, "_recent_at", None)
        if kept is None:
            return self._count_recent(q.items, q.times)
        time, counts = kept
        out = counts[q.items]  # [Q], right where the query's time is the kept one
        other = q.times != time
        if other.any():
            out[other] = self._count_recent(q.items[other], q.times[other])
        return out

    def _count_recent(self, items: np.ndarray, times: np.ndarray) -> np.ndarray:
        upto = np.searchsorted(self.watch_log_, self._watch_codes(items, times), side="left")
        start = np.ceil(times - self.recent_window_)  # the first whole second in the window
        since = np.searchsorted(self.watch_log_, self._watch_codes(items, start), side="left")
        return np.where(items > 0, upto - since, 0)

    def fit_normalizer(self, raw: np.ndarray) -> RankingFeaturizer:
        """raw [N, F] continuous features of the training impressions."""
        self.normalizer_ = QuantileNormalizer(min(self.num_quantiles, max(len(raw) - 1, 1))).fit(raw)
        return self

    @property
    def continuous_names(self) -> tuple[str, ...]:
        """The raw continuous features, in column order (the ``CONTINUOUS`` table's names)."""
        return tuple(n for _, names in self._layout("continuous") for n in names)

    @property
    def binary_names(self) -> tuple[str, ...]:
        """The features fed as they are, in column order (the ``BINARY`` table's names)."""
        return tuple(n for _, names in self._layout("binary") for n in names)

    def column(self, name: str) -> int:
        """The index of the raw continuous feature ``name`` in ``raw_features``' continuous array."""
        names = self.continuous_names
        if name not in names:
            raise KeyError(f"no continuous feature {name!r}; the ranker's are {list(names)}")
        return names.index(name)

    def check_columns(self) -> None:
        """Raise unless the tables compute the columns the featurizer was fitted with (``columns_``,
        saved with it), in the same order: else the ranker was trained with another feature set."""
        for kind in _TABLES:
            self._layout(kind)

    def _live_columns(self) -> dict[str, tuple[str, ...]]:
        return {"continuous": self.continuous_names, "binary": self.binary_names}

    def _layout(self, kind: str) -> list[tuple[Feature, tuple[str, ...]]]:
        """The entries of the ``kind`` table with their columns' names for this featurizer, checked
        against ``columns_`` (names depend only on what it was fitted with: kept per fitted state,
        as serving asks on every request)."""
        table = _TABLES[kind]()
        key = (kind, id(table), id(self.item_features_), self.source_names_)
        cache = self.__dict__.setdefault("_layouts", {})
        if key not in cache:
            layout = [(feature, feature.names(self)) for feature in table]
            live = tuple(n for _, names in layout for n in names)
            saved = tuple(self.__dict__.get("columns_", {}).get(kind, live))
            if saved != live:
                at = next((j for j, (a, b) in enumerate(zip(saved, live)) if a != b), min(len(saved), len(live)))
                raise ValueError(
                    f"the ranker was trained with other {kind} features than this version computes: "
                    f"column {at} is {_at(saved, at)} in the ranker, {_at(live, at)} here "
                    f"(ranker: {list(saved)}; here: {list(live)}); retrain the ranker")
            cache[key] = (table, self.item_features_, layout)  # holds both: their ids stay theirs
        return cache[key][2]

    def input_names(self) -> list[str]:
        """The name of every column of ``normalize``'s output (the model's continuous input)."""
        names = list(self.continuous_names)
        if self.use_powers:
            names += [f"{c}^2" for c in self.continuous_names] + [f"sqrt({c})" for c in self.continuous_names]
        return names + list(self.binary_names)

    @property
    def num_continuous(self) -> int:
        """Width of the normalised continuous block fed to the model, binary features included."""
        return len(self.continuous_names) * (3 if self.use_powers else 1) + len(self.binary_names)

    def normalize(self, raw: np.ndarray, binary: np.ndarray) -> np.ndarray:
        """raw [N, F], binary [N, Fb] -> float32 [N, 3F + Fb] (or [N, F + Fb] without powers)."""
        cdf = self.normalizer_.transform_with_powers(raw) if self.use_powers else self.normalizer_.transform(raw)
        return np.concatenate([cdf.reshape(len(raw), -1), binary], axis=1).astype(np.float32)

    # ---- id maps between the generator and the ranker ------------------------------------------

    def _map(self, source: Vocabulary, target: Vocabulary) -> np.ndarray:
        """[len(source)] target id of every source id, 0 -> 0 (cached per pair of vocabularies:
        serving looks these up on every request)."""
        key = (id(source), id(target))
        cached = self._maps.get(key)
        if cached is None or cached[0] is not source or cached[1] is not target:
            cached = (source, target, np.concatenate([[0], target.encode(source.token_array)]).astype(np.int64))
            self._maps[key] = cached
        return cached[2]

    def item_map(self, generator) -> np.ndarray:
        """[V_gen] ranker id of every generator item id."""
        return self._map(generator.featurizer_.items_, self.items_)

    def impression_rows(self, generator, users: np.ndarray) -> np.ndarray:
        """Generator user rows [Q] -> rows of the impression log [Q] (0 = no impressions)."""
        return self._map(generator.featurizer_.users_, self.impression_users_)[users]

    def tables(self, generator, streams: EventStreams) -> FeatureTables:
        f = self.item_features_
        return FeatureTables(
            history=self._history(generator, streams), watch_offsets=streams.watch_offsets,
            user_categorical=streams.user_categorical, user_continuous=streams.user_continuous,
            item_categorical=f.categorical_ids_, category_ids=f.category_ids_, category_offsets=f.category_offsets_,
        )

    def _history(self, generator, streams: EventStreams) -> np.ndarray:
        """[W] ranker ids of the streams' watches. The generator's own training log (millions of
        watches) is mapped once and kept: every request that serves from it needs the same map."""
        if streams is not generator.streams_:  # a request's fresh histories: small, new each time
            return self.item_map(generator)[streams.watch_items]
        cached = getattr(self, "_history_cache", None)
        if cached is None or cached[0] is not streams:
            cached = (streams, self.item_map(generator)[streams.watch_items])
            self._history_cache = cached
        return cached[1]

    def check_generator(self, generator) -> None:
        """Raise unless ``generator`` encodes user features as the one the ranker was fitted with."""
        if _canonical(generator.featurizer_.user_features_.to_dict()) != self.user_features_:
            raise ValueError("this candidate generator encodes user features differently from the one "
                             "the ranker was trained with; retrain the ranker for it")

    # ---- raw features ---------------------------------------------------------------------------

    def raw_features(
        self, generator, streams: EventStreams, q: Queries, score: np.ndarray, rank: np.ndarray,
        impressions: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None, view: SourceView | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Continuous [Q, F] float64 and binary [Q, Fb] features: the columns of the ``CONTINUOUS``
        and ``BINARY`` tables (``continuous_names``, ``binary_names``).

        score, rank [Q]: the generator's view of each row. ``impressions``: extra logged
        impressions (log rows [I], ranker items [I], times [I]) counted with the stored log.
        view: the candidate sources' view of the rows (arrays [Q, S]), required when the
        featurizer was fitted with sources, in the same order.
        """
        if tuple(view.names if view is not None else ()) != self.source_names_:
            raise ValueError(f"the ranker reads the sources {list(self.source_names_)}, "
                             f"got a view of {list(view.names) if view is not None else []}")
        x = FeatureInputs(self, generator, streams, q, score, rank, view, impressions)
        return self._table("continuous", x, np.float64), self._table("binary", x, np.float32)

    def _table(self, kind: str, x: FeatureInputs, dtype) -> np.ndarray:
        """[Q, F] the ``kind`` table's columns for the queries of ``x``, each entry's where its names are."""
        layout = self._layout(kind)
        out = np.empty((len(x.q.items), sum(len(names) for _, names in layout)), dtype)
        j = 0
        for feature, names in layout:
            if not names:  # a block with no columns here (no extra columns, no sources)
                continue
            values = np.asarray(feature.compute(x))
            if values.shape[0] != len(out) or values.size != len(out) * len(names):
                raise ValueError(f"feature {names[0] if len(names) == 1 else list(names)} computed values of shape "
                                 f"{values.shape}, expected [{len(out)}, {len(names)}]")
            out[:, j : j + len(names)] = values.reshape(len(out), len(names))
            j += len(names)
        return out

    def _item_numbers(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The items' extra numeric columns [Q, K] (an unknown value: the column's median over
        the items, with its flag set) and their missing flags [Q, K]."""
        f = self.item_features_
        values = f.numeric_[items]  # [Q, K]
        missing = np.isnan(values)
        return np.where(missing, f.numeric_fill_, values), missing.astype(np.float32)

    @property
    def _v(self) -> int:
        return len(self.items_)

    def _watch_counts(self, generator, streams: EventStreams, q: Queries) -> dict[str, np.ndarray]:
        """Counts and last times of the user's earlier watches: any, of the item's channel, of the
        item, of its categories; "extra_categorical" [Q, 2X] and "extra_lists" [Q, 2L]: count (or
        share) and time since for each extra categorical and list column of the items."""
        positions, rows = user_events(streams.watch_offsets, q.users)  # [E]
        times = streams.watch_times[positions]
        items = self.item_map(generator)[streams.watch_items[positions]]
        count, last = earlier_events(rows, times, q.users, q.times)
        out = {"count": count, "last": last}
        f = self.item_features_
        column = f.column_index("channel")
        if column is None:
            out["channel_count"], out["channel_last"] = np.zeros(len(q.users)), np.full(len(q.users), np.nan)
        else:
            out["channel_count"], out["channel_last"] = _value_history(
                f.categorical_ids_[:, column], rows, times, items, q)
        i_count, _ = earlier_events(rows * self._v + items, times, q.users * self._v + q.items, q.times)
        i_count[q.items == 0] = 0
        out["item_count"] = i_count
        out["category_share"], out["category_last"] = _bag_history(
            f.category_ids_, f.category_offsets_, f.num_categories, rows, times, items, q, count)
        # the items' extra columns, as channel and categories are: the user's history with the value
        t = q.times.astype(np.float64)
        for key, extra in (
            ("extra_categorical", [_value_history(f.categorical_ids_[:, f.column_index(c)], rows, times, items, q)
                                   for c in _extra_categorical(f)]),
            ("extra_lists", [_bag_history(*f.list_bags_[c], len(f.lists_[c]), rows, times, items, q, count)
                             for c in f.lists_]),
        ):
            columns = [x for amount, then in extra for x in (amount, _since(t, then))]  # count or share, time since
            out[key] = np.stack(columns, axis=1) if columns else np.zeros((len(q.users), 0))
        return out

    def _churn(self, q: Queries, impressions) -> np.ndarray:
        """[Q] earlier impressions of the item to the user: the stored log's and ``impressions``'."""
        churn, _ = earlier_events(*self._impression_events(q, impressions), q.imp_rows * self._v + q.items, q.times)
        churn[(q.imp_rows == 0) | (q.items == 0)] = 0
        return churn

    def _impression_events(self, q: Queries, extra) -> tuple[np.ndarray, np.ndarray]:
        logged = q.imp_rows[q.imp_rows < len(self.log_offsets_) - 1]  # rows past the log: extra only
        positions, rows = user_events(self.log_offsets_, logged)
        keys, times = rows * self._v + self.log_items_[positions], self.log_times_[positions]
        if extra is not None:
            keys = np.concatenate([keys, extra[0] * self._v + extra[1]])
            times = np.concatenate([times, extra[2]])
        return keys, times

    def _same_language(self, generator, streams: EventStreams, q: Queries) -> np.ndarray:
        """1 where the user's language (a user feature) is the item's language, else 0. [Q]"""
        user_vocabs = generator.featurizer_.user_features_.categorical_
        item_column = self.item_features_.column_index("language")
        if "language" not in user_vocabs or item_column is None:
            return np.zeros(len(q.users), np.float32)
        user_column = list(user_vocabs).index("language")
        to_item = self._map(user_vocabs["language"], self.item_features_.categorical_["language"])
        user_language = to_item[streams.user_categorical[q.users, user_column]]
        item_language = self.item_features_.categorical_ids_[q.items, item_column]
        return ((user_language == item_language) & (item_language > 0)).astype(np.float32)

    # ---- persistence (JSON and .npz, never pickled) ---------------------------------------------

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"format": _FORMAT, "max_items": self.max_items, "use_powers": self.use_powers,
                "num_quantiles": self.num_quantiles, "user_features": self.user_features_,
                "sources": list(self.source_names_),
                "columns": {kind: list(names) for kind, names in self.columns_.items()}}
        (directory / "ranking_features.json").write_text(json.dumps(meta))
        self.items_.to_json(directory / "items.json")
        self.impression_users_.to_json(directory / "impression_users.json")
        self.normalizer_.to_json(directory / "quantiles.json")
        self.item_features_.save(directory)
        np.savez(directory / "impression_log.npz", items=self.log_items_, times=self.log_times_,
                 offsets=self.log_offsets_, watch_log=self.watch_log_, log_start=np.int64(self.log_start_),
                 time_codes=np.int64(self.time_codes_), recent_window=np.float64(self.recent_window_))

    @classmethod
    def load(cls, directory: str | Path) -> RankingFeaturizer:
        directory = Path(directory)
        meta = json.loads((directory / "ranking_features.json").read_text())
        if meta.get("format") != _FORMAT:
            raise ValueError(f"not a ranking featurizer: format {meta.get('format')!r}")
        f = cls(meta["max_items"], meta["use_powers"], meta["num_quantiles"])
        f.user_features_ = meta["user_features"]
        f.source_names_ = tuple(meta.get("sources", ()))
        f.items_ = Vocabulary.from_json(directory / "items.json")
        f.impression_users_ = Vocabulary.from_json(directory / "impression_users.json")
        f.normalizer_ = QuantileNormalizer.from_json(directory / "quantiles.json")
        f.item_features_ = ItemFeatureEncoder.load(directory)
        with np.load(directory / "impression_log.npz", allow_pickle=False) as arrays:
            f.log_items_, f.log_times_, f.log_offsets_ = arrays["items"], arrays["times"], arrays["offsets"]
            f.watch_log_, f.log_start_ = arrays["watch_log"], int(arrays["log_start"])
            f.time_codes_, f.recent_window_ = int(arrays["time_codes"]), float(arrays["recent_window"])
        # saved before the names were recorded: the columns then were the tables' of today
        if "columns" in meta:
            f.columns_ = {kind: tuple(meta["columns"][kind]) for kind in _TABLES}
            f.check_columns()
        else:
            f.columns_ = f._live_columns()
        return f


def _since(t: np.ndarray, then: np.ndarray) -> np.ndarray:
    """Time from ``then`` to ``t``; NEVER where ``then`` is unknown (NaN). (Times are finite:
    ``t - then`` is NaN only where ``np.where`` takes NEVER.)"""
    return np.where(np.isnan(then), NEVER, t - then)


def _at(names: Sequence[str], j: int) -> str:
    return repr(names[j]) if j < len(names) else "absent"


def _canonical(document: dict) -> dict:
    """The document as it reads back from JSON (lists, not tuples), so saved and live ones compare."""
    return json.loads(json.dumps(document))


def _extra_categorical(f: ItemFeatureEncoder) -> list[str]:
    """The items' categorical columns beyond the built-in ones (channel, language)."""
    return [c for c in f.categorical_ if c not in ITEMS.names]


def _value_history(values: np.ndarray, rows, times, items, q: Queries) -> tuple[np.ndarray, np.ndarray]:
    """Per query [Q]: how many of the user's earlier watches share the item's value, and the last
    time one did (NaN: never, or the item's value is unknown). values [V]: each item's id in one
    categorical column (0 = unknown); rows, times, items: [E] the users' watches."""
    width = int(values.max(initial=0)) + 1
    count, last = earlier_events(rows * width + values[items], times, q.users * width + values[q.items], q.times)
    unknown = values[q.items] == 0
    count[unknown], last[unknown] = 0, np.nan
    return count, last


def _bag_history(ids: np.ndarray, offsets: np.ndarray, width: int, rows, times, items, q: Queries,
                 count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per query [Q]: the mean over the item's values (categories, genres: CSR ids [M] in
    1..width - 1, offsets [V + 1]) of the share of the user's earlier watches with that value, and
    the last time the user watched any of them (NaN: never). ("When the user last watched on this
    topic", §4.1.) rows, times, items: [E] watches; count [Q] the user's earlier watches."""
    e_cats, e_start = windows(ids, offsets[items], offsets[items + 1], None)
    e_of = np.repeat(np.arange(len(items)), np.diff(np.append(e_start, len(e_cats))))  # [E'] event
    q_cats, q_start = windows(ids, offsets[q.items], offsets[q.items + 1], None)
    q_len = np.diff(np.append(q_start, len(q_cats)))
    q_of = np.repeat(np.arange(len(q.items)), q_len)  # [Q'] query of each (query, category)
    c_count, c_last = earlier_events(rows[e_of] * width + e_cats, times[e_of],
                                     q.users[q_of] * width + q_cats, q.times[q_of])
    total = np.bincount(q_of, c_count, minlength=len(q.items))
    share = total / np.maximum(q_len * count, 1)
    last = np.full(len(q.items), -np.inf)
    np.fmax.at(last, q_of, c_last)  # fmax skips NaN: categories never watched
    return share, np.where(np.isneginf(last), np.nan, last)
