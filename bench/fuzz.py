"""`make bench ONLY=fuzz`: the HTTP API under schemathesis and under kill -9, for the record.

Two records, on a tiny two-stage model of the synthetic world (the test suite's recipe, trained
here in seconds; what is measured is the API's behaviour, not the model's):

1. **schemathesis** (``ytdnn.serve.fuzz``): rounds of valid and invalid cases drawn from the
   OpenAPI document for every operation, sent to the app in-process, until at least
   ``MIN_CASES`` cases ran; four checks per case (no 5xx, documented status code, content type
   and response body). Metrics: cases, 5xx responses, failures per check. Target: 0 everywhere.
2. **kill -9** (``ytdnn.serve.crashtest``): ``KILLS`` SIGKILLs of ``ytdnn serve`` (a subprocess)
   at random moments: the first ``SEEDING_KILLS`` starts (the first start included) while they
   seed a new store, the rest spread over start-up and serving while a client posts watches;
   then a restart, and every training watch and every acknowledged (200) watch is looked up in
   the store. Target: 0 lost.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from ytdnn.eval.report import Record

BENCHMARK = "fuzz"
DATASET = "synthetic-tiny"
MIN_CASES = 10_000
EXAMPLES_PER_OPERATION = 1_000  # per round, split over valid and invalid cases
KILLS = 24
SEEDING_KILLS = 4  # the first starts, on the new store: killed 0-50 ms after its file appears
SEED = 14
TOKEN = "bench-token"  # schemathesis' in-process client is not loopback: admin needs the token


def tiny_model(out_dir: Path) -> Path:
    """The serve tests' two-stage model (tests/serve/conftest.py), saved to ``out_dir``."""
    from ytdnn.candidates import CandidateGenerator
    from ytdnn.data.synthetic import WorldConfig, generate
    from ytdnn.models.candidate import CandidateConfig
    from ytdnn.models.ranker import RankerConfig
    from ytdnn.pipeline import Recommender
    from ytdnn.ranking import Ranker
    from ytdnn.samples.candidate import ExampleConfig
    from ytdnn.train.config import TrainConfig

    d = generate(WorldConfig.preset("tiny", seed=0)).dataset
    gen = CandidateGenerator(
        CandidateConfig(embedding_dim=16, output_dim=16, depth=0, num_negatives=None),
        ExampleConfig(max_watch_history=20),
        TrainConfig(lr=3e-3, max_epochs=1, progress=False, num_threads=1, seed=0),
    ).fit(d.watches, d.searches, d.users, items=d.items)
    ranker = Ranker(RankerConfig(tower="32", max_embedding_dim=8),
                    TrainConfig(max_epochs=1, batch_size=512, progress=False, num_threads=1)).fit(
        gen, d.impressions, users=d.users, items=d.items)
    return Recommender(gen, ranker, num_candidates=60).save(out_dir)


def fuzz_record(model_dir: Path, tmp: Path) -> Record:
    from ytdnn.serve.app import create_app
    from ytdnn.serve.fuzz import CHECKS, fuzz_api

    app = create_app(model_dir, events=tmp / "fuzz-events.sqlite", admin_token=TOKEN)
    result, rounds = None, 0
    serve_log = logging.getLogger("ytdnn.serve")
    level = serve_log.level
    serve_log.setLevel(logging.ERROR)  # thousands of "reload of <fuzz> failed" warnings otherwise
    try:
        while result is None or result.cases < MIN_CASES:
            result = fuzz_api(app, examples_per_operation=EXAMPLES_PER_OPERATION,
                              seed=SEED + rounds, result=result,
                              headers={"Authorization": f"Bearer {TOKEN}"})
            rounds += 1
            print(f"   round {rounds}: {result.cases} cases, {result.server_errors} 5xx, "
                  f"failures {dict(result.failures)} ({result.seconds:.0f} s)", flush=True)
    finally:
        serve_log.setLevel(level)
    for sample in result.samples:
        print(f"   failure: {sample[:500]}", flush=True)
    metrics = result.to_metrics()
    seconds = {"run": metrics.pop("seconds")}
    params = {"rounds": rounds, "examples_per_operation_per_round": EXAMPLES_PER_OPERATION,
              "seeds": f"{SEED}..{SEED + rounds - 1}", "modes": "positive+negative",
              "checks": ", ".join(CHECKS), "transport": "ASGI in-process",
              "cases_by_operation": dict(result.cases_by_operation),
              "statuses": {str(k): v for k, v in sorted(result.statuses.items())}}
    return Record(BENCHMARK, DATASET, "schemathesis, every operation", "ytdnn serve app",
                  metrics, seconds, params)


def crash_record(model_dir: Path, tmp: Path) -> Record:
    from ytdnn.serve.crashtest import run_crash_test

    result = run_crash_test(model_dir, tmp / "crash-events.sqlite", kills=KILLS, seed=SEED,
                            seeding_kills=SEEDING_KILLS)
    print(f"   {result.to_metrics()}", flush=True)
    params = {"kill_moments_s": result.kill_moments_s, "start_s": round(result.start_s, 2),
              "first_kills": f"{SEEDING_KILLS} starts, 0-50 ms after the new store's file "
                             "appears (the first start included)",
              "other_kills": "uniform over 1.5 x one start; a client posts watches once up",
              "signal": "SIGKILL", "store": "SQLite WAL, synchronous=NORMAL"}
    return Record(BENCHMARK, DATASET, "kill -9 at random moments", "ytdnn serve (subprocess)",
                  result.to_metrics(), {"run": round(result.seconds, 1)}, params)


def run() -> list[Record]:
    with tempfile.TemporaryDirectory(prefix="ytdnn-fuzz-bench-") as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        model_dir = tiny_model(tmp / "model")
        print(f"   model trained in {time.perf_counter() - start:.1f} s", flush=True)
        return [fuzz_record(model_dir, tmp), crash_record(model_dir, tmp)]


if __name__ == "__main__":
    from ytdnn.eval.report import format_table

    print(format_table(run()))
