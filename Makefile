# The two commands of the quick start are `make demo` and `make test`; both set up everything
# they need first (scripts/bootstrap.sh).
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: demo test check-fast soak check lint bench bench-memory bench-board bench-alerts bench-crisis bench-gridloss bench-feeds bench-journal bench-workers firmware firmware-qemu clean setup

setup:
	@scripts/bootstrap.sh

demo: setup
	$(BIN)/sot demo $(ARGS)

# The firmware's unit tests and a storm day also run on the 32-bit qemu board (--board: the ARM
# toolchain and qemu; the image is built once and cached in build/, docs/firmware-build.md).
# Lint and type checks are tests too (gateway/tests/test_lint.py): a finding fails make test.
# Tiers, fixtures, the firmware's faster clock and where the time goes: docs/testing.md.
# The tests run on $(JOBS) pytest-xdist workers, grouped as conftest.py says (docs/testing.md,
# "In parallel"); `make test ARGS="-n 0"` runs them one after another in one process, and a later
# -n in ARGS wins over this one.
JOBS ?= 3
test:
	@scripts/bootstrap.sh --browser --board
	$(BIN)/python -m pytest -n $(JOBS) --dist loadgroup $(ARGS)

# The fast tier, under a minute: ruff, mypy, the HAL boundary and the firmware's type check (as
# the tests they are in make test) and every unit test that needs no broker, browser or firmware
# process (markers hil, browser, firmware, slow; docs/testing.md, "Tiers"). make test runs all.
check-fast: setup
	$(BIN)/python -m pytest -q -m "not hil and not browser and not firmware and not slow" \
		firmware/tests gateway/tests $(ARGS)

# The fault scenarios of hil_tests/test_session_faults.py at full length (docs/fault-scenarios.md;
# N1: 3 sites, 20 broker restarts over 10 minutes; N3: broker absent 90 s; P1: 100 power cuts; ...).
soak: setup
	SOT_SOAK=1 $(BIN)/python -m pytest hil_tests/test_session_faults.py --timeout 0 $(ARGS)

bench: setup
	$(BIN)/python -m hil_tests.bench.bench_poll $(ARGS)
	$(BIN)/python -m hil_tests.bench.bench_memory
	@scripts/bootstrap.sh --board
	$(BIN)/python -m hil_tests.bench.bench_board
	$(BIN)/python -m hil_tests.bench.bench_alerts
	$(BIN)/python -m hil_tests.bench.bench_alerts --postgres
	$(BIN)/python -m hil_tests.bench.bench_crisis
	$(BIN)/python -m hil_tests.bench.bench_gridloss
	$(BIN)/python -m hil_tests.bench.bench_feeds
	$(BIN)/python -m hil_tests.bench.bench_journal
	$(BIN)/python -m hil_tests.bench.bench_workers

bench-memory: setup
	$(BIN)/python -m hil_tests.bench.bench_memory $(ARGS)

# The storm day on the 32-bit qemu board: build/bench/board-memory.json and docs/benchmarks.md.
bench-board: setup
	@scripts/bootstrap.sh --board
	$(BIN)/python -m hil_tests.bench.bench_board $(ARGS)

bench-alerts: setup
	$(BIN)/python -m hil_tests.bench.bench_alerts $(ARGS)

bench-crisis: setup
	$(BIN)/python -m hil_tests.bench.bench_crisis $(ARGS)

# Grid loss at the meter to the coordinator's alert and the public screen (issue 16).
bench-gridloss: setup
	$(BIN)/python -m hil_tests.bench.bench_gridloss $(ARGS)

bench-feeds: setup
	$(BIN)/python -m hil_tests.bench.bench_feeds $(ARGS)

bench-journal: setup
	$(BIN)/python -m hil_tests.bench.bench_journal $(ARGS)

# One and two gateway workers (real processes) on PostgreSQL draining a queued burst.
bench-workers: setup
	$(BIN)/python -m hil_tests.bench.bench_workers $(ARGS)

# The checks make test also runs (as gateway/tests/test_lint.py and
# firmware/tests/test_hal_boundary.py), on their own and in seconds: ruff on all Python (firmware/
# with its MicroPython settings, firmware/ruff.toml), mypy on gateway/ and hil_tests/, and that
# only firmware/sot/hal/ imports machine, network or termios. docs/architecture.md, "Checks".
lint: setup
	$(BIN)/ruff check firmware gateway hil_tests conftest.py
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -p no:cacheprovider firmware/tests/test_hal_boundary.py

firmware: setup
	$(BIN)/sot firmware build

# The qemu board's image (build/firmware/qemu/firmware.elf), docs/firmware-build.md.
firmware-qemu: setup
	@scripts/bootstrap.sh --board
	$(BIN)/sot firmware build --board qemu

check: lint test

clean:
	rm -rf build .pytest_cache
