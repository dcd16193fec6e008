"""`make bench ONLY=ranking`: the ranker (paper §4) and the two-stage pipeline.

1. Table 1 on the synthetic world: the weighted per-user loss on the test window's impressions of
   every hidden-layer preset, and the two ablations of the best one (no x̃² and √x̃; unweighted).
2. Two stages against retrieval alone, on the synthetic world (GLOBAL-TIME: train before the
   cut, test on the first watches after it) and on ml-100k (P-TEMPORAL): the same
   ``NUM_CANDIDATES`` candidates ordered by the ranker (``ytdnn-two-stage``) or by the candidate
   generator's score (``ytdnn-retrieval-only``). HR@10, NDCG@10, HR@100; on the synthetic world
   also the ground-truth expected watch time of the top 10 at the cut ("EWT@10", seconds). On both,
   the ranker learns on pages built from the generator's top 500 by a stacking generator
   (``pipeline.fit_ranker``, ``samples/impressions.py``).
   On MovieLens the ranker orders the blend of the setting's sources (``ML_SETTINGS``) beside the
   generator's 500 (``retrieval/blend.py``), and each source alone (``source-<name>``, its own
   top 100) and the fixed linear blend of the generator and EASE (``blend-linear``) are recorded
   beside it (choices: bench/results/ranking-sources.md). ml-1m P-RANDOM (unordered fold files):
   Recall@20, NDCG@20, Recall@100, with the ranker's pages built on holdout pages.
3. Latency of ``recommend(user, k=10)`` with 500 candidates ranked, on a 100k-item corpus, with
   the approximate index: p50 / p99 and where the time goes.

ml-100k choices, made on the validation stage (fit on train, targets = valid; NDCG@10 of the
retrieval-only order: 0.0732): the ranker learns on pages built by a generator trained without
each user's last 10 watches (stacking: NDCG@10 0.0602 with tower 256; a first run without
stacking was made on the test stage, before choices moved to validation: 0.0529 against
retrieval's 0.0576 there), built impressions do not feed the churn feature (0.0689; the overlapping pages
made "shown before" a proxy for the label), keeping each page's top 50 whole as hard negatives
biases the rank feature (0.0294), and regularising helps: one epoch 0.0705, dropout 0.5 for three
epochs 0.0705 with HR@100 0.6055 (retrieval 0.597), which is the setting used. With the
generator tuned since (retrieval-only 0.0794 on validation): the score skip 0.0807; unweighted
(every positive weighs 1 instead of its rating) 0.0823; the item's watches in the last week as a
feature, weighted: 0.0886 (HR@10 0.175 vs 0.164), the setting used. Since ``fit_ranker`` builds the
pages (same settings): 0.0863, 0.0819, 0.0871, 0.0857 with impression and training seeds 0-3, so
the seed moves the gain between +3% and +10%. Averaging the five seeds' rankers: 0.0890; but five
copies in one model trained on one seed's pages: 0.0864 (0.0832 with online bagging), and 250
instead of 50 negatives per page: 0.0823. Averaging is the setting used (``samples=5``, a
RankerBag); it costs 5x the ranker at serving.

Environment knobs (never set by `make bench`): YTDNN_BENCH_WORLD (preset, default "small"),
YTDNN_BENCH_PARTS (comma-separated subset of "table1,synthetic,movielens,latency"),
YTDNN_BENCH_EPOCHS (ranker epochs), YTDNN_BENCH_STAGE=valid (MovieLens: the validation stage only,
for choices), YTDNN_BENCH_SHIFT=k (with STAGE=valid: ml-100k's targets k rows earlier, so
shifts 0, 1, 2 give three targets per user to choose on), YTDNN_BENCH_ML (comma-separated subset
of "ml-100k,ml-1m").
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from ytdnn.candidates import CandidateGenerator
from ytdnn.configuration import TwoStageConfig
from ytdnn.data.schema import Dataset
from ytdnn.data.synthetic import WorldConfig, generate
from ytdnn.eval.metrics import evaluate, scorer_from_lists, weighted_per_user_loss
from ytdnn.eval.protocols import GLOBAL_TIME, Split, global_time_split
from ytdnn.eval.report import Record
from ytdnn.models.candidate import CandidateConfig
from ytdnn.models.ranker import TOWER_PRESETS, RankerConfig
from ytdnn.pipeline import Recommender
from ytdnn.ranking import Ranker
from ytdnn.retrieval.base import Context
from ytdnn.retrieval.blend import merge_lists
from ytdnn.retrieval.generator import GeneratorSource
from ytdnn.samples.candidate import ExampleConfig
from ytdnn.samples.impressions import ImpressionConfig
from ytdnn.train.config import TrainConfig
from ytdnn.training import fit_ranker, fit_sources

BENCHMARK = "ranking"
NUM_CANDIDATES = 500
BEST_TOWER = TOWER_PRESETS[-1]
TEST_SHARE = 0.15  # the synthetic world's last 15% of days is the test window
KS = (10, 100)


def _ranker_train(epochs: int) -> TrainConfig:
    return TrainConfig(lr=1e-3, batch_size=512, max_epochs=epochs, progress=False)


def _generator(epochs: int = 10) -> CandidateGenerator:
    return CandidateGenerator(
        # dense tables, as when bench/results/ranking.md was measured (before sparse became the default)
        CandidateConfig(embedding_dim=64, output_dim=64, depth=1, num_negatives=1024, sparse_embeddings=False),
        ExampleConfig(max_watch_history=50, max_examples_per_user=200),
        TrainConfig(lr=1e-3, batch_size=512, max_epochs=epochs, progress=False),
    )


def _before(table: pa.Table | None, cut: int, after: bool = False) -> pa.Table | None:
    if table is None:
        return None
    mask = pc.greater_equal(table["timestamp"], cut) if after else pc.less(table["timestamp"], cut)
    return table.filter(mask)


# ---- lists -> metrics ------------------------------------------------------------------------------


def _compare(rec: Recommender, split: Split, stage_name: str, now: int | None, world=None,
             blend_weight: float | None = None, ks: tuple[int, ...] = KS,
             metrics: tuple[str, ...] = ("HR@10", "NDCG@10", "HR@100")) -> dict[str, dict]:
    """Two-stage and retrieval-only figures of the same candidates for the stage's users; with
    candidate sources, also each source alone (``source-<name>``: its own top 100) and, given
    ``blend_weight``, the fixed linear blend of the generator and EASE (``blend-linear``).

    now: the request time of every user; None = one second after each user's last fit watch
    (P-TEMPORAL: users come back at their own times, not all at the end of the log).
    """
    stage = split.stage(stage_name)
    users_idx = stage.eval_users()
    user_ids = split.user_ids.to_numpy(zero_copy_only=False)[users_idx].tolist()
    if now is None:
        fit = stage.fit_table()
        last = np.full(split.num_users, np.iinfo(np.int64).min)
        np.maximum.at(last, fit["user_idx"].to_numpy(), fit["timestamp"].to_numpy())
        times = last[users_idx] + 1
    else:
        times = np.full(len(users_idx), now)
    out = {}
    alone = Recommender(rec.candidates, None, rec.num_candidates)  # the generator's candidates, its order
    orders = {"ytdnn-two-stage": rec.top_items, "ytdnn-retrieval-only": alone.top_items}
    for source, _ in rec.sources:
        orders[f"source-{source.name}"] = _source_order(rec.candidates, source)
    ease = [source for source, _ in rec.sources if source.name == "ease"]
    if blend_weight is not None and ease:
        orders["blend-linear"] = _linear_blend_order(rec, ease[0], blend_weight)
    if world is not None:
        orders.update({f"truth-{score}-order": _truth_order(world, alone, score) for score in TRUTH_ORDERS})
    for name, top_items in orders.items():
        start = time.perf_counter()
        lists = top_items(user_ids, max(ks), now=times)
        seconds = time.perf_counter() - start
        scorer = scorer_from_lists(split.item_ids.to_numpy(zero_copy_only=False), users_idx, lists)
        figures = evaluate(scorer, stage, ks=ks, metrics=tuple({m.split("@")[0]: None for m in metrics}))
        result = {m: round(figures[m], 4) for m in metrics}
        if world is not None:
            ewt = [world.expected_watch_time(int(u), np.asarray(items[:10], np.int64), now).mean()
                   for u, items in zip(user_ids, lists) if len(items)]
            result["EWT@10"] = round(float(np.mean(ewt)), 3)
        out[name] = {"metrics": result, "seconds": round(seconds, 1)}
        print(f"   {name}: {result} ({seconds:.0f} s)", flush=True)
    return out


def _context(gen: CandidateGenerator, user_ids: list, now) -> Context:
    rows = gen.user_rows(user_ids)
    return Context.whole(gen.streams_, rows, np.broadcast_to(np.asarray(now, np.int64), rows.shape))


def _source_order(gen: CandidateGenerator, source):
    """top_items of one candidate source alone: its own top k, watched items excluded."""
    def top_items(user_ids, k: int, now) -> list[np.ndarray]:
        ctx = _context(gen, user_ids, now)
        ids = source.retrieve(source.encode(ctx), k, ctx.watched())[0]
        return [np.asarray(gen.featurizer_.items_.decode(row[row > 0])) for row in ids]

    return top_items


def _linear_blend_order(rec: Recommender, ease, weight: float):
    """top_items of the fixed blend z(generator) + weight * z(EASE) over the union of both
    sources' top num_candidates, each score z-scored per user over that union."""
    gen, generator = rec.candidates, GeneratorSource(rec.candidates)

    def z(x: np.ndarray, real: np.ndarray) -> np.ndarray:
        values = np.where(real, x, np.nan)
        return (x - np.nanmean(values, axis=1, keepdims=True)) / (np.nanstd(values, axis=1, keepdims=True) + 1e-9)

    def top_items(user_ids, k: int, now) -> list[np.ndarray]:
        ctx = _context(gen, user_ids, now)
        watched, states = ctx.watched(), (generator.encode(ctx), ease.encode(ctx))
        union = merge_lists(np.concatenate([s.retrieve(state, rec.num_candidates, watched)[0]
                                            for s, state in zip((generator, ease), states)], axis=1))
        scores = [s.score(state, union).astype(np.float64) for s, state in zip((generator, ease), states)]
        real = (union > 0) & np.isfinite(scores[0]) & np.isfinite(scores[1])
        final = np.where(real, z(scores[0], real) + weight * z(scores[1], real), -np.inf)
        order = np.argsort(-final, axis=1, kind="stable")[:, :k]
        return [np.asarray(gen.featurizer_.items_.decode(union[b, o][real[b, o]])) for b, o in enumerate(order)]

    return top_items


