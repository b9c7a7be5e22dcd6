"""Collectors: sources beside the probes (vLLM's own metrics, the GPUs), each sampled in
the background into immutable snapshots and exported by a custom collector that only reads them."""
