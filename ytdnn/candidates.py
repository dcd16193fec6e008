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

import copy
import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_model

from ytdnn.eval.baselines import Popularity
from ytdnn.eval.metrics import evaluate
from ytdnn.eval.protocols import holdout_split
from ytdnn.features.text import tokenize_many
from ytdnn.index import load_index
from ytdnn.index.factory import IndexConfig, make_index
from ytdnn.modeldir import ModelDir, readable_as_folder, remove_entries
from ytdnn.models.candidate import CandidateConfig, CandidateModel, CandidateSizes
from ytdnn.models.layers import eval_mode
from ytdnn.retrieval.generator import index_width, item_matrix, queries
from ytdnn.samples.candidate import CandidateBatch, CandidateExamples, ExampleConfig, serving_batch
from ytdnn.samples.shards import ShardStream
from ytdnn.samples.streams import EventStreams, Featurizer
from ytdnn.scale.prepare import read_manifest
from ytdnn.train.batches import private_rng
from ytdnn.train.checkpoint import data_fingerprint
from ytdnn.train.config import TrainConfig
from ytdnn.train.distributed import current_shard
from ytdnn.train.loop import History, fit

FORMAT_VERSION = 2  # 2: the example age is fed as its fitted CDF (vocab/example_age.json)
EXACT_UP_TO = 100_000  # exact search of 100k x 64 is ~0.6 s per 1,000 queries (DEPENDENCIES.md)
_STREAM_FIELDS = ("watch_items", "watch_times", "watch_offsets", "tokens", "token_times", "token_offsets",
                  "user_categorical", "user_continuous")


DEFAULT_MONITOR = "Recall@20"  # the early-stopping metric when patience is set without one
# The generator's training when none is given: the number of epochs comes from early stopping on a
# validation split the generator carves itself (``fit``), so no log needs its epochs tuned by hand.
DEFAULT_TRAIN = TrainConfig(lr=3e-3, max_epochs=30, patience=3)


class TrainingHealthWarning(UserWarning):
    """Training diverged, or ended below popularity on its own validation split."""


