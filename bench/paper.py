"""`make bench ONLY=paper`: the candidate generator's experiments of the paper (§3.3-3.5,
figs. 4-6) on the synthetic world, where the mechanisms behind the log are planted and known.

World and protocol, shared by the three experiments:

- A seeded synthetic world (``WORLD``: 3,000 users, 2,000 items, about 150k watches over 60 days;
  200 channels keep the "small" preset's 10 items per channel, so series stay as long).
- A global time split: train [0, 40 d), validation [40 d, 50 d), test [50 d, 60 d). Targets are a
  user's first watches of items inside a window; the items the user watched before are excluded
  from the ranking (``global_time_split``). Training examples are the fit set's first watches.
- Every model is trained on the training window with early stopping on validation MAP@50, then
  refit on train + validation for the epochs that validation chose, and scored on the test window
  (the future). Searches are cut at the end of the fit window, so no input sees the future.
  "±" is one standard error over the test users (per-user AP@50 / recall@50); a "Δ" column is a
  paired difference (the same users ranked by two models) with its standard error. One training
  seed: the spread between seeds is not measured.
- One torch thread: on the 2 shared cores it measured 2.5-4x faster than two.

Fig. 6, depth and features: test MAP@K of the tower at depths 0-4 (the paper's widths, 2048 ->
1024 -> 512 -> 256 at depth 4) with all features, and of the feature sets "watches", "+ search",
"+ example age" and "all" (+ demographics) at depth ``FEATURE_DEPTH``, then "all - search" (the
search bag's own effect, all else equal). The paper's full grid (4 feature sets x 5 depths)
would cost about 4x this benchmark's time budget on 2 cores; the depth sweep at larger worlds is
``make bench ONLY=paper_scale`` (bench/paper_scale.py). Popularity (the floor, also drawn) and
the world's true affinity at the end of training (the ceiling) are the references in the table.
Each model is also scored on live history ("fresh", ``fresh_figures``): every test target ranked
from the user's watches and searches strictly before it, those of the test window included, as a
live system serves right after a search; the main protocol freezes the history at the end of
training. Why the search bag lowers MAP on this world: bench/results/paper_search.md.

Fig. 4, example age: the "+ search" and "+ example age" models above, which differ only in the
example age, each recommend their top ``SERVE_K`` at the end of training (serving example age 0)
to every test user. Reported: the share of those slots that go to items uploaded in the last
``FRESH_DAYS`` days of the training window, against the true share of the test users' first
watches in the first ``FRESH_DAYS`` days of the test window (items uploaded after training are
left out: no model can know them), and against the share those items had of the training
window's first watches (the window-average popularity a model without example age learns).
The same shares by the item's age at the end of training make the bar chart.

Fig. 5, next watch against a held-out watch: the "+ search" model (examples predict the next watch
from strictly earlier history, fig. 5b) against the same configuration trained on the same
watches with their timestamps removed, whose examples predict a watch from a random subset of the
user's other watches, later ones included (fig. 5a). Both are scored on the future. An unordered
log has no example age, so the fair pair is the two models without it; the next-watch model with
example age is shown beside them. The same models are also scored on the first test day only,
the watches right after the history ends, where a "next" watch is most predictable.

Environment knobs (never set by `make bench`):
  YTDNN_BENCH_PAPER_QUICK=1     a tiny world, depths 0-1, two epochs: a smoke test of the code
  YTDNN_BENCH_PAPER_OUT=DIR     where the PNGs and Markdown tables go (default bench/results)
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bench import plots
from ytdnn.candidates import CandidateGenerator
from ytdnn.data.synthetic import DAY, World, WorldConfig, generate
from ytdnn.eval.baselines import Popularity
from ytdnn.eval.interactions import Interactions
from ytdnn.eval.metrics import ScoreFn, evaluate, map_at_k, recall_at_k, top_k
from ytdnn.eval.protocols import Split, Stage, global_time_split
from ytdnn.eval.report import Record
from ytdnn.models.candidate import CandidateConfig
from ytdnn.samples.candidate import ExampleConfig, assemble_batch
from ytdnn.samples.ranking import history_end
from ytdnn.samples.streams import windows
from ytdnn.train.config import TrainConfig

BENCHMARK = "paper"
WORLD = {"num_users": 3_000, "num_items": 2_000, "num_watches": 150_000, "num_channels": 200}
WINDOW_DAYS = 10  # length of the validation and of the test window
KS, METRICS, MAIN_K = (10, 50), ("MAP", "Recall"), 50
MONITOR = f"MAP@{MAIN_K}"
FEATURE_DEPTH = 1  # the depth of the feature-set sweep and of figs. 4 and 5
SERVE_K = 50
FRESH_DAYS = 3
AGE_EDGES = (0, 1, 2, 3, 7, 14, 30, np.inf)  # days since upload at the end of training
FEATURE_SETS = {  # paper fig. 6, each set adds one group to the one before
    "watches": {"use_searches": False, "use_user_features": False, "use_example_age": False},
    "+ search": {"use_user_features": False, "use_example_age": False},
    "+ example age": {"use_user_features": False},
    "all": {},
    "all - search": {"use_searches": False},  # the search bag's own effect, all else equal
}
LADDER = ("watches", "+ search", "+ example age", "all")  # fig. 6's rising ladder
FRESH = f"fresh MRR@{MAIN_K}"  # the live-history protocol (``fresh_figures``)
MODEL = CandidateConfig(embedding_dim=64, output_dim=64, num_negatives=None)  # 2k items: full
# The search-token vocabulary: the top 500 of ~8k (§3.5 truncates to the most frequent). Two
# thirds of the tokens, mostly bigrams, occur once, in one user's bag, where they only memorize
# that user. Chosen on validation MAP@50 of "all" at depth 1 among 500, 1000, 2000 and all
# (bench/results/paper_search.md).
MAX_TOKENS = 500
EXAMPLES = ExampleConfig(max_examples_per_user=50)
TRAIN = TrainConfig(lr=3e-3, batch_size=1024, max_epochs=12, patience=2, monitor=MONITOR,
                    progress=False, num_threads=1)
WATCH_COLUMNS = ["user_id", "item_id", "timestamp", "watch_time"]


@dataclass(frozen=True)
class Plan:
    world: WorldConfig
    depths: tuple[int, ...]
    train: TrainConfig


def plan() -> Plan:
    if os.environ.get("YTDNN_BENCH_PAPER_QUICK") == "1":
        return Plan(WorldConfig.preset("tiny"), (0, 1), TRAIN.replace(max_epochs=2))
    return Plan(WorldConfig.preset("small", **WORLD), (0, 1, 2, 3, 4), TRAIN)


@dataclass
class Setting:
    """The world, its split and the cut points (seconds)."""

    world: World
    split: Split
    valid_start: int
    train_end: int
    train: TrainConfig
    dataset: str = ""

    @property
    def protocol(self) -> str:
        cuts = (self.valid_start, self.train_end, self.world.config.window_s)
        valid, test, end = (t // DAY for t in cuts)
        return f"GLOBAL-TIME (train <{valid} d, valid {valid}-{test} d, test {test}-{end} d)"

    def upload_age_days(self, item_ids: np.ndarray) -> np.ndarray:
        """Days from each item's upload to the end of training (negative: uploaded later)."""
        return (self.train_end - self.world.item_upload_time[item_ids]) / DAY

    def first_test_days(self, days: float) -> Stage:
        """The test stage with only the targets of its first ``days`` days."""
        test = self.split.stage("test")
        t = self.split.watches.column("timestamp").to_numpy()[test.target.rows]
        keep = t < self.train_end + days * DAY
        target = Interactions.from_pairs(
            test.target.user_idx[keep], test.target.item_idx[keep],
            test.num_users, test.num_items, test.target.rows[keep],
        )
        return dataclasses.replace(test, name=f"test days <= {days:g}", target=target)


