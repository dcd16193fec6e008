"""The HTTP API over a model directory, with fresh history from an event store (FastAPI).

    app = create_app("models/demo", events="events.sqlite")      # then: uvicorn, or `ytdnn serve`

Endpoints (OpenAPI docs at /docs):

- ``GET /recommend/{user_id}?k=10[&geo=US&age=31...]``: the top k, each with its score and the
  stage that produced the score ("ranker", "candidates", or "popular"). Query parameters other than
  ``k`` are user features (the model's feature columns; /health lists them), used for this request
  only. ``POST /recommend/{user_id}`` takes ``{"k": 10, "features": {...}}`` instead.
- ``GET /similar/{item_id}?k=10``: nearest items in the output embedding space.
- ``POST /events``: ``{"watches": [...], "searches": [...]}``, or one event alone (a watch has
  ``item_id``, a search has ``query``); each event as in the canonical tables, ``timestamp``
  (seconds) required.
- ``GET /users/{user_id}/history?limit=100``: the stored events, oldest first.
- ``GET /health``; ``GET /metrics`` (Prometheus text).
- ``POST /admin/reload`` ``{"model_dir": "..."}`` (optional; default: the current directory):
  load, then swap atomically. Admin endpoints answer loopback clients only, unless an admin token
  is configured: then any client that sends ``Authorization: Bearer <token>``, and no other.

Every error is JSON, ``{"error": {"status": 422, "message": "...", ...}}``, with a 4xx for anything
a client can send (``ytdnn.serve.bodies`` reads bodies, ``ytdnn.serve.protocol`` limits headers);
a 5xx would be a bug. Every body, request and response, is in the OpenAPI document
(``ytdnn.serve.schemas``), which tests/serve/test_fuzz_api.py fuzzes with schemathesis.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Query, Request
from fastapi.responses import PlainTextResponse, Response

from ytdnn.serve import schemas
from ytdnn.serve.admin import AdminRefused, check_admin, is_forwarded
from ytdnn.serve.batcher import RecommendBatcher
from ytdnn.serve.bodies import read_json
from ytdnn.serve.engine import Job, ModelHolder, ServeConfig, ServingModel
from ytdnn.serve.errors import ApiError, install_error_handlers, one_line
from ytdnn.serve.events import (
    EventError,
    EventStore,
    coerce_id,
    validate_searches,
    validate_watches,
)
from ytdnn.serve.metrics import CONTENT_TYPE, MetricsMiddleware, ServeMetrics
from ytdnn.serve.protocol import RequestLimitMiddleware
from ytdnn.serve.seed import STORE_FILE, model_id_type, open_event_store

log = logging.getLogger("ytdnn.serve")
DEFAULT_K = 10  # items per recommendation when a request names no k


class ServeState:
    """What the endpoints share: the model holder, the store, the inference thread, metrics."""

    def __init__(self, model: ServingModel, store: EventStore, config: ServeConfig,
                 admin_token: str | None, owns_store: bool):
        _check_store_fits(store, model)
        self.holder = ModelHolder(model, check=lambda new: _check_store_fits(store, new))
        self.store, self.config = store, config
        self.admin_token, self.owns_store = admin_token, owns_store
        self.metrics = ServeMetrics()
        self.metrics.serving(model.version)
        self.batcher = RecommendBatcher(store, config.history_limit, config.max_batch_size,
                                        self.metrics.on_batch)
        # called with the new model after each successful reload: under `ytdnn serve --workers`
        # it passes the reload on to every other worker (ytdnn.serve.workers)
        self.after_reload = None


def _check_store_fits(store: EventStore, model: ServingModel) -> None:
    """A model whose ids the store cannot hold is refused (before it is swapped in)."""
    wanted = model_id_type(model.recommender)
    if store.id_type is not None and wanted != store.id_type:
        raise ValueError(f"the event store holds {store.id_type} ids; model "
                         f"{model.model_dir} has {wanted} ids")


def create_app(model_dir: str | Path | ServingModel, events: EventStore | str | Path | None = None,
               admin_token: str | None = None, config: ServeConfig | None = None,
               data_dir: str | Path | None = None, seed: bool = True) -> FastAPI:
    """The API over ``model_dir`` (or an already loaded ServingModel).

    events: an EventStore, or the path of a SQLite file (created and seeded with the training
    history if absent: from ``data_dir``'s canonical tables when given, else from the model;
    ``seed=False`` leaves a new store empty); default ``<model_dir>/events.sqlite``.
    admin_token: when set, admin endpoints take any client that sends it, and only those.
    """
    config = config or ServeConfig()
    model = model_dir if isinstance(model_dir, ServingModel) else ServingModel(model_dir, config)
    owns_store = not isinstance(events, EventStore)
    if owns_store:
        path = events if events is not None else model.model_dir / STORE_FILE
        events, seeded = open_event_store(path, model.recommender, data_dir, seed)
        if seeded:
            log.info("seeded the event store %s: %s", path, seeded)
    state = ServeState(model, events, config, admin_token, owns_store)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        state.batcher.stop()
        if state.owns_store:
            state.store.close()

    app = FastAPI(title="ytdnn", version="0.1.0", lifespan=lifespan,
                  description="Two-stage recommendations (candidate generation, then ranking) "
                              "with fresh history from an event store.",
                  responses=schemas.errors(414, 431))
    app.state.serve = state
    install_error_handlers(app)
    # innermost: the plain GET /recommend goes straight to the batcher, past FastAPI's routing
    app.add_middleware(RecommendFastLane, state=state, router=app.router)
    # inside the metrics: an oversized request is refused before any endpoint, and still counted
    app.add_middleware(RequestLimitMiddleware, max_header_bytes=config.max_header_bytes)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    _recommend_routes(app, state)
    _event_routes(app, state)
    _admin_routes(app, state)
    schemas.install_request_schemas(app, config.max_k, config.max_events_per_request)
    return app


def _check_k(k: int, config: ServeConfig) -> int:
    if not 1 <= k <= config.max_k:
        raise ApiError(422, f"k must be between 1 and {config.max_k}, got {k}", field="k")
    return k


async def _recommend(state: ServeState, user_id: str, k: int, features: dict[str, Any]) -> Response:
    model = state.holder.current  # this request's model, whatever a reload does meanwhile
    job = Job(model, model.user_id(user_id), k, model.check_features(features))
    answer = await state.batcher.submit(job)
    state.metrics.answers.labels(answer["source"]).inc()
    # plain JSON already: skip FastAPI's walk of the answer through jsonable_encoder
    return Response(json.dumps(answer).encode(), media_type="application/json")


class RecommendFastLane:
    """``GET /recommend/{user_id}`` with no query or only ``k``, answered by the endpoint's own
    code (``_recommend``) without FastAPI's router, exception and exit-stack layers and
    dependency solving: about a quarter of a served request's CPU at saturation. Every other
    request, and any this lane cannot answer plainly (features, an unusual ``k``, an error),
    goes on to the app, which answers it as the API always has. (ASGI middleware, the innermost:
    the metrics and the request limits still see every request.)"""

    PREFIX = "/recommend/"
    K = re.compile(rb"(?:k=([1-9][0-9]{0,5}))?")

    def __init__(self, app, state: ServeState, router) -> None:
        self.app, self.state, self.router, self.route = app, state, router, None

    async def __call__(self, scope, receive, send) -> None:
        user_id, k = self._plain(scope)
        if user_id is not None:
            try:
                response = await _recommend(self.state, user_id, k, {})
            except Exception:  # noqa: BLE001 - the app's handlers turn it into the API's answer
                response = None
            if response is not None:
                scope["route"] = self.route  # what the router would have set (metrics label)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _plain(self, scope) -> tuple[str | None, int]:
        """(user id, k) of a plain GET /recommend request; (None, 0) for any other."""
        path = scope.get("path", "")
        if (scope["type"] != "http" or scope["method"] != "GET" or scope.get("root_path")
                or not path.startswith(self.PREFIX)):
            return None, 0
        user_id = path[len(self.PREFIX):]
        match = self.K.fullmatch(scope["query_string"])
        if not user_id or "/" in user_id or match is None:
            return None, 0
        k = int(match[1] or DEFAULT_K)
        if k > self.state.config.max_k:
            return None, 0
        if self.route is None:
            self.route = next(r for r in self.router.routes
                              if getattr(r, "path_format", None) == "/recommend/{user_id}" and "GET" in r.methods)
        return user_id, k


def _recommend_routes(app: FastAPI, state: ServeState) -> None:
    config = state.config

    @app.get("/recommend/{user_id:path}", tags=["recommend"], response_model=None,
             responses=schemas.ok(schemas.Recommendation, 422))
    async def recommend(request: Request, user_id: str,
                        k: int = Query(DEFAULT_K, ge=1, le=config.max_k)) -> Response:
        """The user's top k: items, scores, and the stage that produced each score.

        Query parameters other than ``k`` are user features for this request (e.g. ``geo=US``,
        ``age=31``; a list feature repeats its name, ``interests=a&interests=b``): an unknown
        user is then served from them instead of the popular list."""
        lists = state.holder.current.lists
        features: dict[str, Any] = {}
        for name, value in request.query_params.multi_items():
            if name == "k":
                continue
            if name in lists:  # a list feature: one parameter per value, ?interests=a&interests=b
                features.setdefault(name, []).append(value)
            elif name in features:
                raise ApiError(422, f"feature {name!r} is given more than once", field="features")
            else:
                features[name] = value
        return await _recommend(state, user_id, _check_k(k, config), features)

    @app.post("/recommend/{user_id:path}", tags=["recommend"], response_model=None,
              responses=schemas.ok(schemas.Recommendation, 400, 413, 415, 422),
              openapi_extra=schemas.request_body("RecommendRequest"))
    async def recommend_with_body(request: Request, user_id: str) -> Response:
        """As GET, with ``{"k": 10, "features": {"geo": "US", "age": 31}}`` as the body."""
        body = await read_json(request, config.max_body_bytes)
        if not isinstance(body, dict):
            raise ApiError(422, "expected a JSON object {\"k\": ..., \"features\": {...}}")
        unknown = sorted(set(body) - {"k", "features"})
        if unknown:
            raise ApiError(422, f"unknown field(s) {unknown}; expected k, features")
        k, features = body.get("k", DEFAULT_K), body.get("features") or {}
        if isinstance(k, bool) or not isinstance(k, int):
            raise ApiError(422, f"k must be an integer, got {k!r}", field="k")
        if not isinstance(features, dict):
            raise ApiError(422, "features must be an object of feature: value", field="features")
        return await _recommend(state, user_id, _check_k(k, config), features)

    @app.get("/similar/{item_id:path}", tags=["recommend"], response_model=None,
             responses=schemas.ok(schemas.SimilarItems, 404, 422))
    def similar(item_id: str, k: int = Query(10, ge=1, le=config.max_k)) -> dict:
        """Items nearest ``item_id`` by inner product in the output embedding space."""
        model = state.holder.current
        item = model.item_id(item_id)
        items = model.similar(item, _check_k(k, config))
        if items is None:
            raise ApiError(404, f"item {item_id!r} is not in the model's vocabulary", field="item_id")
        return {"item_id": item, "k": k, "model": model.version, "items": items}


def _event_lists(body: Any) -> tuple[list, list]:
    """(watches, searches) of a batch body or of one event alone."""
    if not isinstance(body, dict):
        raise ApiError(422, "expected a JSON object: {\"watches\": [...], \"searches\": [...]} "
                            "or one event")
    if "watches" in body or "searches" in body:
        unknown = sorted(set(body) - {"watches", "searches"})
        if unknown:
            raise ApiError(422, f"unknown field(s) {unknown}; expected watches, searches")
        watches, searches = body.get("watches") or [], body.get("searches") or []
        if not isinstance(watches, list) or not isinstance(searches, list):
            raise ApiError(422, "watches and searches must be lists of events")
        return watches, searches
    if "item_id" in body:
        return [body], []
    if "query" in body:
        return [], [body]
    raise ApiError(422, "an event needs item_id (a watch) or query (a search)")


def _typed_ids(events: list, model: ServingModel, fields: tuple[str, ...], table: str) -> list:
    """Ids in each space's own type, for a store that keeps ids as given (mixed-type models)."""
    out = []
    for i, event in enumerate(events):
        if isinstance(event, dict):
            event = dict(event)
            for name, kind in zip(fields, (model.user_type, model.item_type)):
                if name in event:
                    try:
                        event[name] = coerce_id(event[name], kind)
                    except (TypeError, ValueError) as err:
                        raise EventError(str(err), table=table, index=i, field=name) from None
        out.append(event)
    return out


