"""The OTLP exporter: the same results and snapshots as /metrics, over OTLP/HTTP."""
