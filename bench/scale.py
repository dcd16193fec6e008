"""`make bench ONLY=scale`: every stage of the data-parallel path against the size of the log
(issue 18): synthetic logs of 1M, 5M and 20M watches (presets scale-1m|5m|20m, generated block by
block of users), each through

    generate -> prepare (local) -> prepare (Spark local[2]) -> one epoch of the shard stream alone
    (no model: its speed, and memory bounded by the shuffle buffer) -> one training epoch from the
    shards -> train the ranker (on a fixed number of impressions) -> score every user's two-stage
    recommendations (local, then Spark local[2])

Every stage is its own process, so its time includes its imports (and, on Spark, the session
start, also reported apart) and its memory is its own, sampled from /proc every 0.2 s:
``peak_rss_mib`` is the largest high-water mark (VmHWM) of one process of the stage,
``tree_rss_mib`` the largest sum of the resident sets of the process and its descendants (for Spark: the driver, the JVM and the Python workers; shared
pages count once per process, so it is an upper bound).

On the smallest log it also checks that the Spark shards equal the local ones after sorting, that
Spark's scores equal the local ones (same lists, user vectors within 1e-5), and trains in memory
at the same batch size, for the examples/s ratio. Written: scale.json / scale.md, scale.png (time
and peak memory against log size) and scale-notes.md (linearity, the targets, the projection).

YTDNN_BENCH_SCALE_SIZES=50000,100000,200000 runs other sizes (a quick check; `make` never sets it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench import plots
from ytdnn.data.synthetic_config import SCALE_WATCHES_PER_USER
from ytdnn.eval.report import Record

BENCHMARK = "scale"
SIZES = (1_000_000, 5_000_000, 20_000_000)
SIZES_ENV = "YTDNN_BENCH_SCALE_SIZES"
TARGET_WATCHES = 10_000_000  # local prepare of this many watches in <= TARGET_SECONDS on 2 cores
TARGET_SECONDS = 60.0
MASTER = "local[2]"
# local[N] runs the executors inside the driver's JVM, whose default heap (1 GB) is for small jobs;
# the shuffle of 20M watches' events needs more (extra spark-submit options: PYSPARK_SUBMIT_ARGS)
SPARK_ENV = {"PYSPARK_SUBMIT_ARGS": "--driver-memory 6g pyspark-shell"}
RESULTS = Path(__file__).resolve().parent / "results"
TRAIN_BATCH = 2048
# one epoch of small towers: the bench measures the data path, not model quality (with the
# paper's 256 wide embeddings and 4,096 negatives an epoch of 20M watches would take hours here)
MODEL = ["--set", "depth=1", "--set", "candidates.embedding_dim=32", "--set", "candidates.output_dim=32",
         "--set", "candidates.num_negatives=1024", "--set", f"train.batch_size={TRAIN_BATCH}", "--set", "train.max_epochs=1",
         "--set", "examples.max_examples_per_user=50", "--set", "train.patience=null",
         "--set", "ranker.tower=64", "--set", "ranker_train.max_epochs=1"]
# The ranker only has to exist for two-stage scoring, whose speed does not depend on what it was
# trained on: it trains on the first impressions of the log, so its time stays flat.
RANKER_IMPRESSIONS = 100_000
STAGES = ("generate", "prepare_local", "prepare_spark", "stream_shards", "train_from_shards", "train_ranker",
          "score_local", "score_spark")
CURVES = ("generate", "prepare_local", "prepare_spark", "train_from_shards", "score_local")  # the five


@dataclass
class Stage:
    seconds: float
    peak_rss_mib: float  # the largest high-water mark of one process of the tree
    tree_rss_mib: float  # the largest sampled sum over the process tree
    output: str


def run_stage(argv: list[str], log: Path) -> Stage:
    """Run ``argv`` as a child process -> its time, peak RSS (single process and process tree)
    and output; raises when it fails."""
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=os.environ | SPARK_ENV)
        tree = peak = 0
        while proc.poll() is None:
            total, high = _tree_memory(proc.pid)
            tree, peak = max(tree, total), max(peak, high)
            time.sleep(0.2)
    seconds = time.perf_counter() - start
    text = log.read_text()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{text[-3000:]}")
    return Stage(seconds, peak / 2**20, max(tree, peak) / 2**20, text)


def _tree_memory(root: int) -> tuple[int, int]:
    """(bytes resident in ``root`` and all its descendants now, the largest high-water mark
    (VmHWM) among them): the peak of one process since its exec, which ru_maxrss is not (a
    child's counts the parent's memory at the fork). Processes gone meanwhile count 0."""
    parent: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            parent[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])
    tree, frontier = {root}, [root]
    while frontier:
        frontier = [p for p, pp in parent.items() if pp in frontier and p not in tree]
        tree.update(frontier)
    total = high = 0
    for pid in tree:
        try:
            status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        except (OSError, ValueError):
            continue
        if "VmRSS" in status:  # kernel threads and zombies have none
            total += int(status["VmRSS"].split()[0]) * 1024
            high = max(high, int(status["VmHWM"].split()[0]) * 1024)
    return total, high


def sizes() -> tuple[int, ...]:
    """The log sizes to run: SIZES, or those of YTDNN_BENCH_SCALE_SIZES (comma separated)."""
    text = os.environ.get(SIZES_ENV, "").strip()
    return tuple(sorted(int(float(s)) for s in text.split(","))) if text else SIZES


def _ytdnn(*args: str) -> list[str]:
    return [sys.executable, "-m", "ytdnn", *args]


def _generate_argv(watches: int, out: Path) -> list[str]:
    """The chunked generator at ``watches`` (= the preset scale-<n>m at 1M, 5M and 20M)."""
    code = ("import sys; from ytdnn.data.synthetic_config import WorldConfig; "
            "from ytdnn.data.synthetic_chunked import generate_to; "
            f"print(generate_to(WorldConfig.preset('scale-1m', num_watches={watches}, "
            f"num_users={watches // SCALE_WATCHES_PER_USER}), sys.argv[1]))")
    return [sys.executable, "-c", code, str(out)]


def run_size(watches: int, work: Path, checks: bool) -> tuple[dict[str, Stage], dict]:
    """Every stage on a log of ``watches`` watches under ``work``; ``checks``: also the
    equality checks and in-memory training. -> (stages, figures)."""
    data, stages, figures = work / "data", {}, {}

    def stage(name: str, argv: list[str]) -> Stage:
        print(f"  {watches:,} watches: {name}", file=sys.stderr, flush=True)
        stages[name] = run_stage(argv, work / f"{name}.log")
        return stages[name]

    stage("generate", _generate_argv(watches, data))
    figures["watches"] = pq.ParquetFile(data / "watches.parquet").metadata.num_rows
    users = pq.read_table(data / "watches.parquet", columns=["user_id"]).column(0)
    figures["users"] = len(users.unique())
    for engine in ("local", "spark"):
        s = stage(f"prepare_{engine}", _ytdnn("prepare", "--engine", engine, "--spark-master", MASTER,
                                             "--data", str(data), "--out", str(work / f"prep-{engine}"), *MODEL))
        if engine == "spark":
            figures["spark_start_s"] = _spark_start(s.output)
    manifest = json.loads((work / "prep-local" / "prepare.json").read_text())
    figures["examples"] = manifest["num_examples"]
    if checks:
        figures["prepare_spark_equals_local"] = float(_same_examples(work / "prep-local", work / "prep-spark"))
    shutil.rmtree(work / "prep-spark")
    s = stage("stream_shards", _stream_argv(work / "prep-local"))
    figures["stream_shards_examples_per_s"] = _examples_per_s(s.output)
    s = stage("train_from_shards", _ytdnn("train", "candidates", "--data", str(data), "--out", str(work / "gen"),
                                          "--examples", str(work / "prep-local"), *MODEL))
    figures["train_from_shards_examples_per_s"] = _examples_per_s(s.output)
    if checks:
        s = stage("train_in_memory", _ytdnn("train", "candidates", "--data", str(data),
                                            "--out", str(work / "gen-memory"), *MODEL))
        figures["train_in_memory_examples_per_s"] = _examples_per_s(s.output)
        shutil.rmtree(work / "gen-memory")
    shutil.rmtree(work / "prep-local")
    stage("train_ranker", _ytdnn("train", "ranker", "--data", str(_ranker_data(data, work / "ranker-data")), "--model", str(work / "gen"),
                                 "--out", str(work / "model"), *MODEL))
    for engine in ("local", "spark"):  # each partition's history built from the logs (--data)
        out = work / f"recs-{engine}" / ("part.parquet" if engine == "local" else "")
        s = stage(f"score_{engine}", _ytdnn("score", "--engine", engine, "--spark-master", MASTER, "--data", str(data),
                                           "--model", str(work / "model"), "--what", "recommendations", "--out", str(out)))
        figures[f"score_{engine}_users_per_s"] = figures["users"] / s.seconds
        if engine == "spark":
            figures["score_spark_start_s"] = _spark_start(s.output)
            figures["score_spark_driver_s"] = float(re.search(r"driver part took ([\d.]+) s", s.output).group(1))
    if checks:
        figures |= _score_checks(work, data)
    shutil.rmtree(data)
    return stages, figures


def _stream_argv(prepared: Path) -> list[str]:
    """One epoch of the training stream alone (no model): its speed, and its memory against the log's."""
    code = ("import sys, time; from ytdnn.scale.prepare import read_manifest; "
            "from ytdnn.samples.shards import ShardStream; "
            "_, featurizer, shards = read_manifest(sys.argv[1]); start = time.perf_counter(); "
            f"n = sum(len(b) for b in ShardStream(shards, featurizer, {TRAIN_BATCH})); "
            "print(f'streamed {n} examples ({n / (time.perf_counter() - start):.0f} examples/s)')")
    return [sys.executable, "-c", code, str(prepared)]


