"""The ranker end to end: impressions -> features -> weighted logistic regression -> exp(logit).

    ranker = Ranker(RankerConfig(tower="512-256"), TrainConfig(max_epochs=3)).fit(generator, impressions,
                                                                               users=users, items=items)
    logits = ranker.score_impressions(generator, held_out_impressions)   # for the table-1 metric
    ewt = ranker.rank_candidates(generator, streams, user_rows, candidates, scores, ranks, now)

A fitted ranker is saved as a model directory, loaded without unpickling anything:

    config.json            format version, the ranker and train configs, the model's sizes
    ranker.safetensors     the weights
    features/              item vocabulary and features, quantiles, impression log (JSON, .npz)

A ranker trained on rated pairs (``fit_ratings``, samples/ratings.py) also holds ratings.npz
(the training ratings by user and item, which its rated bag reads) and rating_quantiles.json,
and may carry the rating heads (``predict_pairs`` returns their expected rating) and a rating
autoencoder (autorec.safetensors, ``RatingConfig.autorec_units``).

A RankerBag (rankers trained on different samples of pages, ``ImpressionConfig.samples``) is a
directory with a config.json of kind "ytdnn.ranker-bag" and one ranker directory per member
(member-0/, member-1/, ...). ``load_ranker`` reads either.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from safetensors.torch import load_model, save_model

from ytdnn.data.schema import DataError
from ytdnn.features.quantiles import QuantileNormalizer
from ytdnn.features.ranking import Queries, RankingFeaturizer
from ytdnn.modeldir import CONFIG, ModelDir, readable_as_folder, remove_entries
from ytdnn.models.autorec import RatingAutoencoder
from ytdnn.models.layers import eval_mode
from ytdnn.models.ranker import RankerConfig, RankerModel, RankerSizes
from ytdnn.retrieval.blend import Sources, SourceView, view_of_rows
from ytdnn.retrieval.generator import GeneratorSource
from ytdnn.samples.ranking import (
    RankingExamples,
    assemble_ranking_batch,
    candidate_features,
    history_end,
)
from ytdnn.samples.ratings import (
    MAX_RATING_LEVELS,
    ItemRatings,
    RatedExamples,
    RatingConfig,
    RatingLog,
    assemble_rated_batch,
    blend_weight,
    draw_negatives,
    holdout_contexts,
    window_features,
)
from ytdnn.samples.streams import EventStreams
from ytdnn.train.batches import private_rng
from ytdnn.train.checkpoint import data_fingerprint
from ytdnn.train.config import TrainConfig
from ytdnn.train.distributed import current_shard
from ytdnn.train.loop import History, fit

FORMAT_VERSION = 2  # 2: the rating heads (config "ratings", sizes rating_levels / rating_mean)
KIND = "ytdnn.ranker"
BAG_KIND = "ytdnn.ranker-bag"
_CONFIG_SCHEMA = {  # config.json of a ranker directory (what save writes)
    "format_version": int, "kind": str, "ranker": RankerConfig, "train": TrainConfig,
    "sizes": RankerSizes, "ratings": RatingConfig | None,
}
_BAG_SCHEMA = {"format_version": int, "kind": str, "members": int}  # members: member-0/, ...
SCORE = "candidate_score"  # the raw feature that feeds the score skip (featurizer_.column(SCORE))
# rank_candidates(fast=True) keeps every item's share of the first layer: [V, W1] float32, 100 MB
# for 100k items and 256 units. Past 1 GiB it is not built: the candidates' share is computed.
ITEM_SIDE_MAX_BYTES = 1 << 30
# The rating autoencoder's batches (items) and its least number of steps: a small log has few
# batches an epoch, and RatingConfig.autorec_epochs of them (30 on ml-1m: 450 steps) leave it
# near its initial weights.
AUTOREC_BATCH, AUTOREC_MIN_STEPS = 256, 400
AUTOREC_PAIRS = 8192  # pairs a step when the autoencoder rates pairs


class Ranker:
    """Fitted: ``featurizer_`` (RankingFeaturizer), ``model_`` (RankerModel), ``history_``; after
    ``fit_ratings`` also ``rating_log_`` (RatingLog) and ``rating_normalizer_``, and with
    ``RatingConfig.autorec_units`` ``autorec_`` (RatingAutoencoder, fit on every rating).

    ratings: the RatingConfig of a ranker trained on rated pairs (``fit_ratings``), else None.
    """

    def __init__(self, model: RankerConfig | None = None, train: TrainConfig | None = None,
                 ratings: RatingConfig | None = None):
        self.model_cfg = model or RankerConfig()
        self.train_cfg = train or TrainConfig()
        self.rating_cfg = ratings

    # ---- training ---------------------------------------------------------------------------

    def fit(self, generator, impressions: pa.Table, watches: pa.Table | None = None,
            searches: pa.Table | None = None, users: pa.Table | None = None, items: pa.Table | None = None,
            validate=None, out_dir: str | Path | None = None, resume: bool = True, on_log=None,
            log_impressions: bool | pa.Table = True, sources: Sources | None = None) -> Ranker:
        """Train on ``impressions`` with features from ``generator`` (a fitted CandidateGenerator).

        watches / searches / users: the log the histories come from; None = the generator's own
        streams. validate(ranker) -> {metric: value} is called once per epoch. log_impressions:
        the impressions were really shown, so they are kept for the churn feature. Pass False for
        impressions built from candidates: their pages overlap (one positive is a positive of
        several consecutive requests), so "shown before" would stand in for the label.
        sources: candidate sources (``retrieval.blend``) over the generator's catalogue whose view
        of each impression the ranker reads; serving must then pass their view of every
        candidate (``rank_candidates(view=...)``).
        """
        if impressions is None:
            raise ValueError("Ranker.fit learns from impressions (logged or built pages) and got none: on a log "
                             "without impressions, ytdnn.training.fit_ranker(generator, dataset, config) builds "
                             "the pages from the candidate generator's lists")
        if not len(impressions):
            raise ValueError(
                "the ranker has no pages to learn from: a built page needs a user with a later watch than its "
                "request (two or more watches at distinct times; on an unordered log, two or more items), and "
                "this log has none; train the candidate generator alone (ytdnn train candidates)")
        streams = self.streams(generator, watches, searches, users)
        watched = watches.column("item_id") if watches is not None else _watched_ids(generator)
        item_ids = pa.chunked_array(watched.chunks + impressions.column("item_id").chunks)
        cfg = self.model_cfg
        self.featurizer_ = RankingFeaturizer(cfg.max_items, cfg.use_powers, cfg.num_quantiles).fit(
            item_ids, _shown(impressions, log_impressions), items,
            generator.featurizer_.user_features_.to_dict(), tuple(s.name for s, _ in sources or ()))
        self.featurizer_.set_watch_log(self.featurizer_.item_map(generator)[streams.watch_items], streams.watch_times)
        queries = self._queries(generator, streams, impressions)
        raw, binary = self._raw(generator, streams, queries, None, sources)
        self.featurizer_.fit_normalizer(raw)
        examples = self._examples(generator, streams, impressions, queries, raw, binary)
        return self._train(self._sizes(generator), examples, validate, out_dir, resume, on_log)

    def fit_ratings(self, generator, watches: pa.Table, ratings: np.ndarray | None = None,
                    users: pa.Table | None = None, items: pa.Table | None = None,
                    ratings_cfg: RatingConfig | None = None, validate=None,
                    out_dir: str | Path | None = None, resume: bool = True, on_log=None) -> Ranker:
        """Train on the rated pairs of ``watches`` (the log ``generator`` was fitted on), with
        features from each user's other ratings (samples/ratings.py): ordered logs by time,
        unordered ones by fold holdout.

        ratings [W]: the rating of each watch, which the rating heads learn and the rated bag
        reads; None = no ratings (the heads must be off; the bag weighs the watch times). The
        positives weigh their watch time (1 where the log has none).
        """
        self.rating_cfg = rc = ratings_cfg or self.rating_cfg or RatingConfig()
        cfg, f_gen = self.model_cfg, generator.featurizer_
        if ratings is None and cfg.rating_heads:
            raise ValueError("the rating heads need ratings")
        if cfg.loss != "logistic":
            raise ValueError(f"rated pairs have no pages: loss {cfg.loss!r} needs impressions (Ranker.fit)")
        watch_time = (watches.column("watch_time").to_numpy(zero_copy_only=False).astype(np.float64)
                      if "watch_time" in watches.column_names else np.ones(len(watches)))
        values = watch_time if ratings is None else np.asarray(ratings, np.float64)
        if len(values) != len(watches) or np.isnan(values).any():
            raise ValueError(f"ratings must be {len(watches)} numbers, one per watch, none NaN")
        levels = np.unique(values)
        if cfg.rating_class_loss_weight > 0 and len(levels) > MAX_RATING_LEVELS:
            raise ValueError(f"the class head needs <= {MAX_RATING_LEVELS} rating levels, got {len(levels)}")
        self.featurizer_ = RankingFeaturizer(cfg.max_items, cfg.use_powers, cfg.num_quantiles).fit(
            watches.column("item_id"), _no_impressions(watches), items, f_gen.user_features_.to_dict())
        gen_streams = generator.streams_
        self.featurizer_.set_watch_log(self.featurizer_.item_map(generator)[gen_streams.watch_items],
                                       gen_streams.watch_times)
        user_rows = f_gen.users_.encode(watches.column("user_id"))
        gen_items = f_gen.items_.encode(watches.column("item_id"))
        self.rating_log_ = RatingLog.fit(user_rows, gen_items, values, f_gen.num_items)
        self.rating_fill_ = float(values.mean()) if len(values) else 0.0
        times = watches.column("timestamp").to_numpy(zero_copy_only=False).astype(np.int64) if f_gen.ordered_ else None
        rng = np.random.default_rng(rc.seed)
        examples, autorec = self._rated_examples(generator, user_rows, gen_items, times, values, watch_time,
                                                 ratings is not None, rng)
        calibration = None
        if autorec is not None and rc.autorec_weight is None and cfg.rating_heads:
            rated = np.flatnonzero(~np.isnan(examples.ratings))
            held = rated[np.random.default_rng([rc.seed, 2]).random(len(rated)) < rc.calibration_share]
            calibration = (examples.take(held), autorec[held])
            examples = examples.take(np.setdiff1d(np.arange(len(examples)), held))
        if len(levels) > MAX_RATING_LEVELS:
            levels = levels[[0, -1]]  # the scale only
        sizes = dataclasses.replace(
            self._sizes(generator), num_continuous=examples.continuous.shape[1],
            rating_levels=tuple(float(v) for v in levels) if ratings is not None else (),
            rating_mean=self.rating_fill_ if ratings is not None else 0.0)
        self._train(sizes, examples, validate, out_dir, resume, on_log)
        self.autorec_weight_ = rc.autorec_weight or 0.0
        if calibration is not None:
            self.autorec_weight_ = self._calibrated_weight(*calibration)
        return self

    @torch.no_grad()
    def _calibrated_weight(self, examples: RatedExamples, autorec: np.ndarray, chunk: int = 65_536) -> float:
        """The autoencoder's weight in the served rating, fit on held-out rated examples [M]
        (never the ranker's labels) and their out-of-fold autoencoder ratings autorec [M]."""
        eval_mode(self.model_)
        heads = np.concatenate([np.zeros(0)] + [
            self.model_.predictions(examples.batch(np.arange(a, min(a + chunk, len(examples)))))[1].double().numpy()
            for a in range(0, len(examples), chunk)])
        return blend_weight(heads, autorec, examples.ratings)

    def _train(self, sizes, examples, validate, out_dir, resume, on_log) -> Ranker:
        """A fresh RankerModel for ``sizes``, trained on ``examples`` by the one training loop."""
        with private_rng(seed=self.train_cfg.seed):  # initial weights; the caller's RNG untouched
            self.model_ = RankerModel(self.model_cfg, sizes)

        def batches(epoch: int, rng_torch: torch.Generator):
            rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=rng_torch)))
            if self.model_cfg.loss == "page_softmax":  # fit_ratings refuses it: always RankingExamples
                return examples.batches(self.train_cfg.batch_size, rng, current_shard(), by_page=True)
            return examples.batches(self.train_cfg.batch_size, rng, current_shard())  # this process's part

        self.history_: History = fit(
            self.model_, self.train_cfg, batches,
            validate=None if validate is None else (lambda model: validate(self)),
            out_dir=out_dir, resume=resume, num_examples=len(examples), on_log=on_log,
            data_key=None if out_dir is None else data_fingerprint(examples), model_settings=self.model_cfg.to_dict(),
        )
        self.model_.eval()
        return self

    def _rated_examples(self, generator, user_rows, gen_items, times, values, watch_time,
                        has_ratings: bool, rng: np.random.Generator) -> tuple[RatedExamples, np.ndarray | None]:
        """Positives (every rated row) and negatives, in their holdout contexts, with features;
        and with the autoencoder its out-of-fold rating of each example [N] (else None)."""
        rc, f, gen_streams = self.rating_cfg, self.featurizer_, generator.streams_
        ctx = holdout_contexts(user_rows, times, gen_streams.num_users, rc.folds, rng)
        num_contexts = len(ctx.context_user)
        streams = EventStreams(
            watch_items=gen_items[ctx.stream],
            watch_times=np.zeros(len(ctx.stream), np.int64) if times is None else times[ctx.stream],
            watch_offsets=ctx.offsets, tokens=np.zeros(0, np.int64), token_times=np.zeros(0, np.int64),
            token_offsets=np.zeros(num_contexts + 1, np.int64),
            user_categorical=gen_streams.user_categorical[ctx.context_user],
            user_continuous=gen_streams.user_continuous[ctx.context_user], ordered=times is not None)
        neg_rows, neg_items = draw_negatives(user_rows, self.rating_log_, rc.negatives_per_rating,
                                            generator.featurizer_.num_items, rng)
        rows = np.concatenate([np.arange(len(user_rows)), neg_rows])  # [N] the rated row of each
        items = np.concatenate([gen_items, neg_items])  # [N] generator ids
        positive = np.arange(len(rows)) < len(user_rows)
        q = Queries(users=ctx.example_context[rows], gen_items=items, items=f.item_map(generator)[items],
                    times=np.ones(len(rows), np.int64) if times is None else times[rows],
                    watch_end=ctx.example_end[rows], token_end=np.zeros(len(rows), np.int64),
                    imp_rows=np.zeros(len(rows), np.int64))
        history_ratings = values[ctx.stream]
        raw, binary = self._pair_raw(generator, streams, q)
        f.fit_normalizer(raw)
        bag = window_features(history_ratings, streams.watch_offsets[q.users], q.watch_end,
                              self._max_history(streams), self.rating_fill_)
        column = None
        if rc.autorec_units:
            folds = (ctx.example_context % rc.folds if times is None  # the fold its bag leaves out
                     else np.random.default_rng([rc.seed, 1]).integers(rc.folds, size=len(user_rows)))
            column = self._autorec_out_of_fold(generator, user_rows, gen_items, values, folds, rows, items)
            bag = np.concatenate([bag, column[:, None]], axis=1)
        self.rating_normalizer_ = QuantileNormalizer(min(self.model_cfg.num_quantiles, max(len(bag) - 1, 1))).fit(bag)
        return RatedExamples(
            tables=f.tables(generator, streams), history_ratings=history_ratings,
            max_history=self._max_history(streams), contexts=q.users, items=q.items, watch_end=q.watch_end,
            continuous=np.concatenate([f.normalize(raw, binary), self._bag_continuous(bag)], axis=1),
            labels=positive.astype(np.float32),
            weights=np.where(positive, watch_time[rows], 1.0).astype(np.float32),
            ratings=np.where(positive & has_ratings, values[rows], np.nan).astype(np.float32),
            prior=self._prior(raw), fill=self.rating_fill_), column

    def _autorec_out_of_fold(self, generator, user_rows, gen_items, values, folds, rows, items) -> np.ndarray:
        """[N] the autoencoder's rating of each example: rated row rows[n]'s user, items[n], from
        an autoencoder fit without that row's fold (folds [W]), so no rating predicts itself;
        then ``autorec_`` is fit on every rating, for serving."""
        num_users, num_items = generator.streams_.num_users, generator.featurizer_.num_items
        out = np.empty(len(rows))
        for g in range(self.rating_cfg.folds):
            keep = folds != g
            ratings = ItemRatings(RatingLog.fit(user_rows[keep], gen_items[keep], values[keep], num_items), num_users)
            at = np.flatnonzero(folds[rows] == g)
            out[at] = self._autorec_ratings(self._fit_autorec(ratings), ratings, user_rows[rows[at]], items[at])
        self.autorec_ = self._fit_autorec(ItemRatings(self.rating_log_, num_users))
        return out

    def _fit_autorec(self, ratings: ItemRatings) -> RatingAutoencoder:
        """A RatingAutoencoder trained on ``ratings`` by the one training loop (the ranker's train
        config's seed and threads; RatingConfig's epochs, lr and λ; a cosine decay, no monitor)."""
        rc = self.rating_cfg
        with private_rng(seed=self.train_cfg.seed):
            model = RatingAutoencoder(ratings.num_users, rc.autorec_units, rc.autorec_l2, ratings.num_ratings)
        rated = int((np.diff(ratings.offsets) > 0).sum())
        per_epoch = -(-rated // min(AUTOREC_BATCH, ratings.max_batch_items()))
        epochs = max(rc.autorec_epochs, -(-AUTOREC_MIN_STEPS // max(per_epoch, 1)))
        train = self.train_cfg.replace(
            optimizer="adam", lr=rc.autorec_lr, lr_schedule="cosine", max_epochs=epochs, weight_decay=0.0,
            batch_size=AUTOREC_BATCH, monitor=None, patience=None, warmup_steps=0, min_lr_ratio=0.0,
            tensorboard=False)

        def batches(epoch: int, rng_torch: torch.Generator):
            return ratings.batches(train.batch_size, np.random.default_rng(int(torch.randint(2**62, (1,), generator=rng_torch))))

        fit(model, train, batches, num_examples=rated)
        return model.eval()

    @torch.no_grad()
    def _autorec_ratings(self, model: RatingAutoencoder, ratings: ItemRatings | None, users: np.ndarray,
                         items: np.ndarray, codes: torch.Tensor | None = None) -> np.ndarray:
        """[N] ``model``'s rating of the pairs users [N] (user rows) x items [N] (generator ids),
        the items encoded from ``ratings`` (or read from codes [num_items, H]); clipped to the
        training scale; the mean rating for an unknown user (row 0)."""
        if codes is None:
            distinct, items = np.unique(items, return_inverse=True)
            codes = _item_codes(model, ratings, distinct)
        known = np.flatnonzero((users > 0) & (users < model.decoder.out_features))
        out = np.full(len(users), self.rating_fill_)
        low, high = self.rating_log_.values_.min(initial=0), self.rating_log_.values_.max(initial=0)
        for a in range(0, len(known), AUTOREC_PAIRS):  # [chunk, H] gathers: 3.5x faster than one
            at = known[a : a + AUTOREC_PAIRS]
            rated = model.predict(codes[torch.from_numpy(items[at])], torch.from_numpy(users[at]))
            out[at] = np.clip(rated.double().numpy(), low, high)
        return out

    def _autorec_column(self, generator, streams: EventStreams, q: Queries) -> np.ndarray:
        """[Q] ``autorec_``'s rating of each query at serving: the training log's users (a history
        read at request time is an unknown user's), every item's code computed once and kept."""
        if streams is not generator.streams_:
            return np.full(len(q.users), self.rating_fill_)
        return self._autorec_served(q.users, q.gen_items)

    def _autorec_served(self, user_rows: np.ndarray, gen_items: np.ndarray) -> np.ndarray:
        """[N] ``autorec_``'s rating of the training log's user rows [N] x generator item ids [N],
        every item's code computed once and kept."""
        cached = getattr(self, "_autorec_codes", None)
        if cached is None or cached[0] is not self.autorec_:
            ratings = ItemRatings(self.rating_log_, self.autorec_.decoder.out_features)
            cached = self._autorec_codes = (self.autorec_, _item_codes(self.autorec_, ratings, np.arange(ratings.num_items)))
        return self._autorec_ratings(self.autorec_, None, user_rows, gen_items, cached[1])

    def _pair_raw(self, generator, streams: EventStreams, q: Queries, score=None, rank=None):
        """Raw continuous and binary features of rated pairs; the generator's view only when
        RatingConfig.candidate_features (else 0: a constant the normalizer maps to one value)."""
        if self.rating_cfg.candidate_features:
            if score is None:
                score, rank = candidate_features(generator, streams, q.users, q.watch_end, q.token_end, q.gen_items)
        else:
            score = rank = np.zeros(len(q.users))
        return self.featurizer_.raw_features(generator, streams, q, score, rank)

    def _bag_continuous(self, bag: np.ndarray) -> np.ndarray:
        """RATING_FEATURES [N, F] raw (F = 2, 3 with the autoencoder) -> normalised [N, F] (or
        [N, 3F] with powers), float32."""
        n = self.rating_normalizer_
        return n.transform_with_powers(bag) if self.model_cfg.use_powers else n.transform(bag)

    def _prior(self, raw: np.ndarray) -> np.ndarray:
        """The skip inputs of raw features [N, F]: the generator's logit [N], or with
        ``source_skips`` and sources [N, 1 + S], each other source's raw score after it."""
        f, skipped = self.featurizer_, self._skipped_sources()
        if not skipped:
            return raw[:, f.column(SCORE)]
        return raw[:, [f.column(SCORE), *(f.column(f"source_{s}_score") for s in skipped)]]

    def _skipped_sources(self) -> list[str]:
        """The sources whose score has a skip weight: all but the generator (its logit has one)."""
        if not self.model_cfg.source_skips:
            return []
        return [s for s in self.featurizer_.source_names_ if s != GeneratorSource.name]

    def _max_history(self, streams: EventStreams) -> int:
        """The watched-items bag: the last max_watch_history, or for an unordered log (no "last")
        all of the user's watches, as the candidate generator serves them."""
        if streams.ordered:
            return self.model_cfg.max_watch_history
        return max(int(np.diff(streams.watch_offsets).max(initial=1)), 1)

    def _sizes(self, generator) -> RankerSizes:
        f, users = self.featurizer_, generator.featurizer_.user_features_
        return RankerSizes(
            num_items=len(f.items_), user_categorical=tuple(users.categorical_sizes),
            num_user_continuous=users.num_continuous,
            num_source_skips=len(self._skipped_sources()),
            item_categorical=tuple(f.item_features_.categorical_sizes),
            num_categories=f.item_features_.num_categories, num_continuous=f.num_continuous,
        )

    @staticmethod
    def streams(generator, watches=None, searches=None, users=None) -> EventStreams:
        """Per-user histories in the generator's id space: its own, or those of another log.

        An unordered log's (a generator fitted without timestamps) events are all at time 0:
        impressions at time 1 see the whole history (``samples.holdout_pages``)."""
        streams = generator.streams_ if watches is None else generator.featurizer_.streams(watches, searches, users)
        if streams.ordered and watches is not None and watches.column("timestamp").null_count:
            raise DataError("ranking needs timestamped watches: features come from strictly earlier events")
        return streams

    # ---- features of impressions --------------------------------------------------------------

    def _queries(self, generator, streams: EventStreams, impressions: pa.Table) -> Queries:
        users = generator.featurizer_.users_.encode(impressions.column("user_id"))
        times = impressions.column("timestamp").to_numpy().astype(np.int64)
        if not streams.ordered and len(times) and times.min() < 1:
            raise DataError("on an unordered log every watch is at time 0: impressions come at time >= 1, "
                            "after the whole history (samples.holdout_pages)", column="timestamp")
        return Queries(
            users=users, gen_items=generator.featurizer_.items_.encode(impressions.column("item_id")),
            items=self.featurizer_.items_.encode(impressions.column("item_id")), times=times,
            watch_end=history_end(streams.watch_offsets, streams.watch_times, users, times),
            token_end=history_end(streams.token_offsets, streams.token_times, users, times),
            imp_rows=self.featurizer_.impression_users_.encode(impressions.column("user_id")).copy(),
        )

    def _raw(self, generator, streams, q: Queries, extra, sources: Sources | None = None) -> tuple[np.ndarray, np.ndarray]:
        score, rank = candidate_features(_serving_bags(generator, streams), streams, q.users, q.watch_end,
                                         q.token_end, q.gen_items)
        view = None
        if sources:
            view = view_of_rows(sources, streams, q.users, q.watch_end, q.token_end, q.times, q.gen_items)
        return self.featurizer_.raw_features(generator, streams, q, score, rank, extra, view)

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
            tables=self.featurizer_.tables(generator, streams), max_history=self._max_history(streams),
            users=q.users, items=q.items, watch_end=q.watch_end,
            continuous=self.featurizer_.normalize(raw, binary), labels=clicked,
            weights=weights.astype(np.float32), pages=pages.astype(np.int64),
            prior=self._prior(raw),
        )

    def impression_examples(self, generator, impressions: pa.Table, watches=None, searches=None,
                            users=None, sources: Sources | None = None) -> RankingExamples:
        """Features of held-out impressions (they count in their own churn features, as logged)."""
        streams, q, raw, binary = self._featurize(generator, impressions, watches, searches, users, False, sources)
        return self._examples(generator, streams, impressions, q, raw, binary)

    def raw_features(self, generator, impressions: pa.Table, watches=None, searches=None, users=None,
                     in_log: bool = True, sources: Sources | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Raw continuous [N, F] and binary [N, Fb] features of impressions (columns named by
        ``featurizer_.continuous_names`` and ``binary_names``).

        in_log: the impressions are the ranker's training impressions, already in its log.
        """
        return self._featurize(generator, impressions, watches, searches, users, in_log, sources)[2:]

    def _featurize(self, generator, impressions, watches, searches, users, in_log: bool,
                   sources: Sources | None = None):
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
        raw, binary = self._raw(generator, streams, q, extra, sources)
        return streams, q, raw, binary

    def score_impressions(self, generator, impressions: pa.Table, watches=None, searches=None,
                          users=None, sources: Sources | None = None) -> np.ndarray:
        """Logits [N] of the impressions, in table order (exp of them: expected watch time)."""
        examples = self.impression_examples(generator, impressions, watches, searches, users, sources)
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
                        timings: dict | None = None, known_users: np.ndarray | None = None,
                        fast: bool = False, view: SourceView | None = None) -> np.ndarray:
        """Expected watch time exp(logit) of each candidate: float64 [B, N]; -inf where candidates == 0.

        user_rows [B] stream rows; candidates [B, N] generator item ids (0 = empty slot);
        scores, ranks [B, N] the generator's score and corpus rank; now: seconds, scalar or [B].
        timings: filled with the seconds of "ranker_features" and "ranker_model" when given.
        known_users: [B] the generator's user rows (0 = unknown), which find each user's earlier
        impressions, when ``streams`` are not the generator's own (fresh histories); default user_rows.
        fast: read the items' share of the first layer from a table built on first use
        (``item_side_table``) instead of computing it per candidate; the same logits up
        to float rounding. view: the candidate sources' view of the candidates ([B, N, S]), when
        the ranker was trained with sources.
        """
        start = time.perf_counter()
        b, n = candidates.shape
        valid = candidates > 0
        if not valid.any():  # e.g. users who have watched the whole catalogue: nothing to rank
            if timings is not None:
                timings.update(ranker_features=0.0, ranker_model=0.0)
            return np.full((b, n), -np.inf)
        row = np.repeat(np.arange(b), n)[valid.ravel()]
        users = np.asarray(user_rows, np.int64)[row]
        gen_items = candidates[valid]
        times = np.broadcast_to(np.asarray(now, np.int64), (b,))[row]
        q = Queries(users=users, gen_items=gen_items, items=self.featurizer_.item_map(generator)[gen_items],
                    times=times, watch_end=streams.watch_offsets[users + 1],
                    token_end=streams.token_offsets[users + 1],
                    imp_rows=self.featurizer_.impression_rows(
                        generator, users if known_users is None else np.asarray(known_users, np.int64)[row]))
        batch = self._serving_batch(generator, streams, q, scores[valid], ranks[valid],
                                    None if view is None else view.rows(valid))
        middle = time.perf_counter()
        eval_mode(self.model_)
        out = np.full((b, n), -np.inf)
        table = self._serving_tables(generator) if fast else None
        if table is None:
            out[valid] = self.model_.expected_watch_time(batch).double().numpy()
        else:
            out[valid] = torch.exp(self.model_.serving_logits(batch, table)).double().numpy()
        if timings is not None:
            timings["ranker_features"] = middle - start
            timings["ranker_model"] = time.perf_counter() - middle
        return out

    def _serving_tables(self, generator) -> torch.Tensor | None:
        """What the fast path keeps, built on its first call: the recent watches of every item
        at the default serving time (the featurizer's), and the model's ``item_side_table`` over
        the ranker's items, returned (None where it does not apply or would pass
        ITEM_SIDE_MAX_BYTES)."""
        cached = getattr(self, "_item_side_cache", None)
        if cached is None or cached[0] is not self.model_:
            self.featurizer_.keep_recent_watches(generator.featurizer_.window_end_ + 1)
            m, f = self.model_, self.featurizer_.item_features_
            table = None
            if (self.rating_cfg is None and m.item_side_ready()
                    and len(f.categorical_ids_) * m.tower[0].out_features * 4 <= ITEM_SIDE_MAX_BYTES):
                eval_mode(m)
                table = m.item_side_table(torch.from_numpy(f.categorical_ids_), torch.from_numpy(f.category_ids_),
                                          torch.from_numpy(f.category_offsets_))
            cached = self._item_side_cache = (self.model_, table)
        return cached[1]

    def _serving_batch(self, generator, streams: EventStreams, q: Queries, score: np.ndarray,
                       rank: np.ndarray, view: SourceView | None = None, autorec: np.ndarray | None = None):
        """The model's batch of Q queries (user-side inputs once per context) at serving;
        autorec [Q]: the rating autoencoder's rating of the queries, if the caller has it."""
        f = self.featurizer_
        if self.rating_cfg is None:
            raw, binary = f.raw_features(generator, streams, q, score, rank, view=view)
            return assemble_ranking_batch(
                f.tables(generator, streams), self._max_history(streams), q.users, q.items,
                q.watch_end, f.normalize(raw, binary), share_contexts=True, prior=self._prior(raw))
        raw, binary = self._pair_raw(generator, streams, q, score, rank)
        history, most = self._history_ratings(generator, streams), self._max_history(streams)
        bag = window_features(history, streams.watch_offsets[q.users], q.watch_end, most, self.rating_fill_)
        if self.rating_cfg.autorec_units:
            if autorec is None:
                autorec = self._autorec_column(generator, streams, q)
            bag = np.concatenate([bag, autorec[:, None]], axis=1)
        continuous = np.concatenate([f.normalize(raw, binary), self._bag_continuous(bag)], axis=1)
        return assemble_rated_batch(f.tables(generator, streams), history, most, q.users, q.items,
                                    q.watch_end, continuous, share_contexts=True, prior=self._prior(raw),
                                    fill=self.rating_fill_)

    def _history_ratings(self, generator, streams: EventStreams) -> np.ndarray:
        """[W] the rating of every watch of ``streams``: the training log's (kept once mapped),
        unknown (NaN, weighing nothing in the rated bag) for histories read at request time."""
        if streams is not generator.streams_:
            return np.full(len(streams.watch_items), np.nan)
        cached = getattr(self, "_ratings_cache", None)
        if cached is None or cached[0] is not streams:
            cached = (streams, self.rating_log_.stream_ratings(streams))
            self._ratings_cache = cached
        return cached[1]

    @torch.no_grad()
    def predict_pairs(self, generator, user_rows: np.ndarray, gen_items: np.ndarray,
                      now: int | None = None, batch_size: int = 65_536) -> tuple[np.ndarray, np.ndarray | None]:
        """Score (user, item) pairs from the training log's histories, as served at ``now``
        (default: just after the last training watch).

        user_rows [N] the generator's user rows (0 = unknown); gen_items [N] its item ids (0 =
        unknown) -> (logits [N] float64, expected ratings [N] float64 or None without rating
        heads). Pairs are grouped by user, so each user's inputs are built once per chunk. With a
        rating autoencoder of weight w (``autorec_weight_``: RatingConfig.autorec_weight, or the
        one fit_ratings chose) the expected rating is (1 - w) x the heads' + w x the autoencoder's.
        """
        user_rows, gen_items = np.asarray(user_rows, np.int64), np.asarray(gen_items, np.int64)
        order = np.argsort(user_rows, kind="stable")
        logits, ratings = np.zeros(len(order)), np.zeros(len(order))
        eval_mode(self.model_)
        weight = getattr(self, "autorec_weight_", 0.0) if self.model_cfg.rating_heads else 0.0
        for a in range(0, len(order), batch_size):
            rows = order[a : a + batch_size]
            autorec = None
            if self.rating_cfg is not None and self.rating_cfg.autorec_units:  # rated once: feature and blend
                autorec = self._autorec_served(user_rows[rows], gen_items[rows])
            batch = self.pair_batch(generator, user_rows[rows], gen_items[rows], now, autorec)
            out, rated = self.model_.predictions(batch)
            logits[rows] = out.double().numpy()
            if rated is not None:
                ratings[rows] = rated.double().numpy()
                if weight:
                    ratings[rows] = (1 - weight) * ratings[rows] + weight * autorec
        return logits, ratings if self.model_cfg.rating_heads else None

    def pair_batch(self, generator, user_rows: np.ndarray, gen_items: np.ndarray, now: int | None = None,
                   autorec: np.ndarray | None = None):
        """The model's batch (a RankingBatch; a RatedBatch for a rating ranker) of (user, item)
        pairs [N] (the generator's user rows and item ids), from the training log's histories as
        served at ``now`` (default: just after the last training watch); each user's inputs once
        when the pairs come grouped by user. autorec [N]: the rating autoencoder's rating of the
        pairs, where the caller has it (else computed)."""
        gen, streams, users, items = generator, generator.streams_, user_rows, gen_items
        now = gen.featurizer_.window_end_ + 1 if now is None else now
        q = Queries(users=users, gen_items=items, items=self.featurizer_.item_map(gen)[items],
                    times=np.full(len(users), now, np.int64), watch_end=streams.watch_offsets[users + 1],
                    token_end=streams.token_offsets[users + 1], imp_rows=self.featurizer_.impression_rows(gen, users))
        score = rank = None
        if self.rating_cfg is None or self.rating_cfg.candidate_features:
            score, rank = candidate_features(gen, streams, users, q.watch_end, q.token_end, items)
        return self._serving_batch(gen, streams, q, score, rank, autorec=autorec)

    # ---- model directory --------------------------------------------------------------------

    def save(self, directory: str | Path, metrics: dict | None = None) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"format_version": FORMAT_VERSION, "kind": KIND, "ranker": self.model_cfg.to_dict(),
                  "train": self.train_cfg.to_dict(), "sizes": dataclasses.asdict(self.model_.sizes),
                  "ratings": None if self.rating_cfg is None else self.rating_cfg.to_dict()}
        # an earlier model's, written here before
        remove_entries(directory, ["features", "ratings.npz", "rating_quantiles.json", "autorec.safetensors",
                                   "metrics.json"])
        (directory / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        save_model(self.model_, str(directory / "ranker.safetensors"))
        readable_as_folder(directory / "ranker.safetensors")
        self.featurizer_.save(directory / "features")
        if self.rating_cfg is not None:
            log = self.rating_log_
            autorec = getattr(self, "autorec_", None) if self.rating_cfg.autorec_units else None
            np.savez(directory / "ratings.npz", keys=log.keys_, values=log.values_,
                     num_items=np.int64(log.num_items), fill=np.float64(self.rating_fill_),
                     num_users=np.int64(0 if autorec is None else autorec.decoder.out_features),
                     autorec_weight=np.float64(getattr(self, "autorec_weight_", 0.0)))
            self.rating_normalizer_.to_json(directory / "rating_quantiles.json")
            if self.rating_cfg.autorec_units:
                save_model(self.autorec_, str(directory / "autorec.safetensors"))
                readable_as_folder(directory / "autorec.safetensors")
        if metrics is not None:
            (directory / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Ranker:
        """A directory written by ``save``. It may name only files inside itself, and any failure
        is a ModelDirError (a ValueError) naming the directory and the file (ytdnn.modeldir)."""
        md = ModelDir(directory, what="ranker")
        with md.loading():
            config = md.config(_CONFIG_SCHEMA, KIND, FORMAT_VERSION)
            ranker = cls(config["ranker"], config["train"], config["ratings"])
            ranker.featurizer_ = RankingFeaturizer.load(md.folder("features", check_entries=True))
            f, sizes = ranker.featurizer_, config["sizes"]
            extra = 0
            if ranker.rating_cfg is not None:
                extra = _load_ratings(md, ranker)
            md.current = CONFIG
            stored = (sizes.num_items, sizes.item_categorical, sizes.num_categories,
                      sizes.num_continuous)
            if stored != (len(f.items_), tuple(f.item_features_.categorical_sizes),
                          f.item_features_.num_categories, f.num_continuous + extra):
                raise md.error("sizes do not match the vocabularies in features/")
            ranker.model_ = RankerModel(ranker.model_cfg, sizes)
            load_model(ranker.model_, str(md.weights("ranker.safetensors")))
            ranker.model_.eval()
        return ranker


@torch.no_grad()
def _item_codes(model: RatingAutoencoder, ratings: ItemRatings, items: np.ndarray) -> torch.Tensor:
    """The codes [I, H] of items [I] (generator ids), encoded from ``ratings`` in dense batches."""
    step = ratings.max_batch_items()
    chunks = [model.codes(ratings.batch(items[a : a + step]).ratings) for a in range(0, len(items), step)]
    return torch.cat(chunks) if chunks else torch.zeros(0, model.encoder.out_features)


def _load_ratings(md: ModelDir, ranker: Ranker) -> int:
    """ratings.npz and rating_quantiles.json into ``ranker``; -> the width of the rating features."""
    with np.load(md.file("ratings.npz"), allow_pickle=False) as arrays:
        keys, values = arrays["keys"], arrays["values"]
        num_items, fill = int(arrays["num_items"]), float(arrays["fill"])
        num_users = int(arrays["num_users"]) if "num_users" in arrays.files else 0
        weight = float(arrays["autorec_weight"]) if "autorec_weight" in arrays.files else 0.0
    if not 0.0 <= weight <= 1.0:
        raise md.error(f"autorec_weight must be in [0, 1], got {weight}")
    ranker.autorec_weight_ = weight
    if (keys.ndim != 1 or keys.shape != values.shape or keys.dtype.kind != "i" or num_items < 1
            or (len(keys) and (keys[0] < 0 or (np.diff(keys) <= 0).any()))):
        raise md.error("keys must be increasing int64 pairs, one value each")
    ranker.rating_log_, ranker.rating_fill_ = RatingLog(keys, values.astype(np.float64), num_items), fill
    ranker.rating_normalizer_ = QuantileNormalizer.from_dict(md.read_json("rating_quantiles.json"))
    rc = ranker.rating_cfg
    if rc.autorec_units:
        if num_users < 1:
            raise md.error("a ranker with autorec_units needs num_users >= 1 in ratings.npz")
        ranker.autorec_ = RatingAutoencoder(num_users, rc.autorec_units, rc.autorec_l2)
        load_model(ranker.autorec_, str(md.weights("autorec.safetensors")))
        ranker.autorec_.eval()
    return ranker.rating_normalizer_.num_features * (3 if ranker.model_cfg.use_powers else 1)


def _no_impressions(watches: pa.Table) -> pa.Table:
    """An empty impressions table with the ids' types of ``watches`` (rated pairs were never shown)."""
    return pa.table({"user_id": pa.array([], watches.schema.field("user_id").type),
                     "item_id": pa.array([], watches.schema.field("item_id").type),
                     "timestamp": pa.array([], pa.int64())})


def _serving_bags(generator, streams: EventStreams):
    """``generator`` as it serves ``streams``: for an unordered log (no "most recent") the
    watched bag is the whole history (``samples.candidate.serving_batch``, GeneratorSource),
    not the last ``max_watch_history`` of the streams' item-id order, so the candidate score a
    ranker learns from is the one serving hands it. A shallow copy with a wider bag then; the
    generator itself for ordered streams."""
    longest = int(np.diff(streams.watch_offsets).max(initial=1))
    if streams.ordered or longest <= generator.example_cfg.max_watch_history:
        return generator
    whole = copy.copy(generator)  # shares the model and the featurizer
    whole.example_cfg = generator.example_cfg.replace(max_watch_history=longest)
    return whole


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
                        timings: dict | None = None, known_users: np.ndarray | None = None,
                        fast: bool = False, view: SourceView | None = None) -> np.ndarray:
        """Ranker.rank_candidates of every member combined: float64 [B, N], -inf at empty slots.
        timings: each stage's seconds summed over the members."""
        total, logs = {}, []
        for ranker in self.rankers:
            member: dict = {}
            ewt = ranker.rank_candidates(generator, streams, user_rows, candidates, scores, ranks, now,
                                         member, known_users, fast, view)
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
    """A ranker directory or a RankerBag directory (members confined to it, as every file; any
    failure a ModelDirError naming the directory and the file: ytdnn.modeldir)."""
    md = ModelDir(directory, what="ranker")
    with md.loading():
        if md.kind() != BAG_KIND:
            return Ranker.load(directory)
        members = md.config(_BAG_SCHEMA, BAG_KIND, FORMAT_VERSION)["members"]
        if members < 1:
            raise md.error(f"members must be >= 1, got {members}")
        return RankerBag([Ranker.load(md.folder(f"member-{i}")) for i in range(members)])
