"""A small version of the serving load test: the real app, a SQLite store, clients with think time."""

import pytest

from ytdnn.serve.app import create_app
from ytdnn.serve.loadtest import run_load_test, serve_in_thread


@pytest.fixture(scope="module")
def served(tiny_world_model, tmp_path_factory):
    d, model_dir = tiny_world_model
    app = create_app(model_dir, events=tmp_path_factory.mktemp("load") / "events.sqlite")
    with serve_in_thread(app) as base_url:
        yield base_url, app.state.serve.store, d


def test_mixed_load_with_think_time_has_no_errors_and_loses_no_event(served):
    base_url, store, d = served
    users = sorted(set(d.watches.column("user_id").to_pylist()))[:50] + [10**9, 10**9 + 1]
    items = sorted(set(d.watches.column("item_id").to_pylist())) + [10**12]  # one unknown item
    result = run_load_test(base_url, clients=30, seconds=2.0, user_ids=users, item_ids=items,
                           post_fraction=0.3, k=10, timeout=10.0, think_time_s=0.05)
    assert result.errors == 0, result.error_samples
    assert len(result.latencies_ms["recommend"]) > 20 and len(result.posted) > 5
    assert result.check_lost(store) == 0
    metrics = result.to_metrics()
    assert metrics["think_time_s"] == 0.05 and metrics["lost_events"] == 0
    # 30 clients pausing 50 ms on average cannot send more than ~30 * 2 s / 50 ms requests
    assert result.num_requests <= 30 * (2.0 / 0.05 + 1)


def test_think_time_is_checked():
    with pytest.raises(ValueError, match="think_time_s"):
        run_load_test("http://127.0.0.1:1", clients=1, seconds=0.1, user_ids=[1], item_ids=[1],
                      think_time_s=-1.0)
