"""Extra user and item columns as features (issue 17): each kind reaches both models, exactly
encoded, and a tiny model learns a world where only the extra column predicts the label."""

import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from ytdnn.candidates import CandidateGenerator
from ytdnn.data.schema import ITEMS, USERS, DataError, Dataset, validate_table
from ytdnn.features.items import ItemFeatureEncoder
from ytdnn.features.quantiles import ONE_BELOW
from ytdnn.features.users import UserFeatureEncoder
from ytdnn.features.vocab import Vocabulary
from ytdnn.models.candidate import CandidateConfig
from ytdnn.models.layers import embedding_width
from ytdnn.models.ranker import RankerConfig
from ytdnn.ranking import Ranker
from ytdnn.samples.candidate import ExampleConfig
from ytdnn.samples.ranking import NEVER
from ytdnn.train.config import TrainConfig

EXTRA_USERS = pa.table({
    "user_id": pa.array([1, 2, 3], pa.int64()),
    "age": [20.0, 40.0, 30.0],
    "income": [0.0, 100.0, None],  # extra number: x̃, missing flag, x̃², √x̃
    "plan": ["free", "paid", None],  # extra text: embedded
    "interests": [["music", "films"], [], None],  # extra list: an averaged bag
})


# ---- the rule for extra columns -------------------------------------------------------------------


def test_extra_columns_of_feature_tables_are_cast_by_kind():
    items = pa.table({
        "item_id": [1, 2], "stars": pa.array([3, 5], pa.int8()), "studio": pa.array(["a", "b"]).dictionary_encode(),
        "tags": pa.array([[7, 8], []], pa.list_(pa.int32())), "premiere": pa.array([86_400_000, None], pa.timestamp("ms")),
    })
    out = validate_table(items, ITEMS)
    assert out.schema.field("stars").type == pa.int64()
    assert out.schema.field("studio").type == pa.string()
    assert out.column("tags").to_pylist() == [["7", "8"], []]
    assert out.column("premiere").to_pylist() == [86_400, None]  # Unix seconds


@pytest.mark.parametrize(("values", "message"), [
    (pa.array([{"x": 1}, {"x": 2}]), "must be numeric, text or a list of text; got struct"),
    (pa.array([[1.5], [2.5]]), "got list<item: double>"),
    (pa.array([1.0, float("-inf")]), "line 2, column 'score': not a finite number"),
])
def test_extra_columns_of_another_type_name_the_column(values, message):
    with pytest.raises(DataError, match=message):
        validate_table(pa.table({"user_id": [1, 2], "score": values}), USERS)


def test_parquet_round_trip_keeps_extra_lists(tmp_path):
    watches = pa.table({"user_id": [1], "item_id": [10], "timestamp": [5]})
    items = pa.table({"item_id": [10], "genres": [["Drama", "War"]], "year": [1995]})
    again = Dataset.load(Dataset(watches, items=items).validate().save(tmp_path / "d"))
    assert again.items.to_pydict() == {"item_id": [10], "genres": [["Drama", "War"]], "year": [1995]}


# ---- exact encodings ------------------------------------------------------------------------------


def test_user_encoder_feeds_each_kind_of_extra_column():
    enc = UserFeatureEncoder().fit(validate_table(EXTRA_USERS, USERS))
    assert list(enc.categorical_) == ["plan"]
    assert enc.dense_names() == ["age", "income", "age missing", "income missing", "income^2", "sqrt(income)",
                                 "interests=films", "interests=music"]  # a tie: values in ascending order
    cat, dense = enc.transform(EXTRA_USERS)
    np.testing.assert_array_equal(cat, [[1], [2], [0]])  # "free" and "paid" tie: ascending
    # income: fitted on 0, 100 and the median 50 for the missing one -> x̃ 0, 1 - 2**-24; missing: 0, flag 1
    top = ONE_BELOW
    np.testing.assert_allclose(dense[:, 1:], [
        [0, 0, 0, 0, 0, 0.5, 0.5],
        [top, 0, 0, top**2, np.sqrt(top), 0, 0],
        [0, 0, 1, 0, 0, 0, 0],
    ], rtol=1e-6)
    np.testing.assert_allclose(dense[:, 0], [0, ONE_BELOW, 0.5], rtol=1e-6)  # age 20, 40, 30


