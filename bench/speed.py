"""`make bench ONLY=speed`: how fast the default candidate generator trains, and what it costs.

- The machine's float32 matmul rate (torch.mm on square matrices), the reference for efficiency.
- Training examples/s of the default CandidateConfig on a synthetic world, and the share of the
  matmul rate the training step reaches. FLOPs are counted per example: the tower's layers and
  the sampled-softmax logits (1 positive + N shared negatives), forward = 2 * MACs, backward =
  twice the forward.
- Peak resident memory of training and of serving (load the model directory, build the index,
  retrieve for 2,000 users), each measured in a fresh process so one does not hide the other.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ytdnn.eval.report import Record

BENCHMARK = "speed"
WORLD = {"num_users": 20_000, "num_items": 50_000, "num_watches": 600_000}
EXAMPLE_CAP = 10  # examples per user in the timed epoch: 200k examples at most
# The default model as it is (sampled softmax, so sparse tables and RowAdam: each step updates only
# the rows it touched), at a larger batch, and with dense tables, where Adam rewrites every row of
# the 23M table weights each step: ~3,400 examples/s at batch 512 against the sparse ~5,500 at 1,024.
VARIANTS = {
    "ytdnn-candidates": ({}, {}),
    "ytdnn-candidates-batch1024": ({}, {"batch_size": 1024}),
    "ytdnn-candidates-dense": ({"sparse_embeddings": False}, {"batch_size": 512}),
}


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm up
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def flops_per_example(model) -> float:
    """Forward + backward FLOPs of one training example of a CandidateModel."""
    macs = sum(layer.in_features * layer.out_features for layer in model.tower if isinstance(layer, torch.nn.Linear))
    classes = (model.cfg.num_negatives or model.sizes.num_items) + 1
    macs += classes * model.cfg.output_dim
    return 3 * 2 * macs


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _train(out: str, queue, variant: str = "ytdnn-candidates") -> None:
    from ytdnn.candidates import CandidateGenerator
    from ytdnn.data.synthetic import WorldConfig, generate
    from ytdnn.models.candidate import CandidateConfig
    from ytdnn.samples.candidate import ExampleConfig
    from ytdnn.train.config import TrainConfig

    world = generate(WorldConfig.preset("small", **WORLD))
    tables = world.dataset
    model, train = VARIANTS[variant]
    gen = CandidateGenerator(
        CandidateConfig(**model),
        examples=ExampleConfig(max_examples_per_user=EXAMPLE_CAP),
        train=TrainConfig(max_epochs=1, progress=False, **train),
    ).fit(tables.watches, tables.searches, tables.users, items=tables.items)
    epoch = gen.history_.epochs[0]
    gen.build_index("ivf")
    gen.save(out)
    queue.put({
        "examples_per_second": epoch["examples_per_second"], "examples": epoch["examples"],
        "flops_per_example": flops_per_example(gen.model_), "peak_rss_mb": _peak_rss_mb(),
        "num_items": gen.featurizer_.num_items, "config": gen.model_cfg.to_dict(),
        "train": {"batch_size": gen.train_cfg.batch_size, **train},
        "tables": "sparse" if gen.model_.watch_bag.sparse else "dense",
    })


def _serve(out: str, queue) -> None:
    from ytdnn.candidates import CandidateGenerator

    gen = CandidateGenerator.load(out)
    users = np.array(gen.featurizer_.users_.tokens_[:2000])
    start = time.perf_counter()
    gen.retrieve(users, k=100)
    seconds = time.perf_counter() - start
    queue.put({"peak_rss_mb": _peak_rss_mb(), "retrieve_users_per_second": len(users) / seconds})


def _in_process(target, out: str, *args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(out, queue, *args))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def run() -> list[Record]:
    gflops = matmul_gflops()
    print(f"   float32 matmul: {gflops:.1f} GFLOP/s", flush=True)
    records = []
    for variant in VARIANTS:
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = str(Path(tmp) / "model")
            start = time.perf_counter()
            train = _in_process(_train, model_dir, variant)
            train_seconds = time.perf_counter() - start
            serve = _in_process(_serve, model_dir)
        records.append(_record(variant, gflops, train, serve, train_seconds))
    return records


def _record(variant: str, gflops: float, train: dict, serve: dict, train_seconds: float) -> Record:
    achieved = train["examples_per_second"] * train["flops_per_example"] / 1e9
    print(json.dumps({"variant": variant, "train": train, "serve": serve}, default=str)[:400], flush=True)
    metrics = {
        "matmul_gflops": round(gflops, 1),
        "train_examples_per_s": round(train["examples_per_second"], 1),
        "train_gflops": round(achieved, 1),
        "matmul_share": round(achieved / gflops, 3),
        "train_peak_rss_mb": round(train["peak_rss_mb"]),
        "serve_peak_rss_mb": round(serve["peak_rss_mb"]),
        "serve_users_per_s": round(serve["retrieve_users_per_second"], 1),
    }
    params = {"world": WORLD, "example_cap": EXAMPLE_CAP, "tables": train["tables"], **train["train"],
              "flops_per_example": train["flops_per_example"], "num_items": train["num_items"],
              "model": train["config"], "index": "ivf"}
    return Record(BENCHMARK, "synthetic-50k-items", "train-1-epoch", variant, metrics,
                  {"total": round(train_seconds, 1)}, params)