def _event_routes(app: FastAPI, state: ServeState) -> None:
    config = state.config

    @app.post("/events", tags=["events"], response_model=None,
              responses=schemas.ok(schemas.Stored, 400, 413, 415, 422),
              openapi_extra=schemas.request_body("EventBatch", "WatchEvent", "SearchEvent"))
    async def post_events(request: Request) -> dict:
        """Store watches and searches; the next recommendation of their users reads them."""
        watches, searches = _event_lists(await read_json(request, config.max_body_bytes))
        if len(watches) + len(searches) > config.max_events_per_request:
            raise ApiError(413, f"{len(watches) + len(searches)} events in one request; at most "
                                f"{config.max_events_per_request}")
        store, model = state.store, state.holder.current
        try:
            if store.id_type is None:
                watches = _typed_ids(watches, model, ("user_id", "item_id"), "watches")
                searches = _typed_ids(searches, model, ("user_id",), "searches")
            watches = validate_watches(watches, store.id_type)  # all checked before any is stored
            searches = validate_searches(searches, store.id_type)
        except EventError as err:
            raise ApiError(422, str(err), table=err.table, index=err.index, field=err.field) from None

        def write() -> dict[str, int]:
            return {"watches": store.add_watches(watches), "searches": store.add_searches(searches)}

        stored = await anyio.to_thread.run_sync(write)
        for table, n in stored.items():
            state.metrics.events.labels(table).inc(n)
        return {"stored": stored}

    @app.get("/users/{user_id:path}/history", tags=["events"], response_model=None,
             responses=schemas.ok(schemas.UserHistory, 422))
    def history(user_id: str, limit: int = Query(100, ge=1, le=10_000)) -> dict:
        """The user's last ``limit`` watches and searches, oldest first."""
        user = state.holder.current.user_id(user_id)
        return {**state.store.history(user, limit).to_dict(), "limit": limit}

    # HEAD too: what load balancers and uptime checks send (RFC 9110 §9.3.2)
    @app.api_route("/health", methods=["GET", "HEAD"], tags=["operations"], response_model=None,
                   responses=schemas.ok(schemas.Health))
    def health() -> dict:
        model = state.holder.current
        return {"status": "ok", "model": model.describe(), "events": type(state.store).__name__,
                "pending_recommendations": state.batcher.pending(), "reloads": state.holder.reloads}

    @app.api_route("/metrics", methods=["GET", "HEAD"], tags=["operations"], response_class=PlainTextResponse,
                   responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
    def metrics() -> Response:
        """Request counts and latency histograms, in Prometheus text format."""
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)


