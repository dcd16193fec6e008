"""Evaluation: fixed protocols, one set of ranking metrics, baselines, benchmark reports."""

from ytdnn.eval.baselines import (
    EASE,
    EASEConfig,
    Popularity,
    Selection,
    choose_on_validation,
    refit_and_test,
)
from ytdnn.eval.interactions import Interactions
from ytdnn.eval.metrics import (
    coverage_at_k,
    evaluate,
    hit_rate_at_k,
    map_at_k,
    ndcg_at_k,
    recall_at_k,
    top_k,
)
from ytdnn.eval.protocols import Split, Stage, global_time_split, random_fold_split, temporal_split
from ytdnn.eval.report import Record, format_table, machine_description, write_results

__all__ = [
    "EASE",
    "EASEConfig",
    "Interactions",
    "Popularity",
    "Record",
    "Selection",
    "Split",
    "Stage",
    "choose_on_validation",
    "coverage_at_k",
    "evaluate",
    "format_table",
    "global_time_split",
    "hit_rate_at_k",
    "machine_description",
    "map_at_k",
    "ndcg_at_k",
    "random_fold_split",
    "recall_at_k",
    "refit_and_test",
    "temporal_split",
    "top_k",
    "write_results",
]
