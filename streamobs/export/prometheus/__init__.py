"""The Prometheus exporters: probe series, /probe registries, bounded model labels."""