def _admin_routes(app: FastAPI, state: ServeState) -> None:
    config = state.config

    @app.post("/admin/reload", tags=["admin"], response_model=None,
              responses=schemas.ok(schemas.Reloaded, 400, 401, 403, 413, 415, 422),
              openapi_extra=schemas.request_body("ReloadRequest", required=False))
    async def reload(request: Request) -> dict:
        """Load a model directory (default: the current one again) and swap it in atomically.

        Requests already under way finish on the old model. Loopback clients only, unless an
        admin token is configured (then ``Authorization: Bearer <token>``)."""
        try:
            check_admin(request.client.host if request.client else None,
                        request.headers.get("authorization"), state.admin_token,
                        forwarded=is_forwarded(request.headers))
        except AdminRefused as err:  # a 401 names its scheme (RFC 9110 §11.6.1)
            raise ApiError(err.status, str(err), {"WWW-Authenticate": "Bearer"} if err.status == 401 else None) from None
        body = await read_json(request, config.max_body_bytes, empty={})
        if not isinstance(body, dict) or set(body) - {"model_dir"}:
            raise ApiError(422, "expected {\"model_dir\": \"...\"} (or no body)")
        model_dir = body.get("model_dir")
        if model_dir is not None and not isinstance(model_dir, str):
            raise ApiError(422, "model_dir must be a string", field="model_dir")
        try:
            old, new = await anyio.to_thread.run_sync(reload_model, state, model_dir)
        except Exception as err:  # noqa: BLE001 - a directory that does not load is the caller's
            # one line, whatever the loader raised: a multi-line message or an empty one
            reason = one_line(str(err)) or type(err).__name__
            raise ApiError(422, f"the model was not reloaded: {reason}",
                           field="model_dir") from None
        return {"reloaded": True, "previous": old.version, "model": new.describe()}