def _ranker_data(data: Path, out: Path) -> Path:
    """``data`` with only its first RANKER_IMPRESSIONS impressions (the other tables linked)."""
    out.mkdir()
    for table in data.glob("*.parquet"):
        if table.name != "impressions.parquet":
            (out / table.name).symlink_to(table)
    impressions = pq.ParquetFile(data / "impressions.parquet")
    with pq.ParquetWriter(out / "impressions.parquet", impressions.schema_arrow) as writer:
        for batch in impressions.iter_batches(batch_size=RANKER_IMPRESSIONS):
            writer.write_batch(batch)
            break
    return out


def _spark_start(output: str) -> float:
    return float(re.search(r"started Spark \(.*?\) in ([\d.]+) s", output).group(1))


def _examples_per_s(output: str) -> float:
    return float(re.findall(r"\((\d+) examples/s", output)[-1])


def _sorted(path: Path, keys: list[str], schema: pa.Schema | None = None) -> pa.Table:
    table = pq.read_table(path)
    if schema is not None:
        table = table.select(schema.names).cast(schema)  # Spark writes every field nullable
    return table.sort_by([(k, "ascending") for k in keys]).combine_chunks()


def _same_examples(local: Path, spark: Path) -> bool:
    """The two engines' shards hold the same rows (sorted by user and key)."""
    a = _sorted(local / "candidates", ["user_id", "key"])
    return a.equals(_sorted(spark / "candidates", ["user_id", "key"], a.schema))


