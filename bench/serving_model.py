"""A two-stage model over a ~100k-item synthetic corpus, built once and cached, for serving benches.

    from bench.serving_model import build_100k_model
    model_dir = build_100k_model()          # bench/cache/serving-100k/model, reused when present

Latency is what is measured with it, not quality: one short epoch of each stage is enough. What
matters is the shape of serving work: a 100k-row item table, an approximate (IVF) index over it,
a user tower of the paper's form, and a ranker scoring ``num_candidates`` items per request.

The world is sized so that nearly every item is watched at least once (the item vocabulary keeps
watched items only), with a moderate number of users so that generating and training take a few
minutes on 2 cores. The cache key is the builder's settings: change any of them and the next call
builds a new model beside the old one. Delete ``bench/cache/`` to free the disk (~1 GB).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np

CACHE_DIR = Path(__file__).resolve().parent / "cache"
WORLD = {
    "num_users": 30_000,
    "num_items": 100_000,
    "num_watches": 1_500_000,
    "num_channels": 5_000,
    "num_topics": 100,
    "num_categories": 12,
    "num_geos": 20,
    "popularity_sigma": 0.6,  # a flatter popularity: few items left unwatched, so V ~ 100k
    "page_rate": 0.08,
}
CANDIDATES = {"embedding_dim": 64, "output_dim": 64, "depth": 2, "num_negatives": 2000}
EXAMPLES = {"max_examples_per_user": 20}
RANKER = {"tower": "256", "max_embedding_dim": 32}
TRAIN = {"max_epochs": 1, "batch_size": 1024, "lr": 3e-3, "progress": False}
RANKER_IMPRESSIONS = 150_000  # a random slice of the ~1.6M logged impressions
NUM_CANDIDATES = 500
INDEX = "ivf"


def settings() -> dict:
    """Everything the model depends on: the cache key."""
    return {"world": WORLD, "candidates": CANDIDATES, "examples": EXAMPLES, "ranker": RANKER,
            "train": TRAIN, "ranker_impressions": RANKER_IMPRESSIONS, "num_candidates": NUM_CANDIDATES,
            "index": INDEX}


def default_dir() -> Path:
    key = hashlib.sha256(json.dumps(settings(), sort_keys=True).encode()).hexdigest()[:10]
    return CACHE_DIR / f"serving-100k-{key}"


def build_100k_model(out_dir: str | Path | None = None, *, verbose: bool = True) -> Path:
    """The two-stage model directory (built on the first call, reused afterwards) -> its path.

    ``out_dir`` (default ``bench/cache/serving-100k-<settings hash>``) gets ``data/`` (the world's
    canonical Parquet tables, e.g. for an event store's ``--data``), ``candidates/`` (the trained
    generator with its IVF index), ``model/`` (the two-stage Recommender directory) and
    ``build.json`` (settings, sizes and seconds). Each stage is reused when it still loads with
    the current code, else rebuilt: a change of the ranker's format retrains the ranker only.
    """
    from ytdnn.pipeline import Recommender

    out = Path(out_dir) if out_dir is not None else default_dir()
    model = out / "model"
    if (out / "build.json").exists() and _load_or_none(Recommender.load, model) is not None:
        return model
    out.mkdir(parents=True, exist_ok=True)
    info = _build(out, verbose)
    (out / "build.json").write_text(json.dumps(info, indent=2) + "\n")
    return model


def _load_or_none(load, directory: Path):
    """``load(directory)``, or None when it is absent or does not load with the current code."""
    if not (directory / "config.json").exists():
        return None
    try:
        return load(directory)
    except Exception:  # noqa: BLE001 - any failure means: build it again
        return None


def _say(verbose: bool, message: str) -> None:
    if verbose:
        print(f"   [serving model] {message}", flush=True)


def _build(out: Path, verbose: bool) -> dict:
    import pyarrow as pa
    import torch

    from ytdnn.candidates import CandidateGenerator
    from ytdnn.models.ranker import RankerConfig
    from ytdnn.pipeline import Recommender
    from ytdnn.ranking import Ranker
    from ytdnn.train.config import TrainConfig

    seconds: dict[str, float] = {}
    d = _world(out, seconds, verbose)
    gen = _load_or_none(CandidateGenerator.load, out / "candidates")
    if gen is None:
        gen = _generator(out, d, seconds, verbose)
    start = time.perf_counter()
    # a slice of the impressions is plenty for a latency model, and keeps the build short
    rows = np.random.default_rng(0).choice(len(d.impressions), RANKER_IMPRESSIONS, replace=False)
    impressions = d.impressions.take(pa.array(np.sort(rows)))
    ranker = Ranker(RankerConfig(**RANKER), TrainConfig(**TRAIN)).fit(
        gen, impressions, users=d.users, items=d.items)
    seconds["ranker"] = time.perf_counter() - start
    _say(verbose, f"ranker on {len(impressions):,} impressions ({seconds['ranker']:.0f} s)")
    if (out / "model").exists():
        shutil.rmtree(out / "model")
    Recommender(gen, ranker, NUM_CANDIDATES).save(out / "model")
    return {"settings": settings(), "num_items": gen.featurizer_.num_items - 1,
            "num_users": len(gen.featurizer_.users_) - 1, "num_watches": len(d.watches),
            "seconds": {k: round(v, 1) for k, v in seconds.items()}, "torch_threads": torch.get_num_threads()}


def _world(out: Path, seconds: dict, verbose: bool):
    from ytdnn.data.schema import Dataset
    from ytdnn.data.synthetic import WorldConfig, generate

    if (out / "data" / "watches.parquet").exists():
        return Dataset.load(out / "data")
    start = time.perf_counter()
    d = generate(WorldConfig.preset("large", **WORLD)).dataset
    d.save(out / "data")
    seconds["generate"] = time.perf_counter() - start
    _say(verbose, f"world: {len(d.watches):,} watches, {len(d.impressions):,} impressions "
                  f"({seconds['generate']:.0f} s)")
    return d


def _generator(out: Path, d, seconds: dict, verbose: bool):
    from ytdnn.candidates import CandidateGenerator
    from ytdnn.models.candidate import CandidateConfig
    from ytdnn.samples.candidate import ExampleConfig
    from ytdnn.train.config import TrainConfig

    start = time.perf_counter()
    gen = CandidateGenerator(CandidateConfig(**CANDIDATES), ExampleConfig(**EXAMPLES), TrainConfig(**TRAIN))
    gen.fit(d.watches, d.searches, d.users, items=d.items)
    gen.build_index(INDEX)
    gen.save(out / "candidates")
    seconds["candidates"] = time.perf_counter() - start
    _say(verbose, f"candidate generator: {gen.featurizer_.num_items - 1:,} items "
                  f"({seconds['candidates']:.0f} s)")
    return gen


if __name__ == "__main__":
    print(build_100k_model())
