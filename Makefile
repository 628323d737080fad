# The two commands of the README: `make demo` and `make test`. Each sets up .venv itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   := models/demo

.PHONY: demo test bench lint clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/rebuy simulate --customers 20000 --seed 7 --out $(DEMO)/shop.parquet
	$(BIN)/rebuy train --transactions $(DEMO)/shop.parquet --customers $(DEMO)/shop_customers.parquet --models-dir models
	$(BIN)/rebuy score --transactions $(DEMO)/shop.parquet --customers $(DEMO)/shop_customers.parquet \
		--events $(DEMO)/shop_events.parquet --models-dir models --out $(DEMO)/scores.parquet --db $(DEMO)/scores.duckdb
	$(BIN)/rebuy report --models-dir models --scores $(DEMO)/scores.parquet --transactions $(DEMO)/shop.parquet \
		--out $(DEMO)/report.html

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py --sizes 100000 1000000 --repeats 3 --als-iterations 3

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
