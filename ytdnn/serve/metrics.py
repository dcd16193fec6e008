"""Prometheus metrics of the serving API: request counts, latency histograms, where time goes.

Every app has its own ``CollectorRegistry`` (two apps in one process, as in tests, never mix
counts). ``MetricsMiddleware`` is plain ASGI, not Starlette's BaseHTTPMiddleware, which would
add a task and a stream copy to every request. Requests are labelled by route template
("/recommend/{user_id}"), never by raw path, so the number of series stays bounded whatever ids
clients send; a path that matches no route is "unmatched".

Series:
- ``ytdnn_http_requests_total{method, endpoint, status}``
- ``ytdnn_http_request_duration_seconds{method, endpoint}`` (histogram)
- ``ytdnn_recommend_batch_size`` and ``ytdnn_recommend_batch_seconds`` (histograms; the
  inference thread's micro-batches)
- ``ytdnn_recommend_stage_seconds_total{stage}``: inference time per stage (history read, user
  tower, index search, ranker features, ranker model, ...), summed over batches
- ``ytdnn_recommend_answers_total{source}`` ("model" or "popular"), ``ytdnn_events_total{table}``,
  ``ytdnn_model_reloads_total{outcome}``, ``ytdnn_model_info{version}``
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04,
                   0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class _Registry(CollectorRegistry):
    """Leaves out the "<name>_created" series beside every counter and histogram: they double the
    page and no dashboard of this API reads them. Filtered here rather than with
    prometheus_client.disable_created_metrics(), a process-wide switch a library must not flip."""

    def collect(self):
        for family in super().collect():
            family.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield family


class ServeMetrics:
    """The app's metrics and the hooks that feed them."""

    def __init__(self) -> None:
        self.registry = _Registry(auto_describe=True)
        r = self.registry
        self.requests = Counter("ytdnn_http_requests", "HTTP requests answered",
                                ["method", "endpoint", "status"], registry=r)
        self.latency = Histogram("ytdnn_http_request_duration_seconds",
                                 "Time from the request's arrival to the end of its response",
                                 ["method", "endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("ytdnn_recommend_batch_size",
                                    "Recommend requests answered by one model call",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("ytdnn_recommend_batch_seconds",
                                       "Inference time of one micro-batch, history reads included",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.stage_seconds = Counter("ytdnn_recommend_stage_seconds",
                                     "Inference seconds spent in each stage", ["stage"], registry=r)
        self.answers = Counter("ytdnn_recommend_answers", "Recommend answers by source",
                               ["source"], registry=r)
        self.events = Counter("ytdnn_events", "Events stored", ["table"], registry=r)
        self.reloads = Counter("ytdnn_model_reloads", "Hot reloads", ["outcome"], registry=r)
        self.model_info = Gauge("ytdnn_model_info", "The model being served (value 1)",
                                ["version"], registry=r)

    def on_batch(self, size: int, seconds: float, stages: dict[str, float]) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)
        for stage, value in stages.items():
            self.stage_seconds.labels(stage).inc(value)

    def serving(self, version: str) -> None:
        self.model_info.clear()
        self.model_info.labels(version).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts and times every HTTP request (ASGI)."""

    def __init__(self, app, metrics: ServeMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # if the app dies before it starts a response

        async def send_and_note(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path_format", None) or "unmatched"  # "/x/{id}", also for "{id:path}"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, endpoint, str(status)).inc()
            self.metrics.latency.labels(method, endpoint).observe(time.perf_counter() - start)