# The same candidates ordered by the world's ground truth: what the best possible ranker of each
# objective would score on the logged test watches. "affinity" is the propensity that draws
# organic watches; "expected_watch_time" is what the weighted ranker estimates (paper §4.2).
TRUTH_ORDERS = ("affinity", "click_probability", "expected_watch_time")


def _truth_order(world, alone: Recommender, score: str):
    def top_items(user_ids, k: int, now) -> list[np.ndarray]:
        lists = alone.top_items(user_ids, alone.num_candidates, now=now)
        truth = [getattr(world, score)(int(u), np.asarray(c, np.int64), t) for u, c, t in zip(user_ids, lists, now)]
        return [c[np.argsort(-v, kind="stable")][:k] for c, v in zip(lists, truth)]

    return top_items


# ---- synthetic world: table 1 and the comparison ---------------------------------------------------


def _synthetic(preset: str, parts: set[str], epochs: int) -> list[Record]:
    world = generate(WorldConfig.preset(preset, seed=0))
    d, dataset = world.dataset, f"synthetic-{preset}"
    cut = int(world.config.window_s * (1 - TEST_SHARE))
    start = time.perf_counter()
    gen = _generator().fit(_before(d.watches, cut), _before(d.searches, cut), d.users, items=d.items)
    gen_seconds = time.perf_counter() - start
    train_imp, test_imp = _before(d.impressions, cut), _before(d.impressions, cut, after=True)
    print(f"{dataset}: generator {gen_seconds:.0f} s; impressions {train_imp.num_rows:,} train, "
          f"{test_imp.num_rows:,} test", flush=True)
    clicked = test_imp["clicked"].to_numpy(zero_copy_only=False)
    watch_time, pages = test_imp["watch_time"].to_numpy(), test_imp["page_id"].to_numpy()
    variants = {f"ranker-{t}": RankerConfig(tower=t) for t in TOWER_PRESETS} if "table1" in parts else {}
    if "table1" in parts:
        variants[f"ranker-{BEST_TOWER}-no-powers"] = RankerConfig(tower=BEST_TOWER, use_powers=False)
        variants[f"ranker-{BEST_TOWER}-unweighted"] = RankerConfig(tower=BEST_TOWER, weighted=False)
    records = []
    for name, cfg in variants.items():
        start = time.perf_counter()
        ranker = Ranker(cfg, _ranker_train(epochs)).fit(gen, train_imp, users=d.users, items=d.items)
        fit_seconds = time.perf_counter() - start
        logits = ranker.score_impressions(gen, test_imp, d.watches, d.searches, d.users)
        loss = weighted_per_user_loss(logits, clicked, watch_time, pages)
        print(f"   {name}: weighted per-user loss {loss:.4f} ({fit_seconds:.0f} s)", flush=True)
        records.append(Record(BENCHMARK, dataset, "impressions after the cut", name,
                              {"weighted_per_user_loss": round(loss, 4)}, {"train": round(fit_seconds, 1)},
                              {"epochs": epochs, **cfg.to_dict()}))
    if "synthetic" in parts:
        records += _synthetic_two_stage(world, dataset, gen, cut, gen_seconds, epochs)
    return records


