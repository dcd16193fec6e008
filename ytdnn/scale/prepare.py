"""`ytdnn prepare`: canonical logs -> the candidate generator's training examples, and with a
trained generator the ranker's built pages, as Parquet shards.

Output directory (the layout the README documents):

    prepare.json                 what was prepared: engine, seed, example settings, counts, quantiles
                                 (and, with pages, the generator's folder and the page settings)
    featurizer/                  the vocabularies and the example-age quantiles (Featurizer.save)
    candidates/part-*.parquet    the examples (ytdnn.samples.prepared), each user's in one shard
    pages/part-*.parquet         with a generator: the built pages, an impressions table (page ids
                                 the pages' int64 keys), each user's in one shard

Both engines fit the featurizer on the whole log, then run ``candidate_example_rows`` (and
``page_rows``) on groups of whole users: the local engine on ``num_shards`` hash buckets, the
Spark one (``ytdnn.scale.spark``) on partitions grouped by user. For one seed both write the same
examples and the same pages, and the pages are those ``Ranker`` training builds in memory
(``samples.impressions``).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ytdnn.data.schema import Dataset
from ytdnn.samples.candidate import ExampleConfig
from ytdnn.samples.impressions import ImpressionConfig
from ytdnn.samples.keys import id_hashes, mix
from ytdnn.samples.prepared import candidate_example_rows, page_rows, user_feature_rows
from ytdnn.samples.streams import Featurizer

MANIFEST = "prepare.json"
FORMAT = "ytdnn.prepared"
EXAMPLE_TABLES = ("watches", "searches", "users")
PAGES = "pages"
ROW_GROUP_ROWS = 16_384  # the unit the training stream reads; a shuffle buffer holds several


@dataclass(frozen=True)
class PageJob:
    """What the ranker's built pages are built with: the generator's folder (loaded by each
    worker, history not read) and the page settings (their seed draws the requests)."""

    generator: Path
    impressions: ImpressionConfig

    @classmethod
    def of(cls, model: str | Path, impressions: ImpressionConfig | None = None) -> PageJob:
        """The job for a two-stage or candidates directory; a ValueError for settings whose pages
        cannot be built user by user from one generator."""
        from ytdnn.pipeline import (
            generator_dir,  # the pipeline's own model loading sits above prepare
        )

        cfg = impressions or ImpressionConfig()
        cls.check(cfg)
        return cls(generator_dir(model).resolve(), cfg)

    @staticmethod
    def check(cfg: ImpressionConfig) -> None:
        """A ValueError for page settings that one generator cannot build user by user (at
        prepare time, and again when a ranker trains on the pages)."""
        if cfg.last_watches is not None:
            raise ValueError("impressions.last_watches pages need a stacking generator trained in the same run: "
                             "build them in memory (`ytdnn train ranker` without --examples)")
        if cfg.samples != 1:
            raise ValueError("prepared pages are one sample: set impressions.samples=1")

    def load(self):
        from ytdnn.candidates import CandidateGenerator

        return CandidateGenerator.load(self.generator, history=False)

    def manifest(self, counts: list[int]) -> dict:
        return {"generator": str(self.generator), "impressions": self.impressions.to_dict(),
                "num_rows": int(sum(counts))}


def prepare_local(data: str | Path | Dataset, out: str | Path, examples: ExampleConfig | None = None,
                  seed: int = 0, num_shards: int = 8, max_items: int | None = 1_000_000,
                  max_tokens: int | None = 1_000_000, row_group_rows: int = ROW_GROUP_ROWS,
                  num_workers: int | None = None, pages: PageJob | None = None) -> dict:
    """Write the examples of ``data`` (a canonical data directory or Dataset) under ``out``, and
    with ``pages`` the ranker's built pages; returns the manifest (prepare.json). ``num_workers``:
    processes that build and write the buckets at once (default: up to 2; 1 = this process
    only); the output is the same."""
    dataset = data if isinstance(data, Dataset) else load_example_tables(data)
    cfg = examples or ExampleConfig()
    watches, searches, users = dataset.watches, dataset.searches, dataset.users
    featurizer = Featurizer(max_items, max_tokens).fit(watches, searches, users)
    features = user_feature_rows(featurizer, users)
    bucket_of = user_buckets(featurizer, num_shards)  # [U] by user row
    parts = [_split(t, featurizer, bucket_of, num_shards) for t in (watches, searches, features)]
    job = (featurizer, cfg, seed, parts, _clean_folder(Path(out) / "candidates"), row_group_rows)
    workers = min(num_workers or min(2, os.cpu_count() or 1), num_shards)
    if workers > 1 and "fork" in mp.get_all_start_methods():
        # forked workers see the buckets without a copy; they run no torch op, whose thread pool
        # a fork can leave locked (the pages, whose generator runs torch, are built below)
        _FORKED_JOB[:] = [job]
        try:
            with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
                counts = list(pool.map(_write_forked_bucket, range(num_shards)))
        finally:
            _FORKED_JOB.clear()
    else:
        counts = [_write_bucket(job, b) for b in range(num_shards)]
    built = None
    if pages is not None:  # in this process: torch's own threads share the generator's matmuls
        built = _write_pages(pages, parts + [_split(users, featurizer, bucket_of, num_shards)],
                             _clean_folder(Path(out) / PAGES), row_group_rows)
    quantiles = {"method": "exact", "rank_error": 0}
    return write_manifest(out, featurizer, cfg, seed, "local", counts, quantiles, built)


def load_example_tables(data: str | Path) -> Dataset:
    """The tables of a data directory that the examples use (watches, searches, users), read and
    validated as ``Dataset.load`` does; impressions and items, as large as the watches, are not read."""
    from ytdnn.data.readers import read_parquet

    data = Path(data)
    if not (data / "watches.parquet").exists():
        Dataset.load(data)  # the loader's own error: no watches.parquet in the data directory
    tables = {t: read_parquet(data / f"{t}.parquet", t) for t in EXAMPLE_TABLES if (data / f"{t}.parquet").exists()}
    return Dataset(**tables, name=data.name).validate()


_FORKED_JOB: list[tuple] = []  # prepare_local's job, as its forked workers inherit it


def _write_bucket(job: tuple, b: int) -> int:
    """Build and write bucket ``b``'s examples; returns their number."""
    featurizer, cfg, seed, parts, folder, row_group_rows = job
    part = [p[b] if p is not None else None for p in parts]
    rows = candidate_example_rows(featurizer, cfg, seed, part[0], part[1], part[2])
    pq.write_table(rows, folder / f"part-{b:05d}.parquet", row_group_size=row_group_rows)
    return rows.num_rows