def test_user_encoder_round_trip_and_an_old_encoder_without_extras(tmp_path):
    enc = UserFeatureEncoder().fit(EXTRA_USERS)
    enc.to_json(tmp_path / "u.json")
    again = UserFeatureEncoder.from_json(tmp_path / "u.json")
    for a, b in zip(enc.transform(EXTRA_USERS), again.transform(EXTRA_USERS)):
        np.testing.assert_array_equal(a, b)
    old = enc.to_dict()
    for key in ("powered", "lists", "max_list_values"):  # what an encoder saved before issue 17 lacks
        del old[key]
    assert UserFeatureEncoder.from_dict(old).num_continuous == 4  # age and income: x̃ and flag each


def test_item_encoder_aligns_extra_columns_with_the_vocabulary(tmp_path):
    vocab = Vocabulary().fit(pa.array([20, 20, 10, 30]))  # 20 -> 1, 10 -> 2, 30 -> 3
    items = pa.table({"item_id": [10, 20, 99], "year": [1990.0, None, 2000.0], "studio": ["a", "b", "c"],
                      "genres": [["War", "Drama"], ["Drama"], ["Noir"]]})
    enc = ItemFeatureEncoder().fit(items, vocab)
    assert enc.numeric_names_ == ["year"] and list(enc.categorical_) == ["studio"]
    np.testing.assert_array_equal(enc.numeric_[:, 0], [np.nan, np.nan, 1990.0, np.nan])
    assert enc.numeric_fill_.tolist() == [1990.0]  # item 99 is outside the vocabulary: no part of it
    assert enc.list_names() == ["genres=Drama", "genres=War"]
    np.testing.assert_array_equal(enc.list_features(np.array([2, 1, 3, 0])), [[0.5, 0.5], [1, 0], [0, 0], [0, 0]])
    enc.save(tmp_path)
    again = ItemFeatureEncoder.load(tmp_path)
    np.testing.assert_array_equal(again.list_features(np.arange(4)), enc.list_features(np.arange(4)))
    np.testing.assert_array_equal(again.numeric_, enc.numeric_)
    # a directory saved before issue 17: neither the keys nor the arrays of the extra columns
    meta = json.loads((tmp_path / "item_features.json").read_text())
    (tmp_path / "item_features.json").write_text(json.dumps({k: v for k, v in meta.items()
                                                             if k not in ("numeric", "lists", "max_list_values")}))
    with np.load(tmp_path / "item_features.npz") as arrays:
        kept = {k: arrays[k] for k in ("categorical_ids", "category_ids", "category_offsets", "upload_time", "duration")}
    np.savez(tmp_path / "item_features.npz", **kept)
    old = ItemFeatureEncoder.load(tmp_path)
    assert (old.numeric_.shape, old.num_list_values, old.list_names()) == ((4, 0), 0, [])


# ---- the input width of both models -------------------------------------------------------------


def _first_layer(module: torch.nn.Module) -> torch.nn.Linear:
    return next(m for m in module.modules() if isinstance(m, torch.nn.Linear))


def test_extra_user_columns_widen_the_candidate_tower():
    watches = pa.table({"user_id": [1, 2, 3], "item_id": [5, 6, 5], "timestamp": [1, 2, 3]})
    widths = {}
    for name, users in (("plain", EXTRA_USERS.select(["user_id", "age"])), ("extra", EXTRA_USERS)):
        gen = CandidateGenerator(CandidateConfig(embedding_dim=4, output_dim=4, depth=0, num_negatives=None),
                                 ExampleConfig(), TrainConfig(max_epochs=1, progress=False, num_threads=1))
        widths[name] = _first_layer(gen.fit(watches, users=users).model_.tower).in_features
    plan = embedding_width(3)  # free, paid and id 0
    assert widths["extra"] - widths["plain"] == plan + 4 + 2  # income: 4 columns; interests: 2 values


