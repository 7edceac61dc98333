"""Web sessions and login-throttle counters in the store, on SQLite and on PostgreSQL: what one
gateway worker writes, another reading the same database sees; the rows stay bounded; a copy of
the database holds no session token."""

from __future__ import annotations

from typing import Any

import pytest
from gw_samples import Clock
from pg_cluster import (  # noqa: F401 - fixtures
    Backend,
    backend_fixture,
    pg_cluster_fixture,
    store_fixture,
)

from gateway import auth
from gateway.store import Store
from gateway.store import sessions as sessions_mod

STAMP = "scrypt$16384$8$1$c2FsdA==$aGFzaA=="


def throttle(counters: Any, clock: Clock) -> auth.LoginThrottle:
    """The shipped numbers (docs/security.md, "Logins") over `counters`."""
    return auth.LoginThrottle(clock, window_s=900, free_pair=5, free_addr=20, free_name=50,
                              base_s=2, max_delay_s=900, name_delay_s=60, counters=counters)


def rows(backend: Backend, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in backend.raw(sql)]


def test_a_session_made_by_one_worker_is_known_changed_and_ended_by_another(backend: Backend):
    a, b = backend.open(), backend.open()  # two workers, one database
    clock = Clock()
    on_a, on_b = auth.Sessions(a, clock, 3600), auth.Sessions(b, clock, 3600)
    s = on_a.create("kim", "coordinator", STAMP)
    seen = on_b.get(s.token)
    assert seen is not None and (seen.user, seen.role, seen.csrf) == ("kim", "coordinator", s.csrf)
    assert auth.csrf_ok(seen, s.csrf) and not auth.csrf_ok(seen, s.csrf[:-1] + "x")
    # demoted (`sot user add --role viewer`): the worker that sees it first writes it down
    row = {"name": "kim", "role": "viewer", "pwhash": STAMP}
    assert on_b.recheck(s.token, row) is not None
    got = on_a.get(s.token)
    assert got is not None and got.role == "viewer"
    # a new password ends it everywhere
    assert on_a.recheck(s.token, {**row, "pwhash": STAMP + "x"}) is None
    assert on_b.get(s.token) is None
    # logout on one worker ends it on the other
    s2 = on_a.create("kim", "coordinator", STAMP)
    on_b.drop(s2.token)
    assert on_a.get(s2.token) is None
    # expired: refused on both, whoever asks first
    s3 = on_a.create("kim", "coordinator", STAMP)
    clock.t += 3600
    assert on_b.get(s3.token) is None and on_a.get(s3.token) is None
    a.close()
    b.close()


def test_the_stored_session_holds_a_digest_of_the_token_never_the_token(store: Store,
                                                                        backend: Backend):
    s = auth.Sessions(store, Clock()).create("kim", "coordinator", STAMP)
    stored = rows(backend, "SELECT * FROM sessions")
    assert len(stored) == 1
    text = repr(stored)
    assert s.token not in text  # a dump or backup hands out no live session
    assert auth.token_digest(s.token) in text  # ... only what finds it again
    assert STAMP not in text  # nor a second copy of the password hash
    assert s.csrf in text  # useless without the cookie
    assert auth.Sessions(store, Clock()).get(auth.token_digest(s.token)) is None


def test_a_removed_user_loses_every_session_and_odd_tokens_find_none(store: Store):
    sessions = auth.Sessions(store, Clock())
    kim = [sessions.create("kim", "coordinator", STAMP) for _ in range(3)]
    anna = sessions.create("anna", "viewer", STAMP)
    store.put_user("kim", "coordinator", STAMP, 0.0)
    assert store.remove_user("kim")
    assert all(sessions.get(s.token) is None for s in kim)
    assert sessions.get(anna.token) is not None
    for token in ("", None, "x" * 5000, "\ud800", "\x00", "ä" * 30):
        assert sessions.get(token) is None
        sessions.drop(token)


def test_expired_sessions_are_swept_a_bounded_number_at_a_time(store: Store, backend: Backend):
    clock = Clock()
    sessions = auth.Sessions(store, clock, lifetime_s=60)
    for i in range(sessions_mod.SWEEP_ROWS + 30):
        sessions.create(f"user{i}", "viewer", STAMP)
    clock.t += 61
    sessions.create("kim", "viewer", STAMP)  # a login sweeps at most SWEEP_ROWS
    assert rows(backend, "SELECT COUNT(*) FROM sessions") == [(31,)]
    sessions.create("eva", "viewer", STAMP)
    assert rows(backend, "SELECT COUNT(*) FROM sessions") == [(2,)]