class CandidateGenerator:
    """Fit on canonical tables; ``retrieve(user_ids, k)`` returns the top-k item ids and scores.

    Fitted: ``featurizer_``, ``streams_``, ``model_``, ``history_`` (training History),
    ``selection_`` (what the automatic validation chose, or None) and, after ``build_index``,
    ``index_``.
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
        self.train_cfg = train or DEFAULT_TRAIN
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
        refit: bool = True,
    ) -> CandidateGenerator:
        """Train on the logs. ``validate(generator) -> {metric: value}`` drives early stopping on
        ``train.monitor`` (``DEFAULT_MONITOR`` when ``train.patience`` is set without one).

        With ``train.patience`` set and no ``validate``, the number of epochs is chosen on a
        validation split carved from the log itself (``eval.protocols.holdout_split``: each user's
        last watch, or a random tenth of an unordered log's), then the model is refit on the whole
        log for that many epochs (``refit=False`` keeps the model of the best epoch on the split's
        training part); ``selection_`` says what was chosen. Training whose loss rises
        for a whole epoch, starts far above log(items), or ends below popularity on that split
        warns (``TrainingHealthWarning``) with the figures.
        """
        self.selection_ = None
        if validate is None and self.train_cfg.patience is not None:
            return self._fit_auto_validated(watches, searches, users, items, out_dir, resume, on_log, refit)
        cfg = self.train_cfg
        if validate is not None and cfg.monitor is None and cfg.patience is not None:
            cfg = cfg.replace(monitor=DEFAULT_MONITOR)
        return self._fit(watches, searches, users, validate, items, out_dir, resume, on_log, cfg)

    def fit_prepared(self, prepared: str | Path, watches: pa.Table | None, searches: pa.Table | None = None,
                     users: pa.Table | None = None, items: pa.Table | None = None,
                     out_dir: str | Path | None = None, resume: bool = True, on_log=None) -> CandidateGenerator:
        """Train on the example shards of `ytdnn prepare` (``prepared``), streamed through a
        shuffle buffer (``ShardStream``), for ``train.max_epochs`` (no validation split to stop
        early on). The logs give the history the model serves from, encoded by the prepared
        vocabularies. watches None: no log is read, so memory holds the buffer, not the log, and
        the model keeps no history (its users' events arrive with requests, or ``ytdnn score
        --data`` builds them from the logs)."""
        self.selection_ = None
        return self._fit(watches, searches, users, None, items, out_dir, resume, on_log,
                         self.train_cfg.replace(patience=None, monitor=None), prepared=prepared)

    def _fit(self, watches, searches, users, validate, items, out_dir, resume, on_log, cfg: TrainConfig,
             prepared: str | Path | None = None):
        manifest = None
        if prepared is None:
            self.featurizer_ = Featurizer(self.max_items, self.max_tokens).fit(watches, searches, users)
        else:
            stream, manifest = self._prepared_stream(prepared, cfg)  # sets featurizer_
        self.titles_ = _titles(items)
        self.streams_ = self.featurizer_.streams(watches if watches is not None else self.featurizer_.no_watches(),
                                                 searches, users)
        if prepared is None:
            examples = CandidateExamples(self.streams_, self.example_cfg, self.featurizer_)
        with private_rng(seed=self.train_cfg.seed):  # initial weights; the caller's RNG untouched
            self.model_ = CandidateModel(self.model_cfg, self._sizes(),
                                         np.r_[0, self.featurizer_.items_.counts_])
        self.index_ = None

        def batches(epoch: int, generator: torch.Generator):
            if prepared is not None:
                return stream.epoch(generator)
            rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator)))
            return examples.batches(cfg.batch_size, rng, current_shard())  # this process's part

        self.history_: History = fit(
            self.model_, cfg, batches,
            validate=None if validate is None else (lambda model: validate(self)),
            out_dir=out_dir, resume=resume, on_log=on_log,
            num_examples=len(stream) if prepared is not None else examples.num_examples_per_epoch(),
            data_key=None if out_dir is None else self._data_key(manifest),
            model_settings=self.model_cfg.to_dict(),
        )
        self.model_.eval()
        _warn_if_diverging(self.history_, self.featurizer_.num_items - 1)
        return self

    @property
    def keeps_history(self) -> bool:
        """Whether the model holds its users' watch history (one trained from prepared shards
        without the logs does not: it serves every user as a new one unless given histories)."""
        return self.streams_ is not None and len(self.streams_.watch_items) > 0

    def _data_key(self, manifest: dict | None) -> str:
        """What the model trains on: the streams and vocabularies (or the prepared shards'
        ``manifest``) and the examples' settings."""
        f = self.featurizer_
        data = [manifest] if manifest is not None else [
            self.streams_, f.items_.tokens_, f.users_.tokens_, None if f.tokens_ is None else f.tokens_.tokens_]
        return data_fingerprint(*data, self.example_cfg.to_dict())

    def _prepared_stream(self, prepared: str | Path, cfg: TrainConfig) -> tuple[ShardStream, dict]:
        manifest, self.featurizer_, shards = read_manifest(prepared)
        if ExampleConfig.from_dict(manifest["examples"]) != self.example_cfg:
            raise ValueError(f"{prepared} was prepared with other example settings ({manifest['examples']}) "
                             "than this generator's: prepare again with the same --config/--set")
        return ShardStream(shards, self.featurizer_, cfg.batch_size, seed=cfg.seed, shard=current_shard()), manifest

    def _fit_auto_validated(self, watches, searches, users, items, out_dir, resume, on_log,
                            refit: bool) -> CandidateGenerator:
        """Choose the epochs on ``holdout_split(watches)``, then refit on everything."""
        cfg = self.train_cfg
        monitor = cfg.monitor or DEFAULT_MONITOR
        split = holdout_split(watches, seed=cfg.seed)
        stage = split.stage("valid")
        if not len(stage.target):
            warnings.warn("too few watches per user to carve a validation split: training "
                          f"{cfg.max_epochs} epochs without early stopping", TrainingHealthWarning, stacklevel=3)
            return self._fit(watches, searches, users, None, items, out_dir, resume, on_log,
                             cfg.replace(patience=None, monitor=None))
        ks, metrics = _validation_cuts(monitor)

        def validate(gen: CandidateGenerator) -> dict[str, float]:
            return evaluate(gen.scorer_for(split.user_ids, split.item_ids), stage, ks=ks, metrics=metrics)

        fit_rows = stage.fit_table().drop_columns(["user_idx", "item_idx"])
        self._fit(fit_rows, searches, users, validate, items, None, False, on_log, cfg.replace(monitor=monitor))
        best = self.history_.best_epoch
        popularity = evaluate(Popularity().fit(stage.fit, stage.num_users, stage.num_items), stage,
                              ks=ks, metrics=metrics)
        chosen = self.history_.epochs[best]["val"]
        self.selection_ = {"split": f"{split.protocol}: {len(stage.target)} targets", "monitor": monitor,
                           "epochs": best + 1, "valid": chosen, "popularity": popularity}
        # level at 1.0 is a catalogue too small to tell the two apart, not a model that failed
        if chosen[monitor] < popularity[monitor] or chosen[monitor] == popularity[monitor] < 1.0:
            relation = "below" if chosen[monitor] < popularity[monitor] else "level with"
            warnings.warn(f"the model ends {relation} popularity on its validation split: {monitor} "
                          f"{chosen[monitor]:.4f} against {popularity[monitor]:.4f}; check the inputs' scale, "
                          "lr and the number of epochs", TrainingHealthWarning, stacklevel=3)
        if refit:
            self._fit(watches, searches, users, None, items, out_dir, resume, on_log,
                      cfg.replace(max_epochs=best + 1, patience=None, monitor=None))
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
            self.model_.user_vector(serving_batch(streams, self.example_cfg, user_rows[i : i + batch_size], self.featurizer_.serving_age))
            for i in range(0, len(user_rows), batch_size)
        ]
        return torch.cat(out).numpy() if out else np.zeros((0, self.model_cfg.output_dim), np.float32)

    @torch.no_grad()
    def score_all(self, user_rows: np.ndarray) -> torch.Tensor:
        """Softmax logits of stream rows [B] over the item vocabulary: [B, V]; column 0 is -inf."""
        eval_mode(self.model_)
        return self.model_.scores(serving_batch(self.streams_, self.example_cfg, np.asarray(user_rows), self.featurizer_.serving_age))

    def scorer_for(self, user_ids: pa.Array, item_ids: pa.Array):
        """A ``score_fn(user_idx [B]) -> [B, I]`` over another catalogue (an evaluation split's)."""
        rows = self.user_rows(user_ids)  # [U]
        columns = torch.from_numpy(self.featurizer_.items_.encode(item_ids))  # [I], 0 = unknown item

        def score(user_idx: np.ndarray) -> torch.Tensor:
            return self.score_all(rows[user_idx])[:, columns]  # unknown items take column 0: -inf

        return score

    # ---- serving ----------------------------------------------------------------------------

    def build_index(self, kind: str = "auto", **params: Any) -> CandidateGenerator:
        """kind "exact" (faiss IndexFlatIP), "ivf" or "hnsw" (approximate), or "auto": exact up
        to EXACT_UP_TO items, IVF beyond (bench/index_speed.py: recall@100 0.96 at 17x exact on 1M).
        """
        if kind == "auto":
            kind = "exact" if self.featurizer_.num_items <= EXACT_UP_TO else "ivf"
        index = make_index(IndexConfig(kind=kind, **params))
        self.index_ = index.build(item_matrix(self.model_), np.arange(1, self.featurizer_.num_items, dtype=np.int64))
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

    def _query_token_ids(self, queries: list[str]) -> list[np.ndarray]:
        """[Q] queries -> the token ids of each: its words, then its bigrams (none spans two queries).

        Memoised per query string for the fitted vocabulary, up to _QUERY_MEMO entries: every
        request re-reads its user's last searches, and tokenizing them again cost about a tenth
        of a served request's CPU.
        """
        vocab = self.featurizer_.tokens_
        if getattr(self, "_query_memo", (None,))[0] is not vocab:
            self._query_memo = (vocab, {})
        memo = self._query_memo[1]
        out = [memo.get(q) for q in queries]
        new = list(dict.fromkeys(q for q, ids in zip(queries, out) if ids is None))
        if not new:
            return out
        lists = tokenize_many(pa.array(new, pa.string()))
        fresh = dict(zip(new, np.split(vocab.encode(lists.flatten()), lists.offsets.to_numpy()[1:-1])))
        if len(memo) + len(fresh) > _QUERY_MEMO:
            memo.clear()
        memo.update(fresh)
        return [fresh[q] if ids is None else ids for q, ids in zip(queries, out)]

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
            ids = self._query_token_ids(flat_queries)
            tokens = np.concatenate(ids)
            per_query = np.array([len(t) for t in ids], np.int64)
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
            example_age=torch.full((n,), self.featurizer_.serving_age), users=torch.zeros(n, dtype=torch.int64),
            recent_ids=empty, recent_offsets=no_bags,
        )
        eval_mode(self.model_)
        return self.model_.user_vector(batch).numpy()

    def search_vectors(self, vectors: np.ndarray, k: int, exclude: list[np.ndarray] | None = None) -> tuple[list[np.ndarray], np.ndarray]:
        """Top-k items for user vectors [B, d]; exclude: B arrays of item vocabulary ids."""
        if getattr(self, "index_", None) is None:
            self.build_index()
        scores, ids = self.index_.search(queries(vectors, self.model_), k, exclude=exclude)
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
            "format_version": FORMAT_VERSION, "kind": KIND,
            "candidate": self.model_cfg.to_dict(), "examples": self.example_cfg.to_dict(),
            "train": self.train_cfg.to_dict(), "max_items": self.max_items, "max_tokens": self.max_tokens,
        }
        remove_entries(directory, ["vocab", "index", "metrics.json"])  # an earlier model's, written here before
        (directory / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        save_model(self.model_, str(directory / "candidate.safetensors"))
        readable_as_folder(directory / "candidate.safetensors")
        self.featurizer_.save(directory / "vocab")
        (directory / "vocab" / "titles.json").write_text(json.dumps(list(self.titles_.items())))
        np.savez(directory / "history.npz", **{name: getattr(self.streams_, name) for name in _STREAM_FIELDS},
                 ordered=np.array(self.streams_.ordered))
        if getattr(self, "index_", None) is not None:
            self.index_.save(directory / "index")
        if metrics is not None:
            (directory / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        return directory

    def with_streams(self, featurizer: Featurizer, streams: EventStreams) -> CandidateGenerator:
        """A shallow copy that serves ``streams``, whose user rows are those of ``featurizer``
        (``Featurizer.for_users``): the users of one partition in batch scoring (ytdnn.scale.score)."""
        part = copy.copy(self)
        part.featurizer_, part.streams_ = featurizer, streams
        return part

    @classmethod
    def load(cls, directory: str | Path, history: bool = True) -> CandidateGenerator:
        """A directory written by ``save``. It may name only files inside itself, and any failure
        is a ModelDirError (a ValueError) naming the directory and the file (ytdnn.modeldir).
        history=False leaves history.npz unread (``streams_`` None): a batch-scoring worker gets
        its users' histories with them (``with_streams``)."""
        md = ModelDir(directory)
        with md.loading():
            config = md.config(_CONFIG_SCHEMA, KIND, FORMAT_VERSION)
            gen = cls(config["candidate"], config["examples"], config["train"], config["max_items"],
                      config["max_tokens"])
            gen.featurizer_ = Featurizer.load(md.folder("vocab", check_entries=True))
            _check_vocabulary(md, gen.featurizer_)
            gen.titles_ = {item: title for item, title in md.read_json("vocab/titles.json")}
            gen.streams_ = None
            if history:
                with np.load(md.file("history.npz"), allow_pickle=False) as arrays:
                    gen.streams_ = EventStreams(**{n: arrays[n] for n in _STREAM_FIELDS},
                                                ordered=bool(arrays["ordered"]))
                _check_streams(md, gen.streams_, gen.featurizer_)
            gen.model_ = CandidateModel(gen.model_cfg, gen._sizes())
            load_model(gen.model_, str(md.weights("candidate.safetensors")))
            gen.model_.eval()
            gen.index_ = load_index(md.folder("index")) if md.has("index") else None
            if gen.index_ is not None:
                _check_index(md, gen.index_, gen)
        return gen


KIND = "ytdnn.candidates"
_CONFIG_SCHEMA = {  # config.json of a candidates directory
    "format_version": int, "kind": str, "candidate": CandidateConfig, "examples": ExampleConfig,
    "train": TrainConfig, "max_items": int | None, "max_tokens": int | None,
}


def _validation_cuts(monitor: str) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """The cut-offs and metrics the automatic validation reports: the monitor's and Recall/NDCG@20."""
    name, _, k = monitor.partition("@")
    if not k.isdigit():
        raise ValueError(f"monitor must look like 'Recall@20', got {monitor!r}")
    return tuple(sorted({20, int(k)})), tuple(dict.fromkeys(("Recall", "NDCG", name)))


def _warn_if_diverging(history: History, num_items: int) -> None:
    """Warn when the training loss rose over a whole epoch, or started far above log(items): the
    loss of a uniform guess, which a badly scaled input (an example age of ~75,000) exceeds."""
    losses = [e["train_loss"] for e in history.epochs]
    if losses and num_items > 1 and losses[0] > 2 * math.log(num_items):
        warnings.warn(f"the first epoch's loss {losses[0]:.2f} is far above log({num_items} items) = "
                      f"{math.log(num_items):.2f}: are the inputs scaled, and the lr sane?",
                      TrainingHealthWarning, stacklevel=4)
    rising = [i for i in range(1, len(losses)) if losses[i] > losses[i - 1] * 1.05]  # beyond batch noise
    if rising:
        i = rising[0]
        warnings.warn(f"the training loss rose over epoch {i + 1}: {losses[i - 1]:.4f} -> {losses[i]:.4f}; "
                      "lower the lr or set grad_clip", TrainingHealthWarning, stacklevel=4)


def _check_vocabulary(md: ModelDir, featurizer: Featurizer) -> None:
    """ModelDirError naming the vocabulary file whose size the weights' tables do not have."""
    with safe_open(md.weights("candidate.safetensors"), "pt") as weights:
        rows = {name: weights.get_slice(name).get_shape()[0] for name in weights.keys()}  # noqa: SIM118 (no __iter__)
    for table, vocab, size in (("watch_bag.weight", "vocab/items.json", featurizer.num_items),
                               ("search_bag.weight", "vocab/tokens.json", featurizer.num_tokens)):
        if table in rows and rows[table] != size:
            md.current = vocab
            raise md.error(f"{size - 1:,} tokens, but candidate.safetensors's {table} has rows for {rows[table] - 1:,}: "
                           "the vocabulary and the weights come from different models")


def _check_streams(md: ModelDir, streams: EventStreams, featurizer: Featurizer) -> None:
    """ModelDirError unless history.npz fits the vocabularies (serving indexes them with its ids)."""
    md.current = "history.npz"
    s, users = streams, len(featurizer.users_)
    for name, events, times, offsets in (("watch", s.watch_items, s.watch_times, s.watch_offsets),
                                         ("token", s.tokens, s.token_times, s.token_offsets)):
        if (offsets.shape != (users + 1,) or offsets[0] != 0 or offsets[-1] != len(events)
                or (np.diff(offsets) < 0).any() or times.shape != events.shape):
            raise md.error(f"{name} offsets and times do not fit {users} users, "
                           f"{len(events)} events")
    encoder = featurizer.user_features_
    cats, conts = len(encoder.categorical_sizes), encoder.num_continuous
    if s.user_categorical.shape != (users, cats) or s.user_continuous.shape != (users, conts):
        raise md.error(f"user features are not [{users}, {cats}] and [{users}, {conts}]")
    ids = [("watch_items", s.watch_items, featurizer.num_items),
           ("tokens", s.tokens, featurizer.num_tokens)]
    ids += [("user_categorical", s.user_categorical[:, c], n)
            for c, n in enumerate(encoder.categorical_sizes)]
    for name, values, size in ids:
        integers = values.dtype.kind in "iu"
        if not integers or (len(values) and not 0 <= values.min() <= values.max() < size):
            raise md.error(f"{name} are not ids in 0..{size - 1}")


def _check_index(md: ModelDir, index, gen: CandidateGenerator) -> None:
    """ModelDirError unless the index holds item ids of the vocabulary, as wide as the model's
    vectors (and the bias dimension)."""
    md.current = "index"
    dim = index_width(gen.model_)
    num_items = gen.featurizer_.num_items
    ids = index.ids_
    if index.dim_ != dim:
        raise md.error(f"holds vectors of width {index.dim_}, the model's are {dim} wide")
    if len(ids) and not 1 <= ids.min() <= ids.max() < num_items:
        raise md.error(f"holds ids {ids.min()}..{ids.max()}, not item ids 1..{num_items - 1}")


_QUERY_MEMO = 100_000  # queries whose token ids serving keeps (a few MB)


def _offsets_of(counts) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(np.asarray(counts, dtype=np.int64))]).astype(np.int64)


def _titles(items: pa.Table | None) -> dict[Any, str]:
    if items is None or "title" not in items.column_names:
        return {}
    return {i: t for i, t in zip(items.column("item_id").to_pylist(), items.column("title").to_pylist()) if t is not None}
