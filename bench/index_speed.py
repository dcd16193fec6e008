"""Index benchmark: approximate vs exact top-100 inner-product search on a synthetic 1M-item corpus.

The corpus imitates trained item embeddings rather than isotropic noise (isotropic Gaussians are
the worst case for graph indexes and look nothing like learned embeddings):
- items belong to topics (a Gaussian mixture, topic sizes Zipf-distributed);
- an item's norm grows with its popularity (Zipf counts), as softmax output embeddings do: popular
  items are predicted for many users;
- queries are user vectors drawn like users: a weighted mix of 1 to 3 topics plus noise.

Every setting runs the same queries; recall@100 is measured against ``ExactIndex`` on them, and
speed-up is approximate queries/s over exact queries/s in this run. faiss uses 2 threads.

    .venv/bin/python -m bench.index_speed            # full run (1M items, a few minutes)
    .venv/bin/python -m bench.index_speed --items 100000
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from typing import Any

import faiss
import numpy as np

from ytdnn.index import ExactIndex, HNSWIndex, IVFIndex
from ytdnn.index.base import FaissIndex

K = 100
# (index class, build-time arguments, search-time settings tried on that one build)
Setting = tuple[type[FaissIndex], dict[str, Any], list[dict[str, Any]]]
DEFAULT_SETTINGS: tuple[Setting, ...] = (
    # nlist=None: the library default, 2·sqrt(M) cells; nprobe=64 is the default
    (IVFIndex, {"nlist": None}, [{"nprobe": 32}, {"nprobe": 64}, {"nprobe": 96}]),
    (IVFIndex, {"nlist": 4096}, [{"nprobe": 128}]),
    # the slowest part (~10 min build on 2 shared cores); recall plateaus below 0.8 here
    (HNSWIndex, {"m": 32, "ef_construction": 128}, [{"ef_search": 128}, {"ef_search": 512}]),
)

# `make bench ONLY=index`: the default IVF and its neighbours; HNSW is left out (its ~10 min build
# on 2 cores measured recall@100 0.66-0.76 here, see the table in the README).
BENCH_SETTINGS: tuple[Setting, ...] = DEFAULT_SETTINGS[:2]


def make_corpus(
    num_items: int, dim: int, num_queries: int, num_topics: int = 1000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Item vectors [num_items, dim] and user vectors [num_queries, dim], float32 (module doc)."""
    rng = np.random.default_rng(seed)
    topics = rng.normal(size=(num_topics, dim)) / np.sqrt(dim)  # [T, d], norms ~1
    topic_weight = 1.0 / np.arange(1, num_topics + 1) ** 0.8  # Zipf-like topic sizes
    topic_of_item = rng.choice(num_topics, size=num_items, p=topic_weight / topic_weight.sum())
    noise = rng.normal(size=(num_items, dim)) / np.sqrt(dim)
    directions = topics[topic_of_item] + 0.5 * noise
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    popularity = 1.0 / rng.permutation(np.arange(1, num_items + 1))  # Zipf counts, shuffled
    norms = 1.0 + 0.15 * np.log(popularity / popularity.min())  # 1 (tail) .. ~3 (head)
    items = directions * norms[:, None]

    num_mixed = rng.integers(1, 4, size=num_queries)  # each user likes 1..3 topics
    users = np.zeros((num_queries, dim))
    for j in range(3):
        chosen = rng.choice(num_topics, size=num_queries, p=topic_weight / topic_weight.sum())
        weight = rng.uniform(0.5, 1.0, size=num_queries) * (j < num_mixed)
        users += weight[:, None] * topics[chosen]
    users += 0.3 * rng.normal(size=(num_queries, dim)) / np.sqrt(dim)
    return items.astype(np.float32), users.astype(np.float32)


def _timed_search(
    index: FaissIndex, queries: np.ndarray, repeats: int
) -> tuple[np.ndarray, float, float]:
    """Found ids [Q, K], best wall seconds and best CPU seconds over ``repeats`` identical runs.

    The best of a few runs estimates the uncontended speed on a shared machine; CPU seconds (all
    threads) are reported too, being less sensitive to other processes than wall time.
    """
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        _, ids = index.search(queries, K)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return ids, min(walls), min(cpus)


def _recall(truth: np.ndarray, found: np.ndarray) -> float:
    hits = sum(len(np.intersect1d(t, f)) for t, f in zip(truth, found))
    return hits / truth.size


def run(
    num_items: int = 1_000_000,
    dim: int = 64,
    num_queries: int = 1000,
    settings: tuple[Setting, ...] = DEFAULT_SETTINGS,
    threads: int = 2,
    repeats: int = 3,
    seed: int = 0,
    log: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Build each index on the corpus, search the same queries, return one record per setting.

    log: called with each record as soon as it is measured (the full run takes minutes).
    """
    faiss.omp_set_num_threads(threads)
    items, queries = make_corpus(num_items, dim, num_queries, seed=seed)
    millions = num_items / 1_000_000
    dataset = f"synthetic-{millions:g}M" if millions >= 1 else f"synthetic-{num_items // 1000}k"
    context = {
        "dataset": dataset,
        "machine": f"{os.cpu_count()} cores, faiss threads={threads}",
        "params": {"num_items": num_items, "dim": dim, "num_queries": num_queries, "k": K},
    }
    records: list[dict[str, Any]] = []

    def measure(index: FaissIndex, build_seconds: float, truth: np.ndarray | None) -> np.ndarray:
        found, wall, cpu = _timed_search(index, queries, repeats)
        exact = records[0]["metrics"] if records else None  # the exact run comes first
        qps = num_queries / wall
        metrics = {
            f"recall@{K}": 1.0 if truth is None else round(_recall(truth, found), 4),
            "qps": round(qps, 1),
            "speedup": round(qps / exact["qps"], 2) if exact else 1.0,
            "cpu_speedup": round(exact["cpu_seconds"] / cpu, 2) if exact else 1.0,
            "cpu_seconds": round(cpu, 3),
        }
        seconds = {"build": round(build_seconds, 2), "search": round(wall, 3)}
        params = {
            **index.params,
            **({"num_cells": index.num_cells} if isinstance(index, IVFIndex) else {}),
        }
        record = _record(repr(index), metrics, seconds, params, context)
        records.append(record)
        if log is not None:
            log(record)
        return found

    start = time.perf_counter()
    exact = ExactIndex().build(items)
    truth = measure(exact, time.perf_counter() - start, None)
    del exact
    for index_class, build_kwargs, search_settings in settings:
        index = index_class(**build_kwargs)
        start = time.perf_counter()
        index.build(items)
        build_seconds = time.perf_counter() - start
        for search_kwargs in search_settings:
            for name, value in search_kwargs.items():
                setattr(index, name, value)  # search-time settings apply at the next search
            measure(index, build_seconds, truth)
        del index  # free its memory before the next build
    return records


def bench_run() -> list:
    """`make bench ONLY=index`: the default settings as report Records."""
    from ytdnn.eval.report import Record

    return [Record(**{**r, "machine": "", "command": ""}) for r in run(settings=BENCH_SETTINGS)]


def _record(model, metrics, seconds, params, context) -> dict[str, Any]:
    return {
        "benchmark": "index",
        "dataset": context["dataset"],
        "protocol": "ann-vs-exact",
        "model": model,
        "metrics": metrics,
        "seconds": seconds,
        "params": {**context["params"], **params},
        "machine": context["machine"],
        "command": "python -m bench.index_speed",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    log = lambda record: print(json.dumps(record), flush=True)
    run(args.items, args.dim, args.queries, threads=args.threads, log=log)


if __name__ == "__main__":
    main()