# Built pages from the generator's top 500 and the deepest tower, chosen on the validation stage
# (bench/results/ranking-sources.md, "The synthetic world's ranker setting").
SYN_IMPRESSIONS = ImpressionConfig(num_candidates=NUM_CANDIDATES, negatives_per_page=50, horizon=5,
                                   requests_per_user=4, last_watches=10, source="built")
SYN_RANKER = RankerConfig(tower=BEST_TOWER, dropout=0.5)
# The candidate sources blended on the synthetic world: ml-100k's list (chosen there on
# validation, bench/results/ranking-sources.md), each with its defaults; none was tuned on this world.
SYN_SOURCES = "ease:200,cooc:200"


def _synthetic_two_stage(world, dataset: str, gen: CandidateGenerator, cut: int, gen_seconds: float,
                         epochs: int) -> list[Record]:
    """The comparison on the test window: the ranker behind ``gen`` learns on built pages."""
    d = world.dataset
    before = Dataset(_before(d.watches, cut), _before(d.searches, cut), _before(d.impressions, cut),
                     d.users, d.items)
    start = time.perf_counter()
    config = TwoStageConfig(ranker=SYN_RANKER, ranker_train=_ranker_train(epochs),
                            impressions=SYN_IMPRESSIONS).with_settings({"pipeline.sources": SYN_SOURCES})
    ranker = fit_ranker(gen, before, config)
    sources = fit_sources(gen, config)
    fit_seconds = time.perf_counter() - start
    print(f"{dataset}: stacking generator, sources + built pages + ranker in {fit_seconds:.0f} s", flush=True)
    records = []
    rec = Recommender(gen, ranker, NUM_CANDIDATES, sources=sources)
    for model, result in _compare(rec, global_time_split(d.watches, cut), "test", cut, world,
                                  blend_weight=ML_BLEND_WEIGHT).items():
        records.append(Record(BENCHMARK, dataset, GLOBAL_TIME, model, result["metrics"],
                              {"generator": round(gen_seconds, 1), "ranker": round(fit_seconds, 1),
                               "recommend": result["seconds"]},
                              {"num_candidates": NUM_CANDIDATES, "ranker": SYN_RANKER.to_dict(), "epochs": epochs,
                               "impressions": SYN_IMPRESSIONS.to_dict(), "sources": SYN_SOURCES,
                               "blend_weight": ML_BLEND_WEIGHT}))
    return records


