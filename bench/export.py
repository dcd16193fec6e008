"""`make bench ONLY=export`: the ONNX export (ytdnn/export.py) of a two-stage model, and the user
tower's latency under onnxruntime against torch.

- The model: the paper's candidate generator (CandidateConfig defaults: 256-d embeddings, the
  1024-512-256 tower, sampled softmax) and ranker (RankerConfig defaults), one short epoch each
  on the synthetic "small" world: latency and file sizes depend on the shapes, not on training.
- Export: seconds and file size of each graph, and the item vectors' Parquet file.
- Latency of one user-tower call for a batch of 1 and of 256 users, p50 and p99 over repeated
  calls, torch (``CandidateModel.user_vector`` on EmbeddingBag inputs, as ytdnn serves) against
  onnxruntime (the exported graph on padded inputs, built beforehand for both). onnxruntime gets
  as many intra-op threads as torch has, so the ratio compares the runtimes alone.
- Parity: the largest |onnxruntime - torch| over the batches timed.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ytdnn.eval.report import Record

BENCHMARK = "export"
BATCHES = {1: 300, 256: 60}  # batch size -> timed calls
EXAMPLE_CAP = 5  # examples per user in the one training epoch: the shapes are what matter
RANKER_IMPRESSIONS = 50_000


def _model():
    from ytdnn.candidates import CandidateGenerator
    from ytdnn.data.synthetic import WorldConfig, generate
    from ytdnn.models.candidate import CandidateConfig
    from ytdnn.models.ranker import RankerConfig
    from ytdnn.pipeline import Recommender
    from ytdnn.ranking import Ranker
    from ytdnn.samples.candidate import ExampleConfig
    from ytdnn.train.config import TrainConfig

    d = generate(WorldConfig.preset("small", seed=0)).dataset
    train = TrainConfig(max_epochs=1, progress=False)
    gen = CandidateGenerator(CandidateConfig(), ExampleConfig(max_examples_per_user=EXAMPLE_CAP), train).fit(
        d.watches, d.searches, d.users, items=d.items)
    ranker = Ranker(RankerConfig(), train).fit(gen, d.impressions.slice(0, RANKER_IMPRESSIONS), users=d.users,
                                               items=d.items)
    return Recommender(gen, ranker)


def _latency(call, repeats: int) -> tuple[float, float]:
    """(p50, p99) milliseconds of ``call()`` over ``repeats`` calls, after 5 unmeasured ones."""
    for _ in range(5):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 99) * 1e3)


def run() -> list[Record]:
    import onnxruntime as ort

    from ytdnn.export import export_onnx, user_tower_inputs
    from ytdnn.samples.candidate import serving_batch

    start = time.perf_counter()
    rec = _model()
    train_seconds = time.perf_counter() - start
    gen = rec.candidates
    with tempfile.TemporaryDirectory() as tmp:
        manifest = export_onnx(rec, Path(tmp) / "onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(str(Path(tmp) / "onnx" / "user_tower.onnx"), options)
        rng = np.random.default_rng(0)
        metrics = {"torch": {}, "onnxruntime": {}}
        worst = 0.0
        model = gen.model_.eval()
        for size, repeats in BATCHES.items():
            rows = rng.integers(1, len(gen.featurizer_.users_), size)
            batch = serving_batch(gen.streams_, gen.example_cfg, rows, gen.featurizer_.serving_age)
            inputs = user_tower_inputs(gen, rows)
            with torch.no_grad():
                expected = model.user_vector(batch).numpy()

                def torch_call(batch=batch):
                    with torch.no_grad():
                        model.user_vector(batch)

                times = {"torch": _latency(torch_call, repeats),
                         "onnxruntime": _latency(lambda inputs=inputs: session.run(None, inputs), repeats)}
            worst = max(worst, float(np.abs(session.run(None, inputs)[0] - expected).max()))
            for runtime, (p50, p99) in times.items():
                metrics[runtime].update({f"p50_ms_batch{size}": round(p50, 3), f"p99_ms_batch{size}": round(p99, 3)})
        print(f"   parity: max |onnxruntime - torch| = {worst:.2e}", flush=True)
    return _records(manifest, metrics, worst, train_seconds)


def _records(manifest: dict, metrics: dict, worst: float, train_seconds: float) -> list[Record]:
    tower, rankers = manifest["user_tower"], manifest["ranker"]["members"]
    sizes = {"user_tower_mb": tower["bytes"] / 2**20, "ranker_mb": sum(r["bytes"] for r in rankers) / 2**20,
             "item_vectors_mb": manifest["item_vectors"]["bytes"] / 2**20}
    seconds = {"train": round(train_seconds, 1), "export_user_tower": tower["export_seconds"],
               "export_ranker": round(sum(r["export_seconds"] for r in rankers), 3)}
    params = {"exporter": manifest["exporter"], "torch": manifest["torch"], "threads": torch.get_num_threads(),
              "items": manifest["item_vectors"]["rows"], "dim": manifest["item_vectors"]["dim"],
              "calls": BATCHES, **{k: round(v, 2) for k, v in sizes.items()}}
    records = []
    for runtime, figures in metrics.items():
        values = dict(figures)
        if runtime == "onnxruntime":
            values["max_abs_diff"] = worst
            for size in BATCHES:  # how much faster onnxruntime is, in this run
                values[f"speedup_p50_batch{size}"] = round(
                    metrics["torch"][f"p50_ms_batch{size}"] / figures[f"p50_ms_batch{size}"], 2)
        records.append(Record(BENCHMARK, "synthetic-small", "user tower latency", runtime, values, seconds, params))
    return records
