# The two commands of the README: `make demo` and `make test`. Each sets up .venv itself, from a lock:
# make demo what running rebuy needs (requirements.lock), make test the dev tools too (requirements-dev.lock).
SHELL  := /bin/bash
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
DEMO   := models/demo
PIP    := $(BIN)/python -m pip --disable-pip-version-check
# uv only resolves the locks (make lock); installs use pip from them.
UV_VERSION := 0.13.9
LOCK_ARGS  := pyproject.toml --universal --python-version 3.11 --no-header

.PHONY: demo test test-latest bench bench-growth bench-stages bench-purchase lint lock check-lock clean

$(RUN_STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing rebuy's run-time dependencies from requirements.lock into $(VENV) ..."
	$(PIP) install --progress-bar on -r requirements.lock
	$(PIP) install --quiet --no-deps -e .
	$(BIN)/python -m pip check --disable-pip-version-check
	@touch $(RUN_STAMP)

$(DEV_STAMP): $(RUN_STAMP) requirements-dev.lock
	@echo "installing the test tools from requirements-dev.lock into $(VENV) ..."
	$(PIP) install --progress-bar on -r requirements-dev.lock
	$(BIN)/python -m pip check --disable-pip-version-check
	@touch $(DEV_STAMP)

# Two nights: score with control groups -> simulated responses (true offer effects) -> rebuy measure
# -> score again with the evidence; then the report.
demo: $(RUN_STAMP)
	$(BIN)/rebuy simulate --customers 20000 --seed 7 --out $(DEMO)/shop.parquet
	$(BIN)/rebuy train --transactions $(DEMO)/shop.parquet --customers $(DEMO)/shop_customers.parquet --models-dir models
	rm -rf $(DEMO)/offer_log $(DEMO)/scores.duckdb
	$(BIN)/rebuy score --transactions $(DEMO)/shop.parquet --customers $(DEMO)/shop_customers.parquet \
		--events $(DEMO)/shop_events.parquet --models-dir models --out $(DEMO)/scores.parquet --db $(DEMO)/scores.duckdb
	$(BIN)/rebuy simulate --customers 20000 --seed 7 --out $(DEMO)/shop.parquet --responses-to $(DEMO)/offer_log
	$(BIN)/rebuy measure --offers $(DEMO)/scores.duckdb --transactions $(DEMO)/shop_after.parquet \
		--out $(DEMO)/uplift.json --models-dir models
	$(BIN)/rebuy score --transactions $(DEMO)/shop_after.parquet --customers $(DEMO)/shop_customers.parquet \
		--events $(DEMO)/shop_events.parquet --models-dir models --out $(DEMO)/scores.parquet --db $(DEMO)/scores.duckdb \
		--uplift $(DEMO)/uplift.json --exports $(DEMO)/exports
	$(BIN)/rebuy report --models-dir models --scores $(DEMO)/scores.parquet --transactions $(DEMO)/shop_after.parquet \
		--customers $(DEMO)/shop_customers.parquet --uplift $(DEMO)/uplift.json --offers $(DEMO)/offer_log \
		--exports $(DEMO)/exports --out $(DEMO)/report.html

# Two workers (pytest-xdist), one test file each at a time so module fixtures are built once: 7 min
# here instead of 12 in one process.
TEST_ARGS ?= -n 2 --dist loadfile
test: $(DEV_STAMP)
	$(BIN)/python -m pytest -q $(TEST_ARGS)

# The same suite against the newest releases of every dependency (ignores the lock), in its own venv.
test-latest:
	rm -rf .venv-latest && $(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip --quiet --disable-pip-version-check install --upgrade -e ".[dev]"
	@echo "newer than the lock:"
	@diff <(grep -v '^ *#' requirements-dev.lock | sed 's/ *;.*//' | tr 'A-Z_' 'a-z-' | sort) \
	      <(.venv-latest/bin/python -m pip freeze --exclude-editable | tr 'A-Z_' 'a-z-' | sort) | grep '^>' || true
	.venv-latest/bin/python -m pytest -q $(TEST_ARGS)

$(BIN)/uv: $(DEV_STAMP)
	$(PIP) --quiet install uv==$(UV_VERSION)

# Re-resolve both locks from pyproject.toml (newest releases that satisfy it), keeping their headers:
# the dev lock first, then the run-time lock with the dev lock's pins as constraints (so they agree).
lock: $(BIN)/uv
	$(BIN)/uv pip compile $(LOCK_ARGS) --extra dev --upgrade --quiet -o $(VENV)/dev.lock.new
	{ sed -n '1,3p' requirements-dev.lock; cat $(VENV)/dev.lock.new; } > requirements-dev.lock
	$(BIN)/uv pip compile $(LOCK_ARGS) -c requirements-dev.lock --quiet -o $(VENV)/run.lock.new
	{ sed -n '1,2p' requirements.lock; cat $(VENV)/run.lock.new; } > requirements.lock

# Fails when pyproject.toml changed without `make lock` (every pin still resolves the same way).
check-lock: $(BIN)/uv
	cp requirements-dev.lock $(VENV)/dev.lock.check
	$(BIN)/uv pip compile $(LOCK_ARGS) --extra dev --quiet -o $(VENV)/dev.lock.check
	diff <(grep -v '^ *#' requirements-dev.lock) <(grep -v '^ *#' $(VENV)/dev.lock.check)
	cp requirements.lock $(VENV)/run.lock.check
	$(BIN)/uv pip compile $(LOCK_ARGS) -c requirements-dev.lock --quiet -o $(VENV)/run.lock.check
	diff <(grep -v '^ *#' requirements.lock) <(grep -v '^ *#' $(VENV)/run.lock.check)

# The nightly job against the hand-written glue (issue 15's targets; about 25 minutes on 2 cores).
bench: $(DEV_STAMP)
	$(BIN)/python benchmarks/nightly_bench.py

# Time and memory of the nightly job at 100k, 1M and 3M customers (about 15 minutes).
bench-growth: $(DEV_STAMP)
	$(BIN)/python benchmarks/nightly_bench.py --growth

# Stage by stage against lifetimes and implicit with the same settings (ALS at 3 iterations both sides).
bench-stages: $(DEV_STAMP)
	$(BIN)/python benchmarks/bench.py --sizes 100000 1000000 --repeats 3 --als-iterations 3

# The purchase-model stage (auto: windows, candidates, chosen fit; value scoring) against one BG/NBD fit, 1M customers.
bench-purchase: $(DEV_STAMP)
	$(BIN)/python benchmarks/purchase_bench.py

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) .venv-latest build *.egg-info src/*.egg-info .pytest_cache
