# Everything runs from a local virtualenv so a fresh machine needs only python3.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: test soak demo bench pack install lint typecheck clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

lint: install
	$(BIN)/ruff check streamobs tests benchmarks
	$(BIN)/ruff format --check streamobs tests benchmarks
	$(BIN)/python -m streamobs.pack --check
	$(BIN)/python -m streamobs.reference --check

typecheck: install
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest

# The soak smoke run (about 25 s of faults, leaks and /metrics checked), apart from `make test`;
# `python -m benchmarks.soak --duration 3600` is the hour-long run.
soak: install
	$(BIN)/pytest benchmarks/test_soak.py

demo: install
	$(BIN)/streamobs demo

# Regenerate alerts/, dashboards/ and the PrometheusRule after changing streamobs/pack/.
pack: install
	$(BIN)/python -m streamobs.pack
	$(BIN)/python -m streamobs.reference --write

# Run by hand on a quiet machine; writes the results table into README.md.
bench: install
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
