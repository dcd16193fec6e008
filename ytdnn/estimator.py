"""``ytdnn.YouTubeDNN``: a scikit-learn-like estimator over the two-stage system (the front door).

    model = YouTubeDNN(embedding_dim=64, hidden_units=[1024, 512, 256], epochs=20)
    model.fit(user_ids=train.user_id, item_ids=train.item_id, ratings=train.rating)
    model.predict(7, 42)                       # the predicted rating (or expected watch time)
    model.batch_predict(test[["user_id", "item_id"]])
    model.recommend(7, top_k=10)               # item ids, as Recommender.recommend serves them
    model.save("model.pkl"); YouTubeDNN.load("model.pkl")   # a zip archive: nothing pickled

It composes the modules and never reimplements them: ``fit`` trains a CandidateGenerator
(``ytdnn.candidates``) and a Ranker (``ytdnn.ranking``) and holds them as a Recommender
(``ytdnn.pipeline``), which ``recommend`` calls. The ranker is trained

- on the rated pairs (``Ranker.fit_ratings``, samples/ratings.py) when the log has ratings, with
  the rating heads, or when it has no timestamps (no order to build impressions from);
- else on impressions: the log's own, or pages built from the generator (``fit_ranker``).

Constructor arguments map onto the typed configs (``configs()`` builds them): the candidate
stage's CandidateConfig / ExampleConfig / TrainConfig, the ranker's RankerConfig / TrainConfig,
the rated pairs' RatingConfig and the Recommender's num_candidates.
"""

from __future__ import annotations

import inspect
import json
import numbers
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ytdnn.datasets import RATING, as_dataset, as_ids, as_table, canonical
from ytdnn.features import NotFittedError
from ytdnn.modeldir import ModelDir, ModelDirError
from ytdnn.pipeline import Recommender
from ytdnn.retrieval.generator import nearest_items, queries

KIND = "ytdnn.estimator"
FORMAT_VERSION = 1
ESTIMATOR_FILE = "estimator.json"
STATS_FILE = "stats.npz"
_ARRAY_KEYS = ("user_ids", "item_ids", "ratings", "timestamps", "watch_times", "user_features",
               "item_features", "searches")
# autorec_units=None: the autoencoder's size (ml-1m validation: 1000 units 0.839 alone, 500 0.846)
# and the users up to which it is on (2 x 50,000 x 1,000 weights, 0.8 GB with Adam's moments)
AUTOREC_UNITS, AUTOREC_MAX_USERS = 1000, 50_000
_PICKLE = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


