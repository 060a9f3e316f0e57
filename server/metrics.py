"""Prometheus metrics, one registry per app (no global state): requests, latency, index sizes."""

from __future__ import annotations

import time
from collections.abc import Iterator

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest

from .state import Served

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class IndexSizes:
    """Collects, at scrape time, the live items of every loaded index."""

    def __init__(self, served: Served) -> None:
        self.served = served

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "lookalike_index_items", "Live vectors in a loaded index.", labels=["collection"]
        )
        for name, size in self.served.index_sizes().items():
            gauge.add_metric([name], size)
        yield gauge


def install_metrics(app: Flask, served: Served) -> None:
    """Count and time every request; serve the registry at /metrics."""
    registry = CollectorRegistry()
    requests = Counter(
        "lookalike_requests",
        "HTTP requests answered.",
        ["method", "endpoint", "status"],
        registry=registry,
    )
    latency = Histogram(
        "lookalike_request_seconds",
        "Time to answer a request.",
        ["endpoint"],
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    registry.register(IndexSizes(served))

    @app.before_request
    def start_timer() -> None:
        g.lookalike_started = time.perf_counter()

    @app.after_request
    def observe(response: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        requests.labels(request.method, endpoint, str(response.status_code)).inc()
        started = g.get("lookalike_started")
        if started is not None:
            latency.labels(endpoint).observe(time.perf_counter() - started)
        return response

    @app.route("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
