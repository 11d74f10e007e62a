# The two commands a new user needs: `make run` and `make test`. Everything they need is
# installed from the project's own files (Python packages, the Rust extension, redis-server).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.deps-installed
# The Rust extension as maturin builds it in place; rebuilt only when a Rust source, the
# workspace manifests or pyproject.toml is newer, so a second `make run` builds nothing.
EXT := python/gatewayd/_core.abi3.so
RUST_INPUTS := Cargo.toml Cargo.lock pyproject.toml $(shell find rust -name '*.rs' -o -name Cargo.toml)
# Runs a setup step with its output held back: printed (on stderr) only if the step fails.
QUIET := sh -c 'out=$$("$$@" 2>&1) || { s=$$?; printf "%s\n" "$$out" >&2; exit $$s; }' quiet

.PHONY: setup run test test-rust test-python test-containers lint lint-rust lint-python bench bench-ci bench-baseline bench-load bench-tools system-deps fuzz

$(STAMP): pyproject.toml
	@echo "setup: installing the Python packages into $(VENV)"
	@test -x $(PY) || $(QUIET) python3 -m venv $(VENV)
	@$(QUIET) $(PY) -m pip install -q -U pip
	@$(QUIET) $(PY) -m pip install -q -e '.[test]'
	@touch $@

# Builds (incrementally) the Rust extension in place, in release mode; the package itself
# is already installed (editable) by the step above.
$(EXT): $(STAMP) $(RUST_INPUTS)
	@echo "setup: building the Rust extension (release)"
	@VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(VENV))/bin:$$PATH $(QUIET) $(VENV)/bin/maturin develop --release --skip-install -q
	@touch $@

setup: $(EXT)

# The console tests drive Debian's chromium through its chromedriver; promtool (Debian's
# prometheus package) checks and tests deploy/prometheus/alerts.yaml; kubectl (Debian's
# kubernetes-client) renders deploy/k8s for tests/test_k8s_manifests.py. The container tests
# run Debian's podman on runc and build their base images with debootstrap (under eatmydata).
system-deps:
	@command -v redis-server >/dev/null && command -v wrk >/dev/null && command -v openssl >/dev/null && \
	  command -v chromium >/dev/null && command -v chromedriver >/dev/null && command -v promtool >/dev/null && \
	  command -v kubectl >/dev/null && command -v podman >/dev/null && command -v runc >/dev/null && \
	  command -v debootstrap >/dev/null && command -v eatmydata >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    redis-server wrk openssl chromium chromium-driver prometheus podman runc debootstrap eatmydata >/dev/null && \
	    { command -v kubectl >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client >/dev/null; })

run: setup
	@scripts/run-demo.sh

test-rust:
	cargo test -q -p gatewayd-core

# The Rust lints: formatting (rustfmt's defaults) and clippy with every warning an error.
lint-rust:
	cargo fmt --all --check
	cargo clippy -q --workspace --all-targets -- -D warnings

# The Python lints: ruff (pyproject's rules, and its formatting) and mypy (its config in
# pyproject: the package, with the extension's stubs checked against every caller).
lint-python: setup
	$(PY) -m ruff check python tests bench loadtests
	$(PY) -m ruff format --check python tests bench loadtests
	$(PY) -m mypy

lint: lint-rust lint-python

test-python: setup system-deps
	$(PY) -m pytest -q -m "not containers"

# The container image and the compose cluster with real podman (tests/test_container_*.py):
# minutes on a machine's first run (Debian base images, the release wheel), then cached.
test-containers: setup system-deps
	$(PY) -m pytest -q -m containers tests/test_container_image.py tests/test_container_cluster.py

# Lints first: seconds, where the suites take minutes; the containers last (their first
# run on a machine builds the base images).
test: lint test-rust test-python test-containers

# oha, the open-loop load generator of bench/load_bench.py (it corrects for coordinated
# omission; wrk2 is not packaged in Debian): built from crates.io when missing, once
# (about 10 minutes on 2 cores), into ~/.cargo/bin.
OHA := $(or $(shell command -v oha),$(HOME)/.cargo/bin/oha)
bench-tools:
	@test -x $(OHA) || { echo "bench-tools: building oha from crates.io (once, minutes)"; cargo install oha --locked -q; }

# Issue 15's end-to-end figures in one run, each beside its floor (bench/load_bench.py's
# docstring): bench/results/load.json and load.png. LOAD_ARGS=--litellm adds LiteLLM's proxy.
bench-load: setup system-deps bench-tools
	$(PY) bench/load_bench.py $(LOAD_ARGS)

# The benchmark suite (minutes; figures and pictures land in bench/results/).
bench: setup system-deps bench-tools
	$(PY) -m pytest bench/test_hot_path.py -p no:cacheprovider --benchmark-enable --benchmark-only --benchmark-json=bench/results/hot_path.json
	$(PY) -m pytest bench/test_pipeline.py -p no:cacheprovider --benchmark-enable --benchmark-only --benchmark-min-rounds=30 --benchmark-json=bench/results/pipeline.json
	$(PY) bench/gateway_bench.py
	$(PY) bench/rollback_drill.py --flips 30
	$(PY) bench/audit_bench.py
	$(PY) bench/upstream_clients.py
	$(PY) bench/load_bench.py

# The benchmark gate CI runs after the tests (a few minutes): the Rust core, the pipeline
# in-process and a short gateway run, each figure a ratio to a reference measured in the
# same run; bench/results/ci.json and ci.png; fails when a ratio is more than 2x worse than
# in bench/baseline.json (bench/ci.py's docstring has the details).
bench-ci: setup system-deps
	$(PY) bench/ci.py

# Rewrites bench/baseline.json from one run, on purpose: after a change meant to move a
# ratio, or on a new class of reference machine. Commit it with the reason in the message.
bench-baseline: setup system-deps
	$(PY) bench/ci.py --write-baseline

# The long fuzz run (minutes): GATEWAYD_FUZZ_CASES HTTP cases against a real gateway (a
# random seed, printed, unless GATEWAYD_FUZZ_SEED names one) and PROPTEST_CASES per Rust
# property (a release build: compiling regexes is slow in debug). `make test` runs both
# suites in short form.
FUZZ_CASES ?= 6000
FUZZ_PROPTEST_CASES ?= 20000
fuzz: setup
	PROPTEST_CASES=$(FUZZ_PROPTEST_CASES) cargo test --release -q -p gatewayd-core properties
	GATEWAYD_FUZZ_SEED=$${GATEWAYD_FUZZ_SEED:-$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')} GATEWAYD_FUZZ_CASES=$(FUZZ_CASES) \
	  $(PY) -m pytest tests/test_fuzz.py -q -p no:cacheprovider
