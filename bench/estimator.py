"""`make bench ONLY=estimator`: YouTubeDNN's rating prediction on ml-1m under the tutorial's split.

The split: the rows of the five fold files of ml-1m-5fold-no-timestamps, concatenated in fold
order, cut by ``sklearn.model_selection.train_test_split(test_size=0.2, random_state=42)``
(protocol "tutorial-80/20"); the model sees users.dat and movies.dat as features. Test RMSE of
``ytdnn-YouTubeDNN`` beside Surprise's peers run here on the same split (``surprise-<name>``) and
the global mean. ``PARAMS`` were chosen on a validation split carved out of the training 80%
(``train_test_split(train, test_size=0.1, random_state=0)``), never on the test 20%; the tries
are in bench/results/estimator_tuning.md.

Speed: the fit's wall time (progress bars on a terminal), and ``batch_predict`` over the test
pairs (the best of 3 calls). Memory: the process's peak resident set after each model. Needs the
bench extra (``pip install -e '.[bench]'``: scikit-surprise, scikit-learn, pandas); what is
missing is reported as a skipped record.
"""

from __future__ import annotations

import resource
import time

import numpy as np

from bench.baselines import movielens_root
from ytdnn.eval.report import Record

BENCHMARK = "estimator"
DATASET = "ml-1m"
PROTOCOL = "tutorial-80/20"
MODEL = "ytdnn-YouTubeDNN"
PEERS = ("BaselineOnly", "SVD", "SVDpp")
# chosen on validation (bench/results/estimator_tuning.md)
PARAMS = {
    "embedding_dim": 64, "hidden_units": [256], "n_classes": 1_000_000, "epochs": 5, "batch_size": 1024,
    "learning_rate": 1e-3, "num_negatives": None, "num_candidates": 500, "ranker_hidden_units": [256, 128],
    "ranker_epochs": 8, "ranker_dropout": 0.3, "rating_loss_weight": 1.0, "rating_class_loss_weight": 1.0,
    "rating_output": "mean", "negatives_per_rating": 3, "autorec_units": 1000, "autorec_weight": None,
    "num_threads": 2, "seed": 0, "verbose": True,
    "name": "ml-1m-tutorial",
}


def tutorial_split(root):
    """(train, test, users, movies) DataFrames of the tutorial split, or None when absent."""
    from sklearn.model_selection import train_test_split

    from ytdnn.datasets import load_movielens

    folds, meta = root / "ml-1m-5fold-no-timestamps", root / "ml-1m"
    data = load_movielens("ml-1m", meta, folds=folds)  # fold files, in fold order
    ratings = data["ratings"][["user_id", "item_id", "rating"]]
    train, test = train_test_split(ratings, test_size=0.2, random_state=42)
    return train, test, data["users"], data["movies"]


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rmse(predicted, truth) -> float:
    return float(np.sqrt(np.mean((np.asarray(predicted, np.float64) - np.asarray(truth, np.float64)) ** 2)))


def _ytdnn(train, test, users, movies) -> Record:
    from ytdnn import YouTubeDNN

    model = YouTubeDNN(**PARAMS)
    start = time.perf_counter()
    model.fit(user_ids=train["user_id"], item_ids=train["item_id"], ratings=train["rating"],
              user_features=users, item_features=movies)
    fit_seconds = time.perf_counter() - start
    pairs = test[["user_id", "item_id"]]
    times, predicted = [], None
    for _ in range(3):
        start = time.perf_counter()
        predicted = model.batch_predict(pairs)
        times.append(time.perf_counter() - start)
    return Record(BENCHMARK, DATASET, PROTOCOL, MODEL, metrics={"RMSE": _rmse(predicted, test["rating"])},
                  seconds={"fit": round(fit_seconds, 1), "batch_predict": round(min(times), 3),
                           **{f"fit_{k}": round(v, 1) for k, v in model.seconds_.items() if k != "fit"}},
                  params={**{k: v for k, v in PARAMS.items() if k != "verbose"}, "test_pairs": len(test),
                          "peak_rss_mb": round(_peak_mb())})


def _peers(train, test) -> list[Record]:
    try:
        import surprise
    except ImportError:
        reason = "scikit-surprise is not installed (pip install -e '.[bench]')"
        return [Record(BENCHMARK, DATASET, PROTOCOL, f"surprise-{n}", skipped=reason) for n in PEERS]
    reader = surprise.Reader(rating_scale=(1, 5))
    trainset = surprise.Dataset.load_from_df(train[["user_id", "item_id", "rating"]], reader).build_full_trainset()
    testset = list(zip(test["user_id"], test["item_id"], test["rating"], strict=True))
    records = [Record(BENCHMARK, DATASET, PROTOCOL, "global-mean",
                      metrics={"RMSE": _rmse(np.full(len(test), train["rating"].mean()), test["rating"])})]
    for name in PEERS:
        algo = getattr(surprise, name)(random_state=0) if name != "BaselineOnly" else surprise.BaselineOnly(verbose=False)
        start = time.perf_counter()
        algo.fit(trainset)
        fit_seconds = time.perf_counter() - start
        start = time.perf_counter()
        predictions = algo.test(testset)
        records.append(Record(
            BENCHMARK, DATASET, PROTOCOL, f"surprise-{name}",
            metrics={"RMSE": surprise.accuracy.rmse(predictions, verbose=False)},
            seconds={"fit": round(fit_seconds, 1), "predict": round(time.perf_counter() - start, 3)},
            params={"defaults": "surprise 1.1.5", "peak_rss_mb": round(_peak_mb())}))
        print(f"  {records[-1].model}: {records[-1].metrics}", flush=True)
    return records


def run() -> list[Record]:
    root = movielens_root()
    models = [MODEL, "global-mean", *(f"surprise-{n}" for n in PEERS)]
    if not (root / "ml-1m-5fold-no-timestamps").is_dir() or not (root / "ml-1m").is_dir():
        reason = f"{root}/ml-1m-5fold-no-timestamps or ml-1m not found (set YTDNN_MOVIELENS)"
        return [Record(BENCHMARK, DATASET, PROTOCOL, m, skipped=reason) for m in models]
    try:
        train, test, users, movies = tutorial_split(root)
    except ImportError as err:
        reason = f"{err.name} is not installed (pip install -e '.[bench]')"
        return [Record(BENCHMARK, DATASET, PROTOCOL, m, skipped=reason) for m in models]
    print(f"{DATASET} {PROTOCOL}: {len(train):,} training and {len(test):,} test ratings", flush=True)
    records = [_ytdnn(train, test, users, movies)]
    print(f"  {MODEL}: {records[0].metrics} {records[0].seconds}", flush=True)
    return records + _peers(train, test)
