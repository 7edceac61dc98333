"""Ingest.handle: what is filed, what is refused and why, and that nothing crashes it."""

from __future__ import annotations

import json
import logging
import random

import pytest
from gw_samples import SITES, TS, Clock, birth, event, present, raw, state, status, will

from gateway import ingest as ingest_mod
from gateway.ingest import Ingest, Result, is_newer
from gateway.store import SqliteStore

# clock, db (a store with the sample sites) and ing: gateway/tests/conftest.py


def T(sub: str, site: str = "are-kall") -> str:
    return f"sot/v1/{site}/{sub}"


def test_valid_messages_are_filed(ing: Ingest, db: SqliteStore):
    for sub, doc in (("status", status()), ("birth", birth()), ("state", state()),
                     ("event", event())):
        r = ing.handle(T(sub), raw(doc))
        assert r == Result("stored", "are-kall", sub), r
    latest = present(db.latest("are-kall"))
    assert latest["state"]["mode"] == "on_backup" and latest["birth"]["fw"] == "0.1.0"
    assert len(db.events("are-kall")) == 1
    st = ing.stats()
    assert st["accepted"] == 4 and st["rejected"] == 0
    assert st["accepted_by_topic"] == {"status": 1, "birth": 1, "state": 1, "event": 1}


def test_duplicates_and_outdated_messages_do_not_replace_the_latest(ing: Ingest, db: SqliteStore):
    assert ing.handle(T("state"), raw(state(seq=17))).outcome == "stored"
    assert ing.handle(T("state"), raw(state(seq=17))).outcome == "duplicate"
    assert ing.handle(T("state"), raw(state(seq=16, mode="normal"))).outcome == "outdated"
    assert present(db.latest("are-kall"))["state"]["seq"] == 17
    assert ing.handle(T("state"), raw(state(seq=18, mode="normal"))).outcome == "stored"
    assert ing.handle(T("event"), raw(event(seq=30))).outcome == "stored"
    assert ing.handle(T("event"), raw(event(seq=30))).outcome == "duplicate"
    st = ing.stats()
    assert st["duplicates"] == 2 and st["outdated"] == 1 and st["accepted"] == 3


def test_a_late_will_of_an_older_session_does_not_mark_a_live_site_lost(ing: Ingest,
                                                                         db: SqliteStore):
    ing.handle(T("status"), raw(status(bdseq=2, seq=0)))
    assert ing.handle(T("status"), raw(will(bdseq=1))).outcome == "outdated"
    assert present(db.latest("are-kall"))["status"]["state"] == "online"
    assert ing.handle(T("status"), raw(will(bdseq=2))).outcome == "stored"
    assert present(db.latest("are-kall"))["status"]["state"] == "lost"
    assert ing.handle(T("status"), raw(status(bdseq=3, seq=0))).outcome == "stored"


def test_a_controller_whose_boot_counter_went_back_is_heard_again(ing: Ingest, db: SqliteStore):
    ing.handle(T("state"), raw(state(boot=40, seq=5)))
    # a retained state from an older boot, replayed by the broker: older ts, not newer
    assert ing.handle(T("state"), raw(state(boot=3, seq=9, ts=TS - 60))).outcome == "outdated"
    # a new flash starting over at boot 0 with a later ts
    assert ing.handle(T("state"), raw(state(boot=0, seq=1, ts=TS + 60))).outcome == "stored"
    assert present(db.latest("are-kall"))["state"]["boot"] == 0


def test_is_newer_orders_by_boot_then_seq():
    assert is_newer("state", state(seq=2), None) is True
    assert is_newer("state", state(seq=2), state(seq=1)) is True
    assert is_newer("state", state(boot=5, seq=0), state(boot=4, seq=99)) is True
    assert is_newer("state", state(seq=1), state(seq=1)) is None
    assert is_newer("birth", birth(seq=1), birth(seq=2)) is False


