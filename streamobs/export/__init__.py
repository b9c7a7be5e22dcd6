"""Exporters: read results and snapshots, never measure."""
