# People and CI run the same targets. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS=":.*## "} {printf "  %-15s %s\n", $$1, $$2}'

# The virtual environment. rustasync needs Python 3.11+; a .venv left by
# another Python (an older one, or not the PYTHON=... given on the command
# line) is reported with what to do, never reused silently.
$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "rustasync needs Python 3.11 or newer; $(PYTHON) is $$($(PYTHON) -V 2>&1 || echo missing)."; \
	  echo "Name another one: make $(or $(MAKECMDGOALS),help) PYTHON=python3.12"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

.PHONY: venv
venv: $(PY)
	@$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "$(VENV) was made by $$($(PY) -V 2>&1 || echo a Python that no longer runs); rustasync needs 3.11+."; \
	  echo "Run 'make clean', then 'make $(or $(MAKECMDGOALS),help)' (PYTHON=python3.12 to name one)."; exit 1; }
ifeq ($(origin PYTHON),command line)
	@[ "$$($(PY) -c 'import sys; print(sys.version_info[:2])')" = "$$($(PYTHON) -c 'import sys; print(sys.version_info[:2])')" ] || { \
	  echo "$(VENV) was made by $$($(PY) -V 2>&1), not by $(PYTHON) ($$($(PYTHON) -V 2>&1))."; \
	  echo "Run 'make clean' first to rebuild it with $(PYTHON)."; exit 1; }
endif

.PHONY: install
# The test build also compiles the panic hooks (src/testhooks.rs) the test
# suite injects faults with; maturin's PEP 517 backend reads MATURIN_PEP517_ARGS.
install: venv ## Build the extension (release, with test hooks) and install it with its test tools
	@echo "Building rustasync (optimised release build: about a minute on 2 cores, more the first time)"
	MATURIN_PEP517_ARGS="--features test-hooks" $(PIP) install --quiet '.[test]'

.PHONY: dev
dev: venv ## Editable development build (rebuild with `make dev` after Rust changes)
	$(PIP) install --quiet maturin '.[test]'
	$(VENV)/bin/maturin develop --release --features test-hooks

.PHONY: demo
demo: venv ## Build and run the main job: the tutorial's programs on both backends, then the speed
	@echo "Building rustasync (optimised release build: about a minute on 2 cores, more the first time)"
	$(PIP) install --quiet '.[demo]'
	$(PY) -m rustasync demo

# Interpreter descriptions (PyO3's PYO3_CONFIG_FILE format) of CPythons that
# need not be installed here: clippy checks the cfg-gated code for each, in
# one target directory (the dependencies other than PyO3 are checked once),
# without the NATS feature (no version-specific code, and the largest
# dependency tree). Nothing is linked, so no libpython is needed.
PYO3_CONFIGS := $(sort $(wildcard .ci/pyo3/*.txt))

.PHONY: lint
lint: venv ## rustfmt, clippy (also for CPython 3.14, 3.15 and free-threaded), ruff, stubs, typing
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p rustasync-bridge --all-targets -- -D warnings
	@for cfg in $(PYO3_CONFIGS); do \
	  name=$$(basename $$cfg .txt); echo "cargo clippy for $$name ($$cfg)"; \
	  PYO3_CONFIG_FILE=$(CURDIR)/$$cfg CARGO_TARGET_DIR=target/pyo3-configs \
	    cargo clippy --quiet --workspace --all-targets --no-default-features -- -D warnings || exit 1; \
	done
	cargo fmt --manifest-path examples/bridge-user/Cargo.toml --check
	cargo clippy --manifest-path examples/bridge-user/Cargo.toml --target-dir target -- -D warnings
	$(PY) -m ruff check python tests benchmarks examples
	$(PY) -m ruff format --check python tests benchmarks examples
	cd tests && ../$(PY) -m mypy.stubtest rustasync._rustasync --allowlist ../python/rustasync/stubtest-allowlist.txt
	$(PY) -m mypy --strict tests/typing

.PHONY: test
test: install lint ## Install, lint, cargo test, and pytest (all but the realtime and soak runs)
	cargo test --workspace --no-default-features
	cargo test -p rustasync-bridge
	$(PY) -m pytest -m "not realtime and not soak" $(PYTEST_ARGS)

.PHONY: test-realtime
test-realtime: install ## The real-time differential runs of the tutorial's scripts (slow)
	$(PY) -m pytest -m realtime $(PYTEST_ARGS)

.PHONY: test-wheel
test-wheel: install ## Build a manylinux wheel, install it in a fresh venv, run every command
	$(PY) -m pytest -m wheel -p no:cacheprovider $(PYTEST_ARGS)

.PHONY: bench
bench: install ## Benchmarks, side by side with stock asyncio (stock loop, uvloop, rloop)
	$(PIP) install --quiet '.[bench]'
	$(PY) -m rustasync bench --loops asyncio uvloop rloop

# One venv per Python under .venv-bench/, each with a release wheel built for
# it (incremental: one cargo target directory per Python) and the loops and
# peers that install there. BENCH_ARGS=--quick for a short run.
BENCH_ARGS ?=
.PHONY: bench-matrix
bench-matrix: install ## The matrix (loops x peers) on every CPython 3.11+ found (PATH, pyenv): a table per Python
	$(PY) -m rustasync bench --pythons all --loops asyncio uvloop rloop --json bench-matrix.json $(BENCH_ARGS)

.PHONY: bench-nats
bench-nats: install ## NatsChannel vs nats-py, 1,000,000 messages through a nats-server (minutes)
	$(PIP) install --quiet '.[bench]'
	$(PY) -m rustasync bench --only nats

.PHONY: clean
clean: ## Remove the venv, the Rust build (target/) and the caches
	rm -rf $(VENV) target dist .pytest_cache .mypy_cache .ruff_cache .hypothesis
	rm -f python/rustasync/*.so python/rustasync/*.pyd
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
