# Everything a newcomer needs is behind two targets: `make demo` and `make test`.
# Both set up from scratch (a virtualenv, Python deps, Kafka's jars from Maven Central) and are idempotent.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup test-deps demo test lint clean

$(STAMP): pyproject.toml demo/pyproject.toml
	@echo "==> creating $(VENV) and installing lagscaler with its dev tools (about a minute)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]' -e ./demo
	@touch $(STAMP)
	@echo "==> installed: '. $(VENV)/bin/activate' puts lagscaler on your PATH (or run $(BIN)/lagscaler)"

setup: $(STAMP)
	$(BIN)/lagscaler broker fetch

# What only the tests need: kubectl (Debian's kubernetes-client), Prometheus and promtool (Debian's
# prometheus package), the HPA's own Go client (k8s.io/metrics, built from the Go module proxy and
# cached) that tests/test_api_clients.py uses, and etcd + kube-apiserver + kube-controller-manager for
# tests/controlplane (built once from the Go module proxy into ~/.cache/lagscaler/kube: ~15-20 min the
# first time, nothing after). Prometheus is unpacked from the .deb into the cache rather than
# installed: installing the package would also start a Prometheus service on :9090 where systemd runs.
PROMETHEUS_DEB_DIR := $(or $(LAGSCALER_CACHE),$(HOME)/.cache/lagscaler)/prometheus

test-deps: $(STAMP)
	@echo "==> test tools: Prometheus (unpacked from Debian's .deb), kubectl, the HPA's Go client (tests/goclient), the control plane (tests/controlplane)"
	@command -v promtool >/dev/null 2>&1 || [ -x $(PROMETHEUS_DEB_DIR)/usr/bin/promtool ] || \
		{ command -v apt-get >/dev/null 2>&1 && mkdir -p $(PROMETHEUS_DEB_DIR) && cd $(PROMETHEUS_DEB_DIR) && \
		  { apt-get download prometheus >/dev/null 2>&1 || \
		    { [ "$$(id -u)" = 0 ] && apt-get update -qq >/dev/null 2>&1 && apt-get download prometheus >/dev/null ; } ; } && \
		  dpkg-deb -x prometheus_*.deb . && rm -f prometheus_*.deb ; } || \
		echo "note: prometheus not unpacked; the Prometheus and alert rule tests will say so"
	@command -v kubectl >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
		(apt-get install -y -qq kubernetes-client >/dev/null 2>&1 || \
		 (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq kubernetes-client >/dev/null)) ; } || \
		echo "note: kubectl not installed; the kubectl compatibility test will skip (and fail in CI)"
	$(BIN)/python -m tests.goclient.build
	nice -n 10 $(BIN)/python -m tests.controlplane.build

demo: setup
	$(BIN)/lagscaler demo

test: setup test-deps
	@echo "==> running the test suite (see README: Development); tests that talk to Kafka use a real broker"
	$(BIN)/pytest -n 2 --dist loadgroup

lint: setup
	$(BIN)/ruff check lagscaler demo tests bench
	$(BIN)/ruff format --check lagscaler demo tests bench
	$(BIN)/mypy --strict -p lagscaler -p lagscaler_demo
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
