# The two commands of the README: `make demo` and `make test`. Each sets up .venv itself, from the lock.
SHELL  := /bin/bash
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   := models/demo
PIP    := $(BIN)/python -m pip --quiet --disable-pip-version-check
# uv only resolves the lock (make lock); installs use pip from requirements.lock.
UV_VERSION := 0.13.9
LOCK_ARGS  := pyproject.toml --extra dev --universal --python-version 3.11 --no-header

.PHONY: demo test test-latest bench lint lock check-lock clean

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -r requirements.lock
	$(PIP) install --no-deps -e .
	$(BIN)/python -m pip check --disable-pip-version-check
	@touch $(STAMP)

# Two nights: score with control groups -> simulated responses (true offer effects) -> rebuy measure
# -> score again with the evidence; then the report.
demo: $(STAMP)
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
		--uplift $(DEMO)/uplift.json
	$(BIN)/rebuy report --models-dir models --scores $(DEMO)/scores.parquet --transactions $(DEMO)/shop_after.parquet \
		--uplift $(DEMO)/uplift.json --offers $(DEMO)/offer_log --out $(DEMO)/report.html

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The same suite against the newest releases of every dependency (ignores the lock), in its own venv.
test-latest:
	rm -rf .venv-latest && $(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip --quiet --disable-pip-version-check install --upgrade -e ".[dev]"
	@echo "newer than the lock:"
	@diff <(grep -v '^ *#' requirements.lock | sed 's/ *;.*//' | tr 'A-Z_' 'a-z-' | sort) \
	      <(.venv-latest/bin/python -m pip freeze --exclude-editable | tr 'A-Z_' 'a-z-' | sort) | grep '^>' || true
	.venv-latest/bin/python -m pytest -q

$(BIN)/uv: $(STAMP)
	$(PIP) install uv==$(UV_VERSION)

# Re-resolve the lock from pyproject.toml (newest releases that satisfy it), keeping the header.
lock: $(BIN)/uv
	{ sed -n '1,3p' requirements.lock; $(BIN)/uv pip compile $(LOCK_ARGS) --upgrade -o -; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

# Fails when pyproject.toml changed without `make lock` (every pin still resolves the same way).
check-lock: $(BIN)/uv
	cp requirements.lock $(VENV)/lock.check
	$(BIN)/uv pip compile $(LOCK_ARGS) --quiet -o $(VENV)/lock.check
	diff <(grep -v '^#' requirements.lock) <(grep -v '^#' $(VENV)/lock.check)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py --sizes 100000 1000000 --repeats 3 --als-iterations 3

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) .venv-latest build *.egg-info src/*.egg-info .pytest_cache