def _score_checks(work: Path, data: Path) -> dict:
    """Spark's lists equal the local ones; user vectors of both engines within 1e-5 (both from
    the logs in ``data``)."""
    model = work / "model"
    a = _sorted(work / "recs-local", ["user_id", "rank"])
    b = _sorted(work / "recs-spark", ["user_id", "rank"], a.schema)
    for engine in ("local", "spark"):
        out = work / f"users-{engine}" / ("part.parquet" if engine == "local" else "")
        run_stage(_ytdnn("score", "--engine", engine, "--spark-master", MASTER, "--data", str(data),
                         "--model", str(model), "--what", "users", "--out", str(out)), work / f"users-{engine}.log")
    u, v = _sorted(work / "users-local", ["user_id"]), _sorted(work / "users-spark", ["user_id"])
    diff = np.abs(np.stack(u["vector"].to_numpy(zero_copy_only=False)) - np.stack(v["vector"].to_numpy(zero_copy_only=False)))
    return {"score_lists_identical": float(a.column("user_id").equals(b.column("user_id"))
                                           and a.column("item_id").equals(b.column("item_id"))),
            "score_user_vector_max_diff": float(diff.max())}


def run() -> list[Record]:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return [Record(BENCHMARK, "synthetic-scale", "prepare + train + score", "ytdnn", skipped="pyspark is not installed")]
    records, runs = [], []
    root = Path(tempfile.mkdtemp(prefix="ytdnn-bench-scale-"))
    try:
        for i, watches in enumerate(sizes()):
            work = root / f"w{watches}"
            work.mkdir()
            try:
                stages, figures = run_size(watches, work, checks=i == 0)
            except RuntimeError as error:  # a stage failed: keep the smaller sizes' figures
                if not runs:
                    raise
                records.append(Record(BENCHMARK, f"synthetic-{_preset(watches)}", "prepare + train + score", "ytdnn",
                                      skipped=f"a stage failed: {str(error)[-500:]}"))
                break
            shutil.rmtree(work)
            runs.append((stages, figures))
            records.append(_record(watches, stages, figures))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    summary = summarize(runs)
    records.append(Record(BENCHMARK, "synthetic-scale", "summary", "ytdnn", summary["metrics"],
                          params=summary["params"]))
    # a quick run at other sizes leaves the committed figure and notes alone
    figures_dir = Path(tempfile.gettempdir()) / "ytdnn-bench-scale-quick" if os.environ.get(SIZES_ENV) else RESULTS
    figures_dir.mkdir(parents=True, exist_ok=True)
    print(f"wrote {plot(runs, figures_dir / 'scale.png')}", file=sys.stderr)
    (figures_dir / "scale-notes.md").write_text(notes(runs, summary))
    return records


