"""A throw-away PostgreSQL cluster for the tests, and the `store` fixture over both databases.

The cluster comes from Debian's `postgresql` package (scripts/bootstrap.sh installs it when run
as root): `initdb` into a fresh temporary folder, then `postgres` on 127.0.0.1 and a free port,
no Unix socket, trust authentication for the one user `sot`, fsync off (a test database needs
no crash safety; the store's own settings are what the tests check). PostgreSQL refuses to run
as root, so as root the server runs as the unprivileged `nobody` (via `setpriv`, which execs,
so the process we keep is the server itself). One cluster per test session, started on first
use and stopped by its pid at the end (SIGQUIT, the immediate shutdown `pg_ctl stop -m
immediate` sends; SIGKILL if it is still there after 10 s); its folder is removed. Each test
gets a schema of its own (`Cluster.new_database`).

Missing PostgreSQL is a failure that says what to install, never a silent skip: the store must
be tested against both databases.

Use: import `backend_fixture, pg_cluster_fixture, store_fixture` into a test module (noqa:
F401), then ask for `store` (a migrated empty store, once per database), `backend` (to open a
store again on the same database) or `pg_cluster`. The fixtures are registered under those
names and the functions have others, so a test's argument never shadows an import.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from gateway.store import MIGRATIONS, PgStore, SqliteStore, Store
from hil_tests.rig.broker import free_port

USER = "sot"
INSTALL = ("PostgreSQL's server programs are needed for the store tests: "
           "apt-get install postgresql (scripts/bootstrap.sh does it when run as root)")


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    pytest.fail(INSTALL, pytrace=False)


class Cluster:
    """One running PostgreSQL server (`start()`, `url(db)`, `new_database()`, `stop()`)."""

    def __init__(self, fsync: bool = False) -> None:
        """`fsync`: as a production server (for benchmarks); off for the tests."""
        self.fsync = fsync
        self.bindir = _bindir()
        self.dir = Path(tempfile.mkdtemp(prefix="sot-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._names = itertools.count(1)
        self._fresh = True  # the database `sot` is still to be created
        self._as: list[str] = []
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(self.dir, nobody.pw_uid, nobody.pw_gid)
            self._as = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
                        "--clear-groups", "--"]

    def start(self) -> None:
        init = subprocess.run(
            [*self._as, str(self.bindir / "initdb"), "-D", str(self.data), "-U", USER,
             "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"],
            capture_output=True, text=True, timeout=120)
        if init.returncode:
            pytest.fail(f"initdb failed ({init.returncode}): {init.stderr[-2000:]}",
                        pytrace=False)
        for _ in range(3):  # a port taken between choosing and binding: another one
            self.port = free_port()  # per xdist worker: its own block
            self._spawn("wb")
            if self._ready(30.0):
                return
            self.stop_server()
        pytest.fail(f"PostgreSQL did not start: {self.log.read_text(errors='replace')[-2000:]}",
                    pytrace=False)

    def _spawn(self, mode: str) -> None:
        with open(self.log, mode) as log:
            self.proc = subprocess.Popen(
                [*self._as, str(self.bindir / "postgres"), "-D", str(self.data),
                 "-p", str(self.port), "-c", "listen_addresses=127.0.0.1",
                 "-c", "unix_socket_directories=", "-c", "max_connections=200",
                 *(() if self.fsync else ("-c", "fsync=off", "-c", "full_page_writes=off"))],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def restart_server(self, down_s: float = 0.0) -> None:
        """Stop the server at once (what a crash or `systemctl restart` looks like to its
        clients: every connection dropped), wait `down_s`, start it again on the same port and
        data; returns once it accepts connections."""
        self.stop_server()
        time.sleep(down_s)
        self._spawn("ab")
        if not self._ready(30.0):
            pytest.fail(f"PostgreSQL did not come back: "
                        f"{self.log.read_text(errors='replace')[-2000:]}", pytrace=False)

    def _ready(self, timeout: float) -> bool:
        import psycopg

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=2).close()
                return True
            except psycopg.OperationalError:
                time.sleep(0.05)
        return False

    def url(self, db: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{db}"

    def new_database(self) -> str:
        """A fresh empty database for one test; its URL. A schema of its own in the database
        `sot` (the URL sets `search_path`): a tenth of the time of CREATE DATABASE, and the
        store sees nothing else."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as c:
            if self._fresh:
                c.execute("CREATE DATABASE sot")
                self._fresh = False
        with psycopg.connect(self.url("sot"), autocommit=True) as c:
            c.execute(f"CREATE SCHEMA {name}")
        return self.url("sot") + f"?options=-csearch_path%3D{name}"

    def stop_server(self) -> None:
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGQUIT)  # immediate shutdown
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(10)

    def stop(self) -> None:
        self.stop_server()
        shutil.rmtree(self.dir, ignore_errors=True)


# One cluster per session, however many test modules import the fixture (each import is a
# fixture definition of its own; they share this one and the last to finish stops it).
_cluster: Cluster | None = None
_users = 0


@pytest.fixture(scope="session", name="pg_cluster")
def pg_cluster_fixture() -> Iterator[Cluster]:
    global _cluster, _users
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.fail("psycopg is needed for the PostgreSQL store tests: "
                    "pip install -e '.[postgres]' (scripts/bootstrap.sh does)", pytrace=False)
    if _cluster is None:
        c = Cluster()
        atexit.register(c.stop)  # a backstop should the session end without its teardown
        try:
            c.start()
        except BaseException:
            c.stop()
            raise
        _cluster = c
    _users += 1
    try:
        yield _cluster
    finally:
        _users -= 1
        if _users == 0 and _cluster is not None:
            _cluster.stop()
            _cluster = None


@dataclass
class Backend:
    """One database for one test: `open()` a store on it (again and again, like a restarted
    gateway), `raw(sql)` to reach behind the store's back."""

    name: str
    open: Callable[[], SqliteStore | PgStore]
    raw: Callable[[str], Any]

    def set_schema_version(self, n: int) -> None:
        if self.name == "sqlite":
            self.raw(f"PRAGMA user_version = {n}")
        else:
            self.raw(f"UPDATE sot_schema SET version = {n}")


def _sqlite_raw(path: Path) -> Callable[[str], Any]:
    import sqlite3

    def raw(sql: str) -> Any:
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as c:
            return c.execute(sql).fetchall()
    return raw


def _pg_raw(url: str) -> Callable[[str], Any]:
    def raw(sql: str) -> Any:
        import psycopg

        with psycopg.connect(url, autocommit=True) as c:
            cur = c.execute(sql)
            return cur.fetchall() if cur.description else []
    return raw


@pytest.fixture(params=["sqlite", "postgres"], name="backend")
def backend_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        path = tmp_path / "var" / "sot.sqlite3"
        return Backend("sqlite", lambda: SqliteStore(path), _sqlite_raw(path))
    cluster: Cluster = request.getfixturevalue("pg_cluster")
    url = cluster.new_database()
    return Backend("postgres", lambda: PgStore(url), _pg_raw(url))


def one(s: Store, sql: str) -> Any:
    """The first column of the first row of `sql` on the store's own connection (behind the
    protocol: for checks of the database itself)."""
    return cast(Any, s)._one(sql)


@pytest.fixture(name="store")
def store_fixture(backend: Backend) -> Iterator[Store]:
    """A migrated, empty store on each database in turn."""
    s = backend.open()
    assert s.schema_version == len(MIGRATIONS)
    yield s
    s.close()