@dataclass
class Figures:
    """One scorer on one stage: mean metrics and [U] per-user values over its evaluated users."""

    metrics: dict[str, float]
    per_user: dict[str, np.ndarray]  # MAP@MAIN_K and Recall@MAIN_K

    @property
    def errors(self) -> dict[str, float]:
        return {n: float(v.std(ddof=1) / np.sqrt(len(v))) for n, v in self.per_user.items()}

    def delta(self, base: Figures, name: str = MONITOR) -> tuple[float, float]:
        """Paired difference self - base over the same users: (mean, standard error)."""
        d = self.per_user[name] - base.per_user[name]
        return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))


@dataclass
class Fit:
    """A model refit on train + valid, with its test figures."""

    generator: CandidateGenerator
    test: Figures
    seconds: dict[str, float]
    params: dict
    fresh: Figures | None = None  # the test targets scored from live history (``fresh_figures``)


def make_setting(p: Plan) -> Setting:
    world = generate(p.world)
    end = p.world.window_s
    train_end = end - WINDOW_DAYS * DAY
    valid_start = train_end - WINDOW_DAYS * DAY
    split = global_time_split(world.dataset.watches, train_end, valid_start, test_end=end)
    c = p.world
    name = f"synthetic({c.num_users}u,{c.num_items}i,{c.num_watches // 1000}kw,seed={c.seed})"
    return Setting(world, split, valid_start, train_end, p.train, name)


