"""The ingress's Prometheus metrics (multiprocess-safe under gunicorn)."""

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

WEBHOOKS_RECEIVED = Counter(
    "hookline_webhooks_received", "Webhook deliveries by source and outcome.",
    ["source", "outcome"],
)
REQUEST_SECONDS = Histogram(
    "hookline_ingest_request_seconds", "Time to answer a webhook delivery.",
    buckets=LATENCY_BUCKETS,
)
PUBLISH_SECONDS = Histogram(
    "hookline_publish_seconds", "Time from publishing a record to the broker's confirm.",
    buckets=LATENCY_BUCKETS,
)
PUBLISH_INFLIGHT = Gauge(
    "hookline_publish_inflight", "Records published and not yet confirmed.",
    multiprocess_mode="livesum",
)
