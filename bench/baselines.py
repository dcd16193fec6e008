"""Baselines benchmark: popularity and EASE on ml-100k (P-TEMPORAL) and ml-1m (P-RANDOM).

MovieLens is read from ``$YTDNN_MOVIELENS``, else ``../shared/data/movielens`` beside the repo
(its licence forbids copying it into the project). A dataset that is not there is reported as a
skipped record, never left out silently.

EASE's l2 is chosen on the validation stage from ``L2_GRID`` by the protocol's widest cut-off
(HR@100 / Recall@100): with one held-out item per user on 943 users, HR@10 moves by one user
(0.001) between neighbouring values, so the wider cut-off is the steadier judge. The reported
figures are test figures of the model refit on train + valid.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

from ytdnn.data.movielens import read_movielens, read_movielens_folds
from ytdnn.data.schema import Dataset
from ytdnn.eval.compare import compare_on_split
from ytdnn.eval.protocols import P_RANDOM, P_TEMPORAL, Split, random_fold_split, temporal_split
from ytdnn.eval.report import Record

BENCHMARK = "baselines"
MODELS = ("popularity", "EASE")
REPO = Path(__file__).resolve().parents[1]


def movielens_root() -> Path:
    return Path(os.environ.get("YTDNN_MOVIELENS", REPO.parent / "shared" / "data" / "movielens"))


def _read(dataset: str, root: Path):
    if dataset == "ml-100k":
        return read_movielens(root / "ml-100k")
    meta = root / "ml-1m"
    return read_movielens_folds(
        root / "ml-1m-5fold-no-timestamps", meta_dir=meta if meta.is_dir() else None
    )


def movielens_splits(shift: int = 0) -> Iterator[tuple[str, str, Split | None, str, float, Dataset | None]]:
    """Yield (dataset, protocol, split or None, skip reason, seconds to load and split, tables).
    shift: P-TEMPORAL's targets that many rows earlier (``temporal_split``), for validation only."""
    root = movielens_root()
    for dataset, folder, protocol in (
        ("ml-100k", "ml-100k", P_TEMPORAL),
        ("ml-1m", "ml-1m-5fold-no-timestamps", P_RANDOM),
    ):
        if not (root / folder).is_dir():
            yield dataset, protocol, None, f"{root / folder} not found (set YTDNN_MOVIELENS)", 0.0, None
            continue
        start = time.perf_counter()
        tables = _read(dataset, root)
        watches = tables.watches
        split = temporal_split(watches, shift) if protocol == P_TEMPORAL else random_fold_split(watches)
        yield dataset, protocol, split, "", time.perf_counter() - start, tables


def run() -> list[Record]:
    records = []
    for dataset, protocol, split, reason, load_seconds, tables in movielens_splits():
        if split is None:
            print(f"skipped {dataset} ({protocol}): {reason}", flush=True)
            records += [Record(BENCHMARK, dataset, protocol, m, skipped=reason) for m in MODELS]
            continue
        print(f"{dataset} {protocol}: {split.summary()}", flush=True)
        for record in compare_on_split(split, tables, MODELS, name=dataset, benchmark=BENCHMARK, progress=True):
            record.seconds = {"load": round(load_seconds, 3), **record.seconds}
            print(f"  {record.model}: {record.metrics} {record.params}", flush=True)
            records.append(record)
    return records
