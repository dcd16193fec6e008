"""The model behind the HTTP API: one loaded model directory, ready to answer requests.

``ServingModel`` wraps a ``Recommender`` with what serving needs beside it: id parsing in the
model's id types, the user features a request may send, the fresh-and-popular fallback list, the
item vectors for ``/similar``, and a version string. It is immutable once built, so a hot reload
builds a new one and swaps a single reference (``ModelHolder``): a request keeps the object it
started with and finishes on it.

Who gets what (``answer``):
- a user with events in the store, or known to the model, or with features sent along: the model
  (candidate generator, then ranker when the model has one), with the history read from the store;
- a user the model has never seen, with no events and no features: the fresh, popular list
  (``ytdnn.serve.popular``), stage "popular".
"""

from __future__ import annotations

import hashlib
import math
import numbers
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ytdnn.config import Config
from ytdnn.features.vocab import ARROW_TYPES
from ytdnn.pipeline import Recommender
from ytdnn.retrieval.generator import item_table, nearest_items
from ytdnn.retrieval.popular import PopularConfig
from ytdnn.serve.events import History, coerce_id
from ytdnn.serve.popular import PopularItems


@dataclass(frozen=True)
class ServeConfig(Config):
    max_k: int = 100  # largest k of /recommend and /similar
    history_limit: int = 500  # events of each kind read per request: the model looks at the last
    # 50, the rest only keeps already-watched items out of the answer
    max_events_per_request: int = 1000  # POST /events batch size; more is a 413
    max_body_bytes: int = 1 << 20  # any request body; more is a 413
    max_header_bytes: int = 1 << 14  # all request headers, names and values; more is a 431 (h11's
    # own limit, which holds only while a request head arrives in pieces)
    max_batch_size: int = 16  # /recommend requests answered by one model call (micro-batching)
    # the fallback list's half-life, as a share of the training window (the fresh-popular source's
    # own default, 1/30: about a week on ml-100k's 7 months), whatever the log's time scale
    popular_half_life_share: float = PopularConfig.half_life_share
    num_candidates: int | None = None  # retrieved and ranked per request; None: the model's own
    # The ranker reads every item's share of its first layer from a table built at load
    # (Recommender.fast_path): the same lists, scores equal up to float rounding.
    # False serves through the reference path, kept for comparison (`ytdnn serve --reference-path`).
    fast_path: bool = True
    num_threads: int | None = 1  # torch intra-op threads for `ytdnn serve` to set at start: one
    # inference thread, so 1 leaves the other core to the HTTP event loop. The setting is
    # process-wide, so only the entry point applies it; the library never does (None: leave it)

    def validate(self) -> None:
        for name in ("max_k", "history_limit", "max_events_per_request", "max_body_bytes",
                     "max_header_bytes", "max_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"ServeConfig.{name} must be >= 1")
        for name in ("num_threads", "num_candidates"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"ServeConfig.{name} must be None or >= 1")
        share = self.popular_half_life_share
        if isinstance(share, bool) or not isinstance(share, numbers.Real) or not (math.isfinite(share) and share > 0):
            raise ValueError("ServeConfig.popular_half_life_share must be a finite number > 0 (the "
                             f"half-life of a watch's weight as a share of the training window), got {share!r}")


class BadInput(ValueError):
    """A request the model cannot take as given (a 422): names the field."""

    def __init__(self, message: str, field: str | None = None):
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


@dataclass
class Job:
    """One /recommend request: the model it arrived under, and what it asks."""

    model: ServingModel
    user_id: Any
    k: int
    features: dict[str, Any] | None = None
    history: History | None = None  # read from the store just before the model runs


class ServingModel:
    """A loaded model directory. Build it off the request path: loading takes seconds."""

    def __init__(self, model_dir: str | Path, config: ServeConfig | None = None):
        self.config = config or ServeConfig()
        self.model_dir = Path(model_dir).absolute()  # not resolved: a reload of a symlink such
        # as models/current follows it to wherever it points then
        self.recommender = Recommender.load(self.model_dir, num_candidates=self.config.num_candidates,
                                            fast_path=self.config.fast_path)  # tables: built by the warm-up
        gen = self.recommender.candidates
        f = gen.featurizer_
        self.user_type, self.item_type = f.users_.token_type_, f.items_.token_type_
        self.categorical = list(f.user_features_.categorical_)
        self.continuous = list(f.user_features_.continuous_)
        self.lists = list(f.user_features_.lists_ or {})
        self.stage = "ranker" if self.recommender.ranker is not None else "candidates"
        self.popular = PopularItems(self.config.popular_half_life_share).fit(gen)
        self.titles = gen.item_titles()
        if getattr(gen, "index_", None) is None:
            gen.build_index()
        self._item_vectors, _ = item_table(gen.model_)  # v [V, d]
        self.version = _version(self.model_dir)
        self.loaded_at = time.time()
        self._warm_up()

    def _warm_up(self) -> None:
        """One request through every path, so lazily built lookups are not a first user's wait."""
        users = self.recommender.candidates.featurizer_.users_.tokens_[:1]
        for user in users:
            self.answer([Job(self, user, 5, None, History(user))])
        self.similar(self.recommender.candidates.featurizer_.items_.tokens_[0], 5)

    # ---- input ------------------------------------------------------------------------------

    def user_id(self, value: Any) -> Any:
        """A user id from a path or a JSON body, in the model's user id type."""
        try:
            return coerce_id(value, self.user_type)
        except (TypeError, ValueError) as err:
            raise BadInput(str(err), "user_id") from None

    def item_id(self, value: Any) -> Any:
        try:
            return coerce_id(value, self.item_type)
        except (TypeError, ValueError) as err:
            raise BadInput(str(err), "item_id") from None

    def check_features(self, values: Mapping[str, Any]) -> dict[str, Any] | None:
        """Sent user features -> {column: str, float or list of str}; unknown names and bad values
        are BadInput.

        Categorical features (strings) may take any value (an unseen one is out of vocabulary);
        continuous ones must be finite numbers (a string such as "31" is read as one); list
        features take a list of strings (one string: a list of one)."""
        if not values:
            return None
        known = set(self.categorical) | set(self.continuous) | set(self.lists)
        unknown = sorted(set(values) - known)
        if unknown:
            raise BadInput(f"unknown feature(s) {unknown}; this model takes {sorted(known)}",
                           "features")
        out: dict[str, Any] = {}
        for name, value in values.items():
            if name in self.continuous:
                out[name] = _number(name, value)
            elif name in self.lists:
                elements = value if isinstance(value, list) else [value]
                out[name] = [_text(name, v, "a list of strings, got an element") for v in elements]
            else:
                out[name] = _text(name, value, "a string, got")
        return out

    def knows(self, user_id: Any) -> bool:
        return bool(self.recommender.candidates.user_rows([user_id])[0] != 0)

    # ---- answers ----------------------------------------------------------------------------

    def answer(self, jobs: Sequence[Job]) -> tuple[list[dict[str, Any]], dict[str, float]]:
        """Answers of jobs of this model (histories read already) -> (answers, stage seconds)."""
        out: list[dict[str, Any] | None] = [None] * len(jobs)
        groups: dict[tuple, list[int]] = {}
        for j, job in enumerate(jobs):
            has_events = job.history is not None and (job.history.watches or job.history.searches)
            if not has_events and job.features is None and not self.knows(job.user_id):
                out[j] = self._popular(job)
            else:
                groups.setdefault(tuple(sorted(job.features or ())), []).append(j)
        timings: dict[str, float] = {}
        for columns, members in groups.items():
            for j, answer in zip(members, self._from_model([jobs[j] for j in members], columns, timings)):
                out[j] = answer
        return out, timings  # type: ignore[return-value]

    def _from_model(self, jobs: list[Job], columns: tuple, timings: dict[str, float]) -> list[dict]:
        rec = self.recommender
        users = [job.user_id for job in jobs]
        features = None
        if columns:
            data: dict[str, Any] = {"user_id": pa.array(users, ARROW_TYPES[self.user_type])}
            for name in columns:
                values = [job.features[name] for job in jobs]
                data[name] = pa.array(values, pa.list_(pa.string())) if name in self.lists else values
            features = pa.table(data)
        histories = [job.history or History(job.user_id) for job in jobs]
        results = rec.recommend_batch(users, max(job.k for job in jobs), histories=histories,
                                      features=features)
        for stage, seconds in rec.timings_.items():  # one inference thread: these are ours
            timings[stage] = timings.get(stage, 0.0) + seconds
        return [self._items(job, r.item_ids[: job.k], r.scores[: job.k], r.stages[: job.k], "model",
                            r.candidate_scores[: job.k], r.candidate_ranks[: job.k], r.sources[: job.k])
                for job, r in zip(jobs, results)]

    def _popular(self, job: Job) -> dict[str, Any]:
        ids, scores = self.popular.top(job.k)
        return self._items(job, ids, scores, ["popular"] * len(ids), "popular")

    def _items(self, job: Job, ids, scores, stages, source: str, candidate_scores=None,
               candidate_ranks=None, sources=None) -> dict[str, Any]:
        stages = [str(stage) for stage in stages]
        items = self._entries(ids, scores, stage=stages)
        if candidate_scores is not None:
            for entry, score, rank, names in zip(items, np.asarray(candidate_scores, np.float64).tolist(),
                                                 np.asarray(candidate_ranks, np.int64).tolist(), sources):
                entry.update(candidate_score=score, candidate_rank=rank, sources=list(names))
        return {"user_id": job.user_id, "k": job.k, "source": source, "model": self.version,
                "items": items}

    def similar(self, item_id: Any, k: int) -> list[dict[str, Any]] | None:
        """The k items nearest ``item_id`` by inner product in the output space v (what the
        softmax scores with), through the model's index; None for an item the model lacks."""
        gen = self.recommender.candidates
        row = int(gen.featurizer_.items_.encode([item_id])[0])
        if row == 0:
            return None
        scores, ids = nearest_items(gen.index_, gen.model_, np.array([row]), k, self._item_vectors)
        keep = ids[0] > 0
        decoded = gen.featurizer_.items_.decode(ids[0][keep])
        return self._entries(decoded, scores[0][keep])

    def _entries(self, ids, scores, **fields: list) -> list[dict[str, Any]]:
        """Answered items: each one's id, score, its value of every field, and its title when the
        model has titles. Arrays become Python values whole (``tolist``), not one scalar at a time."""
        ids = [_plain(item) for item in (ids.tolist() if isinstance(ids, np.ndarray) else ids)]
        scores = np.asarray(scores, np.float64).tolist()
        entries = [{"item_id": item, "score": score} for item, score in zip(ids, scores)]
        for name, values in fields.items():
            for entry, value in zip(entries, values):
                entry[name] = value
        if self.titles:
            for entry in entries:
                entry["title"] = self.titles.get(entry["item_id"])
        return entries

    def describe(self) -> dict[str, Any]:
        f = self.recommender.candidates.featurizer_
        return {"version": self.version, "model_dir": str(self.model_dir), "stage": self.stage,
                "num_items": f.num_items - 1, "num_users": len(f.users_) - 1,
                "num_candidates": self.recommender.num_candidates,
                "sources": [{"name": src.name, "candidates": n} for src, n in self.recommender.blend_sources()],
                "user_features": {"categorical": self.categorical, "continuous": self.continuous,
                                  "lists": self.lists},
                "loaded_at": self.loaded_at}


class ModelHolder:
    """The current ServingModel, swapped atomically by ``reload``; reloads run one at a time."""

    def __init__(self, model: ServingModel, check=None):
        self.current = model
        self._check = check  # called with a new model before it is swapped in (may raise)
        self._lock = threading.Lock()
        self.reloads = 0

    def reload(self, model_dir: str | Path | None = None) -> tuple[ServingModel, ServingModel]:
        """Load ``model_dir`` (default: the current model's) and swap it in -> (old, new).

        Loading happens before the swap, so requests keep being answered by the old model until
        the new one is ready; a model that fails to load or check leaves the old one in place."""
        with self._lock:
            old = self.current
            new = ServingModel(model_dir if model_dir is not None else old.model_dir, old.config)
            if self._check is not None:
                self._check(new)
            self.current = new  # one reference assignment: atomic for every reader
            self.reloads += 1
            return old, new


def _version(model_dir: Path) -> str:
    """``<dir name>-<hash>`` of the names, sizes and modification times of the directory's JSON and
    safetensors files: two loads of the same files share it, a retrained model gets a new one."""
    digest = hashlib.sha256()
    for path in sorted(model_dir.rglob("*.json")) + sorted(model_dir.rglob("*.safetensors")):
        digest.update(str(path.relative_to(model_dir)).encode())
        stat = path.stat()
        digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    return f"{model_dir.name}-{digest.hexdigest()[:8]}"


def _number(name: str, value: Any) -> float:
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise BadInput(f"expected a finite number, got {value!r}", name)
    return number


def _text(name: str, value: Any, expected: str) -> str:
    """A categorical value (or one of a list feature's) as text; BadInput unless a string or a
    number, saying "expected <expected> <value>"."""
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value)
    raise BadInput(f"expected {expected} {value!r}", name)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
