"""How the suite is spread over pytest-xdist workers (`make test` runs `-n 3 --dist loadgroup`;
docs/testing.md, "In parallel").

Every test is a unit of its own, sent to whichever worker is free, except the groups below, each
run whole on one worker, one test after another:

- `qemu-board`: everything that boots the qemu board (the firmware's `[qemu]` unit items, the
  HIL scenarios' `[qemu]` runs, hil_tests/test_qemu_board.py, the board's storm day). Idle at its
  REPL the board spins a whole core: one board at a time leaves the other core to the rest.
- `timing`: the scenarios that assert how fast something happens in real time (a poll period
  within 10 %, a device offline within 5 s, a frozen broker noticed within the keepalive, a
  backlog drained within its budget, the paced 9600-baud link's wire time). They never run
  beside each other, only beside ordinary tests.
- `fw:<module>`: one firmware unit module's items under the unix port: the module runs once in
  one MicroPython process and its items read that one result.
- `alone`: tests that must not share the CPU with anything (`EXCLUSIVE`): besides their group,
  each holds a lock across workers that every other test takes shared, so while one of them runs
  no other test does (the others wait before their next test; it waits for their current one).
- `<file>::<fixture>`: the tests that share one of a module's costly module-scoped fixtures
  (a compressed storm day, a silent-device run, a panel render), so that it is made once.

Without `--dist loadgroup` (a serial run, `-n 0`) the marks change nothing.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

QEMU = "qemu-board"
TIMING = "timing"
ALONE = "alone"

# Firmware unit modules (unix port) that must run alone: test_rtu_fuzz drives 10 000 frames
# through a bus master with a 2 ms reply timeout on the host's clock (only the bytes matter
# there, so the bus is made fast); beside other workers a 2 ms stall of its process was seen to
# time out a reply that was there.
EXCLUSIVE_FIRMWARE = {"test_rtu_fuzz"}

# Module-scoped fixtures that take seconds to make (a firmware run, a render); tests sharing one
# go together. Cheap ones (a site's configuration, the compiled firmware's path) are left out:
# each worker makes its own.
SHARED_FIXTURES = {
    ("test_fieldbus_faults.py", "silent"): TIMING,  # M1: offline within 5 s, poll rate +-10 %
    ("test_fieldbus_faults.py", "exceptions"): None,
    ("test_modbus_function_codes.py", "run"): None,
    ("test_panel_png.py", "shots"): None,
    ("test_memory_soak.py", "storm_days"): QEMU,  # both storm days start at once, one on qemu
}

# Scenarios whose assertions are real-time limits (file, test function).
TIMING_TESTS = {
    ("test_exercise.py", "test_a_flood_of_100_commands_a_second_leaves_the_poll_period_unchanged"),
    ("test_site_panel.py", "test_flood_of_crisis_messages_is_survived_and_polling_keeps_its_pace"),
    # clock scale 4: the site's Modbus timeout is 250 ms of host time
    ("test_site_panel.py", "test_hung_controller_is_reset_by_the_watchdog_and_ends_in_safe_mode"),
    ("test_fieldbus_faults.py", "test_m6_slow_slave"),
    ("test_mqtt_client.py", "test_frozen_broker_is_noticed_by_keepalive"),
    ("test_session_faults.py",
     "test_n4_long_outage_backlog_drains_within_budget_and_live_events_follow"),
    ("test_session_faults.py", "test_n5_half_open_link_is_detected_and_the_site_shown_lost"),
    ("test_plant.py", "test_paced_link_takes_wire_time"),
    # the leader lease's takeover within 10 s after kill -9 (docs/deploy.md, "Several workers")
    ("test_worker_faults.py", "test_killed_leader_is_replaced_within_10_s"),
    # Two gateway workers, PostgreSQL and a 2 000-site fleet each, and a leader that must renew
    # its 6 s lease all along: run beside each other on 2 cores, the leader was seen to miss
    # its renewal (1 run in 7) and the lead moved.
    ("test_worker_faults.py", "test_a_worker_killed_mid_burst_loses_nothing_and_repeats_nothing"),
    ("test_worker_faults.py", "test_postgresql_restarted_under_load_loses_nothing"),
}


def group_of(item: pytest.Item) -> str | None:
    """The xdist group `item` belongs to, or None (a unit of its own)."""
    file = item.path.name
    func = getattr(item, "originalname", None) or item.name.split("[", 1)[0]
    if item.path.parent.name == "unit" and item.path.parent.parent.name == "tests" \
            and item.path.parent.parent.parent.name == "firmware":
        if item.name.endswith("[qemu]"):
            return QEMU
        return ALONE if item.path.stem in EXCLUSIVE_FIRMWARE else f"fw:{item.path.stem}"
    if (file, func) in TIMING_TESTS:
        return TIMING
    for name in getattr(item, "fixturenames", ()):
        if (file, name) in SHARED_FIXTURES:
            return SHARED_FIXTURES[(file, name)] or f"{file}::{name}"
    if file == "test_qemu_board.py" or "qemu" in item.name:
        return QEMU
    return None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In an xdist worker under --dist loadgroup, the group goes into the node id as
    `<nodeid>@<group>`, which is what the scheduler groups by. xdist 3.8 writes it to
    `item._nodeid`, which pytest 9 no longer reads (its node id is `item._id`), so with the
    pinned pytest its own suffix is lost: it is written here where pytest 9 keeps it."""
    if not getattr(config.option, "loadgroup", False):
        return
    for item in items:
        group = group_of(item)
        if group is None or item.nodeid.endswith(f"@{group}"):
            continue
        if hasattr(item, "_id"):
            from _pytest.nodeid import NodeId

            item._id = NodeId.parse(f"{item.nodeid}@{group}")
        else:
            item._nodeid = f"{item.nodeid}@{group}"