# ---- MovieLens: ml-100k P-TEMPORAL, ml-1m P-RANDOM ---------------------------------------------


@dataclass(frozen=True)
class MovieLensSetting:
    """The two stages on one MovieLens split, every choice made on its validation stage
    (bench/results/ranking-sources.md)."""

    generator_epochs: int  # the generator's bench/retrieval.configs, run this many epochs
    impressions: ImpressionConfig
    ranker: RankerConfig
    epochs: int  # the ranker's
    sources: str  # blended beside the generator's NUM_CANDIDATES
    blend_weight: float  # of the fixed linear blend baseline
    ks: tuple[int, ...]
    metrics: tuple[str, ...]  # recorded, at ks
    source_settings: dict = field(default_factory=dict)  # the sources' own, {"cooc.window": 20}


ML_LAST = 10  # ml-100k stacking: the ranker's pages are requests among each user's last 10 watches
ML_SETTINGS = {
    # Each chosen on its validation stage; bench/results/ranking-sources.md has what was tried.
    # 3 plain epochs of "256" memorised ml-100k's 9k pages (module docstring).
    "ml-100k": MovieLensSetting(
        generator_epochs=8,
        impressions=ImpressionConfig(num_candidates=NUM_CANDIDATES, negatives_per_page=50, horizon=5,
                                     requests_per_user=ML_LAST, last_watches=ML_LAST, samples=5),
        ranker=RankerConfig(tower="256", dropout=0.5, source_skips=True), epochs=3, sources="ease:200,cooc:200",
        blend_weight=0.25, ks=KS, metrics=("HR@10", "NDCG@10", "HR@100"),
        source_settings={"cooc.window": 20, "cooc.neighbours": 300, "cooc.recent": 20}),
    # unordered: one page per user for a random 20% of its items held out from a stacking
    # generator; the generator's tuned run's best epoch + 1
    "ml-1m": MovieLensSetting(
        generator_epochs=56,
        impressions=ImpressionConfig(num_candidates=NUM_CANDIDATES, negatives_per_page=50, samples=3),
        ranker=RankerConfig(tower="256", dropout=0.5, source_skips=True, loss="page_softmax"), epochs=3,
        sources="ease:100,cooc:100",
        blend_weight=0.25, ks=(20, 100), metrics=("Recall@20", "NDCG@20", "Recall@100")),
}
ML_BLEND_WEIGHT = ML_SETTINGS["ml-100k"].blend_weight  # the synthetic world's, chosen on ml-100k


