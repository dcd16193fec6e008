"""`make demo`: the main job end to end on the built-in synthetic world, no outside data.

1. generate the synthetic world and write it as Parquet
2. split it in time: a training window, then the test window after it
3. fit the baselines (popularity, EASE with lambda chosen on validation) and score them on test
4. print the metrics table
"""

from __future__ import annotations

import time
from pathlib import Path

from ytdnn.data.synthetic import WorldConfig, generate
from ytdnn.eval.baselines import EASE, EASEConfig, Popularity, choose_on_validation, refit_and_test
from ytdnn.eval.protocols import GLOBAL_TIME, Split, global_time_split
from ytdnn.eval.report import Record, format_table, machine_description

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


def run_demo(preset: str = "small", out_dir: Path = Path("demo_out")) -> list[Record]:
    t = step(f"1/4 generating the synthetic world (preset {preset!r})")
    world = generate(WorldConfig.preset(preset))
    world.save(out_dir / "data")
    sizes = ", ".join(f"{len(tab):,} {name}" for name, tab in world.dataset.tables().items())
    print(f"   {sizes} in {time.perf_counter() - t:.1f} s -> {out_dir / 'data'}")

    t = step(f"2/4 splitting in time: the last {TEST_DAYS} days are the test window")
    split = synthetic_split(world)
    print(f"   {split.summary()} ({time.perf_counter() - t:.1f} s)")

    step("3/4 baselines: popularity, and EASE with lambda chosen on the validation window")
    dataset = f"synthetic-{preset}"
    records = baseline_records(split, dataset)

    step("4/4 test metrics (ranking every item a user has not watched)")
    for r in records:
        r.machine = machine_description()
        r.command = "make demo"
        r.metrics = {name: round(value, 4) for name, value in r.metrics.items()}
        r.seconds = {name: round(value, 2) for name, value in r.seconds.items()}
    print(format_table(records))
    return records
