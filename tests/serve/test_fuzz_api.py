"""A bounded, seeded schemathesis run against the app in-process: every operation of the OpenAPI
document, valid and invalid cases, four checks (no 5xx; documented status codes, content types
and response bodies). `make bench ONLY=fuzz` runs the same with >= 10,000 cases."""

import pytest

from ytdnn.serve.app import create_app
from ytdnn.serve.fuzz import CHECKS, fuzz_api

pytest.importorskip("schemathesis")
TOKEN = "fuzz-token"  # schemathesis' ASGI client is not loopback: the admin endpoint needs it


@pytest.fixture(scope="module")
def app(tiny_world_model, tmp_path_factory):
    _, model_dir = tiny_world_model
    events = tmp_path_factory.mktemp("fuzz") / "events.sqlite"
    return create_app(model_dir, events=events, admin_token=TOKEN)


def test_every_request_body_is_in_the_openapi_document(app):
    document = app.openapi()
    for path, method in [("/recommend/{user_id}", "post"), ("/events", "post"),
                         ("/admin/reload", "post")]:
        body = document["paths"][path][method]["requestBody"]["content"]["application/json"]
        assert body["schema"], (method, path)
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status.startswith("4"):  # every documented error is the project's JSON error
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path)
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_schemathesis_finds_no_5xx_and_no_undocumented_answer(app):
    result = fuzz_api(app, examples_per_operation=50, seed=14,
                      headers={"Authorization": f"Bearer {TOKEN}"})
    assert result.server_errors == 0, result.samples
    failures = {name: result.failures[name] for name in CHECKS}
    assert failures == dict.fromkeys(CHECKS, 0), result.samples
    assert len(result.cases_by_operation) == 10 and result.cases >= 300  # 8 routes, /health and /metrics also as HEAD
    assert {200, 400, 422} <= set(result.statuses)  # valid and invalid input both reached the app
