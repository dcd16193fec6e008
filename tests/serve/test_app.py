"""The HTTP API on a tiny two-stage model: fresh history, unknown users and items, errors, metrics."""

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from ytdnn.serve.app import create_app
from ytdnn.serve.engine import ServeConfig

KNOWN_USER = 46


@pytest.fixture(scope="module")
def app(tiny_world_model, tmp_path_factory):
    _, model_dir = tiny_world_model
    events = tmp_path_factory.mktemp("events") / "events.sqlite"
    return create_app(model_dir, events=events, config=ServeConfig(max_k=50, max_body_bytes=50_000))


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as c:
        yield c


def recommend(client, user, k=10, **features):
    reply = client.get(f"/recommend/{user}", params={"k": k, **features})
    assert reply.status_code == 200, reply.text
    return reply.json()


def item_ids(answer):
    return [item["item_id"] for item in answer["items"]]


def test_recommend_names_the_stage_of_every_score(client):
    answer = recommend(client, KNOWN_USER, k=7)
    assert answer["user_id"] == KNOWN_USER and answer["source"] == "model" and len(answer["items"]) == 7
    assert {item["stage"] for item in answer["items"]} == {"ranker"}
    scores = [item["score"] for item in answer["items"]]
    assert scores == sorted(scores, reverse=True) and min(scores) > 0  # exp(logit): watch time
    assert all(1 <= item["candidate_rank"] <= 60 for item in answer["items"])
    assert all(isinstance(item["title"], str) for item in answer["items"])


def test_a_posted_watch_changes_the_very_next_recommendation(client):
    user = 47
    before = recommend(client, user, k=10)
    top = before["items"][0]["item_id"]
    reply = client.post("/events", json={"user_id": user, "item_id": top, "timestamp": 6_000_000})
    assert reply.status_code == 200 and reply.json() == {"stored": {"watches": 1, "searches": 0}}
    after = recommend(client, user, k=10)
    assert top not in item_ids(after)  # now watched: never served again
    # the history is read at request time and the user vector recomputed: retrieval scores move
    shared = set(item_ids(before)) & set(item_ids(after))
    old = {i["item_id"]: i["candidate_score"] for i in before["items"]}
    new = {i["item_id"]: i["candidate_score"] for i in after["items"]}
    assert any(abs(old[i] - new[i]) > 1e-6 for i in shared)


def test_a_posted_search_changes_the_next_recommendation_too(client):
    user = 48
    before = recommend(client, user, k=10)
    reply = client.post("/events", json={"searches": [
        {"user_id": user, "timestamp": 6_000_000 + n, "query": q} for n, q in enumerate(["vibi", "zozikima"])]})
    assert reply.status_code == 200
    after = recommend(client, user, k=10)
    assert [i["candidate_score"] for i in after["items"]] != [i["candidate_score"] for i in before["items"]]


def test_history_round_trip_one_at_a_time_and_in_a_batch(client):
    user = 99_001  # unknown to the model: the store holds only what is posted here
    watches = [{"user_id": user, "item_id": 5, "timestamp": 10, "watch_time": 30.5},
               {"user_id": user, "item_id": 7, "timestamp": 20, "watch_time": None}]
    searches = [{"user_id": user, "timestamp": 15, "query": "funny cats"}]
    assert client.post("/events", json=watches[1]).status_code == 200  # one alone, out of order
    assert client.post("/events", json={"watches": watches[:1], "searches": searches}).status_code == 200
    history = client.get(f"/users/{user}/history").json()
    assert history["watches"] == watches  # oldest first, whatever the arrival order
    assert history["searches"] == searches
    assert client.get(f"/users/{user}/history", params={"limit": 1}).json()["watches"] == watches[1:]


def test_unknown_user_gets_fresh_popular_items_without_features(client, app):
    answer = recommend(client, 10**9, k=5)
    assert answer["source"] == "popular" and {i["stage"] for i in answer["items"]} == {"popular"}
    popular, scores = app.state.serve.holder.current.popular.top(5)
    assert item_ids(answer) == list(popular)
    assert [i["score"] for i in answer["items"]] == pytest.approx(scores.tolist())