def training_logs(s: Setting, stage: str, ordered: bool = True) -> tuple[pa.Table, pa.Table]:
    """(watches, searches) of a stage's fit window; ``ordered=False`` drops the timestamps."""
    watches = s.split.stage(stage).fit_table().select(WATCH_COLUMNS)
    if not ordered:  # the example builder reads an all-null timestamp column as an unordered log
        column = watches.schema.get_field_index("timestamp")
        watches = watches.set_column(column, "timestamp", pa.nulls(len(watches), pa.int64()))
    end = s.valid_start if stage == "valid" else s.train_end
    searches = s.world.dataset.searches
    return watches, searches.filter(pc.less(searches["timestamp"], end))


def figures(score_fn: ScoreFn, stage: Stage, k: int = MAIN_K) -> Figures:
    """``evaluate``'s means, plus per-user AP@k and recall@k for standard errors."""
    metrics = evaluate(score_fn, stage, ks=KS, metrics=METRICS)
    users = stage.eval_users()
    values: dict[str, list[np.ndarray]] = {f"MAP@{k}": [], f"Recall@{k}": []}
    for start in range(0, len(users), 1024):
        batch = users[start : start + 1024]
        scores = np.array(score_fn(batch), dtype=np.float32)  # a copy: exclusions are written in
        rows, items = stage.exclude.batch_pairs(batch)
        scores[rows, items] = -np.inf
        top = top_k(scores, k)
        targets = [stage.target.items_of(u) for u in batch]
        values[f"MAP@{k}"].append(map_at_k(top, targets, k))
        values[f"Recall@{k}"].append(recall_at_k(top, targets, k))
    per_user = {name: np.concatenate(parts) for name, parts in values.items()}
    return Figures({m: round(v, 4) for m, v in metrics.items()}, per_user)


def scorer(s: Setting, gen: CandidateGenerator) -> ScoreFn:
    return gen.scorer_for(s.split.user_ids, s.split.item_ids)