class YouTubeDNN:
    """Candidate generation + ranking (Covington et al. 2016), fit on arrays or tables.

    Every argument is keyword-only; an unknown one is a TypeError naming it.

    embedding_dim: width of the candidate generator's item and search embeddings and of its user
        vector (paper §3.5: 256); also the cap of the ranker's embedding widths, which grow with
        log(vocabulary size) (§4.1).
    hidden_units: the candidate tower's ReLU widths, e.g. [1024, 512, 256] (paper fig. 6, depth 3).
    n_classes: the item vocabulary: the top n_classes items by frequency are the softmax's
        classes (and the ranker's ids); the rest are out of vocabulary (paper: 1M).
    epochs, batch_size, learning_rate: Adam training of both stages (the ranker's epochs:
        ``ranker_epochs`` when set).
    num_negatives: sampled softmax negatives per step (§3.1); None or >= the corpus: full softmax.
    num_candidates: candidates retrieved per request and ranked (the paper's "hundreds").
    ranker_hidden_units: the ranker's ReLU tower (paper table 1's best: [1024, 512, 256]).
    ranker_epochs: the ranker's epochs (None: ``epochs``).
    ranker_dropout: dropout after each of the ranker's ReLU layers.
    rating_loss_weight, rating_class_loss_weight: weights of the rating heads' losses (MSE of the
        rating, cross-entropy over the rating levels) beside the ranker's logistic loss, when fit
        with ratings.
    rating_output: what ``predict`` returns with ratings: "regression" (the value head),
        "classes" (the expectation of the class head), "mean" (the mean of the two), or None:
        "mean" when both loss weights are > 0, else the head that has one.
    negatives_per_rating: unrated items per rated pair that the ranker's logistic head learns
        to tell from the rated ones. Which items a user chose to rate helps predict the ratings:
        on ml-1m validation 0, 1, 2, 3, 4 gave RMSE 0.878, 0.866, 0.863, 0.861, 0.862; the fit
        takes longer with each.
    autorec_units: hidden units of a rating autoencoder (I-AutoRec, ``ytdnn.models.autorec``)
        whose out-of-fold predicted rating the ranker reads as a feature, when fit with ratings.
        None: 1000 on logs of up to 50,000 users (its weights are 2 x users x units floats), else
        none; 0: none. Six autoencoder fits (one per holdout fold, one on every rating).
    autorec_weight: the predicted rating is (1 - w) x the ranker's heads + w x the autoencoder's
        rating. None: w is chosen after training, by least squares on 5% of the rated pairs held
        out of the ranker's labels (``RatingConfig.calibration_share``). A fixed w is not robust:
        on ml-1m validation w 0 gives 0.8444 and 0.5 gives 0.8335, but on a small log whose
        ratings the ranker fits near exactly (the estimator tests' planted one) 0.02 and 0.54
        (bench/results/estimator_tuning.md).
    num_threads: torch threads while fitting (restored after); None leaves them as they are.
    seed: every random draw of fit (weights, examples, negatives); same seed, same model.
    verbose: print each stage and its time, and show the training progress bars.
    name: a label kept in the saved model.
    """

    def __init__(self, *, embedding_dim: int = 256, hidden_units: Sequence[int] = (1024, 512, 256),
                 n_classes: int = 1_000_000, epochs: int = 10, batch_size: int = 256,
                 learning_rate: float = 1e-3, num_negatives: int | None = 4096,
                 num_candidates: int = 500, ranker_hidden_units: Sequence[int] = (1024, 512, 256),
                 ranker_epochs: int | None = None, ranker_dropout: float = 0.0,
                 rating_loss_weight: float = 1.0, rating_class_loss_weight: float = 1.0,
                 rating_output: str | None = None, negatives_per_rating: int = 3,
                 autorec_units: int | None = None, autorec_weight: float | None = None,
                 num_threads: int | None = None, seed: int = 0, verbose: bool = False,
                 name: str | None = None):
        self.embedding_dim = embedding_dim
        self.hidden_units = hidden_units
        self.n_classes = n_classes
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.num_negatives = num_negatives
        self.num_candidates = num_candidates
        self.ranker_hidden_units = ranker_hidden_units
        self.ranker_epochs = ranker_epochs
        self.ranker_dropout = ranker_dropout
        self.rating_loss_weight = rating_loss_weight
        self.rating_class_loss_weight = rating_class_loss_weight
        self.rating_output = rating_output
        self.negatives_per_rating = negatives_per_rating
        self.autorec_units = autorec_units
        self.autorec_weight = autorec_weight
        self.num_threads = num_threads
        self.seed = seed
        self.verbose = verbose
        self.name = name

    # ---- scikit-learn's parameter protocol ----------------------------------------------------

    @classmethod
    def _param_names(cls) -> list[str]:
        return [p.name for p in inspect.signature(cls.__init__).parameters.values()
                if p.kind == p.KEYWORD_ONLY]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """{argument: value} as given to the constructor (``sklearn.base.clone`` rebuilds from it)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> YouTubeDNN:
        """Set constructor arguments; an unknown one is a TypeError naming it. Returns self."""
        unknown = sorted(set(params) - set(self._param_names()))
        if unknown:
            raise TypeError(f"YouTubeDNN has no parameter(s) {unknown}; known: {self._param_names()}")
        for name, value in params.items():
            setattr(self, name, value)
        return self

    _estimator_type = "regressor"  # scikit-learn < 1.6 reads this; later versions __sklearn_tags__

    def __sklearn_tags__(self):
        """What scikit-learn >= 1.6 asks of every estimator (cross_val_score, GridSearchCV): a
        regressor of ratings over [N, 2] (user, item) id pairs, ids being text or ints. scikit-learn
        is not a dependency of ytdnn: this runs only when it asks."""
        from sklearn.utils import InputTags, RegressorTags, Tags, TargetTags

        return Tags(estimator_type="regressor", target_tags=TargetTags(required=False),
                    regressor_tags=RegressorTags(), input_tags=InputTags(string=True, categorical=True),
                    non_deterministic=False)

    def __repr__(self) -> str:
        defaults = type(self)().get_params()
        changed = [f"{k}={v!r}" for k, v in self.get_params().items() if _plain_param(v) != _plain_param(defaults[k])]
        return f"YouTubeDNN({', '.join(changed)})"

    def configs(self, ordered: bool = True, ratings: bool = True, num_users: int = 0) -> dict[str, Any]:
        """The typed configs the arguments map onto: {"candidates": {"model", "examples",
        "train", "max_items"}, "ranker": {"model", "train", "ratings"}, "num_candidates"}.
        ordered: the log has timestamps (else holdout examples); ratings: the log has ratings;
        num_users: the log's users (what autorec_units=None sizes the autoencoder by)."""
        from ytdnn.models.candidate import CandidateConfig
        from ytdnn.models.ranker import RankerConfig
        from ytdnn.samples.candidate import ExampleConfig
        from ytdnn.samples.ratings import RatingConfig
        from ytdnn.train.config import TrainConfig

        if not _is_int(self.num_candidates) or self.num_candidates < 1:
            raise ValueError(f"num_candidates must be an int >= 1, got {self.num_candidates!r}")
        train = TrainConfig(lr=float(self.learning_rate), batch_size=self.batch_size,
                            max_epochs=self.epochs, seed=self.seed, progress=bool(self.verbose),
                            num_threads=self.num_threads)
        widths = tuple(int(w) for w in self.hidden_units)
        candidates = {
            "model": CandidateConfig(embedding_dim=self.embedding_dim, output_dim=self.embedding_dim,
                                     tower_widths=widths, num_negatives=self.num_negatives),
            "examples": ExampleConfig() if ordered else ExampleConfig(unordered_mode="holdout"),
            "train": train, "max_items": self.n_classes,
        }
        tower = "-".join(str(int(w)) for w in self.ranker_hidden_units) or "none"
        # with ratings: the rated bag and the item-bag products, each better on ml-1m validation
        # (bench/results/estimator_tuning.md)
        heads = {"rating_loss_weight": float(self.rating_loss_weight),
                 "rating_class_loss_weight": float(self.rating_class_loss_weight),
                 "rating_output": self._rating_output(), "rated_bag": True, "interactions": True} if ratings else {}
        ranker = {
            "model": RankerConfig(tower=tower, max_items=self.n_classes, dropout=float(self.ranker_dropout),
                                  max_embedding_dim=self.embedding_dim, **heads),
            # rated pairs: a cosine decay of the lr, which ends where constant lr only wobbles
            "train": train.replace(max_epochs=self.epochs if self.ranker_epochs is None else self.ranker_epochs,
                                   lr_schedule="cosine" if ratings else "constant"),
            "ratings": RatingConfig(negatives_per_rating=self.negatives_per_rating, seed=self.seed,
                                    autorec_units=self._autorec_units(ratings, num_users),
                                    autorec_weight=None if self.autorec_weight is None else float(self.autorec_weight)),
        }
        return {"candidates": candidates, "ranker": ranker, "num_candidates": int(self.num_candidates)}

    def _autorec_units(self, ratings: bool, num_users: int) -> int:
        """``autorec_units``, or where None AUTOREC_UNITS for a rated log of up to AUTOREC_MAX_USERS."""
        if self.autorec_units is not None:
            if not _is_int(self.autorec_units) or self.autorec_units < 0:
                raise ValueError(f"autorec_units must be None or an int >= 0, got {self.autorec_units!r}")
            return int(self.autorec_units)
        return AUTOREC_UNITS if ratings and 0 < num_users <= AUTOREC_MAX_USERS else 0

    def _rating_output(self) -> str:
        """``rating_output``, or where None the mean of both heads (ml-1m validation: 5e-4 under
        either alone, bench/results/estimator_tuning.md), else the one head with a loss weight."""
        if not (self.rating_loss_weight > 0 or self.rating_class_loss_weight > 0):
            raise ValueError("rating_loss_weight and rating_class_loss_weight are both 0: no head would learn the "
                             "ratings predict returns; set one of them > 0")
        if self.rating_output is not None:
            return self.rating_output
        if self.rating_loss_weight > 0 and self.rating_class_loss_weight > 0:
            return "mean"
        return "classes" if self.rating_class_loss_weight > 0 else "regression"

    # ---- fit ------------------------------------------------------------------------------------

    def fit(self, dataset: Any = None, y: Any = None, *, watches=None, users=None, items=None,
            **arrays: Any) -> YouTubeDNN:
        """Train both stages; returns self.

        Arrays: ``fit(user_ids=, item_ids=, ratings=None, timestamps=None, watch_times=None,
        user_features=None, item_features=None, searches=None)``: numpy arrays, lists, pandas or
        polars Series, Arrow arrays; the feature tables keyed by user_id / item_id. Tables:
        ``fit(dataset)`` (a Dataset, a watches DataFrame/table, or load_movielens' dict) or
        ``fit(watches=..., users=..., items=...)``; a watches column "rating" holds ratings.
        scikit-learn style: ``fit(X, y)`` with X [N, 2] (user, item) pairs and y the ratings.
        Without timestamps the log is unordered and the holdout examples are used (as on ml-1m).
        Bad input is a ValueError saying what and where.
        """
        unknown = sorted(set(arrays) - set(_ARRAY_KEYS))
        if unknown:
            raise TypeError(f"fit got unknown argument(s) {unknown}; arrays: {list(_ARRAY_KEYS)}")
        if y is not None or (dataset is not None and _is_pairs(dataset)):
            users_, items_ = _pair_columns(dataset, "X")
            data = as_dataset(user_ids=users_, item_ids=items_, ratings=y)
        elif arrays:
            if dataset is not None or watches is not None:
                raise ValueError("give either arrays (user_ids=, item_ids=, ...) or tables, not both")
            data = as_dataset(**arrays)
        else:
            data = canonical(dataset, watches, users, items)
        return self._fit(data)

    def _fit(self, data) -> YouTubeDNN:
        from ytdnn.candidates import CandidateGenerator
        from ytdnn.data.schema import has_timestamps
        from ytdnn.ranking import Ranker

        start = time.perf_counter()
        watches = data.watches
        if not len(watches):
            raise ValueError("the log is empty: fit needs at least one (user, item) pair")
        ordered = has_timestamps(watches)
        ratings = watches.column(RATING).to_numpy(zero_copy_only=False) if RATING in watches.column_names else None
        num_users = len(pc.unique(watches.column("user_id")))
        configs = self.configs(ordered=ordered, ratings=ratings is not None, num_users=num_users)
        c = configs["candidates"]
        self._say(f"fitting the candidate generator on {len(watches):,} watches "
                  f"({'ordered' if ordered else 'unordered: holdout examples'})")
        gen = CandidateGenerator(c["model"], c["examples"], c["train"], max_items=c["max_items"]).fit(
            watches, data.searches, data.users, items=data.items)
        gen.build_index()
        self.seconds_ = {"candidates": time.perf_counter() - start}
        r = configs["ranker"]
        middle = time.perf_counter()
        if ratings is not None or not ordered:
            self._say("fitting the ranker on the rated pairs" + (" with the rating heads" if ratings is not None else ""))
            ranker = Ranker(r["model"], r["train"], r["ratings"]).fit_ratings(
                gen, watches, ratings, users=data.users, items=data.items)
        else:
            from ytdnn.configuration import TwoStageConfig
            from ytdnn.training import fit_ranker

            self._say("fitting the ranker on impressions")
            ranker = fit_ranker(gen, data, TwoStageConfig(ranker=r["model"], ranker_train=r["train"]))
        self.seconds_["ranker"] = time.perf_counter() - middle
        self.recommender_ = Recommender(gen, ranker, configs["num_candidates"])
        self._set_stats(watches, ratings)
        self.seconds_["fit"] = time.perf_counter() - start
        self._say(f"fit in {self.seconds_['fit']:.1f} s")
        return self

    def _say(self, text: str) -> None:
        if self.verbose:
            print(f"[YouTubeDNN] {text}", flush=True)

    def _set_stats(self, watches: pa.Table, ratings: np.ndarray | None) -> None:
        """What predict falls back on: the mean target by user row and by item id, and overall."""
        gen = self.recommender_.candidates
        if ratings is not None:
            target = ratings.astype(np.float64)
        elif "watch_time" in watches.column_names:
            target = watches.column("watch_time").to_numpy(zero_copy_only=False).astype(np.float64)
        else:
            target = np.ones(len(watches))
        users = gen.featurizer_.users_.encode(watches.column("user_id"))
        items = gen.featurizer_.items_.encode(watches.column("item_id"))
        self.stats_ = {
            "user_mean": _means(users, target, len(gen.featurizer_.users_)),
            "item_mean": _means(items, target, gen.featurizer_.num_items),
            "global_mean": np.array([target.mean() if len(target) else 0.0]),
            "scale": np.array([target.min(), target.max()] if len(target) else [0.0, 0.0]),
            "has_ratings": np.array([ratings is not None]),
        }

    # ---- predict --------------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "recommender_"):
            raise NotFittedError("this YouTubeDNN is not fitted yet: call fit first")

    @property
    def has_ratings_(self) -> bool:
        self._check_fitted()
        return bool(self.stats_["has_ratings"][0])

    def predict(self, user_id: Any, item_id: Any = None) -> float | np.ndarray:
        """The predicted rating of (user_id, item_id) when fit with ratings, else the ranker's
        expected watch time exp(logit). One pair -> float; ``predict(pairs)`` (as scikit-learn
        calls it) -> ``batch_predict(pairs)``. Unknown users and items never raise: see
        ``batch_predict``."""
        if item_id is None:
            return self.batch_predict(user_id)
        if np.ndim(user_id) or np.ndim(item_id):
            raise ValueError("predict(user_id, item_id) takes one pair; many go as predict(pairs) or batch_predict")
        return float(self.batch_predict([(user_id, item_id)])[0])

    def batch_predict(self, pairs: Any) -> np.ndarray:
        """float64 [N] for N (user, item) pairs: an [N, 2] array or list of pairs, a DataFrame
        or table with user_id and item_id columns, or a tuple (user_ids, item_ids). Vectorized.

        Unknown ids get a defined answer, never an exception: a user the model has no row for
        (neither ratings nor features at fit) gets the item's mean training rating (or watch
        time), an item out of the vocabulary the user's mean, and when both are unknown the
        global mean. A user known only by features is scored by the model from them. Ids are read
        in the model's id type, as the server reads them: 7 and "7" are one id.
        """
        self._check_fitted()
        user_ids, item_ids = _pair_columns(pairs, "pairs")
        gen = self.recommender_.candidates
        rows = _encode(gen.featurizer_.users_, as_ids(user_ids, "user ids"))
        items = _encode(gen.featurizer_.items_, as_ids(item_ids, "item ids"))
        out = np.empty(len(rows))
        known = (rows > 0) & (items > 0)
        if known.any():
            logits, ratings = self.recommender_.ranker.predict_pairs(gen, rows[known], items[known])
            out[known] = ratings if ratings is not None else np.exp(logits)
        s = self.stats_
        fallback = np.where(items > 0, s["item_mean"][items], s["global_mean"][0])
        fallback = np.where((rows > 0) & (items == 0), s["user_mean"][rows], fallback)
        return np.where(known, out, fallback)

    # ---- recommend ------------------------------------------------------------------------------

    def recommend(self, user_id: Any, top_k: int = 10, exclude_seen: bool = True,
                  return_scores: bool = False) -> list:
        """The top_k item ids for one user, best first (what Recommender.recommend serves);
        return_scores: (item id, score) pairs, the score being the ranker's exp(logit).
        exclude_seen=False also ranks the items the user already watched."""
        return self.recommend_batch([user_id], top_k, exclude_seen, return_scores)[0]

    def recommend_batch(self, user_ids: Any, top_k: int = 10, exclude_seen: bool = True,
                        return_scores: bool = False) -> list[list]:
        """``recommend`` for each of B users -> B lists."""
        self._check_fitted()
        if not len(user_ids):
            return []
        users = _model_ids(self.recommender_.candidates.featurizer_.users_, as_ids(user_ids, "user_ids")).to_pylist()
        if exclude_seen:
            recs = self.recommender_.recommend_batch(users, top_k)
            lists = [(r.item_ids, r.scores) for r in recs]
        else:
            lists = self._recommend_all(users, top_k)
        if return_scores:
            return [[(_py(i), float(s)) for i, s in zip(ids, scores, strict=True)] for ids, scores in lists]
        return [[_py(i) for i in ids] for ids, _ in lists]

    def _recommend_all(self, users: list, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Retrieve num_candidates with nothing excluded (so the retrieved position is the corpus
        rank), rank them, keep the top k."""
        rec = self.recommender_
        gen = rec.candidates
        rows = gen.user_rows(users)
        n = max(rec.num_candidates, k)
        scores, candidates = gen.index_.search(queries(gen.user_vectors(rows), gen.model_), n, exclude=None)
        candidates = np.maximum(candidates, 0)
        scores = np.where(candidates > 0, scores, -np.inf).astype(np.float64)
        ranks = np.broadcast_to(np.arange(1, candidates.shape[1] + 1, dtype=np.float64), scores.shape)
        final = rec.ranker.rank_candidates(gen, gen.streams_, rows, candidates, scores, np.array(ranks),
                                           gen.featurizer_.window_end_ + 1)
        order = np.argsort(-final, axis=1, kind="stable")[:, :k]
        out = []
        for b in range(len(users)):
            top = order[b][np.isfinite(final[b, order[b]])]
            out.append((np.asarray(gen.featurizer_.items_.decode(candidates[b, top])), final[b, top]))
        return out

    def similar_items(self, item_id: Any, top_k: int = 10) -> list:
        """The top_k items nearest the item in the candidate generator's output space v (inner
        product, what the softmax scores with; the server's ``/similar``), itself left out. An
        unknown item gets the most watched items."""
        self._check_fitted()
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be an int >= 1, got {top_k!r}")
        gen = self.recommender_.candidates
        item = int(_encode(gen.featurizer_.items_, as_ids([item_id], "item_id"))[0])
        if item == 0:
            ranked = (np.argsort(-gen.featurizer_.items_.counts_, kind="stable") + 1)[:top_k]
        else:
            ids = nearest_items(gen.index_, gen.model_, np.array([item]), top_k)[1][0]
            ranked = ids[ids > 0]
        return [_py(i) for i in gen.featurizer_.items_.decode(ranked)]

    # ---- evaluate -------------------------------------------------------------------------------

    def evaluate(self, test: Any, metrics: Sequence[str] = ("RMSE", "MAE", "HR@10", "NDCG@10")) -> dict[str, float]:
        """Metrics on held-out rows: test is a DataFrame / table with user_id, item_id (and rating
        for RMSE / MAE). "RMSE", "MAE"; "HR@k", "Recall@k", "NDCG@k", "MAP@k" of the top k
        recommended (seen items excluded) against each user's test items (ytdnn.eval.metrics).
        A test rating outside the scale seen in training is a ValueError naming the row."""
        from ytdnn.eval import metrics as ranking_metrics

        self._check_fitted()
        table = as_table(test, "test")
        if not table.num_rows:
            raise ValueError("test is empty: evaluate needs at least one (user, item) row")
        user_ids, item_ids = _pair_columns(table, "test")
        out: dict[str, float] = {}
        errors = [m for m in metrics if m in ("RMSE", "MAE")]
        if errors:
            truth = self._test_ratings(table)
            predicted = self.batch_predict((user_ids, item_ids))
            if "RMSE" in errors:
                out["RMSE"] = float(np.sqrt(np.mean((predicted - truth) ** 2)))
            if "MAE" in errors:
                out["MAE"] = float(np.mean(np.abs(predicted - truth)))
        functions = {"HR": ranking_metrics.hit_rate_at_k, "Recall": ranking_metrics.recall_at_k,
                     "NDCG": ranking_metrics.ndcg_at_k, "MAP": ranking_metrics.map_at_k}
        cuts = {}
        for m in metrics:
            if m in errors:
                continue
            name, _, k = m.partition("@")
            if name not in functions or not k.isdigit() or int(k) < 1:
                raise ValueError(f"unknown metric {m!r}; known: RMSE, MAE, and HR/Recall/NDCG/MAP@k")
            cuts[m] = (functions[name], int(k))
        if cuts:
            out.update(self._ranking_metrics(user_ids, item_ids, cuts))
        return out

    def _test_ratings(self, table: pa.Table) -> np.ndarray:
        from ytdnn.datasets import as_numbers

        column = RATING if RATING in table.column_names else "watch_time"
        if column not in table.column_names:
            raise ValueError(f"RMSE and MAE need a {RATING!r} column in test; it has {table.column_names}")
        truth = as_numbers(table.column(column), f"test[{column!r}]")
        low, high = self.stats_["scale"]
        outside = (truth < low) | (truth > high)
        if self.has_ratings_ and outside.any():
            row = int(np.flatnonzero(outside)[0])
            raise ValueError(f"test[{column!r}] row {row}: rating {truth[row]} is outside the scale "
                             f"seen in training [{low}, {high}]")
        return truth

    def _ranking_metrics(self, user_ids, item_ids, cuts: dict) -> dict[str, float]:
        users = as_ids(user_ids, "test user_id").to_numpy(zero_copy_only=False)
        items = _model_ids(self.recommender_.candidates.featurizer_.items_, as_ids(item_ids, "test item_id"))
        if pa.types.is_integer(items.type):  # text that is no int: a target no recommended id matches
            items = pc.fill_null(items, np.iinfo(np.int64).min)
        items = items.to_numpy(zero_copy_only=False)
        distinct, inverse = np.unique(users, return_inverse=True)
        k = max(k for _, k in cuts.values())
        lists = self.recommend_batch(distinct, k)
        catalogue = np.unique(np.concatenate([items, np.concatenate([np.asarray(x, items.dtype) for x in lists] or [items[:0]])]))
        top = np.full((len(distinct), k), -1, np.int64)
        for b, ids in enumerate(lists):
            top[b, : len(ids)] = np.searchsorted(catalogue, np.asarray(ids, items.dtype))
        targets = [[] for _ in distinct]
        for u, i in zip(inverse.tolist(), np.searchsorted(catalogue, items).tolist(), strict=True):
            targets[u].append(i)
        return {m: float(np.mean(fn(top, targets, cut))) for m, (fn, cut) in cuts.items()}

    def score(self, X: Any, y: Any) -> float:
        """scikit-learn's score: minus the RMSE of predict(X) against y (higher is better)."""
        from ytdnn.datasets import as_numbers

        truth = as_numbers(y, "y")
        predicted = self.batch_predict(X)
        if len(predicted) != len(truth):
            raise ValueError(f"score: {len(predicted)} pairs in X but {len(truth)} ratings in y")
        return -float(np.sqrt(np.mean((predicted - truth) ** 2)))

    # ---- save / load ----------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """A model directory at ``path``, or, when ``path`` names a file (it has a suffix: .zip,
        .ytdnn, .pkl, ...), one zip archive of that directory. Nothing is pickled whatever the
        suffix: weights are safetensors, the rest JSON and .npz (ytdnn.modeldir)."""
        self._check_fitted()
        path = Path(path)
        if path.is_file() and not path.suffix:
            raise ValueError(f"{path} is a file: save writes a directory there, or a zip archive to a path "
                             "with a suffix (model.zip)")
        if path.suffix and not path.is_dir():
            path.parent.mkdir(parents=True, exist_ok=True)  # as a directory's save makes its parents
            with tempfile.TemporaryDirectory() as tmp:
                self._save_dir(Path(tmp) / "model")
                partial = path.with_name(path.name + ".partial")
                with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
                    for file in sorted((Path(tmp) / "model").rglob("*")):
                        if file.is_file():
                            archive.write(file, file.relative_to(Path(tmp) / "model").as_posix())
                os.replace(partial, path)
            return path
        return self._save_dir(path)

    def _save_dir(self, directory: Path) -> Path:
        self.recommender_.save(directory)
        np.savez(directory / STATS_FILE, **self.stats_)
        params = {k: _plain_param(v) for k, v in self.get_params().items()}
        document = {"format_version": FORMAT_VERSION, "kind": KIND, "params": params}
        (directory / ESTIMATOR_FILE).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
        return directory

    @classmethod
    def load(cls, path: str | Path) -> YouTubeDNN:
        """A model saved by ``save``: a directory or an archive file. A pickle (or a torch.save
        archive) is refused with an error saying so: ytdnn never unpickles. Any failure is a
        ModelDirError (a ValueError) naming the path and the file."""
        path = Path(path)
        if path.is_file():
            with tempfile.TemporaryDirectory() as tmp:
                _extract(path, Path(tmp))
                return cls._load_dir(Path(tmp), shown=path)
        return cls._load_dir(path, shown=path)

    @classmethod
    def _load_dir(cls, directory: Path, shown: Path) -> YouTubeDNN:
        md = ModelDir(directory, what="YouTubeDNN model")
        try:
            with md.loading():
                document = md.read_json(ESTIMATOR_FILE)
                if not isinstance(document, dict) or document.get("kind") != KIND:
                    raise md.error(f"not a {KIND!r} document")
                if document.get("format_version") != FORMAT_VERSION:
                    raise md.error(f"format_version {document.get('format_version')} is not {FORMAT_VERSION}")
                if sorted(document) != ["format_version", "kind", "params"] or not isinstance(document["params"], dict):
                    raise md.error(f"holds {sorted(document)}: expected format_version, kind and params (an object)")
                unknown = sorted(set(document["params"]) - set(cls._param_names()))
                if unknown:
                    raise md.error(f"unknown parameter(s) {unknown}")
                model = cls(**document["params"])
                with np.load(md.file(STATS_FILE), allow_pickle=False) as arrays:
                    model.stats_ = {key: arrays[key] for key in
                                    ("user_mean", "item_mean", "global_mean", "scale", "has_ratings")}
                md.current = ESTIMATOR_FILE
                model.configs(ratings=bool(model.stats_["has_ratings"][0]))  # each parameter checked as fit checks it
                model.recommender_ = Recommender.load(directory)
        except ModelDirError as err:
            raise ModelDirError(str(err).replace(str(directory), str(shown), 1)) from err
        gen = model.recommender_.candidates
        if (len(model.stats_["user_mean"]) != len(gen.featurizer_.users_)
                or len(model.stats_["item_mean"]) != gen.featurizer_.num_items):
            raise ModelDirError(f"{shown}: {STATS_FILE}: does not fit the model's vocabularies")
        return model


def load(path: str | Path) -> YouTubeDNN | Recommender:
    """A saved model: a YouTubeDNN (``YouTubeDNN.save``: directory or archive), else a two-stage
    Recommender directory (``Recommender.save``). Nothing is ever unpickled."""
    path = Path(path)
    if path.is_file() or (path / ESTIMATOR_FILE).exists():
        return YouTubeDNN.load(path)
    return Recommender.load(path)


def _extract(archive: Path, into: Path) -> None:
    """Unzip a saved model into ``into``: regular files only, every name inside it. A pickle or
    a torch.save archive is refused by name, as is anything that is not a zip."""
    with open(archive, "rb") as f:
        head = f.read(4)
    if head[:2] in _PICKLE:
        raise ModelDirError(f"{archive}: a pickle file: ytdnn never unpickles; save models with "
                            "YouTubeDNN.save and load them with YouTubeDNN.load")
    if not zipfile.is_zipfile(archive):
        raise ModelDirError(f"{archive}: not a ytdnn model archive (a zip written by YouTubeDNN.save)")
    with zipfile.ZipFile(archive) as z:
        names = z.namelist()
        if any(n.endswith(".pkl") for n in names):
            raise ModelDirError(f"{archive}: a torch.save archive (pickles): ytdnn never unpickles")
        root = into.resolve()
        for info in z.infolist():
            target = (root / info.filename).resolve()
            is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
            if info.filename.startswith("/") or not target.is_relative_to(root) or is_link:
                raise ModelDirError(f"{archive}: {info.filename}: names a file outside the archive's model")
            if info.is_dir():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _plain_param(value: Any) -> Any:
    """A constructor argument as JSON holds it: NumPy values as Python ones, sequences as lists."""
    if isinstance(value, np.ndarray | tuple | list):
        return [_plain_param(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


def _model_ids(vocab, ids: pa.Array) -> pa.Array:
    """``ids`` in the model's id type, as the server reads them (``serve.events.coerce_id``): ints
    as their decimal text for a model of str ids; for a model of int ids, each text that is an
    int literal as that int, any other text null (an id the model cannot know)."""
    if ids.type == vocab.token_array.type or not len(ids):
        return ids.cast(vocab.token_array.type)
    if vocab.token_type_ == "str":
        return ids.cast(pa.string())
    text = pc.utf8_trim_whitespace(ids)
    literal = pc.match_substring_regex(text, r"^[+-]?\d{1,18}$")
    return pc.if_else(literal, pc.cast(pc.if_else(literal, text, "0"), pa.int64()), pa.scalar(None, pa.int64()))


def _encode(vocab, ids: pa.Array) -> np.ndarray:
    """Vocabulary ids [N] of ``ids`` (``_model_ids``); unknown ids are 0."""
    return vocab.encode(_model_ids(vocab, ids))


def _means(index: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """Mean of values [N] per index [N] in 0..size-1 -> [size]; the overall mean where none."""
    counts = np.bincount(index, minlength=size)
    sums = np.bincount(index, weights=values, minlength=size)
    overall = values.mean() if len(values) else 0.0
    return np.where(counts > 0, sums / np.maximum(counts, 1), overall)


def _is_pairs(value: Any) -> bool:
    """An [N, 2] array or a list of (user, item) pairs (not a table)."""
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], (list, tuple)):
        return True
    return isinstance(value, np.ndarray) and value.ndim == 2


def _pair_columns(pairs: Any, what: str) -> tuple[Any, Any]:
    """(user ids, item ids) of pairs given as an [N, 2] array, a list of pairs, a table or
    DataFrame (user_id and item_id columns, else its first two), or a tuple of two columns."""
    if isinstance(pairs, tuple) and len(pairs) == 2 and np.ndim(pairs[0]) == 1 and not _is_pairs(pairs):
        users, items = pairs
    elif isinstance(pairs, np.ndarray) and pairs.ndim == 2 and pairs.shape[1] == 2 and pairs.dtype != object:
        users, items = pairs[:, 0], pairs[:, 1]
    elif _is_pairs(pairs) or (isinstance(pairs, list) and not pairs):
        widths = {len(p) for p in pairs} if not isinstance(pairs, np.ndarray) else {pairs.shape[1]}
        if widths - {2}:
            raise ValueError(f"{what} must be (user, item) pairs, an [N, 2] array; got rows of {sorted(widths)} values")
        array = np.asarray(pairs, dtype=object).reshape(-1, 2) if len(pairs) else np.zeros((0, 2), np.int64)
        users, items = _column_values(array[:, 0]), _column_values(array[:, 1])
    else:
        table = as_table(pairs, what)
        names = table.column_names
        if "user_id" in names and "item_id" in names:
            users, items = table.column("user_id"), table.column("item_id")
        elif len(names) >= 2:
            users, items = table.column(0), table.column(1)
        else:
            raise ValueError(f"{what} needs user_id and item_id columns, got {names}")
    if len(users) != len(items):
        raise ValueError(f"{what}: {len(users)} user ids but {len(items)} item ids")
    return users, items


def _column_values(column: np.ndarray) -> list:
    return [v.item() if isinstance(v, np.generic) else v for v in column.tolist()]


def _py(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