def test_unknown_user_with_features_is_served_by_the_model(client):
    by_query = recommend(client, 10**9 + 1, k=5, geo="US", age=31, device="mobile")
    assert by_query["source"] == "model" and {i["stage"] for i in by_query["items"]} == {"ranker"}
    reply = client.post(f"/recommend/{10**9 + 1}",
                        json={"k": 5, "features": {"geo": "US", "age": 31, "device": "mobile"}})
    assert reply.status_code == 200 and reply.json()["items"] == by_query["items"]
    other = recommend(client, 10**9 + 1, k=5, geo="JP", age=70, device="tv", gender="f")
    assert [i["score"] for i in other["items"]] != [i["score"] for i in by_query["items"]]


def test_unknown_user_with_posted_history_is_served_by_the_model(client):
    user = 10**9 + 2
    assert recommend(client, user)["source"] == "popular"
    client.post("/events", json={"user_id": user, "item_id": 5, "timestamp": 100})
    answer = recommend(client, user)
    assert answer["source"] == "model" and 5 not in item_ids(answer)


def test_an_unknown_item_is_stored_and_treated_as_out_of_vocabulary(client):
    user = 49
    before = recommend(client, user, k=50)
    reply = client.post("/events", json={"user_id": user, "item_id": 10**12, "timestamp": 1})
    assert reply.status_code == 200
    assert {"user_id": user, "item_id": 10**12, "timestamp": 1, "watch_time": None} in (
        client.get(f"/users/{user}/history", params={"limit": 10_000}).json()["watches"])
    after = recommend(client, user, k=50)
    # an OOV watch adds nothing to the watch bag (zero embedding, left out of the mean): every
    # item keeps its retrieval score and rank. The ranker, which counts the user's watches, may
    # order the 60 candidates differently, so items are compared by id, not by position.
    old = {i["item_id"]: (i["candidate_score"], i["candidate_rank"]) for i in before["items"]}
    new = {i["item_id"]: (i["candidate_score"], i["candidate_rank"]) for i in after["items"]}
    shared = sorted(set(old) & set(new))
    assert len(shared) >= 40
    np.testing.assert_allclose([new[i] for i in shared], [old[i] for i in shared], rtol=1e-5)


def test_similar_items_are_nearest_by_inner_product_in_the_output_space(client, app):
    reply = client.get("/similar/5", params={"k": 6})
    assert reply.status_code == 200
    items = reply.json()["items"]
    model = app.state.serve.holder.current
    vocab = model.recommender.candidates.featurizer_.items_
    v = model._item_vectors
    expected = v[1:] @ v[vocab.encode([5])[0]]  # exact inner products over the corpus
    expected[vocab.encode([5])[0] - 1] = -np.inf  # the item itself is left out
    best = vocab.decode(1 + np.argsort(-expected)[:6])
    assert [i["item_id"] for i in items] == list(best)
    assert [i["score"] for i in items] == pytest.approx(np.sort(expected)[::-1][:6].tolist(), rel=1e-4)


