"""The candidate generator end to end: logs -> examples -> trained tower -> item index -> top k.

A fitted generator is saved as a model directory that holds everything needed to serve and
nothing executable (DESIGN.md):

    config.json                 the three configs and the format version
    candidate.safetensors       the weights
    vocab/                      item, user and token vocabularies, user-feature encoders (JSON)
    history.npz                 per-user watch and search streams (loaded with allow_pickle=False)
    index/                      the nearest-neighbour index over the item vectors
    metrics.json                what training and evaluation measured (when given)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from safetensors.torch import load_model, save_model

from ytdnn.config import route_overrides
from ytdnn.features.text import tokenize_many
from ytdnn.index import load_index
from ytdnn.index.factory import IndexConfig, make_index
from ytdnn.models.candidate import CandidateConfig, CandidateModel, CandidateSizes
from ytdnn.models.layers import eval_mode
from ytdnn.samples.candidate import CandidateBatch, CandidateExamples, ExampleConfig, serving_batch
from ytdnn.samples.streams import EventStreams, Featurizer
from ytdnn.train.config import TrainConfig
from ytdnn.train.loop import History, fit

FORMAT_VERSION = 1
EXACT_UP_TO = 100_000  # exact search of 100k x 64 is ~0.6 s per 1,000 queries (DEPENDENCIES.md)
_STREAM_FIELDS = ("watch_items", "watch_times", "watch_offsets", "tokens", "token_times", "token_offsets",
                  "user_categorical", "user_continuous")


class CandidateGenerator:
    """Fit on canonical tables; ``retrieve(user_ids, k)`` returns the top-k item ids and scores.

    Fitted: ``featurizer_``, ``streams_``, ``model_``, ``history_`` (training History) and, after
    ``build_index``, ``index_``.
    """

    def __init__(
        self,
        model: CandidateConfig | None = None,
        examples: ExampleConfig | None = None,
        train: TrainConfig | None = None,
        max_items: int | None = 1_000_000,
        max_tokens: int | None = 1_000_000,
    ):
        self.model_cfg = model or CandidateConfig()
        self.example_cfg = examples or ExampleConfig()
        self.train_cfg = train or TrainConfig()
        self.max_items, self.max_tokens = max_items, max_tokens

    # ---- training ---------------------------------------------------------------------------

    def fit(
        self,
        watches: pa.Table,
        searches: pa.Table | None = None,
        users: pa.Table | None = None,
        validate=None,
        items: pa.Table | None = None,
        out_dir: str | Path | None = None,
        resume: bool = True,
        on_log=None,
    ) -> CandidateGenerator:
        """Train on the logs. ``validate(generator) -> {metric: value}`` drives early stopping."""
        self.featurizer_ = Featurizer(self.max_items, self.max_tokens).fit(watches, searches, users)
        self.titles_ = _titles(items)
        self.streams_ = self.featurizer_.streams(watches, searches, users)
        examples = CandidateExamples(self.streams_, self.example_cfg, window_end=self.featurizer_.window_end_)
        torch.manual_seed(self.train_cfg.seed)  # initial weights
        self.model_ = CandidateModel(self.model_cfg, self._sizes(), np.r_[0, self.featurizer_.items_.counts_])
        self.index_ = None

        def batches(epoch: int, generator: torch.Generator):
            rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator)))
            return examples.batches(self.train_cfg.batch_size, rng)

        self.history_: History = fit(
            self.model_, self.train_cfg, batches,
            validate=None if validate is None else (lambda model: validate(self)),
            out_dir=out_dir, resume=resume, num_examples=examples.num_examples_per_epoch(), on_log=on_log,
        )
        self.model_.eval()
        return self

    def _sizes(self) -> CandidateSizes:
        f = self.featurizer_
        return CandidateSizes(
            num_items=f.num_items, num_tokens=f.num_tokens,
            user_categorical=tuple(f.user_features_.categorical_sizes),
            num_user_continuous=f.user_features_.num_continuous,
            recent_watches=self.example_cfg.max_recent_watches > 0,
        )

    # ---- scoring ----------------------------------------------------------------------------

    def user_rows(self, user_ids: Any) -> np.ndarray:
        """Original user ids [B] -> stream rows [B] (0 = unknown user: cold start)."""
        if not isinstance(user_ids, pa.Array | pa.ChunkedArray):
            user_ids = pa.array(np.asarray(user_ids))
        return self.featurizer_.users_.encode(user_ids)

    @torch.no_grad()
    def user_vectors(self, user_rows: np.ndarray, batch_size: int = 4096, streams: EventStreams | None = None) -> np.ndarray:
        """u for rows [B] of ``streams`` (default: the training streams) at serving time (example
        age 0) -> float32 [B, d]."""
        eval_mode(self.model_)
        streams = self.streams_ if streams is None else streams
        out = [
            self.model_.user_vector(serving_batch(streams, self.example_cfg, user_rows[i : i + batch_size]))
            for i in range(0, len(user_rows), batch_size)
        ]
        return torch.cat(out).numpy() if out else np.zeros((0, self.model_cfg.output_dim), np.float32)

    @torch.no_grad()
    def score_all(self, user_rows: np.ndarray) -> torch.Tensor:
        """Softmax logits of stream rows [B] over the item vocabulary: [B, V]; column 0 is -inf."""
        eval_mode(self.model_)
        return self.model_.scores(serving_batch(self.streams_, self.example_cfg, np.asarray(user_rows)))

    def scorer_for(self, user_ids: pa.Array, item_ids: pa.Array):
        """A ``score_fn(user_idx [B]) -> [B, I]`` over another catalogue (an evaluation split's)."""
        rows = self.user_rows(user_ids)  # [U]
        columns = torch.from_numpy(self.featurizer_.items_.encode(item_ids))  # [I], 0 = unknown item

        def score(user_idx: np.ndarray) -> torch.Tensor:
            return self.score_all(rows[user_idx])[:, columns]  # unknown items take column 0: -inf

        return score

    # ---- serving ----------------------------------------------------------------------------

    def _item_matrix(self) -> np.ndarray:
        """[V - 1, d (+1)] item vectors of ids 1..V-1; the bias rides as one more dimension."""
        v = self.model_.item_vectors().detach()[1:]
        bias = self.model_.item_biases()
        if bias is not None:
            v = torch.cat([v, bias.detach()[1:, None]], dim=1)
        return v.numpy().astype(np.float32)

    def build_index(self, kind: str = "auto", **params: Any) -> CandidateGenerator:
        """kind "exact" (faiss IndexFlatIP), "ivf" or "hnsw" (approximate), or "auto": exact up
        to EXACT_UP_TO items, IVF beyond (bench/index_speed.py: recall@100 0.96 at 17x exact on 1M).
        """
        if kind == "auto":
            kind = "exact" if self.featurizer_.num_items <= EXACT_UP_TO else "ivf"
        index = make_index(IndexConfig(kind=kind, **params))
        self.index_ = index.build(self._item_matrix(), np.arange(1, self.featurizer_.num_items, dtype=np.int64))
        return self

    def retrieve(self, user_ids: Any, k: int = 100, exclude_watched: bool = True) -> tuple[list[np.ndarray], np.ndarray]:
        """Top-k for users [B] -> (item ids: B arrays of original ids, scores [B, k])."""
        rows = self.user_rows(user_ids)
        exclude = [self.watched(r) for r in rows] if exclude_watched else None
        return self.search_vectors(self.user_vectors(rows), k, exclude)

    @torch.no_grad()
    def vectors_for_histories(
        self,
        watched: list[list[Any]],
        queries: list[list[str]] | None = None,
        users: pa.Table | None = None,
    ) -> np.ndarray:
        """u from histories given now (serving with fresh events) -> float32 [B, d].

        watched: B lists of item ids, oldest first (unknown ids are OOV); queries: B lists of
        search queries, oldest first; users: a users table of B rows (user_id plus features; a
        known user_id without features takes the stored ones), or None for no features.
        """
        n = len(watched)
        queries = queries if queries is not None else [[] for _ in range(n)]
        if len(queries) != n or (users is not None and len(users) != n):
            raise ValueError("watched, queries and users must describe the same number of users")
        return self.user_vectors(np.arange(n, dtype=np.int64), streams=self.fresh_streams(watched, queries, users))

    def fresh_streams(
        self,
        watched: list[list[Any]],
        queries: list[list[str]] | None = None,
        users: pa.Table | None = None,
        watch_times: list[list[int]] | None = None,
        query_times: list[list[int]] | None = None,
    ) -> EventStreams:
        """Streams of B users from histories given now, row b = user b (no OOV row 0).

        watched, queries, users as in ``vectors_for_histories``; watch_times, query_times: the
        seconds of each event (the ranker's recency features need them), default 0.
        """
        f = self.featurizer_
        queries = queries if queries is not None else [[] for _ in watched]
        flat_items = [i for history in watched for i in history]
        items = f.items_.encode(pa.array(flat_items, type=f.items_.token_array.type)) if flat_items else np.zeros(0, np.int64)
        tokens, token_times = np.zeros(0, np.int64), np.zeros(0, np.int64)
        token_counts = np.zeros(len(queries), np.int64)
        flat_queries = [q for user_queries in queries for q in user_queries]
        if f.tokens_ is not None and flat_queries:
            lists = tokenize_many(pa.array(flat_queries, pa.string()))  # one query at a time: no
            tokens = f.tokens_.encode(lists.flatten())  # bigram spans two queries
            per_query = np.diff(lists.offsets.to_numpy())
            owner = np.repeat(np.arange(len(queries)), [len(q) for q in queries])
            token_counts = np.bincount(owner, weights=per_query, minlength=len(queries)).astype(np.int64)
            token_times = np.zeros(len(tokens), np.int64)
            if query_times is not None:
                token_times = np.repeat(np.concatenate([np.asarray(t, np.int64) for t in query_times]), per_query)
        cat = np.zeros((len(watched), len(f.user_features_.categorical_)), np.int64)
        cont = np.zeros((len(watched), f.user_features_.num_continuous), np.float32)
        if users is not None:
            rows = self.user_rows(users.column("user_id"))
            cat, cont = self.streams_.user_categorical[rows].copy(), self.streams_.user_continuous[rows].copy()
            given = [c for c in users.column_names if c != "user_id"]
            if given:  # features sent with the request win over stored ones
                cat, cont = f.user_features_.transform(users)
        times = np.zeros(len(items), np.int64)
        if watch_times is not None and len(items):
            times = np.concatenate([np.asarray(t, np.int64) for t in watch_times])
        return EventStreams(
            watch_items=items, watch_times=times, watch_offsets=_offsets_of([len(h) for h in watched]),
            tokens=tokens, token_times=token_times, token_offsets=_offsets_of(token_counts),
            user_categorical=cat, user_continuous=cont, ordered=True,
        )

    @torch.no_grad()
    def cold_start_vectors(self, users: pa.Table) -> np.ndarray:
        """u for users known only by their features (a users table, no history) -> [B, d]."""
        categorical, continuous = self.featurizer_.user_features_.transform(users)
        n = len(users)
        empty = torch.zeros(0, dtype=torch.int64)
        no_bags = torch.zeros(n, dtype=torch.int64)
        batch = CandidateBatch(
            watch_ids=empty, watch_offsets=torch.zeros(n, dtype=torch.int64),
            search_ids=empty, search_offsets=torch.zeros(n, dtype=torch.int64),
            user_categorical=torch.from_numpy(categorical), user_continuous=torch.from_numpy(continuous),
            example_age=torch.zeros(n), users=torch.zeros(n, dtype=torch.int64),
            recent_ids=empty, recent_offsets=no_bags,
        )
        eval_mode(self.model_)
        return self.model_.user_vector(batch).numpy()

    def search_vectors(self, vectors: np.ndarray, k: int, exclude: list[np.ndarray] | None = None) -> tuple[list[np.ndarray], np.ndarray]:
        """Top-k items for user vectors [B, d]; exclude: B arrays of item vocabulary ids."""
        if getattr(self, "index_", None) is None:
            self.build_index()
        if self.model_.item_bias is not None:
            vectors = np.concatenate([vectors, np.ones((len(vectors), 1), np.float32)], axis=1)
        scores, ids = self.index_.search(vectors, k, exclude=exclude)
        id_type = np.int64 if self.featurizer_.items_.token_type_ == "int" else object
        decoded = [np.array(self.featurizer_.items_.decode(row[row > 0]), dtype=id_type) for row in ids]
        return decoded, scores

    def item_titles(self) -> dict[Any, str]:
        """{item id: title} when the training data had an items table with titles."""
        return self.titles_

    def watched(self, user_row: int, streams: EventStreams | None = None) -> np.ndarray:
        """Distinct item ids in row ``user_row`` of ``streams`` (default: the training streams)."""
        s = self.streams_ if streams is None else streams
        return np.unique(s.watch_items[s.watch_offsets[user_row] : s.watch_offsets[user_row + 1]])

    # ---- model directory --------------------------------------------------------------------

    def save(self, directory: str | Path, metrics: dict | None = None) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {
            "format_version": FORMAT_VERSION, "kind": "ytdnn.candidates",
            "candidate": self.model_cfg.to_dict(), "examples": self.example_cfg.to_dict(),
            "train": self.train_cfg.to_dict(), "max_items": self.max_items, "max_tokens": self.max_tokens,
        }
        (directory / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        save_model(self.model_, str(directory / "candidate.safetensors"))
        self.featurizer_.save(directory / "vocab")
        (directory / "vocab" / "titles.json").write_text(json.dumps(list(self.titles_.items())))
        np.savez(directory / "history.npz", **{name: getattr(self.streams_, name) for name in _STREAM_FIELDS},
                 ordered=np.array(self.streams_.ordered))
        if getattr(self, "index_", None) is not None:
            self.index_.save(directory / "index")
        if metrics is not None:
            (directory / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> CandidateGenerator:
        directory = Path(directory)
        if not (directory / "config.json").exists():
            raise FileNotFoundError(f"{directory} is not a ytdnn model directory (no config.json)")
        config = json.loads((directory / "config.json").read_text())
        if config.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"model directory format {config.get('format_version')} is not {FORMAT_VERSION}")
        gen = cls(
            CandidateConfig.from_dict(config["candidate"]), ExampleConfig.from_dict(config["examples"]),
            TrainConfig.from_dict(config["train"]), config["max_items"], config["max_tokens"],
        )
        gen.featurizer_ = Featurizer.load(directory / "vocab")
        gen.titles_ = {item: title for item, title in json.loads((directory / "vocab" / "titles.json").read_text())}
        with np.load(directory / "history.npz", allow_pickle=False) as arrays:
            gen.streams_ = EventStreams(**{n: arrays[n] for n in _STREAM_FIELDS}, ordered=bool(arrays["ordered"]))
        gen.model_ = CandidateModel(gen.model_cfg, gen._sizes())
        load_model(gen.model_, str(directory / "candidate.safetensors"))
        gen.model_.eval()
        gen.index_ = load_index(directory / "index") if (directory / "index").exists() else None
        return gen


def configs_from_json(path: str | Path) -> dict[str, Any]:
    """The typed configs of a config.json (a model directory's, or one written by hand)."""
    config = json.loads(Path(path).read_text())
    unknown = sorted(set(config) - {"candidate", "examples", "train", "format_version", "kind", "max_items", "max_tokens"})
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {unknown}")
    out: dict[str, Any] = {}
    for section, (key, cls) in _SECTIONS.items():
        if section in config:
            out[key] = cls.from_dict(config[section])
    for key in ("max_items", "max_tokens"):
        if key in config:
            out[key] = config[key]
    return out


def _offsets_of(counts) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(np.asarray(counts, dtype=np.int64))]).astype(np.int64)


def _titles(items: pa.Table | None) -> dict[Any, str]:
    if items is None or "title" not in items.column_names:
        return {}
    return {i: t for i, t in zip(items.column("item_id").to_pylist(), items.column("title").to_pylist()) if t is not None}


_SECTIONS = {"candidate": ("model", CandidateConfig), "examples": ("examples", ExampleConfig), "train": ("train", TrainConfig)}


def split_overrides(configs: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Apply flat ``{setting: value}`` overrides to whichever config owns each setting."""
    configs = dict(configs)
    overrides = dict(overrides)
    for name in ("max_items", "max_tokens"):
        if name in overrides:
            configs[name] = overrides.pop(name)
    routed = route_overrides({key: cls for key, cls in _SECTIONS.values()}, overrides)
    for key, cls in _SECTIONS.values():
        if routed[key]:
            configs[key] = configs.get(key, cls()).replace(**routed[key])
    return configs