def fit_and_test(s: Setting, model: CandidateConfig, ordered: bool = True,
                 examples: ExampleConfig = EXAMPLES) -> Fit:
    """Early-stop on validation, refit on train + valid for the chosen epochs, score the test."""
    users, valid = s.world.dataset.users, s.split.stage("valid")
    start = time.perf_counter()
    gen = CandidateGenerator(model, examples, s.train, max_tokens=MAX_TOKENS).fit(
        *training_logs(s, "valid", ordered), users,
        validate=lambda g: evaluate(scorer(s, g), valid, ks=KS, metrics=METRICS),
    )
    seconds = {"valid_train": time.perf_counter() - start}
    history = gen.history_
    params = {"depth": model.depth, "ordered": ordered, "search_lag_s": examples.search_lag_s,
              "train_loss": [round(e["train_loss"], 4) for e in history.epochs],
              "valid_curve": [round(e["val"][MONITOR], 4) for e in history.epochs],
              "best_epoch": history.best_epoch,
              "epochs_run": len(history.epochs), f"valid_{MONITOR}": round(history.best_metric, 4)}
    refit = s.train.replace(max_epochs=history.best_epoch + 1, monitor=None, patience=None)
    start = time.perf_counter()
    gen = CandidateGenerator(model, examples, refit, max_tokens=MAX_TOKENS).fit(*training_logs(s, "test", ordered), users)
    seconds["test_train"] = time.perf_counter() - start
    start = time.perf_counter()
    test = figures(scorer(s, gen), s.split.stage("test"))
    fresh = fresh_figures(s, gen) if ordered else None  # an unordered log has no "before"
    seconds["eval"] = time.perf_counter() - start
    params["examples_per_second"] = round(gen.history_.epochs[-1]["examples_per_second"])
    print(f"   depth {model.depth} ordered={ordered}: {params} test {test.metrics} "
          f"{fresh and fresh.metrics} ({sum(seconds.values()):.0f} s)", flush=True)
    return Fit(gen, test, {k: round(v, 1) for k, v in seconds.items()}, params, fresh)


def fresh_figures(s: Setting, gen: CandidateGenerator, k: int = MAIN_K) -> Figures:
    """``fresh_ranks`` per user: per target, 1/rank within the top k (MRR@k) and a hit (HR@k);
    per user, the mean over its targets; ± over users."""
    target = s.split.stage("test").target
    rr = fresh_ranks(s, gen, k)
    counts = np.bincount(target.user_idx)
    per_user = {name: (np.bincount(target.user_idx, value) / np.maximum(counts, 1))[counts > 0]
                for name, value in ((FRESH, rr), (f"fresh HR@{k}", rr > 0))}  # [users with a target]
    return Figures({n: round(float(v.mean()), 4) for n, v in per_user.items()}, per_user)


def fresh_ranks(s: Setting, gen: CandidateGenerator, k: int = MAIN_K) -> np.ndarray:
    """[Q] 1/rank within the top k (else 0) of each test target, ranked from its user's watches and
    searches strictly before it, those inside the test window included: the live system's fresh
    history (§3.4), where the main protocol freezes the history at the end of training. The items
    the user watched before are excluded."""
    w, f, end = s.split.watches, gen.featurizer_, s.world.config.window_s
    searches = s.world.dataset.searches
    streams = f.streams(w.select(WATCH_COLUMNS).filter(pc.less(w["timestamp"], end)),
                        searches.filter(pc.less(searches["timestamp"], end)), s.world.dataset.users)
    target = s.split.stage("test").target
    rows = pa.array(target.rows)
    t = w.column("timestamp").to_numpy()[target.rows]  # [Q]
    users = gen.user_rows(w.column("user_id").take(rows))  # [Q] stream rows
    items = f.items_.encode(w.column("item_id").take(rows))  # [Q] generator ids, 0 = unknown: a miss
    watch_end = history_end(streams.watch_offsets, streams.watch_times, users, t)
    token_end = history_end(streams.token_offsets, streams.token_times, users, t)
    rr = np.zeros(len(t))  # [Q] 1/rank within k, else 0
    for a in range(0, len(t), 1024):
        u, b = users[a : a + 1024], slice(a, a + 1024)
        batch = assemble_batch(streams, gen.example_cfg, u, streams.watch_items, watch_end[b], token_end[b],
                               np.full(len(u), f.serving_age, np.float32), None)
        scores = gen.model_.scores(batch).numpy()  # [B, V]
        seen, offsets = windows(streams.watch_items, streams.watch_offsets[u], watch_end[b], None)
        scores[np.repeat(np.arange(len(u)), np.diff(np.r_[offsets, len(seen)])), seen] = -np.inf
        rank = 1 + (scores > scores[np.arange(len(u)), items[b]][:, None]).sum(axis=1)  # [B]
        rr[b] = np.where((items[b] > 0) & (rank <= k), 1.0 / rank, 0.0)
    return rr