def install_sighup_reload(state: ServeState):
    """On SIGHUP, reload the current model directory in a background thread (the handler itself
    must return at once). Call from the main thread; returns the previous handler."""
    import signal
    import threading

    def on_sighup(signum, frame) -> None:
        threading.Thread(target=_reload_quietly, args=(state,), name="ytdnn-reload", daemon=True).start()

    return signal.signal(signal.SIGHUP, on_sighup)


def _reload_quietly(state: ServeState) -> None:
    with contextlib.suppress(Exception):  # logged by reload_model; the old model keeps serving
        reload_model(state)


def reload_model(state: ServeState, model_dir: str | Path | None = None):
    """Load and swap in a model (what POST /admin/reload and SIGHUP do) -> (old, new).

    Blocks for the load (seconds); requests keep being answered by the old model meanwhile."""
    try:
        old, new = state.holder.reload(model_dir)
    except Exception as err:
        state.metrics.reloads.labels("failed").inc()
        # the directory quoted (%r) and the reason on one line: a client's text never forges a
        # log line of its own
        log.warning("reload of %s failed (%s); still serving %s",
                    "the model" if model_dir is None else repr(str(model_dir)),
                    one_line(str(err)) or type(err).__name__, state.holder.current.version)
        raise
    state.metrics.reloads.labels("ok").inc()
    state.metrics.serving(new.version)
    log.info("reloaded: %s -> %s", old.version, new.version)
    if state.after_reload is not None:
        state.after_reload(new)
    return old, new
