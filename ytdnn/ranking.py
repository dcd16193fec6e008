"""The ranker end to end: impressions -> features -> weighted logistic regression -> exp(logit).

    ranker = Ranker(RankerConfig(tower="512-256"), TrainConfig(max_epochs=3)).fit(generator, impressions,
                                                                               users=users, items=items)
    logits = ranker.score_impressions(generator, held_out_impressions)   # for the table-1 metric
    ewt = ranker.rank_candidates(generator, streams, user_rows, candidates, scores, ranks, now)

A fitted ranker is saved as a model directory, loaded without unpickling anything:

    config.json            format version, the ranker and train configs, the model's sizes
    ranker.safetensors     the weights
    features/              item vocabulary and features, quantiles, impression log (JSON, .npz)

A RankerBag (rankers trained on different samples of pages, ``ImpressionConfig.samples``) is a
directory with a config.json of kind "ytdnn.ranker-bag" and one ranker directory per member
(member-0/, member-1/, ...). ``load_ranker`` reads either.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from safetensors.torch import load_model, save_model

from ytdnn.data.schema import DataError
from ytdnn.features.ranking import Queries, RankingFeaturizer
from ytdnn.models.layers import eval_mode
from ytdnn.models.ranker import RankerConfig, RankerModel, RankerSizes
from ytdnn.samples.ranking import (
    CONTINUOUS_FEATURES,
    RankingExamples,
    assemble_ranking_batch,
    candidate_features,
    history_end,
)
from ytdnn.samples.streams import EventStreams
from ytdnn.train.config import TrainConfig
from ytdnn.train.loop import History, fit

FORMAT_VERSION = 1
KIND = "ytdnn.ranker"
BAG_KIND = "ytdnn.ranker-bag"
SCORE = CONTINUOUS_FEATURES.index("candidate_score")  # the raw column that feeds the score skip


class Ranker:
    """Fitted: ``featurizer_`` (RankingFeaturizer), ``model_`` (RankerModel), ``history_``."""

    def __init__(self, model: RankerConfig | None = None, train: TrainConfig | None = None):
        self.model_cfg = model or RankerConfig()
        self.train_cfg = train or TrainConfig()

    # ---- training ---------------------------------------------------------------------------

    def fit(self, generator, impressions: pa.Table, watches: pa.Table | None = None,
            searches: pa.Table | None = None, users: pa.Table | None = None, items: pa.Table | None = None,
            validate=None, out_dir: str | Path | None = None, resume: bool = True, on_log=None,
            log_impressions: bool | pa.Table = True) -> Ranker:
        """Train on ``impressions`` with features from ``generator`` (a fitted CandidateGenerator).

        watches / searches / users: the log the histories come from; None = the generator's own
        streams. validate(ranker) -> {metric: value} is called once per epoch. log_impressions:
        the impressions were really shown, so they are kept for the churn feature. Pass False for
        impressions built from candidates: their pages overlap (one positive is a positive of
        several consecutive requests), so "shown before" would stand in for the label.
        """
        streams = self.streams(generator, watches, searches, users)
        watched = watches.column("item_id") if watches is not None else _watched_ids(generator)
        item_ids = pa.chunked_array(watched.chunks + impressions.column("item_id").chunks)
        cfg = self.model_cfg
        self.featurizer_ = RankingFeaturizer(cfg.max_items, cfg.use_powers, cfg.num_quantiles).fit(
            item_ids, _shown(impressions, log_impressions), items,
            generator.featurizer_.user_features_.to_dict())
        self.featurizer_.set_watch_log(self.featurizer_.item_map(generator)[streams.watch_items], streams.watch_times)
        queries = self._queries(generator, streams, impressions)
        raw, binary = self._raw(generator, streams, queries, None)
        self.featurizer_.fit_normalizer(raw)
        examples = self._examples(generator, streams, impressions, queries, raw, binary)
        torch.manual_seed(self.train_cfg.seed)  # initial weights
        self.model_ = RankerModel(cfg, self._sizes(generator))

        def batches(epoch: int, rng_torch: torch.Generator):
            rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=rng_torch)))
            return examples.batches(self.train_cfg.batch_size, rng)

        self.history_: History = fit(
            self.model_, self.train_cfg, batches,
            validate=None if validate is None else (lambda model: validate(self)),
            out_dir=out_dir, resume=resume, num_examples=len(examples), on_log=on_log,
        )
        self.model_.eval()
        return self

    def _sizes(self, generator) -> RankerSizes:
        f, users = self.featurizer_, generator.featurizer_.user_features_
        return RankerSizes(
            num_items=len(f.items_), user_categorical=tuple(users.categorical_sizes),
            num_user_continuous=users.num_continuous,
            item_categorical=tuple(f.item_features_.categorical_sizes),
            num_categories=f.item_features_.num_categories, num_continuous=f.num_continuous,
        )

    @staticmethod
    def streams(generator, watches=None, searches=None, users=None) -> EventStreams:
        """Per-user histories in the generator's id space: its own, or those of another log."""
        streams = generator.streams_ if watches is None else generator.featurizer_.streams(watches, searches, users)
        if not streams.ordered or (watches is not None and watches.column("timestamp").null_count):
            raise DataError("ranking needs timestamped watches: features come from strictly earlier events")
        return streams

    # ---- features of impressions --------------------------------------------------------------

    def _queries(self, generator, streams: EventStreams, impressions: pa.Table) -> Queries:
        users = generator.featurizer_.users_.encode(impressions.column("user_id"))
        times = impressions.column("timestamp").to_numpy().astype(np.int64)
        return Queries(
            users=users, gen_items=generator.featurizer_.items_.encode(impressions.column("item_id")),
            items=self.featurizer_.items_.encode(impressions.column("item_id")), times=times,
            watch_end=history_end(streams.watch_offsets, streams.watch_times, users, times),
            token_end=history_end(streams.token_offsets, streams.token_times, users, times),
            imp_rows=self.featurizer_.impression_users_.encode(impressions.column("user_id")).copy(),
        )

    def _raw(self, generator, streams, q: Queries, extra) -> tuple[np.ndarray, np.ndarray]:
        score, rank = candidate_features(generator, streams, q.users, q.watch_end, q.token_end, q.gen_items)
        return self.featurizer_.raw_features(generator, streams, q, score, rank, extra)

    def _examples(self, generator, streams, impressions, q: Queries, raw, binary) -> RankingExamples:
        clicked = impressions.column("clicked").to_numpy(zero_copy_only=False).astype(np.float32)
        watch_time = impressions.column("watch_time").to_numpy(zero_copy_only=False).astype(np.float32)
        # §4.2: clicked impressions weigh their watch time, unclicked ones 1
        weights = np.where(clicked > 0, watch_time, 1.0) if self.model_cfg.weighted else np.ones_like(clicked)
        pages = impressions.column("page_id")
        if not pa.types.is_integer(pages.type):  # string page ids -> dense ints
            pages = pa.array(np.unique(pages.to_numpy(zero_copy_only=False), return_inverse=True)[1])
        pages = pages.to_numpy()
        return RankingExamples(
            tables=self.featurizer_.tables(generator, streams), max_history=self.model_cfg.max_watch_history,
            users=q.users, items=q.items, watch_end=q.watch_end,
            continuous=self.featurizer_.normalize(raw, binary), labels=clicked,
            weights=weights.astype(np.float32), pages=pages.astype(np.int64), prior=raw[:, SCORE],
        )

    def impression_examples(self, generator, impressions: pa.Table, watches=None, searches=None,
                            users=None) -> RankingExamples:
        """Features of held-out impressions (they count in their own churn features, as logged)."""
        streams, q, raw, binary = self._featurize(generator, impressions, watches, searches, users, False)
        return self._examples(generator, streams, impressions, q, raw, binary)

    def raw_features(self, generator, impressions: pa.Table, watches=None, searches=None, users=None,
                     in_log: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Raw continuous [N, F] (CONTINUOUS_FEATURES) and binary [N, Fb] features of impressions.

        in_log: the impressions are the ranker's training impressions, already in its log.
        """
        return self._featurize(generator, impressions, watches, searches, users, in_log)[2:]

    def _featurize(self, generator, impressions, watches, searches, users, in_log: bool):
        self.featurizer_.check_generator(generator)
        streams = self.streams(generator, watches, searches, users)
        q = self._queries(generator, streams, impressions)
        extra = None
        if not in_log:
            # users the stored log has never seen get rows after its own, so their impressions count too
            unseen = q.imp_rows == 0
            ids = impressions.column("user_id").to_numpy(zero_copy_only=False)[unseen]
            q.imp_rows[unseen] = len(self.featurizer_.impression_users_) + np.unique(ids, return_inverse=True)[1]
            extra = (q.imp_rows, q.items, q.times)
        raw, binary = self._raw(generator, streams, q, extra)
        return streams, q, raw, binary

    def score_impressions(self, generator, impressions: pa.Table, watches=None, searches=None,
                          users=None) -> np.ndarray:
        """Logits [N] of the impressions, in table order (exp of them: expected watch time)."""
        examples = self.impression_examples(generator, impressions, watches, searches, users)
        return self.predict(examples)

    @torch.no_grad()
    def predict(self, examples: RankingExamples, batch_size: int = 8192) -> np.ndarray:
        """Logits [N] of prepared examples."""
        eval_mode(self.model_)
        out = [self.model_(examples.batch(np.arange(a, min(a + batch_size, len(examples)))))
               for a in range(0, len(examples), batch_size)]
        return torch.cat(out).double().numpy() if out else np.zeros(0)

    # ---- serving ------------------------------------------------------------------------------

    @torch.no_grad()
    def rank_candidates(self, generator, streams: EventStreams, user_rows: np.ndarray, candidates: np.ndarray,
                        scores: np.ndarray, ranks: np.ndarray, now: np.ndarray | int,
                        timings: dict | None = None, known_users: np.ndarray | None = None) -> np.ndarray:
        """Expected watch time exp(logit) of each candidate: float64 [B, N]; -inf where candidates == 0.

        user_rows [B] stream rows; candidates [B, N] generator item ids (0 = empty slot);
        scores, ranks [B, N] the generator's score and corpus rank; now: seconds, scalar or [B].
        timings: filled with the seconds of "ranker_features" and "ranker_model" when given.
        known_users: [B] the generator's user rows (0 = unknown), which find each user's earlier
        impressions, when ``streams`` are not the generator's own (fresh histories); default user_rows.
        """
        start = time.perf_counter()
        b, n = candidates.shape
        valid = candidates > 0
        row = np.repeat(np.arange(b), n)[valid.ravel()]
        users = np.asarray(user_rows, np.int64)[row]
        gen_items = candidates[valid]
        times = np.broadcast_to(np.asarray(now, np.int64), (b,))[row]
        q = Queries(users=users, gen_items=gen_items, items=self.featurizer_.item_map(generator)[gen_items],
                    times=times, watch_end=streams.watch_offsets[users + 1],
                    token_end=streams.token_offsets[users + 1],
                    imp_rows=self.featurizer_.impression_rows(
                        generator, users if known_users is None else np.asarray(known_users, np.int64)[row]))
        raw, binary = self.featurizer_.raw_features(generator, streams, q, scores[valid], ranks[valid])
        batch = assemble_ranking_batch(
            self.featurizer_.tables(generator, streams), self.model_cfg.max_watch_history,
            q.users, q.items, q.watch_end, self.featurizer_.normalize(raw, binary), share_contexts=True,
            prior=raw[:, SCORE])
        middle = time.perf_counter()
        eval_mode(self.model_)
        out = np.full((b, n), -np.inf)
        out[valid] = self.model_.expected_watch_time(batch).double().numpy()
        if timings is not None:
            timings["ranker_features"] = middle - start
            timings["ranker_model"] = time.perf_counter() - middle
        return out

    # ---- model directory --------------------------------------------------------------------

    def save(self, directory: str | Path, metrics: dict | None = None) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"format_version": FORMAT_VERSION, "kind": KIND, "ranker": self.model_cfg.to_dict(),
                  "train": self.train_cfg.to_dict(), "sizes": vars(self.model_.sizes)}
        (directory / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        save_model(self.model_, str(directory / "ranker.safetensors"))
        self.featurizer_.save(directory / "features")
        if metrics is not None:
            (directory / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Ranker:
        directory = Path(directory)
        if not (directory / "config.json").exists():
            raise FileNotFoundError(f"{directory} is not a ytdnn ranker directory (no config.json)")
        config = json.loads((directory / "config.json").read_text())
        if config.get("kind") != KIND or config.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{directory} holds {config.get('kind')!r} format {config.get('format_version')}, "
                             f"not {KIND!r} format {FORMAT_VERSION}")
        ranker = cls(RankerConfig.from_dict(config["ranker"]), TrainConfig.from_dict(config["train"]))
        ranker.featurizer_ = RankingFeaturizer.load(directory / "features")
        sizes = {k: tuple(v) if isinstance(v, list) else v for k, v in config["sizes"].items()}
        ranker.model_ = RankerModel(ranker.model_cfg, RankerSizes(**sizes))
        load_model(ranker.model_, str(directory / "ranker.safetensors"))
        ranker.model_.eval()
        return ranker


def _watched_ids(generator) -> pa.ChunkedArray:
    """The generator's training watches as item ids (each vocabulary token repeated by its count)."""
    vocab = generator.featurizer_.items_
    return pa.chunked_array([vocab.token_array.take(pa.array(np.repeat(np.arange(len(vocab.tokens_)), vocab.counts_)))])


def _shown(impressions: pa.Table, log_impressions: bool | pa.Table) -> pa.Table:
    if isinstance(log_impressions, pa.Table):
        return log_impressions
    return impressions if log_impressions else impressions.slice(0, 0)


class RankerBag:
    """Rankers trained on different samples of pages, served as one: a candidate's logit is the
    mean of theirs (its score the geometric mean of their expected watch times). It offers what
    the Recommender uses of a Ranker. Averaging removes the variance a single sample of pages
    leaves: on ml-100k validation the seed alone moved NDCG@10 between 0.082 and 0.087, and five
    rankers averaged scored 0.0890 (bench/ranking.py)."""

    def __init__(self, rankers: list[Ranker]):
        if not rankers:
            raise ValueError("a RankerBag needs at least one ranker")
        self.rankers = rankers

    # every member was fitted with the same generator configs: the first speaks for all
    featurizer_ = property(lambda self: self.rankers[0].featurizer_)
    model_cfg = property(lambda self: self.rankers[0].model_cfg)
    history_ = property(lambda self: self.rankers[0].history_)

    def rank_candidates(self, generator, streams: EventStreams, user_rows: np.ndarray, candidates: np.ndarray,
                        scores: np.ndarray, ranks: np.ndarray, now: np.ndarray | int,
                        timings: dict | None = None, known_users: np.ndarray | None = None) -> np.ndarray:
        """Ranker.rank_candidates of every member combined: float64 [B, N], -inf at empty slots.
        timings: each stage's seconds summed over the members."""
        total, logs = {}, []
        for ranker in self.rankers:
            member: dict = {}
            ewt = ranker.rank_candidates(generator, streams, user_rows, candidates, scores, ranks, now,
                                         member, known_users)
            logs.append(np.log(np.where(ewt > 0, ewt, 1.0)))
            for stage, seconds in member.items():
                total[stage] = total.get(stage, 0.0) + seconds
        if timings is not None:
            timings.update(total)
        return np.where(ewt > 0, np.exp(np.mean(logs, axis=0)), -np.inf)

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"format_version": FORMAT_VERSION, "kind": BAG_KIND, "members": len(self.rankers)}
        (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        for i, ranker in enumerate(self.rankers):
            ranker.save(directory / f"member-{i}")
        return directory


def load_ranker(directory: str | Path) -> Ranker | RankerBag:
    """A ranker directory or a RankerBag directory."""
    directory = Path(directory)
    config_file = directory / "config.json"
    config = json.loads(config_file.read_text()) if config_file.exists() else {}
    if config.get("kind") == BAG_KIND:
        return RankerBag([Ranker.load(directory / f"member-{i}") for i in range(config["members"])])
    return Ranker.load(directory)
