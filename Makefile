# Everything a newcomer needs is behind two targets: `make demo` and `make test`.
# Both set up from scratch (a virtualenv, Python deps, Kafka's jars from Maven Central) and are idempotent.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)
	@command -v kubectl >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
		(apt-get install -y -qq kubernetes-client >/dev/null 2>&1 || \
		 (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq kubernetes-client >/dev/null)) ; } || \
		echo "note: kubectl not installed; the kubectl compatibility test will say so"
	$(BIN)/lagscaler broker fetch
	@# the HPA's own Go client (k8s.io/metrics) that tests/test_api_clients.py reads the API with; cached
	$(BIN)/python -m tests.goclient.build

demo: setup
	$(BIN)/lagscaler demo

test: setup
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check lagscaler tests bench
	$(BIN)/ruff format --check lagscaler tests bench
	$(BIN)/mypy --strict lagscaler
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