def references(s: Setting) -> dict[str, Figures]:
    """Popularity (counts over train + valid) and the true affinity at the end of training."""
    split, test = s.split, s.split.stage("test")
    popularity = Popularity().fit(test.fit, split.num_users, split.num_items)
    users = split.user_ids.to_numpy().astype(np.int64)  # world ids are dense: they index the truth
    items = split.item_ids.to_numpy().astype(np.int64)

    def truth(user_idx: np.ndarray) -> np.ndarray:
        return s.world.affinity(users[user_idx, None], items[None, :], s.train_end)

    return {"popularity": figures(popularity.score, test),
            "true affinity at end of training": figures(truth, test)}


# ---- fig. 6 ------------------------------------------------------------------------------------


def fig6(s: Setting, depths: tuple[int, ...]) -> dict[tuple[str, int], Fit]:
    """{(feature set, depth): Fit} for the depth sweep (all features) and the feature sweep."""
    fits = {}
    for depth in depths:
        fits[("all", depth)] = fit_and_test(s, MODEL.replace(depth=depth))
    for name, switches in FEATURE_SETS.items():
        if (name, FEATURE_DEPTH) not in fits:
            model = MODEL.replace(depth=FEATURE_DEPTH, **switches)
            fits[(name, FEATURE_DEPTH)] = fit_and_test(s, model)
    return fits


def report_fig6(s: Setting, fits: dict[tuple[str, int], Fit], refs: dict[str, Figures],
                out: Path) -> list[Record]:
    depth_sweep = [("all", d) for d in sorted(d for name, d in fits if name == "all")]
    feature_sweep = [(n, FEATURE_DEPTH) for n in FEATURE_SETS if (n, FEATURE_DEPTH) in fits]
    records, rows = [], []
    for sweep in (depth_sweep, feature_sweep):
        for previous, key in zip([None, *sweep], sweep):
            f = fits[key]
            deltas = ["–", "–"] if previous is None else [
                _pm(*f.test.delta(fits[previous].test)), _pm(*f.fresh.delta(fits[previous].fresh, FRESH))]
            rows.append([str(key[1]), key[0], *_cells(f.test), deltas[0], *_cells(f.fresh, (FRESH,)),
                         deltas[1], _seconds(f.seconds)])
    for (features, depth), f in fits.items():
        params = {**f.params, "features": features, "se": _rounded({**f.test.errors, **f.fresh.errors})}
        name = f"fig6: depth {depth}, {features}"
        records.append(_record(s, name, {**f.test.metrics, **f.fresh.metrics}, f.seconds, params))
    for name, figs in refs.items():
        records.append(_record(s, f"fig6: {name}", figs.metrics, {}, {"se": _rounded(figs.errors)}))
        rows.append(["–", name, *_cells(figs), "", "", "", ""])
    header = ["depth", "features", *_metric_names(), f"Δ {MONITOR} vs row above", FRESH,
              f"Δ {FRESH} vs row above", "seconds"]
    title = "Fig. 6: holdout MAP by depth and feature set"
    _markdown(out / "paper_fig6.md", title, header, rows, s)
    fig, (left, right) = plots.new_figure(2)
    plots.line_chart(
        left, [d for _, d in depth_sweep], *_series("all features", [fits[k] for k in depth_sweep]),
        {"popularity": refs["popularity"].metrics[MONITOR]},  # the ceiling would flatten the line
        xlabel="depth", ylabel=f"test {MONITOR}", title="Depth (all features)",
    )
    sweep = [fits[k] for k in feature_sweep]
    values, errors = _series(f"{MONITOR}, history frozen at the end of training", sweep)
    values[f"{FRESH}, live history"] = [f.fresh.metrics[FRESH] for f in sweep]
    errors[f"{FRESH}, live history"] = [f.fresh.errors[FRESH] for f in sweep]
    plots.bar_chart(right, [n for n, _ in feature_sweep], values, errors, xlabel="feature set",
                    ylabel="test", title=f"Feature sets (depth {FEATURE_DEPTH})")
    plots.save(fig, out / "paper_fig6.png")
    return records


