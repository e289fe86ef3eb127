"""Prometheus metrics of one app, in the app's own ``CollectorRegistry``.

A registry per app (not the process-global default) lets several apps live in one process, as tests
and multi-app hosts do, without "duplicated timeseries" errors.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    """Request latency, model batch sizes, micro-batch queue depth and items indexed."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_latency = Histogram(
            "omniret_request_latency_seconds", "HTTP request latency by route, method and status.",
            ("method", "route", "status"), buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram(
            "omniret_batch_size_items", "Items per model batch run by the micro-batcher.",
            buckets=_BATCH_BUCKETS, registry=self.registry)
        self.batch_requests = Histogram(
            "omniret_batch_size_requests", "Requests merged into one model batch.",
            buckets=_BATCH_BUCKETS, registry=self.registry)
        self.queue_depth = Gauge(
            "omniret_queue_depth", "Embedding requests waiting for the model worker.", registry=self.registry)
        self.items_indexed = Counter(
            "omniret_items_indexed", "Items added to collections.", ("collection",), registry=self.registry)
        self.items_embedded = Counter(
            "omniret_items_embedded", "Items embedded for /v1/embeddings.", registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
