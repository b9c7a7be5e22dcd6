"""Benchmarks and the soak run: `make bench`, results in the README."""
