# The two commands of the quick start are `make demo` and `make test`; both set up everything
# they need first (scripts/bootstrap.sh).
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: demo test check lint bench bench-memory bench-alerts bench-crisis firmware clean setup

setup:
	@scripts/bootstrap.sh

demo: setup
	$(BIN)/sot demo $(ARGS)

test:
	@scripts/bootstrap.sh --browser
	$(BIN)/python -m pytest $(ARGS)

bench: setup
	$(BIN)/python -m hil_tests.bench.bench_poll $(ARGS)
	$(BIN)/python -m hil_tests.bench.bench_memory
	$(BIN)/python -m hil_tests.bench.bench_alerts
	$(BIN)/python -m hil_tests.bench.bench_crisis

bench-memory: setup
	$(BIN)/python -m hil_tests.bench.bench_memory $(ARGS)

bench-alerts: setup
	$(BIN)/python -m hil_tests.bench.bench_alerts $(ARGS)

bench-crisis: setup
	$(BIN)/python -m hil_tests.bench.bench_crisis $(ARGS)

lint: setup
	$(BIN)/ruff check gateway hil_tests

firmware: setup
	$(BIN)/sot firmware build

check: lint test

clean:
	rm -rf build .pytest_cache
