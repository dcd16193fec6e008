"""ytdnn.YouTubeDNN: the scikit-learn-like front door over the two-stage system.

One small model is fitted per module (``fitted``) on a planted ratings log: a user of trait a
rates an item of trait b 5 stars when a == b, else 1, so the global mean is 2 stars off on
every rating and a model that learns the traits from the rated bag is near exact.
"""

from __future__ import annotations

import itertools
import json
import pickle

import numpy as np
import pyarrow as pa
import pytest
import torch

import ytdnn
from ytdnn import Recommender, YouTubeDNN
from ytdnn.modeldir import ModelDirError

NUM_USERS, NUM_ITEMS, PER_USER = 60, 40, 20
SMALL = {"embedding_dim": 16, "hidden_units": [32], "n_classes": 1000, "epochs": 30, "batch_size": 64,
         "learning_rate": 3e-3, "num_negatives": None, "num_candidates": 20, "ranker_hidden_units": [32, 16],
         "num_threads": 1, "seed": 0}


def planted(seed: int = 0) -> dict[str, np.ndarray]:
    """PER_USER distinct items for each user, rated 5 where the traits (id parity) agree, else 1."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(NUM_USERS), PER_USER)
    items = np.concatenate([rng.choice(NUM_ITEMS, PER_USER, replace=False) for _ in range(NUM_USERS)])
    ratings = np.where(users % 2 == items % 2, 5.0, 1.0)
    return {"user_ids": users, "item_ids": items, "ratings": ratings}


def split(log: dict, test_share: float = 0.2, seed: int = 0) -> tuple[dict, dict]:
    test = np.random.default_rng(seed).random(len(log["user_ids"])) < test_share
    return {k: v[~test] for k, v in log.items()}, {k: v[test] for k, v in log.items()}


@pytest.fixture(scope="module")
def data():
    return split(planted())


@pytest.fixture(scope="module")
def fitted(data):
    train, _ = data
    return YouTubeDNN(**SMALL).fit(**train)


def rmse(predicted, truth) -> float:
    return float(np.sqrt(np.mean((np.asarray(predicted) - truth) ** 2)))


# ---- learning --------------------------------------------------------------------------------------


def test_a_tiny_rating_model_learns_the_planted_traits(fitted, data):
    train, test = data
    pairs = np.stack([test["user_ids"], test["item_ids"]], axis=1)
    global_mean = rmse(np.full(len(pairs), train["ratings"].mean()), test["ratings"])
    assert global_mean > 1.9  # the traits are the whole signal
    assert rmse(fitted.batch_predict(pairs), test["ratings"]) < 0.35 * global_mean


def test_the_quickstart_flow(fitted, data, tmp_path):
    train, test = data
    u, i = int(test["user_ids"][0]), int(test["item_ids"][0])
    one = fitted.predict(u, i)
    assert isinstance(one, float) and 1.0 <= one <= 5.0  # clipped to the rating scale
    pairs = list(zip(test["user_ids"][:100].tolist(), test["item_ids"][:100].tolist(), strict=True))
    many = fitted.batch_predict(pairs)
    # batch = single up to float rounding: BLAS picks its kernel by the number of rows
    assert many.shape == (len(pairs),) and many[0] == pytest.approx(one, rel=1e-6)
    assert np.array_equal(fitted.predict(np.array(pairs)), many)  # predict(X), as sklearn calls it
    top = fitted.recommend(u, top_k=10)
    assert len(top) == 10 and len(set(top)) == 10
    seen = set(train["item_ids"][train["user_ids"] == u].tolist())
    assert not seen & set(top)  # exclude_seen=True
    fitted.save(tmp_path / "youtubednn_model.pkl")
    again = YouTubeDNN.load(tmp_path / "youtubednn_model.pkl")
    assert again.predict(u, i) == one
    assert again.get_params() == fitted.get_params()


def test_unknown_users_and_items_get_the_documented_fallbacks(fitted, data):
    train, _ = data
    user, item = 0, 1
    item_mean = train["ratings"][train["item_ids"] == item].mean()
    user_mean = train["ratings"][train["user_ids"] == user].mean()
    got = fitted.batch_predict([(999, item), (user, 999), (999, 998)])
    assert got.tolist() == pytest.approx([item_mean, user_mean, train["ratings"].mean()])


def test_ids_are_read_in_the_models_id_type_as_the_server_reads_them(fitted):
    assert fitted.predict("7", "3") == fitted.predict(7, 3)  # "7" on a model of int ids is user 7
    assert fitted.recommend(" 7", top_k=5) == fitted.recommend(7, top_k=5)
    assert fitted.batch_predict([]).shape == (0,)
    # text that is no int is an id the model cannot know: the documented fallback, as for 999
    assert fitted.predict("abc", 3) == fitted.predict(999, 3)
    assert fitted.recommend("abc", top_k=5) == fitted.recommend(12345, top_k=5)
    with pytest.raises(ValueError, match="the log is empty"):
        YouTubeDNN(**SMALL).fit(user_ids=[], item_ids=[])
    as_ints = pa.table({"user_id": [0, 7], "item_id": [1, 3]})
    as_text = pa.table({"user_id": ["0", "7"], "item_id": ["1", "3"]})
    assert fitted.evaluate(as_text, metrics=("HR@10",)) == fitted.evaluate(as_ints, metrics=("HR@10",))
    with pytest.raises(ValueError, match="test is empty"):
        fitted.evaluate(as_ints.slice(0, 0))


def test_recommend_forms_and_the_recommender_agree(fitted):
    rec = fitted.recommender_
    assert isinstance(rec, Recommender)
    for user in (0, 7, 12345):  # 12345: unknown, served as cold start
        assert fitted.recommend(user, top_k=5) == rec.recommend(user, k=5).item_ids.tolist()
    scored = fitted.recommend(7, top_k=5, return_scores=True)
    assert [i for i, _ in scored] == fitted.recommend(7, top_k=5)
    assert all(a[1] >= b[1] for a, b in itertools.pairwise(scored))
    assert fitted.recommend_batch([0, 7], top_k=5) == [fitted.recommend(0, 5), fitted.recommend(7, 5)]
    everything = fitted.recommend(7, top_k=NUM_ITEMS, exclude_seen=False)
    assert set(fitted.recommend(7, top_k=NUM_ITEMS)) < set(everything)
    similar = fitted.similar_items(3, top_k=5)
    assert len(similar) == 5 and 3 not in similar
    everything_else = fitted.similar_items(3, top_k=10 * NUM_ITEMS)  # the item itself, never
    assert len(everything_else) == NUM_ITEMS - 1 and 3 not in everything_else
    assert everything_else[:5] == similar
    with pytest.raises(ValueError, match="top_k must be an int >= 1"):
        fitted.similar_items(3, top_k=-3)
    assert len(fitted.similar_items("no such item", top_k=3)) == 3  # the most watched instead


def test_evaluate_reuses_the_metrics(fitted, data):
    _, test = data
    table = pa.table({"user_id": test["user_ids"], "item_id": test["item_ids"], "rating": test["ratings"]})
    scores = fitted.evaluate(table, metrics=("RMSE", "MAE", "HR@10", "NDCG@10"))
    pairs = np.stack([test["user_ids"], test["item_ids"]], axis=1)
    assert scores["RMSE"] == pytest.approx(rmse(fitted.batch_predict(pairs), test["ratings"]))
    assert 0.0 <= scores["NDCG@10"] <= scores["HR@10"] <= 1.0
    with pytest.raises(ValueError, match="unknown metric"):
        fitted.evaluate(table, metrics=("AUC",))


# ---- parameters ------------------------------------------------------------------------------------


def test_clone_and_get_set_params_round_trip():
    base = pytest.importorskip("sklearn.base")
    model = YouTubeDNN(**SMALL, name="run-1")
    params = model.get_params()
    assert params["hidden_units"] is SMALL["hidden_units"] and params["name"] == "run-1"
    twin = base.clone(model)
    assert twin is not model and twin.get_params() == params
    assert model.set_params(epochs=3) is model and model.epochs == 3
    assert YouTubeDNN(**model.get_params()).get_params() == model.get_params()


def test_unknown_arguments_are_type_errors_naming_them():
    with pytest.raises(TypeError, match="embeding_dim"):
        YouTubeDNN(embeding_dim=64)
    with pytest.raises(TypeError):
        YouTubeDNN(64)  # keyword-only
    with pytest.raises(TypeError, match="layers"):
        YouTubeDNN().set_params(layers=3)
    with pytest.raises(TypeError, match="user_id"):
        YouTubeDNN().fit(user_id=[1], item_ids=[1])


# ---- bad input: one error each, saying what and where ---------------------------------------------


@pytest.mark.parametrize(("arrays", "message"), [
    ({"user_ids": [1, 2, 3], "item_ids": [1, 2], "ratings": [1.0, 2.0, 3.0]},
     r"different lengths: \{'user_ids': 3, 'item_ids': 2, 'ratings': 3\}$"),  # only the arrays given
    ({"user_ids": [1.0, float("nan")], "item_ids": [1, 2]}, "user_ids: NaN id at row 1"),
    ({"user_ids": [1, 2], "item_ids": [1, None]}, "item_ids: missing id at row 1"),
    ({"user_ids": [1, 2], "item_ids": [1, 2], "ratings": [4.0, float("nan")]}, "ratings: NaN .* row 1"),
    ({"user_ids": [1, 2], "item_ids": [1, 2], "watch_times": [3.0, -1.0]}, "watch_times: negative value -1.0 at row 1"),
])
def test_bad_arrays(arrays, message):
    with pytest.raises(ValueError, match=message):
        YouTubeDNN().fit(**arrays)


def test_category_ids_are_read_as_their_values():
    import pandas as pd

    from ytdnn.datasets import as_dataset

    users = pd.Series(["a", "b", "a"]).astype("category")
    assert as_dataset(user_ids=users, item_ids=[1, 2, 3]).watches["user_id"].to_pylist() == ["a", "b", "a"]


def test_a_table_missing_a_column_is_named():
    with pytest.raises(ValueError, match="'item_id'"):
        YouTubeDNN().fit(watches=pa.table({"user_id": [1, 2], "rating": [3.0, 4.0]}))
    with pytest.raises(ValueError, match="'user_id'"):
        YouTubeDNN().fit(user_ids=[1], item_ids=[1], user_features=pa.table({"age": [3.0]}))


def test_a_rating_outside_the_scale_is_an_error_at_evaluate(fitted):
    test = pa.table({"user_id": [0, 1], "item_id": [1, 2], "rating": [5.0, 6.0]})
    with pytest.raises(ValueError, match=r"row 1: rating 6.0 is outside the scale seen in training \[1.0, 5.0\]"):
        fitted.evaluate(test, metrics=("RMSE",))


def test_unfitted_use_says_fit_first():
    with pytest.raises(ValueError, match="fit first"):
        YouTubeDNN().predict(1, 2)


# ---- save / load -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["model", "model.zip", "model.pkl", "new/folders/model.pkl"])
def test_save_load_gives_identical_predictions_and_recommendations(fitted, data, tmp_path, name):
    _, test = data
    pairs = np.stack([test["user_ids"], test["item_ids"]], axis=1)
    path = fitted.save(tmp_path / name)
    assert path.is_dir() == (name == "model")  # a file's missing folders are made, as a directory's
    for again in (YouTubeDNN.load(path), ytdnn.load(path)):
        assert np.array_equal(again.batch_predict(pairs), fitted.batch_predict(pairs))
        assert again.recommend_batch([0, 5, 9], 8) == fitted.recommend_batch([0, 5, 9], 8)
    if path.is_file():  # the archive holds no pickle: it is the model directory, zipped
        import zipfile

        names = zipfile.ZipFile(path).namelist()
        assert "estimator.json" in names and "ranker/ranker.safetensors" in names
    assert Recommender.load(path).recommend(5, 8).item_ids.tolist() == fitted.recommend(5, 8) if path.is_dir() else True


def test_a_pickle_is_refused_and_never_unpickled(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    path = tmp_path / "youtubednn_model.pkl"
    path.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(ModelDirError, match="a pickle file: ytdnn never unpickles"):
        YouTubeDNN.load(path)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "torch.pt")
    with pytest.raises(ModelDirError, match="torch.save archive"):
        YouTubeDNN.load(tmp_path / "torch.pt")
    (tmp_path / "junk.bin").write_bytes(b"not a model")
    with pytest.raises(ModelDirError, match="not a ytdnn model archive"):
        YouTubeDNN.load(tmp_path / "junk.bin")


# ---- the pieces underneath: rating examples and the rating heads -----------------------------------


def test_a_rating_never_enters_its_own_bag():
    from ytdnn.samples.ratings import holdout_contexts

    users = np.array([1, 1, 1, 1, 2, 2, 2])
    ctx = holdout_contexts(users, None, num_users=3, folds=3, rng=np.random.default_rng(0))
    for row in range(len(users)):
        c = ctx.example_context[row]
        bag = ctx.stream[ctx.offsets[c] : ctx.example_end[row]]
        # the bag: every other rating of the user outside the row's fold, never the row itself
        fold_mates = ctx.example_context == c
        assert sorted(bag.tolist()) == np.flatnonzero((users == users[row]) & ~fold_mates).tolist()
        assert row not in bag
    times = np.array([10, 20, 20, 30, 5, 5, 9])  # ordered: strictly earlier ratings only
    ctx = holdout_contexts(users, times, num_users=3, folds=3, rng=np.random.default_rng(0))
    bags = [sorted(ctx.stream[ctx.offsets[ctx.example_context[r]] : ctx.example_end[r]].tolist())
            for r in range(len(users))]
    assert bags == [[], [0], [0], [0, 1, 2], [], [], [4, 5]]


def test_the_rating_heads_add_their_weighted_losses_on_rated_rows_only():
    from ytdnn.models.losses import weighted_logistic_loss
    from ytdnn.models.ranker import RankerConfig, RankerModel, RankerSizes
    from ytdnn.samples.ratings import RatedBatch

    cfg = RankerConfig(tower="8", rating_loss_weight=0.5, rating_class_loss_weight=2.0, score_skip=False)
    model = RankerModel(cfg, RankerSizes(num_items=5, num_continuous=2, rating_levels=(1.0, 3.0, 5.0),
                                         rating_mean=3.0))
    empty = torch.zeros(0, dtype=torch.int64)
    batch = RatedBatch(
        items=torch.tensor([1, 2, 3]), watch_ids=torch.tensor([1, 2]), watch_offsets=torch.tensor([0, 1, 2]),
        last_ids=empty, last_offsets=torch.zeros(3, dtype=torch.int64),
        user_categorical=torch.zeros(3, 0, dtype=torch.int64), user_continuous=torch.zeros(3, 0),
        item_categorical=torch.zeros(3, 0, dtype=torch.int64), category_ids=empty,
        category_offsets=torch.zeros(3, dtype=torch.int64), continuous=torch.rand(3, 2, generator=torch.Generator().manual_seed(0)),
        labels=torch.tensor([1.0, 1.0, 0.0]), weights=torch.tensor([3.0, 5.0, 1.0]),
        ratings=torch.tensor([1.0, 5.0, float("nan")]))
    logits, hidden = model.outputs(batch)
    value = 3.0 + model.rating_value(hidden[:2]).squeeze(1)
    classes = model.rating_classes(hidden[:2])
    expected = (weighted_logistic_loss(logits, batch.labels, batch.weights)
                + 0.5 * ((value - torch.tensor([1.0, 5.0])) ** 2).mean()
                + 2.0 * torch.nn.functional.cross_entropy(classes, torch.tensor([0, 2])))  # levels 1 and 5
    assert torch.allclose(model.loss(batch), expected)
    probabilities = torch.softmax(classes, dim=1)
    assert torch.allclose(model.expected_rating(batch)[:2], value.clamp(1, 5))
    model.cfg = cfg.replace(rating_output="classes")
    expectation = probabilities @ torch.tensor([1.0, 3.0, 5.0])
    assert torch.allclose(model.expected_rating(batch)[:2], expectation)
    model.cfg = cfg.replace(rating_output="mean")
    assert torch.allclose(model.expected_rating(batch)[:2], ((value + expectation) / 2).clamp(1, 5))


@pytest.mark.parametrize("settings, message", [
    ({"rating_output": "mean", "rating_loss_weight": 1.0}, "'mean' needs rating_class_loss_weight"),
    ({"rating_output": "mean", "rating_class_loss_weight": 1.0}, "'mean' needs rating_loss_weight"),
    ({"rating_output": "classes", "rating_loss_weight": 1.0}, "'classes' needs rating_class_loss_weight"),
    ({"rating_output": "median"}, "rating_output must be one of"),
])
def test_a_rating_output_needs_the_heads_it_reads(settings, message):
    from ytdnn.models.ranker import RankerConfig

    with pytest.raises(ValueError, match=message):
        RankerConfig(**settings).validate()


def test_the_rating_autoencoder_is_on_for_rated_logs_of_moderate_size():
    from ytdnn.estimator import AUTOREC_MAX_USERS, AUTOREC_UNITS

    units = lambda model, **kw: model.configs(**kw)["ranker"]["ratings"].autorec_units
    assert units(YouTubeDNN(), ratings=True, num_users=100) == AUTOREC_UNITS
    assert units(YouTubeDNN(), ratings=True, num_users=AUTOREC_MAX_USERS + 1) == 0
    assert units(YouTubeDNN(), ratings=False, num_users=100) == 0
    assert units(YouTubeDNN(autorec_units=0), ratings=True, num_users=100) == 0
    assert units(YouTubeDNN(autorec_units=8), ratings=True, num_users=10**9) == 8
    with pytest.raises(ValueError, match="autorec_units must be None or an int >= 0"):
        units(YouTubeDNN(autorec_units=-1), ratings=True, num_users=100)


def test_the_served_rating_blends_the_heads_and_the_autoencoder_by_a_calibrated_weight(fitted, data):
    _, test = data
    ranker, gen = fitted.recommender_.ranker, fitted.recommender_.candidates
    assert ranker.rating_cfg.autorec_units > 0 and ranker.rating_cfg.autorec_weight is None
    # chosen on the held-out 5%: the ranker fits this log near exactly, so the weight stays small
    chosen = ranker.autorec_weight_
    assert 0.0 <= chosen < 0.2, chosen
    rows = gen.featurizer_.users_.encode(pa.array(test["user_ids"]))
    items = gen.featurizer_.items_.encode(pa.array(test["item_ids"]))
    served = {}
    for weight in (0.0, 0.5, 1.0, chosen):
        ranker.autorec_weight_ = weight
        served[weight] = ranker.predict_pairs(gen, rows, items)[1]
    assert np.allclose(served[0.5], (served[0.0] + served[1.0]) / 2)
    assert np.allclose(served[1.0], ranker._autorec_served(rows, items))
    assert np.allclose(served[chosen], fitted.batch_predict(np.stack([test["user_ids"], test["item_ids"]], 1)))
    global_mean = rmse(np.full(len(rows), 3.0), test["ratings"])
    assert rmse(served[1.0], test["ratings"]) < 0.6 * global_mean  # the autoencoder alone learns the traits
    assert rmse(served[chosen], test["ratings"]) < rmse(served[0.5], test["ratings"])
    with pytest.raises(ValueError, match="autorec_weight must be None or in"):
        ranker.rating_cfg.replace(autorec_weight=1.5).validate()


def test_the_blend_weight_is_the_least_squares_one_clipped_to_the_unit_interval():
    from ytdnn.samples.ratings import blend_weight

    ranked, other = np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 5.0])
    # (1 - w) ranked + w other = truth at w = 0.25 on the rows that differ
    assert blend_weight(ranked, other, np.array([1.5, 2.0, 3.5])) == pytest.approx(0.25)
    assert blend_weight(ranked, other, ranked) == 0.0
    assert blend_weight(ranked, other, np.array([9.0, 2.0, 9.0])) == 1.0  # clipped
    assert blend_weight(ranked, other, np.array([0.0, 2.0, 1.0])) == 0.0  # clipped
    assert blend_weight(ranked, ranked, other) == 0.0  # nothing to tell apart
    assert blend_weight(np.zeros(0), np.zeros(0), np.zeros(0)) == 0.0


# ---- scikit-learn's tools, NumPy parameters, and saves over other models ----------------------------


TINY = {**SMALL, "epochs": 2, "num_candidates": 10, "autorec_units": 0, "negatives_per_rating": 1}


def test_cross_validation_and_grid_search_run_it():
    model_selection = pytest.importorskip("sklearn.model_selection")
    train, _ = split(planted())
    pairs = np.stack([train["user_ids"], train["item_ids"]], axis=1)
    scores = model_selection.cross_val_score(YouTubeDNN(**TINY), pairs, train["ratings"], cv=model_selection.KFold(2))
    assert scores.shape == (2,) and np.all(scores < 0)  # minus the RMSE of each held-out fold
    grid = model_selection.GridSearchCV(YouTubeDNN(**TINY), {"embedding_dim": [4, 8]}, cv=2)
    grid.fit(pairs, train["ratings"])
    assert grid.best_params_["embedding_dim"] in (4, 8) and grid.best_estimator_.embedding_dim == grid.best_params_["embedding_dim"]


def test_numpy_parameters_fit_save_and_load(data, tmp_path):
    train, _ = data
    model = YouTubeDNN(**{**TINY, "epochs": np.int64(2), "embedding_dim": np.int64(8), "hidden_units": np.array([16]),
                          "learning_rate": np.float32(3e-3), "num_candidates": np.int64(10)}).fit(**train)
    again = YouTubeDNN.load(model.save(tmp_path / "model"))
    assert again.get_params()["hidden_units"] == [16] and again.get_params()["epochs"] == 2
    assert again.predict(0, 1) == model.predict(0, 1)
    assert "hidden_units=array([16])" in repr(model)


def test_a_save_over_another_model_loads_as_the_new_one(fitted, data, tmp_path):
    train, _ = data
    searches = pa.table({"user_id": [0, 1], "timestamp": [0, 0], "query": ["cats", "dogs"]})
    YouTubeDNN(**TINY).fit(**train, searches=searches).save(tmp_path / "model")
    assert (tmp_path / "model" / "candidates" / "vocab" / "tokens.json").exists()
    fitted.save(tmp_path / "model")  # no searches: no tokens.json may stay
    assert not (tmp_path / "model" / "candidates" / "vocab" / "tokens.json").exists()
    assert YouTubeDNN.load(tmp_path / "model").predict(0, 1) == fitted.predict(0, 1)
    weights = tmp_path / "model" / "candidates" / "candidate.safetensors"
    assert weights.stat().st_mode & 0o777 == weights.parent.stat().st_mode & 0o666  # readable as its folder


def test_more_bad_uses_are_one_clear_error(fitted, data, tmp_path):
    train, _ = data
    with pytest.raises(ValueError, match="an \\[N, 2\\] array; got rows of \\[3\\] values"):
        fitted.predict(np.zeros((4, 3), np.int64))
    with pytest.raises(ValueError, match="takes one pair"):
        fitted.predict([1, 2], [3, 4])
    with pytest.raises(ValueError, match="both 0: no head would learn the ratings"):
        YouTubeDNN(**{**TINY, "rating_loss_weight": 0, "rating_class_loss_weight": 0}).fit(**train)
    assert fitted.recommend_batch([]) == []
    with pytest.raises(ValueError, match="10 pairs in X but 5 ratings in y"):
        fitted.score(np.zeros((10, 2), np.int64), np.ones(5))
    (tmp_path / "plain").write_text("x")
    with pytest.raises(ValueError, match="is a file: save writes a directory there"):
        fitted.save(tmp_path / "plain")
    path = fitted.save(tmp_path / "model")
    document = json.loads((path / "estimator.json").read_text())
    for edit, message in [({**document, "extra": 1}, "expected format_version, kind and params"),
                          ({**document, "params": None}, "expected format_version, kind and params"),
                          ({**document, "params": {**document["params"], "rating_output": "bogus"}}, "rating_output")]:
        (path / "estimator.json").write_text(json.dumps(edit))
        with pytest.raises(ModelDirError, match=message):
            YouTubeDNN.load(path)