BAD_REQUESTS = [
    ("GET", "/recommend/46?k=0", None, 422),
    ("GET", "/recommend/46?k=51", None, 422),
    ("GET", "/recommend/46?k=ten", None, 422),
    ("GET", "/recommend/46?k=99999999999999999999999", None, 422),
    ("GET", "/recommend/not-an-int", None, 422),
    ("GET", "/recommend/99999999999999999999", None, 422),  # over int64
    ("GET", "/recommend/46?colour=red", None, 422),  # not a feature of this model
    ("GET", "/recommend/46?age=old", None, 422),
    ("GET", "/recommend/46?age=nan", None, 422),
    ("GET", "/recommend/46?geo=US&geo=JP", None, 422),
    ("POST", "/recommend/46", b'{"k": 5, "extra": 1}', 422),
    ("POST", "/recommend/46", b'{"k": "5"}', 422),
    ("POST", "/recommend/46", b'{"features": [1]}', 422),
    ("POST", "/recommend/46", b'{"k": 5', 400),
    ("POST", "/events", b'{"watches": [', 400),
    ("POST", "/events", b"\xff\xfe", 400),
    ("POST", "/events", b"[]", 422),
    ("POST", "/events", b"{}", 422),
    ("POST", "/events", b'{"watches": [], "comments": []}', 422),  # unknown field in the batch
    ("POST", "/events", b'{"watches": {"user_id": 1}}', 422),
    ("POST", "/events", b'{"watches": [{"user_id": 1, "item_id": 2, "timestamp": 3, "rating": 5}]}', 422),
    ("POST", "/events", b'{"watches": [{"user_id": 1, "item_id": 2}]}', 422),  # no timestamp
    ("POST", "/events", b'{"watches": [{"user_id": 1, "item_id": "x", "timestamp": 3}]}', 422),
    ("POST", "/events", b'{"watches": [{"user_id": 1, "item_id": 2, "timestamp": 3, "watch_time": -1}]}', 422),
    ("POST", "/events", b'{"searches": [{"user_id": 1, "timestamp": 3, "query": 7}]}', 422),
    ("POST", "/events", b'{"user_id": 1, "timestamp": 3}', 422),  # neither a watch nor a search
    ("POST", "/events", json.dumps({"watches": [{"user_id": 1, "item_id": 2, "timestamp": 3}] * 1001}).encode(), 413),
    ("POST", "/events", b'{"searches": [{"user_id": 1, "timestamp": 3, "query": "' + b"a" * 60_000 + b'"}]}', 413),
    ("GET", "/similar/424242", None, 404),
    ("GET", "/similar/x", None, 422),
    ("GET", "/similar/5?k=0", None, 422),
    ("GET", "/users/46/history?limit=0", None, 422),
    ("GET", "/users/abc/history", None, 422),
    ("GET", "/no/such/endpoint", None, 404),
    ("DELETE", "/events", None, 405),
]


@pytest.mark.parametrize(("method", "url", "body", "status"), BAD_REQUESTS)
def test_a_bad_request_gets_a_4xx_with_a_json_error(client, method, url, body, status):
    reply = client.request(method, url, content=body)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["status"] == status and isinstance(error["message"], str) and error["message"]


def test_a_bad_event_in_a_batch_stores_nothing(client):
    user = 99_002
    batch = {"watches": [{"user_id": user, "item_id": 1, "timestamp": 1},
                         {"user_id": user, "item_id": 2, "timestamp": "later"}],
             "searches": [{"user_id": user, "timestamp": 1, "query": "q"}]}
    reply = client.post("/events", json=batch)
    assert reply.status_code == 422
    assert reply.json()["error"] | {} == {**reply.json()["error"], "table": "watches", "index": 1,
                                         "field": "timestamp"}
    history = client.get(f"/users/{user}/history").json()
    assert history["watches"] == [] and history["searches"] == []


def test_odd_input_never_gets_a_5xx(client):
    odd = ["%00", "%F0%9F%98%80", "-1", "0", "1e3", " 1", "9" * 400, "%2F..%2F", "null", "true"]
    for user in odd:
        for url in (f"/recommend/{user}", f"/recommend/{user}?k=1&age=1e308",
                    f"/users/{user}/history", f"/similar/{user}"):
            reply = client.get(url)
            assert reply.status_code < 500, (url, reply.text)
            assert "error" in reply.json() or reply.status_code == 200
    for body in [b"null", b"1", b'"x"', b'{"watches": null}', b'{"watches": [null]}',
                 b'{"watches": [[1, 2, 3, 4, 5, 6]]}', b'{"user_id": {}, "item_id": [], "timestamp": 1}',
                 b'{"user_id": 1, "item_id": 2, "timestamp": 1e400}', b'{"user_id": 1, "query": "q", "timestamp": 2}']:
        reply = client.post("/events", content=body)
        assert reply.status_code < 500, (body, reply.text)


