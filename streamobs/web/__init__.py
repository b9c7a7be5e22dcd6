"""HTTP endpoints of the daemon: /metrics, health, status page, /probe, reload."""
