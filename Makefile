# Everything a newcomer needs is behind two targets: `make demo` and `make test`.
# Both set up from scratch (a virtualenv, Python deps, Kafka's jars from Maven Central) and are idempotent.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup test-deps demo test lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)
	$(BIN)/lagscaler broker fetch

# What only the tests need: kubectl (Debian's kubernetes-client), the HPA's own Go client
# (k8s.io/metrics, built from the Go module proxy and cached) that tests/test_api_clients.py uses, and
# etcd + kube-apiserver + kube-controller-manager for tests/controlplane (built once from the Go module
# proxy into ~/.cache/lagscaler/kube: ~15 min the first time, nothing after).
test-deps: $(STAMP)
	@command -v kubectl >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
		(apt-get install -y -qq kubernetes-client >/dev/null 2>&1 || \
		 (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq kubernetes-client >/dev/null)) ; } || \
		echo "note: kubectl not installed; the kubectl compatibility test will say so"
	$(BIN)/python -m tests.goclient.build
	nice -n 10 $(BIN)/python -m tests.controlplane.build

demo: setup
	$(BIN)/lagscaler demo

test: setup test-deps
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check lagscaler tests bench
	$(BIN)/ruff format --check lagscaler tests bench
	$(BIN)/mypy --strict lagscaler
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