def test_integral_floats_are_filed_as_integers(ing: Ingest, db: SqliteStore):
    doc = event(seq=21)
    doc["seq"] = 21.0
    assert ing.handle(T("event"), raw(doc)).outcome == "stored"
    assert ing.handle(T("event"), raw(event(seq=21))).outcome == "duplicate"


BIG = b'{"boot":4,"seq":17,"ts":1795444065,"mode":"normal","pad":"' + b"x" * 1000 + b'"}'
MALFORMED = [
    ("not JSON", T("state"), b"mode=normal", "not_json"),
    ("truncated JSON", T("state"), raw(state())[:-5], "not_json"),
    ("empty", T("state"), b"", "not_json"),
    ("invalid UTF-8", T("state"), b'{"mode":"\xff\xfe"}', "not_utf8"),
    ("over 1 KiB", T("state"), BIG, "too_large"),
    ("JSON array", T("state"), b"[1,2,3]", "not_object"),
    ("JSON string", T("event"), b'"grid_lost"', "not_object"),
    ("NaN", T("state"), raw(state()).replace(b'"pct":62.0', b'"pct":NaN'), "not_json"),
    ("Infinity", T("state"), raw(state()).replace(b'"pct":62.0', b'"pct":Infinity'),
     "not_json"),
    ("1e400 overflows to inf", T("state"), raw(state()).replace(b'"pct":62.0', b'"pct":1e400'),
     "not_json"),
    ("repeated key", T("state"), b'{"mode":"normal","mode":"panic"}', "not_json"),
    ("seq over 32 bits", T("state"), raw(state(seq=2**32)), "schema"),
    ("huge seq (beyond 2^53, anywhere)", T("state"), raw(state(seq=2**64)), "not_json"),
    ("huge boot in event", T("event"), raw(event(boot=10**30)), "not_json"),
    ("wrong types", T("state"), raw(state(mode=3, grid={"state": True})), "schema"),
    ("wrong enum", T("state"), raw(state(mode="panic")), "schema"),
    ("status as state", T("state"), raw(status()), "schema"),
    ("unknown site", T("state", "are-varm"), raw(state()), "unknown_site"),
    ("site not a slug", T("state", "Are_Kall"), raw(state()), "bad_topic"),
    ("unknown subtopic", T("telemetry"), raw(state()), "unknown_subtopic"),
    ("gateway-only subtopic", T("rebirth"), b"{}", "unknown_subtopic"),
    ("too deep", "sot/v1/are-kall/state/x", raw(state()), "bad_topic"),
    ("other root", "sot/v2/are-kall/state", raw(state()), "bad_topic"),
    ("empty topic", "", raw(state()), "bad_topic"),
]