def test_the_throttle_policy_is_the_same_on_the_store_as_in_memory(store: Store):
    """gateway/tests/test_auth.py's throttle scenario at the shipped window, over the store."""
    clock = Clock()
    t = throttle(store, clock)
    t.succeeded("10.0.0.7", "kim")  # kim's own desk
    for _ in range(5):
        assert t.locked_for("6.6.6.6", "kim") == 0
        t.failed("6.6.6.6", "kim")
    assert t.locked_for("6.6.6.6", "kim") == 2
    assert t.locked_for("10.0.0.8", "kim") == 0 and t.locked_for("10.0.0.7", "kim") == 0
    waits = []
    for _ in range(6):  # each failure after the pause doubles it
        clock.t += t.locked_for("6.6.6.6", "kim")
        t.failed("6.6.6.6", "kim")
        waits.append(t.locked_for("6.6.6.6", "kim"))
    assert waits == [4, 8, 16, 32, 64, 128]
    for i in range(20):
        t.failed("5.5.5.5", f"user{i}")
    assert t.locked_for("5.5.5.5", "somebody") > 0 and t.locked_for("5.5.5.6", "user1") == 0
    for i in range(60):
        t.failed(f"7.7.{i}.1", "eva")
    assert 0 < t.locked_for("10.0.0.9", "eva") <= 60
    t.succeeded("10.0.0.10", "eva")
    assert t.locked_for("10.0.0.10", "eva") == 0
    clock.t += 901  # failures older than the window are forgotten
    assert t.locked_for("6.6.6.6", "kim") == 0 and t.locked_for("10.0.0.9", "eva") == 0


def test_failures_on_two_workers_add_up_as_on_one(backend: Backend):
    a, b = backend.open(), backend.open()
    clock = Clock()
    on_a, on_b = throttle(a, clock), throttle(b, clock)
    for worker in (on_a, on_b, on_a, on_b, on_a):  # a guesser alternating between workers
        assert worker.locked_for("6.6.6.6", "kim") == 0
        worker.failed("6.6.6.6", "kim")
    assert on_a.locked_for("6.6.6.6", "kim") == 2 == on_b.locked_for("6.6.6.6", "kim")
    clock.t += 2
    on_b.failed("6.6.6.6", "kim")
    assert on_a.locked_for("6.6.6.6", "kim") == 4
    # a login on one worker makes the address known to the other
    on_a.succeeded("10.0.0.7", "eva")
    for i in range(60):
        (on_a if i % 2 else on_b).failed(f"7.7.{i}.1", "eva")
    assert on_b.locked_for("10.0.0.7", "eva") == 0 and on_b.locked_for("10.0.0.9", "eva") > 0
    a.close()
    b.close()


def test_a_scan_over_many_names_keeps_the_counters_bounded(store: Store, backend: Backend,
                                                            monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(sessions_mod, "MAX_KEYS", 30)  # 30 000 in the product
    clock = Clock()
    t = throttle(store, clock)
    for i in range(10):  # 3 keys a failure: 30 keys
        t.failed(f"10.1.{i}.1", f"name{i}")
    assert rows(backend, "SELECT COUNT(DISTINCT key) FROM login_failures") == [(30,)]
    clock.t += 61
    t.failed("10.2.0.1", "other")  # past the cap: the keys idle for a minute go
    assert rows(backend, "SELECT COUNT(DISTINCT key) FROM login_failures") == [(3,)]
    clock.t += 900
    t.failed("10.2.0.2", "third")  # failures older than the window go at the next failure
    assert rows(backend, "SELECT COUNT(*) FROM login_failures") == [(3,)]


def test_a_user_s_known_addresses_are_the_twenty_most_recent(store: Store, backend: Backend):
    clock = Clock()
    t = throttle(store, clock)
    for i in range(25):
        clock.t += 1
        t.succeeded(f"10.0.0.{i}", "kim")
    assert rows(backend, "SELECT COUNT(*) FROM login_known") == [(20,)]
    assert not store.login_known("kim", "10.0.0.4") and store.login_known("kim", "10.0.0.5")
    store.put_user("kim", "viewer", STAMP, 0.0)
    assert store.remove_user("kim")  # whoever gets the name next starts with no known address
    assert rows(backend, "SELECT COUNT(*) FROM login_known") == [(0,)]


def test_hostile_names_and_addresses_are_counted_not_refused(store: Store):
    """A name from a login form may hold anything (NUL, a lone surrogate from JSON, 64
    characters of anything): the throttle counts it like any other and never fails."""
    clock = Clock()
    t = throttle(store, clock)
    names = ("kim\x00", "\ud800", "ä" * 64, "x'; DROP TABLE users; --", "%s ?")
    for i, name in enumerate(names):
        for _ in range(5):
            t.failed(f"6.6.6.{i}", name)
        assert t.locked_for(f"6.6.6.{i}", name) == 2, name
        t.succeeded("10.0.0.1\x00", name)
        assert store.login_known(name, "10.0.0.1\x00")
        assert t.locked_for("10.0.0.1\x00", name) == 0