def pytest_itemcollected(item: pytest.Item) -> None:
    # Marked as each item is collected: xdist reads the marks in its own
    # pytest_collection_modifyitems, which may run before any conftest's.
    group = group_of(item)
    if group is not None:
        item.add_marker(pytest.mark.xdist_group(group))


def _lock_path(run: str, name: str) -> Path:
    return Path(tempfile.gettempdir()) / f"sot-xdist-{run}.{name}"


def _lock_file(name: str) -> int:
    # One set of lock files per run: the workers of one run share PYTEST_XDIST_TESTRUNUID.
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID", "none")
    return os.open(_lock_path(run, name), os.O_RDWR | os.O_CREAT, 0o600)


def pytest_configure(config: pytest.Config) -> None:
    # The controlling process picks the run's id itself (xdist's --testrunuid), so that it
    # knows which lock files are this run's and removes them when the run ends.
    if "PYTEST_XDIST_WORKER" not in os.environ and config.pluginmanager.hasplugin("xdist") \
            and config.getoption("testrunuid", None) is None:
        config.option.testrunuid = uuid.uuid4().hex


def pytest_unconfigure(config: pytest.Config) -> None:
    run = config.getoption("testrunuid", None)
    if "PYTEST_XDIST_WORKER" not in os.environ and run:
        for name in ("gate", "lock"):
            _lock_path(run, name).unlink(missing_ok=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Under xdist: an `alone` test holds the run's lock exclusively, every other test shared.
    The gate, taken briefly before either, keeps a waiting `alone` test from being passed by
    other workers' next tests."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        yield
        return
    alone = group_of(item) == ALONE
    gate, lock = _lock_file("gate"), _lock_file("lock")
    try:
        fcntl.flock(gate, fcntl.LOCK_EX)
        fcntl.flock(lock, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        fcntl.flock(gate, fcntl.LOCK_UN)
        yield
    finally:
        os.close(lock)
        os.close(gate)
