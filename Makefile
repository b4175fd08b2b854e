# People and CI run the same targets. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS=":.*## "} {printf "  %-8s %s\n", $$1, $$2}'

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

.PHONY: install
# The test build also compiles the panic hooks (src/testhooks.rs) the test
# suite injects faults with; maturin's PEP 517 backend reads MATURIN_PEP517_ARGS.
install: $(PY) ## Build the extension (release, with test hooks) and install it with its test tools
	MATURIN_PEP517_ARGS="--features test-hooks" $(PIP) install --quiet '.[test]'

.PHONY: dev
dev: $(PY) ## Editable development build (rebuild with `make dev` after Rust changes)
	$(PIP) install --quiet maturin '.[test]'
	$(VENV)/bin/maturin develop --release --features test-hooks

.PHONY: demo
demo: $(PY) ## Install and run the main job: the tutorial's scripts on stock asyncio and on rustasync
	$(PIP) install --quiet .
	$(PY) -m rustasync demo

.PHONY: lint
lint: $(PY) ## rustfmt, clippy, ruff, and the stub check against the built module
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	$(PY) -m ruff check python tests benchmarks examples
	$(PY) -m ruff format --check python tests benchmarks examples
	cd tests && ../$(PY) -m mypy.stubtest rustasync._rustasync --allowlist ../python/rustasync/stubtest-allowlist.txt

.PHONY: test
test: install lint ## Install, lint, and run the whole test suite (Rust and Python)
	cargo test --no-default-features
	$(PY) -m pytest -m "not realtime and not soak" $(PYTEST_ARGS)

.PHONY: test-realtime
test-realtime: install ## The real-time differential runs of the tutorial's scripts (slow)
	$(PY) -m pytest -m realtime $(PYTEST_ARGS)

.PHONY: bench
bench: install ## Benchmarks, side by side with stock asyncio (stock loop and uvloop)
	$(PIP) install --quiet '.[bench]'
	$(PY) -m rustasync bench --loops asyncio uvloop
