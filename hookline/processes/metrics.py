"""The long-running consumers' Prometheus metrics."""

from prometheus_client import Counter, Gauge, Histogram

EVENTS_PROJECTED = Counter(
    "hookline_events_projected", "Log records projected, by outcome.", ["outcome"],
)
CONSUMER_OFFSET = Gauge(
    "hookline_consumer_offset", "Last offset whose effects are committed.", ["consumer"],
)
CONSUMER_LAG = Gauge(
    "hookline_consumer_lag", "Records in the log not yet projected.", ["consumer"],
)
BATCH_SECONDS = Histogram(
    "hookline_batch_seconds", "Time to project one batch and commit it.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
STREAM_FIRST_OFFSET = Gauge(
    "hookline_stream_first_offset",
    "First offset the stream still holds: above 0, retention has dropped records.",
    ["stream"],
)
STREAM_BYTES = Gauge(
    "hookline_stream_bytes",
    "Estimated bytes the stream holds: records kept times their mean size on disk.",
    ["stream"],
)
STREAM_MAX_BYTES = Gauge(
    "hookline_stream_max_bytes",
    "Each stream's byte limit (HOOKLINE_STREAM_MAX_BYTES).",
)
LOG_PARTITIONS = Gauge(
    "hookline_log_partitions", "Partitions the log is split into (HOOKLINE_PARTITIONS).",
)