def _write_forked_bucket(b: int) -> int:
    return _write_bucket(_FORKED_JOB[0], b)


def _write_pages(job: PageJob, parts: list, folder: Path, row_group_rows: int) -> dict:
    """Build and write every bucket's pages; ``parts``: the buckets of the watches, searches,
    encoded features (unused: the generator encodes its own) and users. -> ``job.manifest``."""
    generator = job.load()
    counts = []
    for b in range(len(parts[0])):
        watches, searches, _, users = [p[b] if p is not None else None for p in parts]
        built = page_rows(generator, job.impressions, watches, searches, user_feature_rows(generator.featurizer_, users))
        pq.write_table(built, folder / f"part-{b:05d}.parquet", row_group_size=row_group_rows)
        counts.append(built.num_rows)
    return job.manifest(counts)


def user_buckets(featurizer: Featurizer, num_buckets: int) -> np.ndarray:
    """[U] the bucket of every user row (row 0, the unknown user, in bucket 0)."""
    hashes = np.r_[np.uint64(0), id_hashes(featurizer.users_.tokens_)]
    return (mix(hashes) % np.uint64(num_buckets)).astype(np.int64)


def write_manifest(out: str | Path, featurizer: Featurizer, cfg: ExampleConfig, seed: int, engine: str,
                   counts: list[int], quantiles: dict, pages: dict | None = None) -> dict:
    """Save the featurizer and prepare.json beside the shards; return the manifest. pages:
    ``PageJob.manifest`` when pages were built."""
    out = Path(out)
    featurizer.save(out / "featurizer")
    manifest = {
        "format": FORMAT, "version": 1, "engine": engine, "seed": seed, "examples": cfg.to_dict(),
        "num_examples": int(sum(counts)), "num_shards": len(counts), "example_age_quantiles": quantiles,
    }
    if pages is not None:
        manifest["pages"] = pages
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def read_manifest(prepared: str | Path) -> tuple[dict, Featurizer, list[Path]]:
    """(prepare.json, the featurizer, the shard files sorted by name) of a prepared directory."""
    prepared = Path(prepared)
    shards = sorted((prepared / "candidates").glob("*.parquet"))
    return _manifest(prepared), Featurizer.load(prepared / "featurizer"), shards


def _manifest(prepared: Path) -> dict:
    if not (prepared / MANIFEST).exists():
        raise FileNotFoundError(f"{prepared} holds no {MANIFEST}: run `ytdnn prepare` first")
    manifest = json.loads((prepared / MANIFEST).read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{prepared / MANIFEST} is not a ytdnn prepared directory")
    return manifest


def read_pages(prepared: str | Path) -> tuple[dict, pa.Table]:
    """(the manifest's "pages" entry, the built pages as one impressions table) of a prepared
    directory; a ValueError when it holds no pages."""
    manifest = _manifest(Path(prepared))
    if "pages" not in manifest:
        raise ValueError(f"{prepared} holds no ranker pages: run `ytdnn prepare --model GENERATOR` first")
    files = sorted((Path(prepared) / PAGES).glob("*.parquet"))
    return manifest["pages"], pa.concat_tables([pq.read_table(f) for f in files])


def _split(table: pa.Table | None, featurizer: Featurizer, bucket_of: np.ndarray, n: int) -> list[pa.Table] | None:
    """The rows of ``table`` by their user's bucket: n tables."""
    if table is None:
        return None
    bucket = bucket_of[featurizer.users_.encode(table.column("user_id"))]
    order = np.argsort(bucket, kind="stable")
    ends = np.searchsorted(bucket[order], np.arange(n + 1))
    ordered = table.take(pa.array(order))
    return [ordered.slice(ends[b], ends[b + 1] - ends[b]) for b in range(n)]


def _clean_folder(folder: Path) -> Path:
    """An empty ``folder``: shards of an earlier run must not mix with these."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.parquet"):
        old.unlink()
    return folder
