"""`make bench ONLY=defaults`: what a user gets with no tuning, beside popularity and EASE.

No setting is tuned per dataset. The candidate generator runs as ``ytdnn evaluate --auto`` does:
each configuration of the small fixed set ``configuration.AUTO_CHOICES`` (the defaults and two
others, chosen once across datasets: bench/results/defaults.md) is trained with early stopping on
the protocol's validation stage, the best validation figure picks one, and that one is refit on
train + validation and tested. Datasets: ml-100k P-TEMPORAL, ml-1m P-RANDOM (MovieLens, skipped
when absent) and the synthetic "small" world (global time split).

The time axis of ml-100k and of the world is also stretched to 1 day and to 30 years
(``ytdnn-defaults-time-x<factor>``, the configuration chosen on the unstretched log): the inputs
do not depend on the unit or span of the timestamps, so the figures must stay within noise of
the unstretched run. Squeezing months into 1 day merges distinct seconds, so that run also tests
ties in time.

Environment knob (never set by `make bench`): YTDNN_BENCH_DATASETS=ml-100k,ml-1m,synthetic-small
runs only those (merge the results with `python -m bench --only defaults --merge`).
"""

from __future__ import annotations

import functools
import os

import pyarrow.compute as pc

from bench.baselines import movielens_splits
from ytdnn.candidates import CandidateGenerator
from ytdnn.configuration import AUTO_CHOICES, TwoStageConfig
from ytdnn.data.synthetic import WorldConfig, generate
from ytdnn.data.timescale import rescale_time
from ytdnn.eval.compare import MODELS, compare, compare_on_split
from ytdnn.eval.protocols import P_TEMPORAL
from ytdnn.eval.report import Record

BENCHMARK = "defaults"
MODEL = "ytdnn-defaults"
DAY, YEAR = 86_400, 365.25 * 86_400
STRETCHES = {"1-day": DAY, "30-years": 30 * YEAR}  # target spans of the stretched time axes
GENERATORS = {name: functools.partial(CandidateGenerator, **TwoStageConfig().with_settings(s).generator_kwargs())
              for name, s in AUTO_CHOICES.items()}


def _named(records: list[Record], dataset: str) -> list[Record]:
    for r in records:
        r.dataset = dataset
        if r.model == "ytdnn":
            r.model = MODEL
            r.params["auto"] = r.params.get("auto", False)  # whether --auto chose the configuration
    return records


def _stretched(dataset, protocol: str, name: str, chosen: str) -> list[Record]:
    """The generator ``chosen`` on ``dataset`` with its time axis stretched to each of STRETCHES."""
    out = []
    low, high = (int(v.as_py()) for v in pc.min_max(dataset.watches.column("timestamp")).values())
    for label, span in STRETCHES.items():
        factor = span / (high - low)
        stretched = rescale_time(dataset, factor, shift=-round(low * factor))
        (r,) = _named(compare(stretched, protocol, ("ytdnn",), GENERATORS[chosen], benchmark=BENCHMARK), name)
        r.model = f"{MODEL}-time-x{factor:.3g}"
        r.params.update(stretch=label, factor=factor, configuration=chosen)
        _print([r])
        out.append(r)
    return out


def _choices(record: Record) -> list[Record]:
    """The validation figures of every configuration --auto tried: the table of what was tried."""
    return [Record(BENCHMARK, record.dataset, f"{record.protocol} (valid)", f"choice: {name}",
                   {k: round(v, 4) for k, v in figures.items()}, params={"settings": AUTO_CHOICES[name]})
            for name, figures in record.params["auto"]["valid"].items()]


def _print(records: list[Record]) -> None:
    for r in records:
        print(f"  {r.dataset} {r.model}: {r.metrics} {r.params.get('auto', '')}", flush=True)


def run() -> list[Record]:
    wanted = os.environ.get("YTDNN_BENCH_DATASETS", "ml-100k,ml-1m,synthetic-small").split(",")
    records = []
    for dataset, protocol, split, reason, _, tables in movielens_splits():
        if dataset not in wanted:
            continue
        if split is None:
            print(f"skipped {dataset} ({protocol}): {reason}", flush=True)
            records += [Record(BENCHMARK, dataset, protocol, m, skipped=reason) for m in ("popularity", "EASE", MODEL)]
            continue
        done = _named(compare_on_split(split, tables, MODELS, GENERATORS, benchmark=BENCHMARK), dataset)
        _print(done)
        records += done + _choices(done[-1])
        if protocol == P_TEMPORAL:
            records += _stretched(tables, P_TEMPORAL, dataset, done[-1].params["auto"]["chosen"])
    if "synthetic-small" in wanted:
        world = generate(WorldConfig.preset("small", seed=0)).dataset
        done = _named(compare(world, "global-time", MODELS, GENERATORS, benchmark=BENCHMARK), "synthetic-small")
        _print(done)
        records += done + _choices(done[-1])
        records += _stretched(world, "global-time", "synthetic-small", done[-1].params["auto"]["chosen"])
    return records
