"""`make demo`: the main job end to end on the built-in synthetic world, no outside data.

1. generate the synthetic world and write it as Parquet
2. split it in time: a training window, then the test window after it
3. fit the baselines (popularity, EASE with lambda chosen on validation) and score them on test
4. train the candidate generator (paper section 3) on everything before the test window
5. print the metrics table, and a few users' recent history beside what was retrieved for them
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from ytdnn.candidates import CandidateGenerator
from ytdnn.data.synthetic import WorldConfig, generate
from ytdnn.eval.baselines import EASE, EASEConfig, Popularity, choose_on_validation, refit_and_test
from ytdnn.eval.metrics import evaluate
from ytdnn.eval.protocols import GLOBAL_TIME, Split, global_time_split
from ytdnn.eval.report import Record, format_table, machine_description
from ytdnn.models.candidate import CandidateConfig
from ytdnn.samples.candidate import ExampleConfig
from ytdnn.train.config import TrainConfig

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
    gen.build_index("exact").save(out_dir / "model")
    params = {"depth": DEMO_CANDIDATES.depth, "epochs": DEMO_TRAIN.max_epochs}
    return gen, Record("demo", "", GLOBAL_TIME, "ytdnn-candidates", figures, seconds, params)


def show_users(gen: CandidateGenerator, users: list[int], k: int = 5) -> None:
    titles = gen.item_titles()
    items, _ = gen.retrieve(users, k=k)
    for user, retrieved in zip(users, items):
        row = gen.user_rows([user])[0]
        s = gen.streams_
        recent = s.watch_items[s.watch_offsets[row] : s.watch_offsets[row + 1]][-k:]
        print(f"\n   user {user}")
        print("     recently watched: " + "; ".join(titles.get(i, str(i)) for i in gen.featurizer_.items_.decode(recent)))
        print("     retrieved:        " + "; ".join(titles.get(i, str(i)) for i in retrieved))


def run_demo(preset: str = "small", out_dir: Path = Path("demo_out")) -> list[Record]:
    t = step(f"1/5 generating the synthetic world (preset {preset!r})")
    world = generate(WorldConfig.preset(preset))
    world.save(out_dir / "data")
    sizes = ", ".join(f"{len(tab):,} {name}" for name, tab in world.dataset.tables().items())
    print(f"   {sizes} in {time.perf_counter() - t:.1f} s -> {out_dir / 'data'}")

    t = step(f"2/5 splitting in time: the last {TEST_DAYS} days are the test window")
    split = synthetic_split(world)
    print(f"   {split.summary()} ({time.perf_counter() - t:.1f} s)")

    step("3/5 baselines: popularity, and EASE with lambda chosen on the validation window")
    dataset = f"synthetic-{preset}"
    records = baseline_records(split, dataset)

    step("4/5 candidate generator: next-watch examples, sampled softmax with log-Q correction")
    gen, record = train_candidates(world, split, out_dir)
    record.dataset = dataset
    records.append(record)
    print(f"   model directory: {out_dir / 'model'}")

    step("5/5 test metrics (ranking every item a user has not watched)")
    for r in records:
        r.machine = machine_description()
        r.command = "make demo"
        r.metrics = {name: round(value, 4) for name, value in r.metrics.items()}
        r.seconds = {name: round(value, 2) for name, value in r.seconds.items()}
    print(format_table(records))
    rng = np.random.default_rng(0)
    show_users(gen, sorted(rng.choice(split.user_ids.to_numpy()[split.test.users()], size=3, replace=False).tolist()))
    print(f"\nTry: .venv/bin/ytdnn retrieve --model {out_dir / 'model'} --user 7 --k 10")
    return records
