"""`make bench ONLY=defaults`: what a user gets with no tuning, beside popularity and EASE.

The candidate generator runs with its default configuration (``CandidateGenerator()``), chosen
once for every dataset (``bench/results/defaults.md``), never per dataset; only the number of
epochs is chosen, by early stopping on each protocol's validation stage, as for every model.
Datasets: ml-100k P-TEMPORAL, ml-1m P-RANDOM (MovieLens, skipped when absent) and the synthetic
"small" world (global time split). The time axis of ml-100k is also stretched to 1 day and to
30 years (``ytdnn-defaults-time-x<factor>``): the inputs do not depend on the unit or span of
the timestamps, so the figures must stay within noise of the unstretched run. Squeezing 7 months
into 1 day merges distinct seconds, so that run also tests ties in time.
"""

from __future__ import annotations

import pyarrow.compute as pc

from bench.baselines import movielens_splits
from ytdnn.candidates import CandidateGenerator
from ytdnn.data.synthetic import WorldConfig, generate
from ytdnn.data.timescale import rescale_time
from ytdnn.eval.compare import MODELS, compare, compare_on_split
from ytdnn.eval.protocols import P_TEMPORAL
from ytdnn.eval.report import Record

BENCHMARK = "defaults"
MODEL = "ytdnn-defaults"
DAY, YEAR = 86_400, 365.25 * 86_400
STRETCHES = {"1-day": DAY, "30-years": 30 * YEAR}  # target spans of ml-100k's time axis


def _named(records: list[Record], dataset: str) -> list[Record]:
    for r in records:
        r.dataset = dataset
        if r.model == "ytdnn":
            r.model = MODEL
            r.params["auto"] = False  # the default configuration, not one chosen by --auto
    return records


def _print(records: list[Record]) -> None:
    for r in records:
        print(f"  {r.dataset} {r.model}: {r.metrics}", flush=True)


def run() -> list[Record]:
    records = []
    for dataset, protocol, split, reason, _, tables in movielens_splits():
        if split is None:
            print(f"skipped {dataset} ({protocol}): {reason}", flush=True)
            records += [Record(BENCHMARK, dataset, protocol, m, skipped=reason) for m in ("popularity", "EASE", MODEL)]
            continue
        done = _named(compare_on_split(split, tables, MODELS, CandidateGenerator, benchmark=BENCHMARK), dataset)
        _print(done)
        records += done
        if protocol != P_TEMPORAL:
            continue
        low, high = (int(v.as_py()) for v in pc.min_max(tables.watches.column("timestamp")).values())
        for label, span in STRETCHES.items():
            factor = span / (high - low)
            stretched = rescale_time(tables, factor, shift=-round(low * factor))
            (r,) = _named(compare(stretched, P_TEMPORAL, ("ytdnn",), CandidateGenerator, benchmark=BENCHMARK), dataset)
            r.model = f"{MODEL}-time-x{factor:.3g}"
            r.params.update(stretch=label, factor=factor)
            _print([r])
            records.append(r)
    world = generate(WorldConfig.preset("small", seed=0)).dataset
    done = _named(compare(world, "global-time", MODELS, CandidateGenerator, benchmark=BENCHMARK), "synthetic-small")
    _print(done)
    return records + done