@pytest.mark.parametrize("what, topic, payload, reason", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_is_counted_filed_as_rejected_and_never_stored(ing: Ingest, db: SqliteStore,
                                                                  what, topic, payload, reason):
    r = ing.handle(topic, payload)
    assert r.outcome == "rejected" and r.reason == reason, (what, r)
    assert not r.accepted
    assert ing.stats()["rejected_by_reason"] == {reason: 1}
    assert ing.stats()["accepted"] == 0
    assert db.latest("are-kall") is None
    assert db.events("are-kall") == []
    rows = db.rejected()
    assert len(rows) == 1 and rows[0]["reason"] == reason and rows[0]["topic"] == topic[:256]


def test_a_reject_never_touches_the_latest_state(ing: Ingest, db: SqliteStore):
    ing.handle(T("state"), raw(state(seq=17)))
    ing.handle(T("state"), raw(state(seq=18, mode="chaos")))
    ing.handle(T("state"), b"\x00" * 2000)
    assert present(db.latest("are-kall"))["state"]["seq"] == 17


def test_the_gateways_own_status_is_ignored_not_rejected(ing: Ingest):
    r = ing.handle("sot/v1/gateway/status", b'{"state":"online","ts":1795444065}')
    assert r.outcome == "ignored"
    assert ing.stats()["rejected"] == 0 and ing.stats()["ignored"] == 1


def test_rejects_are_logged_once_a_minute_per_site_and_reason(ing: Ingest, clock: Clock,
                                                              caplog):
    caplog.set_level(logging.WARNING, logger="gateway.ingest")
    for _ in range(50):
        ing.handle(T("state"), b"nope")
    for i in range(50):
        ing.handle(T("state", f"ghost-{i}"), raw(state()))  # all unknown sites share one key
    assert len(caplog.records) == 2
    clock.t += 61
    ing.handle(T("state"), b"nope")
    assert len(caplog.records) == 3
    assert "+49 more" in caplog.records[-1].getMessage()
    assert ing.stats()["rejected_by_reason"] == {"not_json": 51, "unknown_site": 50}


def test_a_reject_flood_files_a_bounded_number_of_rows(ing: Ingest, db: SqliteStore,
                                                        clock: Clock):
    for _ in range(ingest_mod.REJECTS_FILED_PER_MIN + 50):
        ing.handle(T("state"), b"nope")
    assert len(db.rejected(500)) == ingest_mod.REJECTS_FILED_PER_MIN
    clock.t += 60
    ing.handle(T("state"), b"nope")
    assert len(db.rejected(500)) == ingest_mod.REJECTS_FILED_PER_MIN + 1
    assert ing.stats()["rejected"] == ingest_mod.REJECTS_FILED_PER_MIN + 51


def test_sites_are_reloaded_from_the_store(ing: Ingest, db: SqliteStore):
    assert ing.handle(T("state", "are-kall"), raw(state())).accepted
    db.upsert_sites(SITES[1:])
    ing.reload_sites()
    assert ing.handle(T("state", "are-kall"), raw(state(seq=99))).reason == "unknown_site"


def _mutations(rng: random.Random, seed_payloads: list[bytes], n: int):
    for _ in range(n):
        p = bytearray(rng.choice(seed_payloads))
        for _ in range(rng.randint(1, 6)):
            op = rng.randrange(4)
            i = rng.randrange(len(p) + 1)
            if op == 0 and p:
                p[min(i, len(p) - 1)] = rng.randrange(256)
            elif op == 1:
                p[i:i] = rng.choice([b"9" * 30, b"-", b"null", b"\"", b"{", b"]", b"\\u0000",
                                     b"1e999", b"true", b"\xc3"])
            elif op == 2:
                del p[i:i + rng.randint(1, 8)]
            else:
                p = p[:i]
        yield bytes(p)


def test_mutated_payloads_never_crash_and_only_valid_ones_are_filed(ing: Ingest, db: SqliteStore):
    rng = random.Random(20261123)
    seeds = {"state": raw(state()), "event": raw(event()), "birth": raw(birth()),
             "status": raw(status())}
    validators = ingest_mod.load_validators()
    for sub, seed in seeds.items():
        for payload in _mutations(rng, [seed], 300):
            r = ing.handle(T(sub), payload)
            assert r.outcome in ("stored", "duplicate", "outdated", "rejected")
            if r.accepted:
                assert validators[sub].is_valid(json.loads(payload))
    assert db.integrity_check() == "ok"
    st = ing.stats()
    assert st["rejected"] > 1000


def test_hypothesis_fuzz_never_crashes(db: SqliteStore, clock: Clock):
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    ing = Ingest(db, clock)
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda children: st.lists(children) | st.dictionaries(st.text(), children),
        max_leaves=20)

    @hypothesis.settings(max_examples=300, deadline=None)
    @hypothesis.given(sub=st.sampled_from(["status", "birth", "state", "event", "x"]),
                      payload=st.binary(max_size=1100) | json_values.map(
                          lambda v: json.dumps(v).encode()))
    def check(sub: str, payload: bytes) -> None:
        r = ing.handle(T(sub), payload)
        assert r.outcome in ("stored", "duplicate", "outdated", "rejected")

    check()