def _record(watches: int, stages: dict[str, Stage], figures: dict) -> Record:
    params = {"watches": figures["watches"], "users": figures["users"], "examples": figures["examples"],
              "spark_master": MASTER, "preset": _preset(watches),
              "peak_rss_mib": {k: round(s.peak_rss_mib, 1) for k, s in stages.items()},
              "tree_rss_mib": {k: round(s.tree_rss_mib, 1) for k, s in stages.items()}}
    metrics = {k: round(v, 6) for k, v in figures.items() if k not in ("watches", "users", "examples")}
    return Record(BENCHMARK, f"synthetic-{_preset(watches)}", "prepare + train + score", "ytdnn", metrics,
                  {k: round(s.seconds, 2) for k, s in stages.items()}, params)


def _preset(watches: int) -> str:
    return f"scale-{watches // 1_000_000}m" if watches % 1_000_000 == 0 else f"scale-{watches}-watches"


def summarize(runs: list[tuple[dict[str, Stage], dict]]) -> dict:
    """The targets and the linear fits, from every size's stages."""
    watches = np.array([f["watches"] for _, f in runs], float)
    fits = {name: linear_fit(watches, np.array([s[name].seconds for s, _ in runs])) for name in STAGES}
    prep_10m = fits["prepare_local"]["intercept_s"] + fits["prepare_local"]["s_per_million"] * TARGET_WATCHES / 1e6
    first = runs[0][1]
    largest = runs[-1][0]
    metrics = {
        "prepare_local_largest_peak_rss_mib": round(largest["prepare_local"].peak_rss_mib, 1),
        "train_shards_over_memory_examples_per_s": round(first["train_from_shards_examples_per_s"]
                                                         / first["train_in_memory_examples_per_s"], 3),
        "score_spark_over_local_users_per_s": round(runs[-1][1]["score_spark_users_per_s"]
                                                    / runs[-1][1]["score_local_users_per_s"], 3),
        "prepare_spark_equals_local": first["prepare_spark_equals_local"],
        "score_lists_identical": first["score_lists_identical"],
        "score_user_vector_max_diff": first["score_user_vector_max_diff"],
    }
    if watches.max() >= TARGET_WATCHES / 4:  # below, fixed costs and noise swamp the slope
        metrics |= {"prepare_local_10m_seconds": round(prep_10m, 1),
                    "prepare_local_10m_within_target": float(prep_10m <= TARGET_SECONDS)}
    return {"metrics": metrics, "params": {"fits": fits, "projection": projection(runs[-1])}}


def linear_fit(x: np.ndarray, y: np.ndarray) -> dict:
    """Least squares y = a + b x (x in watches): intercept, seconds per million watches, R², and
    how far the per-watch cost of the largest size is from the smallest's (1 = linear)."""
    b, a = np.polyfit(x, y, 1) if len(x) > 1 else (y[0] / x[0], 0.0)
    residual = float(((y - (a + b * x)) ** 2).sum())
    r2 = 1 - residual / float(((y - y.mean()) ** 2).sum()) if len(x) > 1 and y.std() > 0 else 1.0
    marginal = (y[-1] - y[0]) / (x[-1] - x[0]) if len(x) > 1 else b  # s per watch between the ends
    return {"intercept_s": round(float(a), 2), "s_per_million": round(float(b) * 1e6, 3), "r2": round(r2, 4),
            "marginal_ratio": round(float(marginal / b), 3) if b else None}


def projection(run: tuple[dict[str, Stage], dict], executors: tuple[int, ...] = (4, 16, 64),
               cores: int = 4, users: int = 10_000_000) -> dict:
    """Seconds to score ``users`` users' recommendations on N executors of ``cores`` cores each,
    from the largest log's Spark local[2] run (``score --data``): start + the driver's part (fixed:
    it loads the model without history and plans) + users x executor core-seconds per user /
    (N x cores)."""
    stages, figures = run
    start, driver = figures["score_spark_start_s"], figures["score_spark_driver_s"]
    executor = max(stages["score_spark"].seconds - start - driver, 0.0)  # the mapInArrow job
    core_s = executor * 2 / figures["users"]  # core-seconds per user on local[2]
    out = {"assumptions": PROJECTION_ASSUMES, "users": users, "cores_per_executor": cores,
           "executor_core_s_per_user": round(core_s, 7), "driver_s": round(driver, 1),
           "session_start_s": round(start, 1)}
    for n in executors:
        out[f"{n}_executors_s"] = round(start + driver + users * core_s / (n * cores), 1)
    return out


