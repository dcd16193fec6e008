"""`make demo`: the main job end to end on the built-in synthetic world, no outside data.

1. generate the synthetic world and write it as Parquet
2. split it in time: a training window, then the test window after it
3. fit the baselines (popularity, EASE with lambda chosen on validation) and score them on test
4. train the candidate generator (paper section 3) on everything before the test window
5. train the ranker (paper section 4) on pages built from the log before the test window
6. print the metrics table of every model and of both stages, and a few users' recent history
   beside what the two stages recommend them
7. serve the model over HTTP for a few seconds: a posted watch changes the next recommendation
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from ytdnn.candidates import CandidateGenerator
from ytdnn.configuration import TwoStageConfig
from ytdnn.data.schema import Dataset
from ytdnn.data.synthetic import WorldConfig, generate
from ytdnn.eval.baselines import EASE, EASEConfig, Popularity, choose_on_validation, refit_and_test
from ytdnn.eval.metrics import evaluate, scorer_from_lists
from ytdnn.eval.protocols import GLOBAL_TIME, Split, global_time_split
from ytdnn.eval.report import Record, format_table, machine_description
from ytdnn.models.candidate import CandidateConfig
from ytdnn.models.ranker import RankerConfig
from ytdnn.pipeline import Recommender
from ytdnn.ranking import Ranker
from ytdnn.samples.candidate import ExampleConfig
from ytdnn.samples.impressions import ImpressionConfig
from ytdnn.train.config import TrainConfig
from ytdnn.training import fit_ranker

DAY = 86_400
TEST_DAYS = 7  # the last week of the window is the test window; the week before it validates
KS = (10, 100)
METRICS = ("Recall", "NDCG", "MAP", "Coverage")


def step(message: str) -> float:
    print(f"\n>> {message}", flush=True)
    return time.perf_counter()


def synthetic_split(world) -> Split:
    window = int(world.config.window_s)
    return global_time_split(world.dataset.watches, train_end=window - TEST_DAYS * DAY)


def baseline_records(split: Split, dataset: str) -> list[Record]:
    records = []
    start = time.perf_counter()
    figures, seconds = refit_and_test(Popularity(), split, ks=KS, metrics=METRICS)
    records.append(Record("demo", dataset, GLOBAL_TIME, "popularity", figures, seconds))
    selection = choose_on_validation(
        lambda l2: EASE(EASEConfig(l2=l2)), (50, 200, 1000), split, metric="Recall@100", progress=True
    )
    figures, seconds = refit_and_test(EASE(EASEConfig(l2=selection.best)), split, ks=KS, metrics=METRICS)
    seconds["search"] = time.perf_counter() - start
    records.append(Record("demo", dataset, GLOBAL_TIME, "EASE", figures, seconds, {"l2": selection.best}))
    return records


# Small enough to train in a few minutes on 2 cores; sampled softmax as in the paper.
DEMO_CANDIDATES = CandidateConfig(embedding_dim=64, output_dim=64, depth=2, num_negatives=1000)
DEMO_EXAMPLES = ExampleConfig(max_examples_per_user=50)
DEMO_TRAIN = TrainConfig(lr=3e-3, batch_size=512, max_epochs=3)


def train_candidates(world, split: Split, out_dir: Path) -> tuple[CandidateGenerator, Record]:
    """Fit on every event before the test window (a fixed number of epochs: no test-set choice)."""
    stage = split.stage("test")
    tables = world.dataset
    train_end = int(pc.min(tables.watches.take(stage.target.rows)["timestamp"]).as_py())
    searches = tables.searches.filter(pc.less(tables.searches["timestamp"], train_end))
    start = time.perf_counter()
    gen = CandidateGenerator(DEMO_CANDIDATES, DEMO_EXAMPLES, DEMO_TRAIN).fit(
        stage.fit_table().select(["user_id", "item_id", "timestamp", "watch_time"]),
        searches, tables.users, items=tables.items, out_dir=out_dir / "checkpoints", resume=False,
    )
    seconds = {"fit": time.perf_counter() - start}
    start = time.perf_counter()
    figures = evaluate(gen.scorer_for(split.user_ids, split.item_ids), stage, ks=KS, metrics=METRICS, progress=True)
    seconds["eval"] = time.perf_counter() - start
    gen.build_index("exact")
    params = {"depth": DEMO_CANDIDATES.depth, "epochs": DEMO_TRAIN.max_epochs}
    return gen, Record("demo", "", GLOBAL_TIME, "ytdnn-candidates", figures, seconds, params)


DEMO_RANKER = RankerConfig(tower="256", dropout=0.5)
DEMO_RANKER_TRAIN = TrainConfig(lr=1e-3, batch_size=512, max_epochs=3)
# Pages as the live system shows them: the generator's top 500, built by a stacking generator that
# never saw each user's last 10 watches (the bench's choice on validation; README, "Which
# impressions"). The world's logged pages are half random uploads, unlike what the ranker orders.
DEMO_IMPRESSIONS = ImpressionConfig(num_candidates=500, negatives_per_page=50, horizon=5, requests_per_user=2,
                                    last_watches=10, source="built")
NUM_CANDIDATES = 500


def train_ranker(world, gen: CandidateGenerator, train_end: int) -> tuple[Ranker, float]:
    """Weighted logistic regression (§4.2) on pages built from the log before the test window."""
    d = world.dataset
    before = Dataset(*(None if t is None else t.filter(pc.less(t["timestamp"], train_end))
                       for t in (d.watches, d.searches, d.impressions)), users=d.users, items=d.items)
    start = time.perf_counter()
    ranker = fit_ranker(gen, before, TwoStageConfig(ranker=DEMO_RANKER, ranker_train=DEMO_RANKER_TRAIN,
                                                    impressions=DEMO_IMPRESSIONS))
    print(f"   {ranker.history_.epochs[0]['examples']:,} built impressions, tower {DEMO_RANKER.tower}; scores below are"
          " exp(logit): watch time per kept negative, so ~10x seconds (50 of 500 negatives kept)")
    return ranker, time.perf_counter() - start


def two_stage_records(world, rec: Recommender, split: Split, train_end: int) -> list[Record]:
    """Both stages on the same candidates: ranked by the ranker, or in the generator's order.
    EWT@10: the world's true expected watch time of an impression of the top 10 (seconds)."""
    stage = split.stage("test")
    users_idx = stage.eval_users()
    user_ids = split.user_ids.to_numpy()[users_idx].tolist()
    records = []
    alone = Recommender(rec.candidates, None, rec.num_candidates)
    for name, recommender in (("ytdnn-retrieval-only", alone), ("ytdnn-two-stage", rec)):
        start = time.perf_counter()
        lists = recommender.top_items(user_ids, max(KS), now=train_end)
        seconds = {"recommend": time.perf_counter() - start}
        figures = evaluate(scorer_from_lists(split.item_ids.to_numpy(), users_idx, lists), stage, ks=KS, metrics=METRICS)
        figures["EWT@10"] = float(np.mean([world.expected_watch_time(u, np.asarray(items[:10]), train_end).mean()
                                           for u, items in zip(user_ids, lists) if len(items)]))
        records.append(Record("demo", "", GLOBAL_TIME, name, figures, seconds, {"num_candidates": rec.num_candidates}))
    return records


