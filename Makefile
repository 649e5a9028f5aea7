# The two commands that matter: `make dev` runs pyfaas on this machine, `make test` runs
# every test. Both install what they need (uv from PyPI when it is missing, then the
# locked dependencies) and start NATS (and, for tests, Postgres) when none is reachable.

PYTHON ?= python3
UV_SYSTEM := $(shell command -v uv 2>/dev/null)
UV := $(if $(UV_SYSTEM),$(UV_SYSTEM),$(CURDIR)/.tools/bin/uv)
RUN := $(UV) run --frozen

.PHONY: dev test lint unit integration e2e bench sync help

help:
	@echo "make dev    - run the whole platform on this machine (Ctrl-C stops it)"
	@echo "make test   - lint, type-check and run every test"
	@echo "make lint   - ruff, mypy and the import contracts only"
	@echo "make bench  - print the benchmarks' figures"

# In a venv of its own; where python3-venv is missing (a bare Debian), with pip --target,
# which puts the uv binary in the same place.
$(CURDIR)/.tools/bin/uv:
	if $(PYTHON) -m venv $(CURDIR)/.tools 2>/dev/null; then \
	  $(CURDIR)/.tools/bin/python -m pip install --quiet --disable-pip-version-check uv; \
	else \
	  rm -rf $(CURDIR)/.tools && \
	  $(PYTHON) -m pip install --quiet --disable-pip-version-check --target $(CURDIR)/.tools uv; \
	fi

.venv/.synced: uv.lock pyproject.toml $(wildcard */*/pyproject.toml) | $(UV)
	$(UV) sync --frozen --all-packages
	@touch $@

sync: .venv/.synced

dev: sync
	$(RUN) faas dev

lint: sync
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) lint-imports
	$(RUN) mypy

test: lint
	$(RUN) pytest

unit: sync
	$(RUN) pytest tests/unit

integration: sync
	$(RUN) pytest tests/integration

e2e: sync
	$(RUN) pytest tests/e2e

bench: sync
	$(RUN) python bench/deploy.py
	$(RUN) python bench/reaper.py
	$(RUN) python bench/coldstart.py
	$(RUN) python bench/gateway.py

# Print every Kubernetes object the kubernetes runtime would apply for one script, with
# the current PYFAAS_* settings (like `helm template`): make render SCRIPT=path/to/main.py
render:
	@test -n "$(SCRIPT)" || { echo "usage: make render SCRIPT=path/to/main.py" >&2; exit 2; }
	@$(RUN) python -m pyfaas_deployer.render "$(SCRIPT)"
.PHONY: render

# The end-to-end suite against the containers of docker-compose.yml (needs a Docker engine;
# tests that look at this machine's processes skip themselves).
e2e-compose: sync
	docker compose up --detach --build --wait
	PYFAAS_E2E_API_URL=http://127.0.0.1:8000 PYFAAS_E2E_GATEWAY_URL=http://127.0.0.1:8080 \
		$(RUN) pytest tests/e2e; status=$$?; docker compose down; exit $$status
.PHONY: e2e-compose

# The event contract: AsyncAPI documents FastStream generates from the workers' handlers.
docs: sync
	cd docs/asyncapi && env -u PYFAAS_NATS_PREFIX $(RUN) faststream docs gen --factory pyfaas_deployer.app:build_app --out deployer.json
	cd docs/asyncapi && env -u PYFAAS_NATS_PREFIX $(RUN) faststream docs gen --factory pyfaas_reaper.app:build_app --out reaper.json
.PHONY: docs

# A token for PYFAAS_AUTH=jwt (needs PYFAAS_JWT_SECRET): make token USER=alice
token: sync
	@$(RUN) faas token $(USER)
.PHONY: token

# Fault scenarios, long versions (a 30 s hostile load, a NATS outage longer than the API's
# wait): what was injected, how long recovery took, what was lost (nothing). Issue 7.
faults: sync
	PYFAAS_FAULTS_FULL=1 $(RUN) pytest tests/faults -p no:cacheprovider -q
.PHONY: faults
