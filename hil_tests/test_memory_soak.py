"""Fault scenario P4, short version: a compressed storm day through the whole firmware in its heap
budget. `make bench` runs the full 24 simulated hours and writes the figures to
docs/benchmarks.md; this run is 8 simulated hours in about 40 s."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil_tests.rig import soak

pytestmark = [pytest.mark.hil, pytest.mark.needs("unix", "bus", "network")]


def test_a_compressed_storm_day_runs_without_memory_errors(tmp_path: Path):
    res = soak.run(tmp_path, hours=8, time_scale=720, heap_log_ms=2000)
    print(res)
    assert res.memory_errors == 0
    assert res.resets == 0  # the watchdog never had to step in
    assert res.samples >= 10 and 0 < res.peak_live < res.heap_budget
    # the firmware kept working through it: states, events and the staff's acks reached MQTT
    assert res.states >= 6 and res.events >= 8 and res.acks >= 2
    assert res.actions["broker restart"] >= 1 and res.actions["crisis message"] >= 4


BOARD_GOAL = 48 * 1024  # peak live heap on the 32-bit build (docs/architecture.md, "Memory")


def test_a_compressed_storm_day_on_the_32_bit_board(tmp_path: Path):
    # The same storm, the firmware frozen into the qemu board (Cortex-M3, 64 KiB heap, single
    # precision floats, littlefs): the heap measured there with gc.mem_alloc() after a collection.
    res = soak.run(tmp_path, hours=8, time_scale=720, heap_log_ms=2000, target="qemu")
    print(res)
    assert res.memory_errors == 0 and res.faults == 0
    assert res.heap_budget == 64 * 1024
    assert res.samples >= 10 and 0 < res.start_live < res.peak_live <= BOARD_GOAL, res.peak_live
    assert res.states >= 6 and res.events >= 8 and res.acks >= 2
    assert res.actions["broker restart"] >= 1 and res.actions["crisis message"] >= 4
