# The two commands a new user needs: `make run` and `make test`. Everything they need is
# installed from the project's own files (Python packages, the Rust extension, redis-server).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.deps-installed

.PHONY: setup run test test-rust test-python bench system-deps

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# Builds (incrementally) the Rust extension into the virtualenv, in release mode.
setup: $(STAMP)
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(VENV))/bin:$$PATH $(VENV)/bin/maturin develop --release -q

system-deps:
	@command -v redis-server >/dev/null && command -v wrk >/dev/null && command -v openssl >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server wrk openssl >/dev/null)

run: setup
	scripts/run-demo.sh

test-rust:
	cargo test -q -p gatewayd-core

test-python: setup system-deps
	$(PY) -m pytest -q

test: test-rust test-python

# The benchmark suite (minutes; figures and pictures land in bench/results/).
bench: setup system-deps
	$(PY) -m pytest bench/test_hot_path.py -p no:cacheprovider --benchmark-enable --benchmark-only --benchmark-json=bench/results/hot_path.json
	$(PY) -m pytest bench/test_pipeline.py -p no:cacheprovider --benchmark-enable --benchmark-only --benchmark-min-rounds=30 --benchmark-json=bench/results/pipeline.json
	$(PY) bench/gateway_bench.py
	$(PY) bench/rollback_drill.py --flips 30
	$(PY) bench/audit_bench.py
	$(PY) bench/upstream_clients.py
