"""Fixtures the gateway's tests share: a clock, a store with the sample sites, an ingest.

Each test gets its own SQLite file under its own tmp_path (a store costs a few milliseconds), so
nothing leaks between tests. Test modules that need another set-up (other sites, a user, a
store in a subfolder) keep their own fixture of the same name, which overrides these.

Markers: the modules in SLOW are marked `slow` here (each test waits out real server timeouts or
kills a writer process), so that `make check-fast` leaves them to `make test`.

Logins: web_login.add_user stores the test password's hash once per run; docs/testing.md
explains why that hash is made with a cheaper scrypt cost than the product's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from gw_samples import SITES, Clock

from gateway.ingest import Ingest
from gateway.store import SqliteStore

SLOW = {"test_slow_clients.py", "test_kill_during_writes.py"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in SLOW and item.path.parent == Path(__file__).parent:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def clock() -> Clock:
    """The samples' clock: starts at gw_samples.TS and moves only when a test moves it."""
    return Clock()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[SqliteStore]:
    """A fresh store (tmp_path/sot.sqlite3) that knows the sample sites."""
    s = SqliteStore(tmp_path / "sot.sqlite3")
    s.upsert_sites(SITES)
    yield s
    s.close()


@pytest.fixture
def ing(db: SqliteStore, clock: Clock) -> Ingest:
    """The ingest over `db`, on `clock`."""
    return Ingest(db, clock)