def test_extra_user_and_item_columns_widen_the_ranker():
    world, _, _ = _ranking_world(None)
    rng = np.random.default_rng(0)
    num_items = len(world["items"])
    items = world["items"].append_column("year", pa.array(rng.integers(1950, 2000, num_items).astype(float)))
    items = items.append_column("studio", pa.array(rng.choice(["a", "b", "c"], num_items)))
    items = items.append_column("genres", pa.array([["War", "Drama"][: 1 + i % 2] for i in range(num_items)]))
    users = pa.table({"user_id": pa.array(np.arange(20), pa.int64()), "plan": ["free", "paid"] * 10,
                      "income": np.arange(20.0), "interests": [["music"], ["films", "music"]] * 10})
    widths = {}
    for name, (user_table, item_table) in {"plain": (None, world["items"]), "extra": (users, items)}.items():
        gen = CandidateGenerator(CandidateConfig(embedding_dim=4, output_dim=4, depth=0, num_negatives=None),
                                 ExampleConfig(), TrainConfig(max_epochs=1, progress=False, num_threads=1))
        gen.fit(world["watches"], users=user_table)
        ranker = Ranker(RankerConfig(tower="8", max_embedding_dim=4),
                        TrainConfig(max_epochs=1, progress=False, num_threads=1)).fit(
            gen, world["impressions"].slice(0, 100), items=item_table, log_impressions=False)
        widths[name] = _first_layer(ranker.model_.tower).in_features
    user_extras = embedding_width(3, max_width=4) + 4 + 2  # plan; income: 4 columns; 2 interests
    # year: x̃, x̃², √x̃, flag; studio: embedded, and the user's watches of it and time since
    # (3 columns each); genres: 2 values, and the share of the user's watches and time since
    item_extras = 4 + embedding_width(4, max_width=4) + 2 * 3 + 2 + 2 * 3
    assert widths["extra"] - widths["plain"] == user_extras + item_extras
    names = ranker.featurizer_.input_names()
    assert names[-4:] == ["same_language", "year missing", "genres=War", "genres=Drama"]
    assert ranker.featurizer_.continuous_names[-5:] == ("year", "num_studio_watches", "seconds_since_studio_watch",
                                                        "genres_watch_share", "seconds_since_genres_watch")


def test_the_ranker_counts_the_users_history_with_extra_item_columns():
    # user 1 watches item 10 (studio a; x, y) at 10, item 11 (b; x) at 20, item 12 (a; z) at 25
    watches = pa.table({"user_id": [1, 1, 1], "item_id": [10, 11, 12], "timestamp": [10, 20, 25]})
    items = pa.table({"item_id": [10, 11, 12, 13], "studio": ["a", "b", "a", "a"],
                      "genres": [["x", "y"], ["x"], ["z"], ["x", "z"]]})
    impressions = pa.table({"user_id": [1, 1], "item_id": [13, 11], "timestamp": [30, 15], "clicked": [True, False],
                            "watch_time": [5.0, 0.0], "page_id": [1, 2]})
    gen = CandidateGenerator(CandidateConfig(embedding_dim=4, output_dim=4, depth=0, num_negatives=None),
                             ExampleConfig(), TrainConfig(max_epochs=1, progress=False, num_threads=1)).fit(watches)
    ranker = Ranker(RankerConfig(tower="none"), TrainConfig(max_epochs=1, progress=False, num_threads=1)).fit(
        gen, impressions, items=items)
    raw, _ = ranker.raw_features(gen, impressions)
    got = dict(zip(ranker.featurizer_.continuous_names, raw.T))
    # item 13 at 30: 2 of 3 earlier watches are studio a, the last at 25; its genres x (2 of 3
    # watches) and z (1 of 3): a mean share of 0.5, and one of them last watched at 25
    # item 11 at 15: only the watch at 10 is earlier: no studio b, genre x in 1 of 1 at 10
    np.testing.assert_array_equal(got["num_studio_watches"], [2, 0])
    np.testing.assert_array_equal(got["seconds_since_studio_watch"], [5, NEVER])
    np.testing.assert_array_equal(got["genres_watch_share"], [0.5, 1.0])
    np.testing.assert_array_equal(got["seconds_since_genres_watch"], [5, 5])


# ---- planted worlds: only the extra column predicts -------------------------------------------------

KINDS = {  # an extra column of each kind, and which values it makes positive
    "numeric": (lambda rng, n: np.where(rng.random(n) < 0.5, 0.0, 0.6) + 0.4 * rng.random(n), lambda v: v > 0.5),
    "text": (lambda rng, n: rng.choice(["gold", "silver", "lead", "tin"], n), lambda v: v in ("gold", "silver")),
    "list": (lambda rng, n: [list(rng.choice(list("abcde"), rng.integers(1, 4), replace=False)) for _ in range(n)],
             lambda v: "a" in v),
}


def _column(kind: str, rng: np.random.Generator, n: int) -> tuple[pa.Array, np.ndarray]:
    make, positive = KINDS[kind]
    values = make(rng, n)
    column = pa.array(values.tolist() if isinstance(values, np.ndarray) else values)
    return column, np.array([positive(v) for v in column.to_pylist()])


