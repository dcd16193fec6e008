"""`ytdnn score --engine local`: partitions of users score as the whole model serves (issue 18)."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ytdnn.pipeline import Recommender
from ytdnn.scale.score import history_rows, score_local, score_partition


def test_recommendations_are_the_recommenders_for_every_user(two_stage_model, tmp_path):
    rec = Recommender.load(two_stage_model)
    users = rec.candidates.featurizer_.users_.tokens_
    assert score_local(two_stage_model, "recommendations", tmp_path / "r.parquet", k=7) == 7 * len(users)
    got = pq.read_table(tmp_path / "r.parquet").sort_by([("user_id", "ascending"), ("rank", "ascending")])
    want = rec.recommend_batch(users, k=7)
    assert got.column("item_id").to_pylist() == [i for r in sorted(want, key=lambda r: r.user) for i in r.item_ids.tolist()]
    scores = np.concatenate([r.scores for r in sorted(want, key=lambda r: r.user)])
    np.testing.assert_allclose(got.column("score").to_numpy(), scores, rtol=1e-6)


def test_user_and_item_vectors_are_the_models(two_stage_model, tmp_path):
    gen = Recommender.load(two_stage_model).candidates
    score_local(two_stage_model, "users", tmp_path / "u.parquet")
    users = pq.read_table(tmp_path / "u.parquet")
    want = gen.user_vectors(gen.user_rows(users.column("user_id")))
    np.testing.assert_array_equal(np.stack(users.column("vector").to_pylist()), want)
    score_local(two_stage_model, "items", tmp_path / "i.parquet")
    items = pq.read_table(tmp_path / "i.parquet")
    assert items.column("item_id").to_pylist() == gen.featurizer_.items_.tokens_
    np.testing.assert_array_equal(np.stack(items.column("vector").to_pylist()),
                                  gen.model_.item_vectors().detach().numpy()[1:])


def test_a_partition_needs_only_its_users_rows(two_stage_model):
    whole = Recommender.load(two_stage_model)
    [everyone] = list(history_rows(whole.candidates, 10_000))
    without_history = Recommender.load(two_stage_model, history=False)
    assert without_history.candidates.streams_ is None
    parts = [score_partition(without_history, "recommendations", rows) for rows in history_rows(whole.candidates, 37)]
    assert pa.concat_tables(parts).equals(score_partition(whole, "recommendations", everyone))
