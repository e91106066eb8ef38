# Everything a newcomer needs is behind two targets: `make demo` and `make test`.
# Both set up from scratch (a virtualenv, Python deps, Kafka's jars from Maven Central) and are idempotent.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup test-deps demo test lint clean

$(STAMP): pyproject.toml
	@echo "==> creating $(VENV) and installing lagscaler with its dev tools (about a minute)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)
	@echo "==> installed: '. $(VENV)/bin/activate' puts lagscaler on your PATH (or run $(BIN)/lagscaler)"

setup: $(STAMP)
	$(BIN)/lagscaler broker fetch

# What only the tests need: kubectl (Debian's kubernetes-client) and the HPA's own Go client
# (k8s.io/metrics, built from the Go module proxy and cached) that tests/test_api_clients.py uses.
test-deps: $(STAMP)
	@echo "==> test tools: kubectl (Debian's kubernetes-client) and the HPA's Go client (tests/goclient)"
	@command -v kubectl >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
		(apt-get install -y -qq kubernetes-client >/dev/null 2>&1 || \
		 (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq kubernetes-client >/dev/null)) ; } || \
		echo "note: kubectl not installed; the kubectl compatibility test will skip (and fail in CI)"
	$(BIN)/python -m tests.goclient.build

demo: setup
	$(BIN)/lagscaler demo

test: setup test-deps
	@echo "==> running the test suite (see README: Development); tests that talk to Kafka use a real broker"
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check lagscaler tests bench
	$(BIN)/ruff format --check lagscaler tests bench
	$(BIN)/mypy --strict lagscaler
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
