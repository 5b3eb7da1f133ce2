"""The HTTP API's Prometheus metrics (``GET /metrics``), in a registry of the app's own (two
apps in one process, as in tests, never share counters).

| metric | type | labels |
|---|---|---|
| ``unfreeze_api_requests_total`` | counter | endpoint, status |
| ``unfreeze_api_request_seconds`` | histogram | endpoint |
| ``unfreeze_api_batch_size`` | histogram (images per forward pass) | |
| ``unfreeze_api_images_total`` | counter | outcome: predicted, rejected |
| ``unfreeze_api_queue_images`` | gauge (images waiting for a batch) | |
| ``unfreeze_api_model_info`` | gauge, 1 for the release in use | release, model_sha256 |
| ``unfreeze_api_reloads_total`` | counter | outcome: swapped, failed |
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Endpoints counted by name; anything else is "other" (bounded label values)
ENDPOINTS = ("/", "/healthz", "/readyz", "/metrics", "/v1/model", "/v1/predict",
             "/v1/explain")
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class ApiMetrics:
    """Counters and histograms of one app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("unfreeze_api_requests", "HTTP requests answered",
                                ("endpoint", "status"), registry=r)
        self.latency = Histogram("unfreeze_api_request_seconds", "time to answer a request",
                                 ("endpoint",), buckets=LATENCY_BUCKETS, registry=r)
        self.batch = Histogram("unfreeze_api_batch_size", "images per forward pass",
                               buckets=BATCH_BUCKETS, registry=r)
        self.images = Counter("unfreeze_api_images", "images received", ("outcome",),
                              registry=r)
        self.queue = Gauge("unfreeze_api_queue_images", "images waiting for a batch",
                           registry=r)
        self.model = Gauge("unfreeze_api_model_info", "1 for the release in use",
                           ("release", "model_sha256"), registry=r)
        self.reloads = Counter("unfreeze_api_reloads", "model reloads", ("outcome",),
                               registry=r)

    def observe(self, path: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        endpoint = path if path in ENDPOINTS or path.startswith("/static/") else "other"
        endpoint = "/static" if endpoint.startswith("/static/") else endpoint
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def swapped(self, old, new) -> None:
        """The release in use changed from ``old`` (or None) to ``new``."""
        if old is not None:
            self.model.remove(old.name, old.model_sha256)
        self.model.labels(new.name, new.model_sha256).set(1)
        self.reloads.labels("swapped").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
