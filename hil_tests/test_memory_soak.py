"""Fault scenario P4, short version: a compressed storm day through the whole firmware in its heap
budget. `make bench` runs the full 24 simulated hours and writes the figures to
docs/benchmarks.md; this run is 8 simulated hours in about 40 s.

The two storm days (the unix port and the 32-bit qemu board) are mostly waiting (each simulated
hour is 5 s of sleep) and share nothing but the built images: they run side by side, each with
its own broker, plant and folder, started by the module's fixture (docs/testing.md, "Waiting")."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from hil_tests.rig import soak
from hil_tests.rig.broker import rig_pki

pytestmark = [pytest.mark.hil, pytest.mark.needs("unix", "bus", "network")]

STORM = {"hours": 8, "time_scale": 720, "heap_log_ms": 2000}
TESTS = {"test_a_compressed_storm_day_runs_without_memory_errors": "unix",
         "test_a_compressed_storm_day_on_the_32_bit_board": "qemu"}


@pytest.fixture(scope="module")
def storm_days(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Future]]:
    """The storm day on each target whose test is selected (and not skipped), both started at
    once; a test waits for its own with `.result()`."""
    here = Path(__file__)
    targets = {TESTS[i.name] for i in request.session.items
               if i.path == here and i.name in TESTS and i.get_closest_marker("skip") is None}
    # The rig's CA, made once per process: both threads would otherwise make one at their start.
    # (Each builds its own image: the unix port's in build/firmware/unix, the board's in qemu.)
    rig_pki()
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield {t: pool.submit(soak.run, tmp_path_factory.mktemp(f"soak-{t}"), target=t, **STORM)
               for t in sorted(targets)}


def test_a_compressed_storm_day_runs_without_memory_errors(storm_days: dict[str, Future]):
    res = storm_days["unix"].result()
    print(res)
    assert res.memory_errors == 0
    assert res.resets == 0  # the watchdog never had to step in
    assert res.samples >= 10 and 0 < res.peak_live < res.heap_budget
    # the firmware kept working through it: states, events and the staff's acks reached MQTT
    assert res.states >= 6 and res.events >= 8 and res.acks >= 2
    assert res.actions["broker restart"] >= 1 and res.actions["crisis message"] >= 4


BOARD_GOAL = 48 * 1024  # peak live heap on the 32-bit build (docs/architecture.md, "Memory")


def test_a_compressed_storm_day_on_the_32_bit_board(storm_days: dict[str, Future]):
    # The same storm, the firmware frozen into the qemu board (Cortex-M3, 64 KiB heap, single
    # precision floats, littlefs): the heap measured there with gc.mem_alloc() after a collection.
    res = storm_days["qemu"].result()
    print(res)
    assert res.memory_errors == 0 and res.faults == 0
    assert res.heap_budget == 64 * 1024
    assert res.samples >= 10 and 0 < res.start_live < res.peak_live <= BOARD_GOAL, res.peak_live
    assert res.states >= 6 and res.events >= 8 and res.acks >= 2
    assert res.actions["broker restart"] >= 1 and res.actions["crisis message"] >= 4
