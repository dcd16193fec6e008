"""User features whose value is a list (an averaged bag in the model) sent with /recommend."""

import pyarrow as pa
import pytest
import torch
from fastapi.testclient import TestClient

from ytdnn.candidates import CandidateGenerator
from ytdnn.data.synthetic import WorldConfig, generate
from ytdnn.models.candidate import CandidateConfig
from ytdnn.pipeline import Recommender
from ytdnn.samples.candidate import ExampleConfig
from ytdnn.serve.app import create_app
from ytdnn.train.config import TrainConfig

NOBODY = 10**9  # a user id the model has never seen
TOPICS = ["music", "films", "sport", "news"]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    torch.set_num_threads(1)
    d = generate(WorldConfig.preset("tiny", seed=1)).dataset
    n = d.users.num_rows
    interests = [[TOPICS[u % 4], TOPICS[(u // 4) % 4]] for u in range(n)]
    users = d.users.append_column("interests", pa.array(interests, pa.list_(pa.string())))
    gen = CandidateGenerator(
        CandidateConfig(embedding_dim=16, output_dim=16, depth=1, num_negatives=None),
        ExampleConfig(max_watch_history=20),
        TrainConfig(lr=3e-3, max_epochs=1, progress=False, num_threads=1, seed=1),
    ).fit(d.watches, d.searches, users, items=d.items)
    model_dir = Recommender(gen, None, num_candidates=60).save(tmp_path_factory.mktemp("lists") / "model")
    app = create_app(model_dir, events=tmp_path_factory.mktemp("events") / "events.sqlite")
    with TestClient(app) as c:
        yield c


def post(client, user, features, k=5):
    return client.post(f"/recommend/{user}", json={"k": k, "features": features})


def scores(reply):
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert answer["source"] == "model"  # an unknown user served from the sent features
    return [item["score"] for item in answer["items"]]


def test_health_names_the_list_features(client):
    assert client.get("/health").json()["model"]["user_features"]["lists"] == ["interests"]


def test_a_list_feature_is_sent_by_post_and_by_repeated_query_parameters(client):
    by_post = scores(post(client, NOBODY, {"interests": ["music", "sport"]}))
    by_get = client.get(f"/recommend/{NOBODY}", params=[("k", 5), ("interests", "music"), ("interests", "sport")])
    assert scores(by_get) == by_post
    assert scores(post(client, NOBODY, {"interests": ["films", "news"]})) != by_post  # the bag counts
    assert scores(post(client, NOBODY, {"interests": "music"})) == scores(post(client, NOBODY, {"interests": ["music"]}))
    assert scores(post(client, NOBODY, {"interests": []})) != by_post  # an empty bag: none of them


@pytest.mark.parametrize("features, field", [
    ({"interests": [{"a": 1}]}, "interests"), ({"interests": [True]}, "interests"), ({"hobbies": ["x"]}, "features"),
])
def test_bad_list_values_are_a_422_that_names_the_field(client, features, field):
    reply = post(client, NOBODY, features)
    assert reply.status_code == 422 and reply.json()["error"]["field"] == field


def test_a_feature_that_is_not_a_list_may_not_repeat(client):
    reply = client.get(f"/recommend/{NOBODY}", params=[("geo", "US"), ("geo", "FR")])
    assert reply.status_code == 422 and "'geo'" in reply.json()["error"]["message"]
