"""`make bench ONLY=paper_scale`: fig. 6's depth sweep at four world sizes (issue 20, part 2).

The paper's depth gains come from billions of examples; on the benchmark's 150k-watch world
(``bench/paper.py``) MAP@50 falls with depth. This benchmark runs the same protocol and the same
tower (all features, depths 0-4) on worlds of growing size, none tuned to the answer:

- "bench": the world of ``bench/paper.py`` (3,000 users, 2,000 items, 150k watches);
- "small": the "small" preset (5,000 users, 4,000 items, 250k watches);
- "medium": the "large" preset at a fifth of its size (20k users, 10k items, 1M watches);
- "large": the "large" preset (100k users, 50k items, 5M watches).

Above ``FULL_SOFTMAX_ITEMS`` items the softmax is sampled (§3.1), as a full one over 50k items
would cost hours per epoch on 2 cores. Per world: test MAP@50 by depth, the paired difference of
each depth against depth 0 with its standard error, and the depth validation would choose. The
crossover is the smallest world where some depth >= 1 beats depth 0 by more than two standard
errors, or its absence up to the largest world run.

Environment knobs (never set by `make bench`):
  YTDNN_BENCH_PAPER_QUICK=1     tiny worlds, depths 0-1, two epochs: a smoke test of the code
  YTDNN_BENCH_PAPER_SIZES=a,b   run only these sizes (e.g. "bench,medium")
  YTDNN_BENCH_PAPER_OUT=DIR     where paper_depth_by_size.{md,png} go (default bench/results)
"""

from __future__ import annotations

import os
from pathlib import Path

from bench import plots
from bench.paper import (
    MODEL,
    MONITOR,
    TRAIN,
    WORLD,
    Fit,
    Plan,
    _pm,
    _record,
    fit_and_test,
    make_setting,
)
from ytdnn.data.synthetic import WorldConfig
from ytdnn.eval.report import Record

SIZES = {  # name: (preset, overrides)
    "bench": ("small", WORLD),
    "small": ("small", {}),
    "medium": ("large", {"num_users": 20_000, "num_items": 10_000, "num_watches": 1_000_000,
                         "num_channels": 1_000}),
    "large": ("large", {}),
}
DEPTHS = (0, 1, 2, 3, 4)
FULL_SOFTMAX_ITEMS = 10_000
NUM_NEGATIVES = 4096  # §3.1: several thousand sampled negatives


def plans() -> dict[str, Plan]:
    if os.environ.get("YTDNN_BENCH_PAPER_QUICK") == "1":
        tiny = WorldConfig.preset("tiny")
        return {"tiny": Plan(tiny, (0, 1), TRAIN.replace(max_epochs=2))}
    chosen = os.environ.get("YTDNN_BENCH_PAPER_SIZES", ",".join(SIZES)).split(",")
    return {name: Plan(WorldConfig.preset(SIZES[name][0], **SIZES[name][1]), DEPTHS, TRAIN)
            for name in chosen}


def crossover(fits: dict[int, Fit]) -> tuple[int | None, float, float]:
    """(the depth >= 1 with the largest paired gain over depth 0 when above 2 SE else None,
    its gain, its standard error)."""
    gains = {d: f.test.delta(fits[0].test) for d, f in fits.items() if d > 0}
    if not gains:
        return None, 0.0, 0.0
    best = max(gains, key=lambda d: gains[d][0])
    mean, se = gains[best]
    return (best if mean > 2 * se else None), mean, se


def run() -> list[Record]:
    out = Path(os.environ.get("YTDNN_BENCH_PAPER_OUT", Path(__file__).resolve().parent / "results"))
    records, rows, verdicts, curves, errors = [], [], [], {}, {}
    for size, p in plans().items():
        s = make_setting(p)
        print(f"{size}: {s.dataset}: {s.split.summary()}", flush=True)
        model = MODEL if p.world.num_items <= FULL_SOFTMAX_ITEMS else MODEL.replace(num_negatives=NUM_NEGATIVES)
        fits = {d: fit_and_test(s, model.replace(depth=d)) for d in p.depths}
        chosen = max(fits, key=lambda d: fits[d].params[f"valid_{MONITOR}"])  # validation, never test
        for d, f in fits.items():
            delta = "–" if d == 0 else _pm(*f.test.delta(fits[0].test))
            rows.append([size, f"{p.world.num_watches:,}", str(d), f"{f.params[f'valid_{MONITOR}']:.4f}",
                         f"{f.test.metrics[MONITOR]:.4f} ± {f.test.errors[MONITOR]:.4f}", delta,
                         f"{sum(f.seconds.values()):.0f}"])
            params = {**f.params, "size": size, "se": {k: round(v, 4) for k, v in f.test.errors.items()},
                      "chosen_on_validation": d == chosen}
            records.append(_record(s, f"fig6 by size: {size}, depth {d}", f.test.metrics, f.seconds, params))
        best, mean, se = crossover(fits)
        verdicts.append(f"- {size} ({s.dataset}): validation chooses depth {chosen}; "
                        + (f"depth {best} beats depth 0 by {_pm(mean, se)}" if best is not None else
                           f"no depth >= 1 beats depth 0 by 2 SE (best: {_pm(mean, se)})"))
        curves[size] = [f.test.delta(fits[0].test)[0] for f in fits.values()]
        errors[size] = [f.test.delta(fits[0].test)[1] for f in fits.values()]
        depths = list(fits)
    header = ["world", "watches", "depth", f"valid {MONITOR}", f"test {MONITOR}",
              f"Δ test {MONITOR} vs depth 0", "seconds"]
    lines = ["# Fig. 6 by world size: depth against the amount of data", "",
             "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
             *("| " + " | ".join(r) + " |" for r in rows), "", *verdicts, "",
             ("Protocol: bench/paper.py and bench/paper_scale.py docstrings. ± is one standard error "
              "over the test users; Δ is paired (the same users, one seed).")]
    out.mkdir(parents=True, exist_ok=True)
    (out / "paper_depth_by_size.md").write_text("\n".join(lines) + "\n")
    fig, (ax,) = plots.new_figure(1, width=7)
    plots.line_chart(ax, depths, curves, errors, {"depth 0": 0.0}, xlabel="depth",
                     ylabel=f"Δ test {MONITOR} vs depth 0", title="Depth gain by world size (all features)")
    plots.save(fig, out / "paper_depth_by_size.png")
    return records