def _movielens(stage_name: str = "test", shift: int = 0) -> list[Record]:
    """Stacking (samples/impressions.py): the ranker learns on pages of a generator that never
    saw the pages' positives, and serves behind the generator trained on everything.
    shift: ml-100k's validation targets that many rows before the usual (``temporal_split``)."""
    from bench.baselines import movielens_splits
    from bench.retrieval import configs

    if shift and stage_name != "valid":
        raise ValueError("a shifted split is for validation stages only (YTDNN_BENCH_STAGE=valid)")
    records = []
    chosen = os.environ.get("YTDNN_BENCH_ML", ",".join(ML_SETTINGS)).split(",")
    for dataset, protocol, split, reason, _, tables in movielens_splits(shift):
        if dataset not in chosen:
            continue
        if split is None:
            records += [Record(BENCHMARK, dataset, protocol, m, skipped=reason)
                        for m in ("ytdnn-two-stage", "ytdnn-retrieval-only")]
            continue
        setting = ML_SETTINGS[dataset]
        model_cfg, example_cfg, train_cfg = configs(dataset, {})
        train_cfg = train_cfg.replace(monitor=None, patience=None, max_epochs=setting.generator_epochs)
        fit_table = split.stage(stage_name).fit_table()
        columns = [c for c in ("user_id", "item_id", "timestamp", "watch_time") if c in fit_table.column_names]
        watches = fit_table.select(columns)
        start = time.perf_counter()
        serving = CandidateGenerator(model_cfg, example_cfg, train_cfg).fit(
            watches, users=tables.users, items=tables.items)
        config = TwoStageConfig(ranker=setting.ranker, ranker_train=_ranker_train(setting.epochs),
                                impressions=setting.impressions).with_settings(
            {"pipeline.sources": setting.sources, **setting.source_settings})
        ranker = fit_ranker(serving, Dataset(watches, users=tables.users, items=tables.items), config)
        sources = fit_sources(serving, config)
        fit_seconds = time.perf_counter() - start
        print(f"{dataset}: 2 generators, sources + built pages + ranker in {fit_seconds:.0f} s", flush=True)
        rec = Recommender(serving, ranker, NUM_CANDIDATES, sources=sources)
        # an unordered log's requests come after its whole history (all at time 0)
        now = None if serving.featurizer_.ordered_ else serving.featurizer_.window_end_ + 1
        compared = _compare(rec, split, stage_name, now, blend_weight=setting.blend_weight, ks=setting.ks,
                            metrics=setting.metrics)
        for model, result in compared.items():
            shown = protocol if stage_name == "test" else f"{protocol} ({stage_name}{f', shift {shift}' if shift else ''})"
            records.append(Record(BENCHMARK, dataset, shown,
                                  model, result["metrics"],
                                  {"train": round(fit_seconds, 1), "recommend": result["seconds"]},
                                  {"num_candidates": NUM_CANDIDATES, "ranker": setting.ranker.to_dict(),
                                   "epochs": setting.epochs, "impressions": setting.impressions.to_dict(),
                                   "sources": setting.sources, **setting.source_settings,
                                   "blend_weight": setting.blend_weight}))
    return records