# ---- fig. 4 ------------------------------------------------------------------------------------


def age_shares(ages_days: np.ndarray) -> np.ndarray:
    """Share of the given ages in each AGE_EDGES bucket [len(AGE_EDGES) - 1]."""
    counts = np.histogram(ages_days, bins=np.asarray(AGE_EDGES, dtype=float))[0]
    return counts / max(counts.sum(), 1)


def fig4(s: Setting, with_age: Fit, without_age: Fit) -> dict[str, np.ndarray]:
    """{series: shares by upload age at the end of training}: truths and recommendations."""
    split, test = s.split, s.split.stage("test")
    item_of = split.item_ids.to_numpy().astype(np.int64)
    timestamps = split.watches.column("timestamp").to_numpy()

    def first_watches(interactions: Interactions, start: float, end: float) -> np.ndarray:
        t = timestamps[interactions.rows]
        ages = s.upload_age_days(item_of[interactions.item_idx])
        return ages[(t >= start) & (t < end) & (ages >= 0)]  # items known at the end of training

    end = s.train_end
    series = {
        f"true: test days 1-{FRESH_DAYS}": first_watches(test.target, end, end + FRESH_DAYS * DAY),
        "true: test day 1": first_watches(test.target, end, end + DAY),
        "training-window average": first_watches(test.fit, 0, end),
    }
    users = split.user_ids.take(pa.array(test.eval_users()))
    for label, f in (("with", with_age), ("without", without_age)):
        ids, _ = f.generator.retrieve(users, k=SERVE_K)
        items = np.concatenate(ids).astype(np.int64)
        series[f"top-{SERVE_K} {label} example age"] = s.upload_age_days(items)
    return {name: age_shares(ages) for name, ages in series.items()}


def report_fig4(s: Setting, series: dict[str, np.ndarray], seconds: float,
                out: Path) -> list[Record]:
    buckets = [_bucket_name(a, b) for a, b in itertools.pairwise(AGE_EDGES)]
    fresh = AGE_EDGES.index(FRESH_DAYS)  # the buckets before it are the fresh ones
    records, rows = [], []
    for name, shares in series.items():
        metrics = {f"share uploaded < {FRESH_DAYS} d": round(float(shares[:fresh].sum()), 4)}
        metrics.update({f"share {b}": round(float(v), 4) for b, v in zip(buckets, shares)})
        params = {"k": SERVE_K, "fresh_days": FRESH_DAYS, "depth": FEATURE_DEPTH}
        records.append(_record(s, f"fig4: {name}", metrics, {"total": round(seconds, 1)}, params))
        rows.append([name, *(f"{v:.4f}" for v in metrics.values())])
    title = "Fig. 4: recommendations of fresh items, with and without example age"
    _markdown(out / "paper_fig4.md", title, ["series", *records[0].metrics], rows, s)
    fig, (ax,) = plots.new_figure(1, width=8)
    plots.bar_chart(ax, buckets, series, xlabel="item age at the end of training", ylabel="share",
                    title=f"Share by upload age: test users' first watches vs top-{SERVE_K}")
    plots.save(fig, out / "paper_fig4.png")
    return records


# ---- fig. 5 ------------------------------------------------------------------------------------


def fig5(s: Setting, fits: dict[str, Fit]) -> dict[str, Figures]:
    """The same models scored on the first test day only: {name: Figures}."""
    day_one = s.first_test_days(1)
    return {name: figures(scorer(s, f.generator), day_one) for name, f in fits.items()}


