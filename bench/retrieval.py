"""`make bench ONLY=retrieval`: the candidate generator on the fixed MovieLens protocols.

For each dataset: train on the validation stage's fit set with early stopping on the validation
targets (every choice is made there), then refit on train + valid for the number of epochs that
validation chose, and report the test figures. Records are named ``ytdnn-candidates`` (the tuned
configuration below) and ``ytdnn-candidates-<ablation>``.

Environment knobs, for tuning runs (never set by `make bench`):
  YTDNN_BENCH_STAGE=valid           stop after the validation stage (no test figure is computed)
  YTDNN_BENCH_OVERRIDES='{"train.lr": 3e-3}'  override settings of the tuned configuration
  YTDNN_BENCH_DATASETS=ml-100k      run only these datasets (comma-separated)
  YTDNN_BENCH_ABLATIONS=0           skip the ablation records
"""

from __future__ import annotations

import json
import os

from bench.baselines import movielens_splits
from ytdnn.candidates import CandidateGenerator
from ytdnn.configuration import TwoStageConfig
from ytdnn.eval.compare import SETTINGS, fit_candidates_and_test
from ytdnn.eval.protocols import P_RANDOM, P_TEMPORAL
from ytdnn.eval.report import Record
from ytdnn.models.candidate import CandidateConfig
from ytdnn.samples.candidate import ExampleConfig
from ytdnn.train.config import TrainConfig

BENCHMARK = "retrieval"
MODEL = "ytdnn-candidates"

# Chosen on the validation stage of each protocol; what was tried there is in
# bench/results/retrieval-tuning.md, the test figures in bench/results/retrieval.md.
TUNED: dict[str, dict[str, dict]] = {
    "ml-100k": {
        "model": {"embedding_dim": 64, "output_dim": 64, "depth": 0, "num_negatives": None},
        "examples": {"max_watch_history": 20, "max_recent_watches": 5, "max_examples_per_user": None},
        "train": {"lr": 3e-3, "batch_size": 256, "max_epochs": 20, "patience": 3},
    },
    "ml-1m": {
        "model": {"embedding_dim": 512, "output_dim": 512, "depth": 0, "num_negatives": None,
                  "use_user_features": False},
        "examples": {"max_watch_history": 100, "max_examples_per_user": 200, "unordered_mode": "holdout",
                     "holdout_keep": 0.2, "holdout_exclude_kept": True},
        "train": {"lr": 3e-3, "batch_size": 128, "max_epochs": 60, "patience": 10, "lr_schedule": "cosine"},
    },
}
ABLATIONS: dict[str, dict] = {
    "depth1": {"depth": 1},
    "depth1-tied": {"depth": 1, "tied_item_embeddings": True},
    "depth1-sampled": {"depth": 1, "num_negatives": 512, "sparse_embeddings": False},  # as measured
}


def configs(dataset: str, overrides: dict) -> tuple[CandidateConfig, ExampleConfig, TrainConfig]:
    """The tuned configuration of ``dataset`` with ``overrides`` (TwoStageConfig keys) on top."""
    monitor = SETTINGS[P_TEMPORAL if dataset == "ml-100k" else P_RANDOM].headline
    tuned = {f"{'candidates' if part == 'model' else part}.{key}": value
             for part, values in TUNED[dataset].items() for key, value in values.items()}
    config = TwoStageConfig().with_settings({"train.progress": False, "train.monitor": monitor, **tuned, **overrides})
    return config.candidates, config.examples, config.train


def _print_epoch(record: dict) -> None:
    if "val" in record:
        val = {k: round(v, 4) for k, v in record["val"].items()}
        print(f"   epoch {record['epoch']}: loss {record['train_loss']:.4f} {val} "
              f"({record['examples_per_second']:.0f} examples/s)", flush=True)


def run() -> list[Record]:
    overrides = json.loads(os.environ.get("YTDNN_BENCH_OVERRIDES", "{}"))
    valid_only = os.environ.get("YTDNN_BENCH_STAGE") == "valid"
    wanted = os.environ.get("YTDNN_BENCH_DATASETS")
    ablations = os.environ.get("YTDNN_BENCH_ABLATIONS", "1") != "0"
    records = []
    for dataset, protocol, split, reason, _, tables in movielens_splits():
        if wanted and dataset not in wanted.split(","):
            continue
        if split is None:
            print(f"skipped {dataset} ({protocol}): {reason}", flush=True)
            records.append(Record(BENCHMARK, dataset, protocol, MODEL, skipped=reason))
            continue
        variants = {MODEL: overrides}
        if ablations:
            variants.update({f"{MODEL}-{name}": {**overrides, **a} for name, a in ABLATIONS.items()})
        for name, variant in variants.items():
            print(f"{dataset} {protocol} {name} {variant}", flush=True)
            cfgs = configs(dataset, variant)
            figures, seconds, params = fit_candidates_and_test(
                split, lambda cfgs=cfgs: CandidateGenerator(*cfgs), tables, SETTINGS[protocol],
                on_log=_print_epoch, test=not valid_only)
            print(f"   valid: best epoch {params['best_epoch']}: {params['valid']}", flush=True)
            metrics = {k: round(v, 4) for k, v in figures.items()}
            seconds = {k: round(v, 1) for k, v in seconds.items()}
            records.append(Record(BENCHMARK, dataset, protocol, name, metrics, seconds, params))
    return records
