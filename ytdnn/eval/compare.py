"""One command to check ytdnn against the baselines on a user's own log (``ytdnn evaluate``).

The log is split by a protocol (``PROTOCOLS``); every choice is made on the validation stage
(EASE's l2 from ``L2_GRID``, the candidate generator's number of epochs by early stopping on the
protocol's headline metric); each model is then refit on train + valid and scored on the test
targets. The records are those ``make bench`` writes (``eval.report.Record``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ytdnn.candidates import CandidateGenerator
from ytdnn.data.schema import Dataset, has_timestamps
from ytdnn.eval.baselines import (
    EASE,
    L2_GRID,
    EASEConfig,
    Popularity,
    choose_on_validation,
    refit_and_test,
)
from ytdnn.eval.metrics import evaluate
from ytdnn.eval.protocols import (
    GLOBAL_TIME,
    P_RANDOM,
    P_TEMPORAL,
    Split,
    global_time_split,
    random_fold_split,
    temporal_split,
)
from ytdnn.eval.report import Record

PROTOCOLS = {"temporal": P_TEMPORAL, "random": P_RANDOM, "global-time": GLOBAL_TIME}
MODELS = ("popularity", "EASE", "ytdnn")
RANDOM_FOLDS = 5  # an unordered log without a fold column is cut into 5 seeded folds, as ml-1m is
TEST_SHARE = 0.1  # global-time: the last tenth of the log's span is the test window


@dataclass(frozen=True)
class ProtocolSettings:
    ks: tuple[int, ...]
    metrics: tuple[str, ...]
    reported: tuple[str, ...]  # the figures that go in the record, in this order
    headline: str  # the one figure the candidate generator early-stops on
    select_on: str  # the validation figure that picks EASE's l2: the steadier, wider cut-off


SETTINGS = {
    P_TEMPORAL: ProtocolSettings((10, 50, 100), ("HR", "NDCG"), ("HR@10", "NDCG@10", "HR@50", "HR@100"),
                                 "HR@10", "HR@100"),
    P_RANDOM: ProtocolSettings((20, 100), ("Recall", "NDCG"), ("Recall@20", "NDCG@20", "Recall@100"),
                               "Recall@20", "Recall@100"),
    GLOBAL_TIME: ProtocolSettings((10, 100), ("Recall", "NDCG", "HR"),
                                  ("Recall@10", "NDCG@10", "HR@10", "Recall@100"), "Recall@10", "Recall@100"),
}


def split_log(watches: pa.Table, protocol: str, seed: int = 0) -> Split:
    """``protocol``: a key of PROTOCOLS or its name. random: the ``fold`` column, or 5 folds drawn
    with ``seed`` (fold 1 tests, fold 2 validates); global-time: the last tenth of the span tests
    and the tenth before it validates."""
    protocol = PROTOCOLS.get(protocol, protocol)
    if protocol == P_TEMPORAL:
        return _check_stages(temporal_split(watches), "every user with 3 or more watches is tested on the last "
                                                      "and validated on the one before")
    if protocol == P_RANDOM:
        if "fold" not in watches.column_names:
            folds = np.random.default_rng(seed).integers(1, RANDOM_FOLDS + 1, len(watches))
            watches = watches.append_column("fold", pa.array(folds))
        return _check_stages(random_fold_split(watches), "fold 1 tests and fold 2 validates, each against "
                                                         "the user's items in the other folds")
    if protocol == GLOBAL_TIME:
        if not has_timestamps(watches):
            raise ValueError("global-time needs timestamps; this log has none (use --protocol random)")
        start, end = (int(v.as_py()) for v in pc.min_max(watches.column("timestamp")).values())
        split = global_time_split(watches, train_end=end + 1 - max(1, round((end + 1 - start) * TEST_SHARE)))
        return _check_stages(split, f"the last tenth of the log's span tests and the tenth before it validates, "
                                    f"for users seen before; the log spans {end - start} s")
    raise ValueError(f"unknown protocol {protocol!r}; choose one of {sorted(PROTOCOLS)}")


def _check_stages(split: Split, how: str) -> Split:
    """The split, or a ValueError when a stage has nothing to fit or no target to score."""
    for name in ("valid", "test"):
        stage = split.stage(name)
        if not len(stage.fit.rows) or not len(stage.eval_users()):
            what = "no watch to train on" if not len(stage.fit.rows) else "no target to score"
            raise ValueError(f"{split.protocol}: this log leaves the {name} stage {what} ({how})")
    return split


def fit_candidates_and_test(
    split: Split, generator: Callable[[], CandidateGenerator], dataset: Dataset,
    settings: ProtocolSettings, on_log=None, test: bool = True, epochs: int | None = None,
) -> tuple[dict[str, float], dict[str, float], dict]:
    """Early-stop on the valid stage, refit on train + valid for the chosen epochs, score the test.

    ``generator()`` makes an unfitted CandidateGenerator. Searches (global-time only) are those
    before each stage's cut. Returns (test figures, seconds, params); with ``test=False`` it stops
    after the validation stage and the figures are empty; with ``epochs`` it skips the validation
    stage (the epochs were chosen already).
    """
    columns = [c for c in ("user_id", "item_id", "timestamp", "watch_time") if c in split.watches.column_names]
    if epochs is not None:
        return _refit_and_test(split, generator, dataset, settings, on_log, columns, epochs, {}, {})
    valid = split.stage("valid")
    start = time.perf_counter()
    gen = generator()
    gen.train_cfg = gen.train_cfg.replace(monitor=settings.headline)

    def validate(g: CandidateGenerator) -> dict[str, float]:
        return evaluate(g.scorer_for(split.user_ids, split.item_ids), valid, ks=settings.ks, metrics=settings.metrics)

    fit_table = valid.fit_table().select(columns)
    gen.fit(fit_table, _searches_before(dataset, fit_table, split), dataset.users, validate=validate, on_log=on_log)
    seconds = {"valid_train": time.perf_counter() - start}
    history = gen.history_
    best = history.best_epoch
    params = {"best_epoch": best, "valid": {k: round(v, 4) for k, v in history.epochs[best]["val"].items()},
              "model": gen.model_cfg.to_dict(), "examples": gen.example_cfg.to_dict(),
              "train": {k: v for k, v in gen.train_cfg.to_dict().items()
                        if k in ("lr", "batch_size", "optimizer", "weight_decay", "max_epochs", "patience")}}
    if not test:
        return {}, seconds, params
    return _refit_and_test(split, generator, dataset, settings, on_log, columns, best + 1, seconds, params)


def _refit_and_test(split, generator, dataset, settings, on_log, columns, epochs, seconds, params):
    stage = split.stage("test")
    start = time.perf_counter()
    refit = generator()
    refit.train_cfg = refit.train_cfg.replace(max_epochs=epochs, patience=None, monitor=None)
    fit_table = stage.fit_table().select(columns)
    refit.fit(fit_table, _searches_before(dataset, fit_table, split), dataset.users, on_log=on_log)
    seconds["test_train"] = time.perf_counter() - start
    start = time.perf_counter()
    figures = evaluate(refit.scorer_for(split.user_ids, split.item_ids), stage, ks=settings.ks, metrics=settings.metrics)
    seconds["eval"] = time.perf_counter() - start
    return figures, seconds, params


def _choose_and_test(split, generators: dict, dataset, settings, on_log) -> tuple[dict, dict, dict]:
    """Each named generator on the valid stage; the best headline figure is refit and tested."""
    valid = {name: fit_candidates_and_test(split, g, dataset, settings, on_log, test=False)
             for name, g in generators.items()}
    best = max(valid, key=lambda name: valid[name][2]["valid"][settings.headline])  # ties: the first
    _, seconds, params = valid[best]
    figures, refit_seconds, _ = fit_candidates_and_test(split, generators[best], dataset, settings, on_log,
                                                        epochs=params["best_epoch"] + 1)
    seconds = {"choose": sum(v[1]["valid_train"] for v in valid.values()), **refit_seconds}
    return figures, seconds, {**params, "auto": {"chosen": best, "valid": {n: v[2]["valid"] for n, v in valid.items()}}}


def _searches_before(dataset: Dataset, fit_table: pa.Table, split: Split) -> pa.Table | None:
    """The searches a stage may see: under a global time cut, those before its last fit watch."""
    if dataset.searches is None or split.protocol != GLOBAL_TIME or not len(fit_table):
        return None
    cut = pc.max(fit_table.column("timestamp"))
    return dataset.searches.filter(pc.less_equal(dataset.searches.column("timestamp"), cut))


def compare(
    dataset: Dataset, protocol: str, models: Sequence[str] = MODELS,
    generator: Callable[[], CandidateGenerator] | dict = CandidateGenerator, *, name: str | None = None,
    benchmark: str = "evaluate", command: str = "", seed: int = 0, on_log=None, progress: bool = False,
) -> list[Record]:
    """Split ``dataset.watches`` by ``protocol``, choose on validation, refit, test each model.

    models: any of "popularity", "EASE", "ytdnn"; generator() makes the unfitted candidate
    generator ("ytdnn", with its configuration), or {name: generator} to choose among on the
    valid stage (``--auto``). Returns one Record per model.
    """
    return compare_on_split(split_log(dataset.watches, protocol, seed), dataset, models, generator, name=name,
                            benchmark=benchmark, command=command, on_log=on_log, progress=progress)


def compare_on_split(
    split: Split, dataset: Dataset, models: Sequence[str] = MODELS,
    generator: Callable[[], CandidateGenerator] | dict = CandidateGenerator, *, name: str | None = None,
    benchmark: str = "evaluate", command: str = "", on_log=None, progress: bool = False,
) -> list[Record]:
    """``compare`` on a split made already (``dataset`` gives the users and searches)."""
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose among {list(MODELS)}")
    settings = SETTINGS[split.protocol]
    records = []
    for model in models:
        start = time.perf_counter()
        if model == "popularity":
            figures, seconds = refit_and_test(Popularity(), split, settings.ks, settings.metrics, progress)
            params = {}
        elif model == "EASE":
            selection = choose_on_validation(lambda l2: EASE(EASEConfig(l2=l2)), L2_GRID, split,
                                             settings.select_on, settings.ks, settings.metrics, progress)
            figures, seconds = refit_and_test(EASE(EASEConfig(l2=selection.best)), split, settings.ks,
                                              settings.metrics, progress)
            params = {"l2": selection.best, "selected_on": f"valid {settings.select_on}",
                      "validation": {str(k): round(v[settings.select_on], 4) for k, v in selection.scores.items()}}
        elif isinstance(generator, dict):
            figures, seconds, params = _choose_and_test(split, generator, dataset, settings, on_log)
        else:
            figures, seconds, params = fit_candidates_and_test(split, generator, dataset, settings, on_log)
        seconds = {"total": time.perf_counter() - start, **seconds}
        records.append(Record(
            benchmark, name or dataset.name, split.protocol, model,
            {m: round(figures[m], 4) for m in settings.reported},
            {k: round(v, 1) for k, v in seconds.items()}, params, command=command,
        ))
    return records
