"""The API's bodies as OpenAPI schemas: what /docs shows and what schemathesis fuzzes against.

Request bodies are read by hand (``ytdnn.serve.bodies.read_json``: size limit before parsing,
messages that name the event and field), so FastAPI cannot see them; each route declares its body
with ``request_body(...)`` (``openapi_extra``) and ``install_request_schemas`` adds the models
below to the document's components. Response models are documentation only (``responses=``):
answers are built as plain dicts and never re-validated on the way out. Every documented 4xx has
the error schema of ``ytdnn.serve.errors``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
Id = Int64 | str  # the model's ids are int or str; a path id "12" is read as 12 by an int model
MAX_EVENTS = 1000  # ServeConfig.max_events_per_request's default; the app's own limit is checked


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- requests ----------------------------------------------------------------------------------


class WatchEvent(_Strict):
    """One watch, as in the canonical watches table."""

    user_id: Id
    item_id: Id
    timestamp: Int64 = Field(description="seconds")
    watch_time: Annotated[float, Field(ge=0)] | None = Field(None, description="seconds, or a "
                                                             "proxy such as a rating")


class SearchEvent(_Strict):
    """One search, as in the canonical searches table (the raw query)."""

    user_id: Id
    timestamp: Int64 = Field(description="seconds")
    query: str


class EventBatch(_Strict):
    """Watches and searches, stored in one transaction: all or none."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})
    watches: Annotated[list[WatchEvent], Field(max_length=MAX_EVENTS)] | None = None
    searches: Annotated[list[SearchEvent], Field(max_length=MAX_EVENTS)] | None = None


FeatureValue = str | float | list[str]  # list: a list feature's values


class RecommendRequest(_Strict):
    """``k`` and this request's user features (any of the columns /health lists)."""

    k: Annotated[int, Field(ge=1)] = 10
    features: dict[str, FeatureValue] | None = Field(
        None, description="user features for this request, e.g. {\"geo\": \"US\", \"age\": 31}")


class ReloadRequest(_Strict):
    """The model directory to load; absent or null: the current one again."""

    model_dir: str | None = None


REQUEST_MODELS = (WatchEvent, SearchEvent, EventBatch, RecommendRequest, ReloadRequest)


# ---- responses ---------------------------------------------------------------------------------


class RecommendedItem(BaseModel):
    item_id: Id
    score: float = Field(description="ranker: exp(logit), the expected watch time; candidates: the "
                                     "inner product; popular: the decayed watch count")
    stage: Literal["ranker", "candidates", "popular"]
    candidate_score: float | None = None
    candidate_rank: int | None = None
    sources: list[str] | None = Field(None, description="the candidate sources that nominated the item")
    title: str | None = None


class Recommendation(BaseModel):
    user_id: Id
    k: int
    source: Literal["model", "popular"]
    model: str = Field(description="the version of the model that answered")
    items: list[RecommendedItem]


class SimilarItem(BaseModel):
    item_id: Id
    score: float
    title: str | None = None


class SimilarItems(BaseModel):
    item_id: Id
    k: int
    model: str
    items: list[SimilarItem]


class StoredCounts(BaseModel):
    watches: int
    searches: int


class Stored(BaseModel):
    stored: StoredCounts


class UserHistory(BaseModel):
    user_id: Id
    watches: list[WatchEvent]
    searches: list[SearchEvent]
    limit: int


class UserFeatures(BaseModel):
    categorical: list[str]
    continuous: list[str]
    lists: list[str] = Field(default_factory=list, description="features whose value is a list of strings")


class CandidateSource(BaseModel):
    name: str
    candidates: int = Field(description="how many candidates it nominates per request")


class ModelDescription(BaseModel):
    version: str
    model_dir: str
    stage: Literal["ranker", "candidates"]
    num_items: int
    num_users: int
    num_candidates: int | None
    sources: list[CandidateSource] = Field(default_factory=list, description="the candidate sources blended")
    user_features: UserFeatures
    loaded_at: float


class Health(BaseModel):
    status: Literal["ok"]
    model: ModelDescription
    events: str
    pending_recommendations: int
    reloads: int


class Reloaded(BaseModel):
    reloaded: bool
    previous: str
    model: ModelDescription


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")  # table, index, details (per-field validation)
    status: int
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    """Every 4xx (and the 5xx that would be a bug)."""

    error: ErrorDetail


ERROR_DESCRIPTIONS = {
    400: "Malformed JSON (not UTF-8, not JSON, NaN, too deep, a lone surrogate)",
    401: "An admin token is configured and was not sent",
    403: "Admin endpoints answer loopback clients only",
    404: "Unknown item",
    413: "Body over the size limit, or too many events",
    414: "Request target (path and query) over the size limit",
    415: "A compressed body (Content-Encoding other than identity)",
    422: "A value the API or the model cannot take",
    431: "Request headers over the size limit",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries: each code with the error schema, as JSON whatever the route's own
    media type (/metrics answers text, its errors JSON)."""
    content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    return {code: {"description": ERROR_DESCRIPTIONS[code], "content": content} for code in codes}


def ok(model: type[BaseModel], *error_codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for 200 with ``model``, and each of ``error_codes`` with the error schema."""
    return {200: {"model": model}, **errors(*error_codes)}


def request_body(*names: str, required: bool = True) -> dict[str, Any]:
    """``openapi_extra`` declaring a JSON body of one of the named components."""
    refs = [{"$ref": f"#/components/schemas/{name}"} for name in names]
    schema = refs[0] if len(refs) == 1 else {"anyOf": refs}
    return {"requestBody": {"required": required,
                            "content": {"application/json": {"schema": schema}}}}


def install_request_schemas(app: FastAPI, max_k: int, max_events: int) -> None:
    """Add the request models and the error body to ``app``'s OpenAPI components, with this
    app's limits."""
    models = [(m, "validation") for m in REQUEST_MODELS] + [(ErrorBody, "serialization")]
    _, top = models_json_schema(models, ref_template="#/components/schemas/{model}")
    defs = top["$defs"]
    defs["RecommendRequest"]["properties"]["k"]["maximum"] = max_k
    for name in ("watches", "searches"):
        listed = defs["EventBatch"]["properties"][name]["anyOf"][0]
        listed["maxItems"] = max_events
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(defs)
        return app.openapi_schema

    app.openapi = openapi