def show_users(rec: Recommender, users: list[int], now: int, k: int = 5) -> None:
    gen = rec.candidates
    titles = gen.item_titles()
    for user in users:
        row = gen.user_rows([user])[0]
        s = gen.streams_
        recent = s.watch_items[s.watch_offsets[row] : s.watch_offsets[row + 1]][-k:]
        top = rec.recommend(user, k=k, now=now)
        print(f"\n   user {user}")
        print("     recently watched: " + "; ".join(titles.get(i, str(i)) for i in gen.featurizer_.items_.decode(recent)))
        print("     recommended:      " + "; ".join(
            f"{titles.get(i, str(i))} ({score:.0f})" for i, score in zip(top.item_ids.tolist(), top.scores)))


def run_demo(preset: str = "small", out_dir: Path = Path("demo_out")) -> list[Record]:
    t = step(f"1/7 generating the synthetic world (preset {preset!r})")
    world = generate(WorldConfig.preset(preset))
    world.save(out_dir / "data")
    sizes = ", ".join(f"{len(tab):,} {name}" for name, tab in world.dataset.tables().items())
    print(f"   {sizes} in {time.perf_counter() - t:.1f} s -> {out_dir / 'data'}")

    t = step(f"2/7 splitting in time: the last {TEST_DAYS} days are the test window")
    split = synthetic_split(world)
    print(f"   {split.summary()} ({time.perf_counter() - t:.1f} s)")

    step("3/7 baselines: popularity, and EASE with lambda chosen on the validation window")
    dataset = f"synthetic-{preset}"
    records = baseline_records(split, dataset)

    step("4/7 candidate generator: next-watch examples, sampled softmax with log-Q correction")
    gen, record = train_candidates(world, split, out_dir)
    records.append(record)

    step("5/7 ranker: weighted logistic regression on pages of the generator's top 500, positives weighted by watch time")
    train_end = int(pc.min(world.dataset.watches.take(split.stage("test").target.rows)["timestamp"]).as_py())
    ranker, seconds = train_ranker(world, gen, train_end)
    rec = Recommender(gen, ranker, NUM_CANDIDATES)
    rec.save(out_dir / "model")
    print(f"   trained in {seconds:.0f} s; both stages -> {out_dir / 'model'}")

    step(f"6/7 test metrics: every model ranks all unwatched items; the two stages rank {NUM_CANDIDATES} candidates")
    records += two_stage_records(world, rec, split, train_end)
    for r in records:
        r.dataset = dataset
        r.machine = machine_description()
        r.command = "make demo"
        r.metrics = {name: round(value, 4) for name, value in r.metrics.items()}
        r.seconds = {name: round(value, 2) for name, value in r.seconds.items()}
    print(format_table(records))
    rng = np.random.default_rng(0)
    users = sorted(rng.choice(split.user_ids.to_numpy()[split.test.users()], size=3, replace=False).tolist())
    show_users(rec, users, train_end)
    print(f"\nTry: .venv/bin/ytdnn recommend --model {shlex.quote(str(out_dir / 'model'))} --user {users[0]} --k 10")
    step("7/7 serving over HTTP")
    from ytdnn.serve.demo import serve_demo  # FastAPI is imported only when the demo gets here

    serve_demo(out_dir / "model", user=users[0])
    return records