def test_metrics_are_prometheus_text_with_counts_and_latency_histograms(client):
    def count(families, endpoint):
        return sum(s.value for f in families if f.name == "ytdnn_http_requests" for s in f.samples
                   if s.name.endswith("_total") and s.labels["endpoint"] == endpoint
                   and s.labels["status"] == "200")

    before = list(text_string_to_metric_families(client.get("/metrics").text))
    for _ in range(3):
        recommend(client, KNOWN_USER, k=3)
    reply = client.get("/metrics")
    assert reply.headers["content-type"].startswith("text/plain")
    families = list(text_string_to_metric_families(reply.text))  # raises on malformed text
    assert count(families, "/recommend/{user_id}") == count(before, "/recommend/{user_id}") + 3
    latency = next(f for f in families if f.name == "ytdnn_http_request_duration_seconds")
    assert latency.type == "histogram"
    buckets = [s for s in latency.samples if s.name.endswith("_bucket")
               and s.labels["endpoint"] == "/recommend/{user_id}"]
    assert buckets and buckets[-1].labels["le"] == "+Inf" and buckets[-1].value >= 3
    stages = {s.labels["stage"] for f in families if f.name == "ytdnn_recommend_stage_seconds"
              for s in f.samples}
    assert {"history", "user_tower", "search", "ranker_model"} <= stages


def test_health_describes_the_model_and_docs_are_served(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"]["stage"] == "ranker"
    assert "geo" in health["model"]["user_features"]["categorical"]
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/recommend/{user_id}", "/similar/{item_id}", "/events", "/users/{user_id}/history",
            "/health", "/metrics", "/admin/reload"} <= set(paths)


def test_metrics_have_no_created_series_and_leave_prometheus_client_as_found(client):
    from prometheus_client import CollectorRegistry, Counter, generate_latest

    assert "_created" not in client.get("/metrics").text
    other = CollectorRegistry()  # another library's metrics keep prometheus_client's defaults
    Counter("other_requests", "requests", registry=other).inc()
    assert b"other_requests_created" in generate_latest(other)


@pytest.mark.parametrize("target, plain", [
    ("/recommend/46", ("46", 10)), ("/recommend/46?k=7", ("46", 7)), ("/recommend/a%20b?k=50", ("a b", 50)),
    ("/recommend/46?k=7&", None), ("/recommend/46?k=07", None), ("/recommend/46?k=0", None),
    ("/recommend/46?k=51", None), ("/recommend/46?geo=US", None), ("/recommend/", None),
    ("/recommend/4/6", None), ("/similar/46", None),
])
def test_the_fast_lane_takes_plain_recommend_requests_only(app, target, plain):
    lane = app.user_middleware[-1]  # the innermost
    assert lane.cls.__name__ == "RecommendFastLane"
    path, _, query = target.partition("?")
    scope = {"type": "http", "method": "GET", "path": path.replace("%20", " "), "query_string": query.encode()}
    taken = lane.cls(None, **lane.kwargs)._plain(scope)
    assert taken == (plain if plain is not None else (None, 0))


def test_the_fast_lane_answers_as_the_app_does(client):
    """?k=7 takes the lane, ?k=7& the app's route: the same answer, byte for byte."""
    lane, routed = client.get("/recommend/46?k=7"), client.get("/recommend/46?k=7&")
    assert lane.status_code == routed.status_code == 200
    assert lane.content == routed.content and lane.headers["content-type"] == routed.headers["content-type"]
    for target in ("/recommend/46?k=0", "/recommend/46?k=51"):  # left to the app: its 422
        reply = client.get(target)
        assert reply.status_code == 422 and "k" in json.dumps(reply.json()["error"])