def report_fig5(s: Setting, fits: dict[str, Fit], day_one: dict[str, Figures],
                out: Path) -> list[Record]:
    base = "next watch"
    records, rows = [], []
    for name, f in fits.items():
        d1 = day_one[name]
        metrics = {**f.test.metrics, **{f"day 1 {m}": v for m, v in d1.metrics.items()}}
        params = {**f.params, "se": _rounded(f.test.errors),
                  "day 1 se": _rounded(d1.errors), "day 1 users": len(d1.per_user[MONITOR])}
        records.append(_record(s, f"fig5: {name}", metrics, f.seconds, params))
        deltas = [_pm(*f.test.delta(fits[base].test)), _pm(*d1.delta(day_one[base]))]
        rows.append([name, *_cells(f.test), *_cells(d1, (MONITOR, f"Recall@{MAIN_K}")),
                     *(["–", "–"] if name == base else deltas), _seconds(f.seconds)])
    header = ["examples", *_metric_names(), f"day 1 {MONITOR}", f"day 1 Recall@{MAIN_K}",
              f"Δ {MONITOR} vs {base}", f"Δ day 1 {MONITOR} vs {base}", "seconds"]
    title = "Fig. 5: predicting the next watch vs a held-out watch, scored on the future"
    _markdown(out / "paper_fig5.md", title, header, rows, s)
    fig, axes = plots.new_figure(2)
    label = f"depth {FEATURE_DEPTH}, watches + search"
    whole = {n: f.test for n, f in fits.items()}
    panels = ((f"test days 1-{WINDOW_DAYS}", whole), ("test day 1", day_one))
    for ax, (when, figs) in zip(axes, panels):
        plots.bar_chart(ax, list(figs), {label: [f.metrics[MONITOR] for f in figs.values()]},
                        {label: [f.errors[MONITOR] for f in figs.values()]},
                        xlabel="training examples", ylabel=MONITOR, title=f"{MONITOR}, {when}")
    plots.save(fig, out / "paper_fig5.png")
    return records


# ---- run ---------------------------------------------------------------------------------------


def run() -> list[Record]:
    p = plan()
    out = Path(os.environ.get("YTDNN_BENCH_PAPER_OUT", Path(__file__).resolve().parent / "results"))
    s = make_setting(p)
    print(f"{s.dataset}: {s.split.summary()}", flush=True)
    fits = fig6(s, p.depths)
    records = report_fig6(s, fits, references(s), out)
    no_age, age = fits[("+ search", FEATURE_DEPTH)], fits[("+ example age", FEATURE_DEPTH)]
    start = time.perf_counter()
    records += report_fig4(s, fig4(s, age, no_age), time.perf_counter() - start, out)
    held_out = fit_and_test(s, no_age.generator.model_cfg, ordered=False)
    fig5_fits = {"held-out watch": held_out, "next watch": no_age, "next watch + example age": age}
    return records + report_fig5(s, fig5_fits, fig5(s, fig5_fits), out)


def _record(s: Setting, model: str, metrics: dict, seconds: dict, params: dict) -> Record:
    return Record(BENCHMARK, s.dataset, s.protocol, model, metrics, seconds, params)


def _series(label: str, fits: list[Fit]) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """({label: MONITOR of each fit}, {label: its standard errors}) for a chart."""
    return ({label: [f.test.metrics[MONITOR] for f in fits]},
            {label: [f.test.errors[MONITOR] for f in fits]})


def _metric_names() -> list[str]:
    return [f"{m}@{k}" for m in METRICS for k in KS]


def _cells(figs: Figures, names: tuple[str, ...] | None = None) -> list[str]:
    errors = figs.errors
    return [f"{figs.metrics[n]:.4f}" + (f" ± {errors[n]:.4f}" if n in errors else "")
            for n in names or _metric_names()]


def _pm(mean: float, error: float) -> str:
    return f"{mean:+.4f} ± {error:.4f}"


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in values.items()}


def _seconds(seconds: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in seconds.items())


def _bucket_name(low: float, high: float) -> str:
    return f"{low:g}+ d" if np.isinf(high) else f"{low:g}-{high:g} d"


def _markdown(path: Path, title: str, header: list[str], rows: list[list[str]], s: Setting) -> None:
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", f"World: {s.dataset}; protocol: {s.protocol}; split: {s.split.summary()}.",
              "Protocol and definitions: the docstring of bench/paper.py.",
              "± is one standard error over the test users; Δ is a paired difference (one seed)."]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