# ---- latency -----------------------------------------------------------------------------------


def _latency(num_requests: int = 500) -> list[Record]:
    """recommend(user, k=10) in-process, one request at a time, on the serving bench's 100k-item
    two-stage model (bench/serving_model.py: IVF index, ranker tower "256")."""
    from bench.serving_model import build_100k_model

    rec = Recommender.load(build_100k_model())
    torch.set_num_threads(2)
    gen = rec.candidates
    known = np.asarray(gen.featurizer_.users_.tokens_)
    users = np.random.default_rng(0).choice(known, num_requests)
    for user in users[:20].tolist():  # warm up: first calls build caches and touch the index
        rec.recommend(user, k=10)
    totals, parts = [], {}
    for user in users.tolist():
        start = time.perf_counter()
        rec.recommend(user, k=10)
        totals.append(time.perf_counter() - start)
        for stage, seconds in rec.timings_.items():
            parts.setdefault(stage, []).append(seconds)
    ms = 1000 * np.array(totals)
    metrics = {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2)}
    metrics.update({f"{stage}_mean_ms": round(1000 * float(np.mean(v)), 2) for stage, v in parts.items()})
    print(f"latency: {metrics}", flush=True)
    dataset = f"synthetic-{gen.featurizer_.num_items // 1000}k-items"
    return [Record(BENCHMARK, dataset, "recommend(user, k=10)", "ytdnn-two-stage", metrics, {},
                   {"num_candidates": rec.num_candidates, "index": type(gen.index_).__name__,
                    "tower": rec.ranker.model_cfg.tower, "requests": num_requests, "threads": 2})]


def run() -> list[Record]:
    parts = set(os.environ.get("YTDNN_BENCH_PARTS", "table1,synthetic,movielens,latency").split(","))
    preset = os.environ.get("YTDNN_BENCH_WORLD", "small")
    epochs = int(os.environ.get("YTDNN_BENCH_EPOCHS", "3"))
    records = []
    if parts & {"table1", "synthetic"}:
        records += _synthetic(preset, parts, epochs)
    if "movielens" in parts:
        records += _movielens(os.environ.get("YTDNN_BENCH_STAGE", "test"), int(os.environ.get("YTDNN_BENCH_SHIFT", "0")))
    if "latency" in parts:
        records += _latency()
    return records
