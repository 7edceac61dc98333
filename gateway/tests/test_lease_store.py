"""The leader lease in the store, on SQLite and on PostgreSQL (gateway/store/lease.py): one
holder at a time, takeover only after expiry, an overtaken holder cannot renew, and the notifier's
claim is fenced by the lease (a takeover never sends one notification twice)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from gw_samples import SITES, TS
from pg_cluster import (  # noqa: F401 - fixtures
    Backend,
    backend_fixture,
    pg_cluster_fixture,
    store_fixture,
)

from gateway.store import LEADER, AlertRecord, Notification, PgStore, Store

TTL = 6.0


def _held(s: Store) -> dict[str, Any]:
    got = s.lease(LEADER)
    assert got is not None
    return got


@pytest.fixture
def db(store: Store) -> Iterator[Store]:
    store.upsert_sites(SITES)
    yield store


def test_first_worker_takes_the_lease_the_second_waits_for_its_expiry(db: Store):
    assert db.acquire_lease(LEADER, "a", TS, TTL) == 1
    assert db.acquire_lease(LEADER, "b", TS + 1, TTL) is None
    assert db.acquire_lease(LEADER, "b", TS + TTL - 0.01, TTL) is None
    assert _held(db)["holder"] == "a"
    # `a` stops renewing (killed): once the expiry passes, `b` holds it under the next epoch.
    assert db.acquire_lease(LEADER, "b", TS + TTL, TTL) == 2
    got = _held(db)
    assert got["holder"] == "b" and got["epoch"] == 2 and got["expires"] == TS + 2 * TTL


def test_renewal_keeps_the_lease_and_an_overtaken_holder_cannot_renew(db: Store):
    epoch = db.acquire_lease(LEADER, "a", TS, TTL)
    assert epoch is not None
    for k in range(1, 10):  # renewed every 2 s: nobody else gets it
        assert db.renew_lease(LEADER, "a", epoch, TS + 2 * k, TTL)
        assert db.acquire_lease(LEADER, "b", TS + 2 * k + 1, TTL) is None
    # `a` pauses past its expiry, `b` takes over; `a` wakes up and tries to renew: refused.
    late = TS + 18 + TTL + 1
    assert db.acquire_lease(LEADER, "b", late, TTL) == epoch + 1
    assert not db.renew_lease(LEADER, "a", epoch, late + 0.5, TTL)
    # an expired lease is not renewed either, even by its holder (it must acquire again)
    assert not db.renew_lease(LEADER, "b", epoch + 1, late + TTL + 1, TTL)


def test_release_hands_over_at_once_and_a_restart_under_the_same_name_takes_it_back(db: Store):
    e1 = db.acquire_lease(LEADER, "a", TS, TTL)
    assert e1 == 1
    assert db.release_lease(LEADER, "a", e1)
    assert db.acquire_lease(LEADER, "b", TS + 0.1, TTL) == 2
    assert not db.release_lease(LEADER, "a", e1)  # not its lease any more: nothing changes
    assert _held(db)["holder"] == "b"
    # `b` killed and restarted under its own name: its lease back at once, a new epoch, and the
    # old process (had it survived) could no longer renew.
    assert db.acquire_lease(LEADER, "b", TS + 1, TTL) == 3
    assert not db.renew_lease(LEADER, "b", 2, TS + 1.5, TTL)


def test_two_workers_racing_for_a_free_lease_get_it_once(backend: Backend):
    """Each worker on its own connection, all at the same moment: exactly one epoch is won."""
    backend.open().close()  # migrated once, before the race
    won: list[tuple[str, int | None]] = []
    start = threading.Barrier(4)

    def race(i: int) -> None:
        s = backend.open()  # SQLite's connection stays in the thread that opened it
        try:
            start.wait()
            won.append((f"w{i}", s.acquire_lease(LEADER, f"w{i}", TS, TTL)))
        finally:
            s.close()

    threads = [threading.Thread(target=race, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [(w, e) for w, e in won if e is not None]
    assert len(won) == 4 and len(winners) == 1, won
    s = backend.open()
    try:
        assert _held(s)["holder"] == winners[0][0]
    finally:
        s.close()


def _queued(db: Store) -> int:
    aid = db.open_alert(AlertRecord(id=0, key="k", rule="grid_lost", site="are-kall",
                                    municipality="Åre", detail="", severity="warning",
                                    status="firing", started=TS))
    assert aid is not None
    (nid,) = db.add_notifications([Notification(0, aid, "first", "jour", "file", "x.log", "s",
                                                "{}", "idem-1", next_at=TS)], TS)
    return nid


def test_a_notification_is_claimed_once_and_only_under_the_current_lease(db: Store):
    nid = _queued(db)
    e1 = db.acquire_lease(LEADER, "a", TS, TTL)
    assert e1 is not None
    assert db.claim_notification(nid, LEADER, "a", e1, TS + 1, 60)
    # claimed: no longer due, and nobody claims it again while it is being sent
    assert db.due_notifications(TS + 2) == []
    assert not db.claim_notification(nid, LEADER, "a", e1, TS + 2, 60)
    # `a` dies mid-send; `b` takes over and sees it due again only after the hold
    e2 = db.acquire_lease(LEADER, "b", TS + 1 + TTL, TTL)
    assert e2 == e1 + 1
    for t in range(int(TS + 9), int(TS + 61), 2):  # `b` renews every 2 s
        assert db.renew_lease(LEADER, "b", e2, t, TTL)
        if t < TS + 61:
            assert not db.claim_notification(nid, LEADER, "b", e2, t, 60)
    assert [n.id for n in db.due_notifications(TS + 61)] == [nid]
    # the old holder, paused all along, wakes up: its epoch is gone, it cannot claim
    assert not db.claim_notification(nid, LEADER, "a", e1, TS + 61, 60)
    assert db.claim_notification(nid, LEADER, "b", e2, TS + 61, 60)
    db.record_attempt(nid, TS + 62, None, None)
    assert not db.claim_notification(nid, LEADER, "b", e2, TS + 200, 60)  # sent: done


def test_no_claim_without_a_lease(db: Store):
    nid = _queued(db)
    assert not db.claim_notification(nid, LEADER, "a", 1, TS + 1, 60)
    assert [n.id for n in db.due_notifications(TS + 1)] == [nid]


def test_other_workers_marks_reach_the_leader_on_postgresql(backend: Backend):
    """A worker that does not lead tells the leader which sites it filed (pg_notify); the
    leader's listener hands them to its engine's `mark` on its loop."""
    import asyncio

    from gateway.lease import MarkRelay

    if backend.name != "postgres":
        s = backend.open()
        try:
            s.notify("sot_marks", "x")  # nothing on SQLite, and no error
        finally:
            s.close()
        return

    async def main() -> set[str]:
        loop = asyncio.get_running_loop()
        leader_store, other_store = backend.open(), backend.open()
        assert isinstance(leader_store, PgStore) and isinstance(other_store, PgStore)
        marked: set[str] = set()
        leader = MarkRelay(leader_store.url, loop, leader_store)
        other = MarkRelay(other_store.url, loop, other_store)
        leader.listen(marked.add)
        try:
            await asyncio.sleep(0.5)  # LISTEN in place
            for site in ("are-kall", "krokom-follinge"):
                other.add(site)
            deadline = loop.time() + 5
            while len(marked) < 2 and loop.time() < deadline:
                await asyncio.sleep(0.05)
        finally:
            await asyncio.to_thread(leader.unlisten)
            leader_store.close()
            other_store.close()
        return marked

    assert asyncio.run(main()) == {"are-kall", "krokom-follinge"}