@pytest.mark.parametrize("kind", list(KINDS))
def test_candidate_tower_learns_an_extra_user_column(kind):
    # users watch 2 of the 10 items of their group (1..10 or 11..20); only the extra column says
    # which, and a user with no history is placed by it alone. The example age is off: every
    # empty-history example here is a first watch, the oldest, while serving is at age 0.
    rng = np.random.default_rng(1)
    column, group = _column(kind, rng, 240)
    users = pa.table({"user_id": pa.array(np.arange(240), pa.int64()), "signal": column})
    rows = [(u, int(i), 10 * t) for u in range(200)
            for t, i in enumerate(rng.choice(np.arange(10) + (11 if group[u] else 1), 2, replace=False))]
    watches = pa.table({name: pa.array([r[j] for r in rows], pa.int64())
                        for j, name in enumerate(("user_id", "item_id", "timestamp"))})
    gen = CandidateGenerator(
        CandidateConfig(embedding_dim=8, output_dim=8, depth=1, tower_widths=(16,), num_negatives=None,
                        use_example_age=False),
        ExampleConfig(max_examples_per_user=None),
        TrainConfig(lr=3e-2, batch_size=32, max_epochs=15, progress=False, num_threads=1),
    ).fit(watches, users=users.slice(0, 200))
    fresh = users.slice(200)  # never seen: no history, features only
    found, _ = gen.search_vectors(gen.cold_start_vectors(fresh), k=5)
    right = [np.mean((items >= 11) == g) for items, g in zip(found, group[200:])]
    assert np.mean(right) >= 0.95, right


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    ranks = np.argsort(np.argsort(scores)) + 1
    positives = labels.sum()
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * (len(labels) - positives)))


def _ranking_world(kind: str | None, seed: int = 0) -> tuple[dict, np.ndarray, np.ndarray]:
    """20 users watch 110 items each (every item once, so every item is in the ranker's
    vocabulary), then see 11 pages of 10 items; an item is clicked (10 s) exactly when its extra
    column is positive. Every item is shown once, so its own embedding cannot learn its clicks,
    and each user's last page is held out: only the column can tell those clicks.
    -> (tables, the test rows [N], whether each test impression's item is positive [T])."""
    rng = np.random.default_rng(seed)
    num_users, pages = 20, 11
    num_items = num_users * pages * 10
    column, positive = _column(kind or "numeric", rng, num_items)
    watches = pa.table({"user_id": np.tile(np.arange(num_users), num_items // num_users),
                        "item_id": rng.permutation(num_items),
                        "timestamp": np.repeat(np.arange(num_items // num_users), num_users)})
    users = np.repeat(np.arange(num_users), pages * 10)
    page = np.repeat(np.arange(num_users * pages), 10)
    items = rng.permutation(num_items)
    clicked = positive[items]
    impressions = pa.table({"user_id": users, "item_id": items, "timestamp": 1_000 + 100 * (page % pages),
                            "clicked": clicked, "watch_time": np.where(clicked, 10.0, 0.0), "page_id": page})
    item_table = pa.table({"item_id": np.arange(num_items), **({"signal": column} if kind else {})})
    test = page % pages == pages - 1
    return {"watches": watches, "impressions": impressions, "items": item_table}, test, positive[items[test]]


@pytest.mark.parametrize("kind", [*KINDS, None])
def test_ranker_learns_an_extra_item_column(kind):
    world, test, positive = _ranking_world(kind)
    gen = CandidateGenerator(CandidateConfig(embedding_dim=4, output_dim=4, depth=0, num_negatives=None),
                             ExampleConfig(), TrainConfig(max_epochs=1, progress=False, num_threads=1)).fit(world["watches"])
    train, held_out = world["impressions"].filter(pa.array(~test)), world["impressions"].filter(pa.array(test))
    ranker = Ranker(RankerConfig(tower="32-16", max_embedding_dim=4, score_skip=False),
                    TrainConfig(lr=5e-3, batch_size=64, max_epochs=4, progress=False, num_threads=1)).fit(
        gen, train, items=world["items"], log_impressions=False)
    auc = _auc(ranker.score_impressions(gen, held_out), positive)
    if kind is None:  # the control: the same world without the column
        assert auc < 0.65, auc
    else:
        assert auc > 0.95, auc