def test_progress_acknowledges_the_contiguous_run_and_reports_a_gap(ing: Ingest):
    for seq in (0, 1, 2, 4):
        ing.handle(T("event"), raw(event(boot=7, seq=seq)))
    assert ing.progress() == ([("are-kall", 7, 2)], ["are-kall"])
    assert ing.progress() == ([], [])  # nothing new: nothing to say
    ing.handle(T("event"), raw(event(boot=7, seq=3)))
    assert ing.progress() == ([("are-kall", 7, 4)], [])
    ing.handle(T("event"), raw(event(boot=7, seq=4)))  # a duplicate is acknowledged again
    assert ing.progress() == ([("are-kall", 7, 4)], [])


def test_a_live_event_ahead_of_a_replay_is_filed_at_once_without_a_rebirth(ing: Ingest,
                                                                         clock: Clock):
    # After a long outage the site replays its journal (hist) and sends a generator failure
    # raised at reconnect ahead of it: filed at once, acknowledged only with the contiguous run,
    # and the hole the replay is filling is not a lost event (no rebirth, which would restart
    # the replay from the start, again and again).
    for seq in range(0, 5):
        ing.handle(T("event"), raw(event(boot=7, seq=seq, hist=True)))
    ing.handle(T("event"), raw(event("gen_failed_to_start", boot=7, seq=40, hist=False)))
    assert [e["type"] for e in ing.store.events("are-kall") if e["seq"] == 40] == \
        ["gen_failed_to_start"]
    assert ing.progress() == ([("are-kall", 7, 4)], [])
    for seq in range(5, 40):
        clock.t += 0.05
        ing.handle(T("event"), raw(event(boot=7, seq=seq, hist=True)))
    assert ing.progress() == ([("are-kall", 7, 40)], [])
    # a hole that the replay does not fill is asked about once the replay has gone quiet
    ing.handle(T("event"), raw(event(boot=7, seq=42)))
    assert ing.progress() == ([("are-kall", 7, 40)], [])
    clock.t += 11
    assert ing.progress() == ([], ["are-kall"])


def test_progress_needs_seq_0_unless_the_birth_says_the_journal_starts_later(ing: Ingest):
    ing.handle(T("event"), raw(event(boot=3, seq=5)))
    assert ing.progress() == ([], ["are-kall"])  # 0..4 may still come
    fresh = Ingest(ing.store, ing.clock)
    fresh.handle(T("birth"), raw(birth(boot=3, seq=9, journal={"bytes": 100, "pending": 1,
                                                               "oldest": [3, 5]})))
    fresh.handle(T("event"), raw(event(boot=3, seq=6)))
    assert fresh.progress() == ([("are-kall", 3, 6)], [])  # 0..4 were dropped by the site


def test_a_replayed_state_never_hides_the_live_one():
    live = state(boot=4, seq=10, ts=TS + 100)
    old = dict(state(boot=4, seq=11, ts=TS + 50), hist=True)
    assert is_newer("state", old, live) is False
    assert is_newer("state", dict(old, ts=TS + 200), live) is True


def test_progress_passes_over_events_the_site_dropped_from_a_full_journal(ing: Ingest):
    for seq in (0, 1, 2, 3, 10, 11):
        ing.handle(T("event"), raw(event(boot=7, seq=seq)))
    assert ing.progress() == ([("are-kall", 7, 3)], ["are-kall"])
    ing.handle(T("birth"), raw(birth(boot=7, seq=50, dropped=6,
                                     journal={"bytes": 500, "pending": 3, "oldest": [7, 10]})))
    ing.handle(T("event"), raw(event(boot=7, seq=12)))
    assert ing.progress() == ([("are-kall", 7, 12)], [])


def test_a_refused_event_is_acknowledged_so_it_cannot_block_the_journal(ing: Ingest):
    ing.handle(T("event"), raw(event(boot=9, seq=0)))
    bad = event(boot=9, seq=1)
    bad["data"] = {"v": "not a number"}
    assert ing.handle(T("event"), raw(bad)).reason == "schema"
    ing.handle(T("event"), raw(event(boot=9, seq=2)))
    assert ing.progress() == ([("are-kall", 9, 2)], [])
