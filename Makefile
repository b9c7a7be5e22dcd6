# Everything runs from a local virtualenv so a fresh machine needs only python3.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

# Exact versions (with hashes) of the runtime and test dependencies, resolved from
# pyproject's ranges for CPython 3.11 on Linux x86_64 (Debian 12, what CI runs on).
LOCK := requirements.lock
UV := uv==0.13.9

.PHONY: test test-under-load soak demo bench pack install lint typecheck lock clean lint-deploy lock-deploy

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

# Regenerate the lock after changing a dependency in pyproject.toml.
lock:
	test -x $(BIN)/pip || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet '$(UV)'
	$(BIN)/uv pip compile --quiet pyproject.toml --extra test --generate-hashes \
		--python-version 3.11 --python-platform x86_64-unknown-linux-gnu -o $(LOCK)

lint: install
	$(BIN)/ruff check streamobs tests benchmarks
	$(BIN)/ruff format --check streamobs tests benchmarks
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m streamobs.pack --check
	$(BIN)/python -m streamobs.reference --check

typecheck: install
	$(BIN)/mypy

test: lint typecheck lint-deploy
	$(BIN)/pytest

# The deploy examples through the scanners a cluster or host team would run, all offline:
# kubernetes-validate (strict; custom resources against their CRDs in deploy/lint/crds/)
# for the oldest and newest Kubernetes version the example is meant for, checkov over the
# manifests and the Dockerfile, and the systemd unit's exposure score. Both manifest
# scanners walk every subfolder of deploy/kubernetes (the fleet example in fleet/ too);
# manifests.py also fails a file that is not YAML, which checkov would pass over. The
# scanners live in their own virtualenv, from their own lock (checkov pins many packages
# of its own).
DEPLOY_VENV ?= .venv-deploy
DEPLOY_LOCK := deploy/lint-requirements.lock
KUBERNETES_VERSIONS := 1.31.0 1.37.0

$(DEPLOY_VENV)/.installed: $(DEPLOY_LOCK)
	$(PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/pip install --quiet --upgrade pip
	$(DEPLOY_VENV)/bin/pip install --quiet --require-hashes -r $(DEPLOY_LOCK)
	touch $@

lint-deploy: $(DEPLOY_VENV)/.installed
	for version in $(KUBERNETES_VERSIONS); do \
		$(DEPLOY_VENV)/bin/python deploy/lint/manifests.py --kubernetes-version $$version deploy/kubernetes || exit 1; \
	done
	$(DEPLOY_VENV)/bin/checkov -d deploy/kubernetes --framework kubernetes --skip-download --compact --quiet
	$(DEPLOY_VENV)/bin/checkov -f Dockerfile --framework dockerfile --skip-download --compact --quiet
	$(DEPLOY_VENV)/bin/python deploy/lint/systemd_exposure.py --max 2.0 deploy/systemd/streamobs.service

# Regenerate the scanners' lock after changing deploy/lint-requirements.in.
lock-deploy:
	test -x $(BIN)/pip || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet '$(UV)'
	$(BIN)/uv pip compile --quiet deploy/lint-requirements.in --generate-hashes \
		--python-version 3.11 --python-platform x86_64-unknown-linux-gnu -o $(DEPLOY_LOCK)

# The same suite while one busy loop per core runs. The loops end with the suite, at the
# runner's limit or when the runner dies; `timeout` bounds the runner itself.
test-under-load: install
	timeout --kill-after=30 2700 $(BIN)/python -m tests.under_load --limit 2400

# The soak smoke run (about 25 s of faults, leaks and /metrics checked), apart from `make test`;
# `python -m benchmarks.soak --duration 3600` is the hour-long run.
soak: install
	$(BIN)/pytest benchmarks/test_soak.py

# Flags for `streamobs demo` go in ARGS: make demo ARGS="--slow-ttft 3 --fault-after 30".
demo: install
	$(BIN)/streamobs demo $(ARGS)

# Regenerate alerts/, dashboards/ and the PrometheusRule after changing streamobs/pack/:
# the pack for the default config, what `streamobs pack --out DIR` writes for a user.
pack: install
	$(BIN)/streamobs pack --out .
	$(BIN)/python -m streamobs.reference --write

# Run by hand, on as quiet a machine as can be had; writes the tables into README.md. The
# full matrix: timing truth over plain TCP and TLS, quiet and with a busy loop per core, at
# 1, 16 and 64 streams, streamobs beside the OpenAI SDK and aiohttp; footprint; parse; scale
# (about an hour on 2 cores). `python -m benchmarks --quick` is the smoke run, and
# `pytest benchmarks/test_timing.py` checks the timing benchmark itself in a minute.
bench: install
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