PROJECTION_ASSUMES = (
    "the executors' time (reading the logs, the shuffle of every event by user id, building the "
    "histories and scoring) divides by the cores, the shuffle's network time included in it (on "
    "local[2] it is a local disk shuffle); an executor core scores as fast as one of local[2] (same "
    "CPU, PyTorch on one thread per Python worker); the session start and the driver's part "
    "(loading the model without its history, planning: `score --data`) stay fixed; the output "
    "write and task scheduling scale like the scoring; the model (item vectors and index) fits "
    "each executor's memory once per Python worker.")


def plot(runs: list[tuple[dict[str, Stage], dict]], path: Path) -> Path:
    """Time and peak memory (process tree) of each stage against the log size."""
    fig, (left, right) = plots.new_figure(2)
    millions = [f["watches"] / 1e6 for _, f in runs]
    plots.line_chart(left, millions, {n: [s[n].seconds for s, _ in runs] for n in STAGES},
                     xlabel="log size (million watches)", ylabel="seconds", title="time per stage")
    plots.line_chart(right, millions, {n: [s[n].tree_rss_mib for s, _ in runs] for n in STAGES},
                     xlabel="log size (million watches)", ylabel="MiB",
                     title="peak memory per stage (process tree)")
    for ax in (left, right):
        ax.set_xticks(millions, [f"{m:.3g}" for m in millions])
    return plots.save(fig, path)


def notes(runs: list[tuple[dict[str, Stage], dict]], summary: dict) -> str:
    """scale-notes.md: the figures the table does not show, read against the issue's targets."""
    m, fits, proj = summary["metrics"], summary["params"]["fits"], summary["params"]["projection"]
    sizes_text = ", ".join(f"{f['watches']:,}" for _, f in runs)
    met = {1.0: "met", 0.0: "NOT met"}.get(m.get("prepare_local_10m_within_target"), "not projected from logs this small")
    lines = [
        "# scale: notes", "",
        f"Sizes: {sizes_text} watches; Spark {MASTER}. Written by `bench/scale.py`; the table is in scale.md.", "",
        "## Linearity (seconds = a + b x watches)", "",
        "| stage | a (s) | b (s per 1M watches) | R² | marginal / fitted cost |", "|---|---|---|---|---|",
        *[f"| {n} | {f['intercept_s']} | {f['s_per_million']} | {f['r2']} | {f['marginal_ratio']} |"
          for n, f in fits.items()],
        "",
        ("a is the fixed cost (imports, ~3 s; Spark's session start, "
         f"{runs[-1][1]['spark_start_s']:.0f} s here, and its job scheduling); a marginal / fitted ratio "
         "near 1 is a straight line. Expected departures: the sorts (n log n) in the featurizer's fit "
         "and in the generator's blocks, and the ranker, which trains on a fixed number of impressions."),
        "", "## Targets", "",
        (f"- Local prepare of {TARGET_WATCHES / 1e6:g}M watches (from the fit): {m.get('prepare_local_10m_seconds')} s, "
         f"target <= {TARGET_SECONDS:g} s: {met}; peak RSS at the largest size "
         f"{m['prepare_local_largest_peak_rss_mib']} MiB."),
        (f"- Training from shards / in memory, examples/s at equal batch size: "
         f"{m['train_shards_over_memory_examples_per_s']} (target >= 0.9)."),
        (f"- Batch scoring, Spark {MASTER} / local users/s at the largest size: "
         f"{m['score_spark_over_local_users_per_s']}."),
        (f"- Spark shards equal the local ones: {bool(m['prepare_spark_equals_local'])}; lists identical: "
         f"{bool(m['score_lists_identical'])}; user vectors max |diff| {m['score_user_vector_max_diff']:.2e}."),
        "", f"## Projection: scoring {proj['users']:,} users on N executors of {proj['cores_per_executor']} cores", "",
        *[f"- {k.split('_')[0]} executors: {v:,.0f} s" for k, v in proj.items() if k.endswith("_executors_s")],
        "", f"Assumes: {proj['assumptions']}", "",
    ]
    return "\n".join(lines)
