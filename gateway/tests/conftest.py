"""Fixtures the gateway's tests share: a clock, a store with the sample sites, an ingest.

Each test gets its own SQLite file under its own tmp_path (a store costs a few milliseconds), so
nothing leaks between tests. Test modules that need another set-up (other sites, a user, a
store in a subfolder) keep their own fixture of the same name, which overrides these.

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
