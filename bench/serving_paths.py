"""In-process figures of the serving bench (bench/serving.py): ``recommend(user, k=10)`` on both
ranking paths, and the arithmetic floor that the projection compares throughput with.

- ``in_process``: one Recommender call at a time (B = 1, what an idle server does) or B users per
  call (a micro-batch under load), from the training log, 500 candidates, one torch thread as
  ``ytdnn serve`` runs; p50/p99 per request and each stage's mean.
- ``floor``: the multiply-adds of one request (the ranker's tower over the candidates on each
  path, the user tower, the IVF probe) and the matmul speed of one core measured here, hence how
  many requests/s one core could answer if that arithmetic were all it did.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ytdnn.eval.report import Record

K = 10


def in_process(model_dir: Path, fast_path: bool, num_requests: int, batch_size: int = 1,
               dataset: str = "") -> Record:
    """Per-request latency of ``recommend_batch`` over ``num_requests`` sampled known users."""
    from ytdnn.pipeline import Recommender

    rec = Recommender.load(model_dir, fast_path=fast_path)
    known = np.asarray(rec.candidates.featurizer_.users_.tokens_)
    users = np.random.default_rng(0).choice(known, num_requests + 20).tolist()
    for user in users[:20]:  # warm-up: the first calls build caches (and the fast path's table)
        rec.recommend(user, k=K)
    totals, stages = [], {}
    for a in range(20, len(users), batch_size):
        start = time.perf_counter()
        rec.recommend_batch(users[a : a + batch_size], k=K)
        totals.append((time.perf_counter() - start) / batch_size)
        for stage, seconds in rec.timings_.items():
            stages[stage] = stages.get(stage, 0.0) + seconds
    ms = 1e3 * np.asarray(totals)
    metrics = {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
               "mean_ms": float(ms.mean())}
    metrics.update({f"{stage}_mean_ms": 1e3 * s / (len(totals) * batch_size) for stage, s in stages.items()})
    path = "fast path" if fast_path else "reference path"
    return Record("serving", dataset, f"in-process recommend_batch(B={batch_size}, k={K})", f"ytdnn ({path})",
                  {k: round(v, 3) for k, v in metrics.items()}, {},
                  {"num_candidates": rec.num_candidates, "requests": len(totals) * batch_size,
                   "batch_size": batch_size, "torch_threads": torch.get_num_threads(),
                   "fast_path": fast_path})


def floor(model_dir: Path) -> dict[str, float]:
    """Multiply-adds per request (MFLOP, 2 per multiply-add) and one core's matmul GFLOP/s here."""
    from ytdnn.pipeline import Recommender

    rec = Recommender.load(model_dir)
    n, ranker = rec.num_candidates, rec.ranker.model_
    layers = [m for m in ranker.tower if isinstance(m, torch.nn.Linear)]
    first, rest = layers[0], sum(2 * m.in_features * m.out_features for m in layers[1:])
    user = ranker.input_blocks()[1]
    shared = 2 * user * first.out_features  # the user's share of the first layer: once per request
    reference = n * (2 * (first.in_features - user) * first.out_features + rest) + shared
    fast = n * (2 * ranker.sizes.num_continuous * first.out_features + first.out_features + rest) + shared
    tower = sum(2 * m.in_features * m.out_features for m in rec.candidates.model_.tower
                if isinstance(m, torch.nn.Linear))
    index = rec.candidates.index_
    probe = 0.0
    faiss_index = getattr(index, "faiss_index_", None)
    if faiss_index is not None and hasattr(faiss_index, "nlist"):  # IVF: nprobe of nlist cells scanned
        nprobe = min(getattr(index, "nprobe", faiss_index.nprobe), faiss_index.nlist)
        probe = 2.0 * faiss_index.ntotal * faiss_index.d * nprobe / faiss_index.nlist
    return {"ranker_reference_mflop": reference / 1e6, "ranker_fast_mflop": fast / 1e6,
            "user_tower_mflop": tower / 1e6, "ivf_probe_mflop": probe / 1e6,
            "gflops_per_core": _gflops(first.in_features, first.out_features, n)}


def _gflops(inputs: int, outputs: int, rows: int, repeats: int = 50) -> float:
    """One core's float32 matmul speed on the ranker's own first-layer shape (best of 3)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x, w = torch.randn(rows, inputs), torch.randn(outputs, inputs)
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(repeats):
                torch.nn.functional.linear(x, w)
            best = min(best, time.perf_counter() - start)
        return 2.0 * rows * inputs * outputs * repeats / best / 1e9
    finally:
        torch.set_num_threads(threads)


def projection(flops: dict[str, float], saturation: dict[str, float], cores: int, dataset: str) -> Record:
    """Requests/s per core at saturation (client included on the same cores) against the floor."""
    per_request = {path: flops[f"ranker_{path}_mflop"] + flops["user_tower_mflop"] + flops["ivf_probe_mflop"]
                   for path in ("reference", "fast")}
    metrics = {**{k: round(v, 3) for k, v in flops.items()}}
    for path, mflop in per_request.items():
        metrics[f"floor_requests_per_s_per_core_{path}"] = round(1e3 * flops["gflops_per_core"] / mflop, 1)
        if path in saturation:
            per_core = saturation[path] / cores
            metrics[f"requests_per_s_per_core_{path}"] = round(per_core, 1)
            metrics[f"share_of_floor_{path}"] = round(per_core * mflop / (1e3 * flops["gflops_per_core"]), 4)
    for other in ("baseline", "reference"):
        for fast in ("fast", "fast_2_workers"):
            if other in saturation and fast in saturation:
                metrics[f"saturation_ratio_{fast}_over_{other}"] = round(saturation[fast] / saturation[other], 3)
    if "fast_2_workers" in saturation:
        metrics["requests_per_s_per_core_fast_2_workers"] = round(saturation["fast_2_workers"] / cores, 1)
    return Record("serving", dataset, "projection", "requests/s per core vs the arithmetic floor", metrics, {},
                  {"cores": cores, "saturation_requests_per_s": saturation,
                   "note": "per core = saturation / cores, client and server on the same cores"})
