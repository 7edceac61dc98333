"""What official messages mean (gateway/feeds/reduce.py): only Actual is real, Update replaces,
Cancel withdraws, expiry, repeats of polled feeds, and the same alert from two sources shown
once."""

from __future__ import annotations

from dataclasses import replace

from feeds_fixtures import NOW, fixture, ts
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.feeds import AlertSet, OfficialAlert, apply_all, expire, parse_cap, reduce
from gateway.feeds.parse import parse_krisinformation

ACTUAL = parse_cap(fixture("vma-are-actual.xml"))
TEST = parse_cap(fixture("vma-are-test.xml"))
UPDATE = parse_cap(fixture("vma-are-update.xml"))
CANCEL = parse_cap(fixture("vma-are-cancel.xml"))
CANCEL_UNKNOWN = parse_cap(fixture("vma-cancel-unknown.xml"))
POLY = parse_cap(fixture("cap-polygon-kall.xml"))
KI_VMA = parse_krisinformation(fixture("krisinformation-vma.json")).alerts[0]
LATER = ts("2026-12-05T17:00:00+01:00")


def held(state: AlertSet) -> list[str]:
    return sorted(a.identifier for a in state.alerts.values())


def test_new_alert_is_added_and_public() -> None:
    o = reduce(AlertSet(), ACTUAL, NOW)
    assert [(c.kind, c.alert) for c in o.changes] == [("added", ACTUAL)]
    assert o.state.public(NOW) == [ACTUAL]


def test_test_status_is_held_for_coordinators_never_public() -> None:
    st = reduce(AlertSet(), TEST, NOW).state
    assert st.active(NOW) == [TEST] and st.public(NOW) == []
    for status in ("Exercise", "System", "Draft"):
        msg = replace(TEST, status=status, identifier=f"X-{status}")
        st2 = reduce(AlertSet(), msg, NOW).state
        assert st2.public(NOW) == [] and len(st2.active(NOW)) == 1


def test_polling_the_same_feed_again_changes_nothing() -> None:
    st = reduce(AlertSet(), ACTUAL, NOW).state
    o = reduce(st, ACTUAL, NOW + 60)
    assert o.changes == () and o.ignored == "repeat" and o.state.alerts == st.alerts


def test_update_replaces_what_it_references() -> None:
    st = reduce(AlertSet(), ACTUAL, NOW).state
    o = reduce(st, UPDATE, NOW + 3600)
    assert [(c.kind, c.alert, c.replaced) for c in o.changes] == [("updated", UPDATE, (ACTUAL,))]
    assert held(o.state) == ["TEST-VMA-2026-1205-002"]
    # the original, polled again afterwards, stays replaced
    o2 = reduce(o.state, ACTUAL, NOW + 3660)
    assert o2.ignored in ("repeat", "withdrawn") and held(o2.state) == held(o.state)


def test_update_for_something_unknown_is_shown_as_new() -> None:
    o = reduce(AlertSet(), UPDATE, NOW)
    assert [c.kind for c in o.changes] == ["added"]
    # and the original arriving late does not come back beside it
    o2 = reduce(o.state, ACTUAL, NOW)
    assert o2.ignored == "withdrawn" and held(o2.state) == ["TEST-VMA-2026-1205-002"]


def test_cancel_withdraws() -> None:
    st = reduce(reduce(AlertSet(), ACTUAL, NOW).state, UPDATE, NOW).state
    o = reduce(st, CANCEL, LATER)
    assert [(c.kind, c.alert) for c in o.changes] == [("withdrawn", UPDATE)]
    assert o.state.alerts == {}
    assert reduce(o.state, UPDATE, LATER).ignored in ("repeat", "withdrawn")


def test_cancel_for_unknown_changes_nothing() -> None:
    st = reduce(AlertSet(), ACTUAL, NOW).state
    o = reduce(st, CANCEL_UNKNOWN, NOW)
    assert o.changes == () and o.ignored == "cancel_unknown"
    assert o.state.alerts == st.alerts
    again = reduce(o.state, CANCEL_UNKNOWN, NOW + 60)
    assert again.ignored == "repeat"  # reported once, not on every poll


def test_test_message_never_touches_a_real_one() -> None:
    st = reduce(AlertSet(), ACTUAL, NOW).state
    test_cancel = replace(CANCEL, status="Test",
                          references=(("vma@cap.example.se", "TEST-VMA-2026-1205-001"),))
    o = reduce(st, test_cancel, NOW)
    assert o.changes == () and o.ignored == "test_vs_actual" and o.state.public(NOW) == [ACTUAL]
    test_update = replace(UPDATE, status="Test")
    o = reduce(st, test_update, NOW)
    assert [c.kind for c in o.changes] == ["added"] and o.state.public(NOW) == [ACTUAL]


def test_expires_is_honoured() -> None:
    st = reduce(AlertSet(), ACTUAL, NOW).state
    assert ACTUAL.expires is not None
    assert expire(st, ACTUAL.expires - 1).changes == ()
    o = expire(st, ACTUAL.expires)
    assert [(c.kind, c.alert) for c in o.changes] == [("expired", ACTUAL)]
    assert o.state.alerts == {}
    # arriving already expired: never shown
    late = reduce(AlertSet(), ACTUAL, ACTUAL.expires + 1)
    assert late.changes == () and late.ignored == "expired"
    # and active() never lists an expired one even before expire() ran
    assert st.active(ACTUAL.expires) == []


def test_older_version_of_the_same_key_is_stale() -> None:
    newer = replace(KI_VMA, sent=KI_VMA.sent + 600)
    st = reduce(AlertSet(), newer, NOW).state
    o = reduce(st, KI_VMA, NOW)
    assert o.ignored == "stale" and held(o.state) == [KI_VMA.identifier]
    o2 = reduce(reduce(AlertSet(), KI_VMA, NOW).state, newer, NOW)
    assert [(c.kind, c.alert, c.replaced) for c in o2.changes] == [("updated", newer, (KI_VMA,))]


def test_same_alert_from_two_sources_is_shown_once() -> None:
    # the CAP document first, then Krisinformation's item with the same identifier
    st = reduce(AlertSet(), ACTUAL, NOW).state
    o = reduce(st, KI_VMA, NOW)
    assert o.ignored == "duplicate" and o.state.public(NOW) == [ACTUAL]
    # the other way round: the CAP document takes the item's place
    st = reduce(AlertSet(), KI_VMA, NOW).state
    o = reduce(st, ACTUAL, NOW)
    assert [(c.kind, c.alert, c.replaced) for c in o.changes] == [("updated", ACTUAL, (KI_VMA,))]
    assert o.state.public(NOW) == [ACTUAL]
    # one CAP alert from two CAP feeds (an Atom feed and the document itself): one key
    twin = replace(ACTUAL, feed="other-feed")
    assert twin.key == ACTUAL.key
    assert reduce(reduce(AlertSet(), ACTUAL, NOW).state, twin, NOW).ignored == "repeat"


def test_batch_is_applied_in_sent_order_with_net_changes() -> None:
    # a feed that lists the Cancel before what it cancels: nothing ever shows
    b = apply_all(AlertSet(), [CANCEL, UPDATE, ACTUAL], LATER)
    assert b.changes == () and b.state.alerts == {}
    # a feed with the original and its update: only the update shows, as one addition
    b = apply_all(AlertSet(), [UPDATE, ACTUAL, POLY], NOW)
    assert sorted((c.kind, c.alert.identifier) for c in b.changes) == [
        ("added", "TEST-CAP-POLY-001"), ("added", "TEST-VMA-2026-1205-002")]
    # the next poll of the same feed: no change at all
    again = apply_all(b.state, [UPDATE, ACTUAL, POLY], NOW + 60)
    assert again.changes == () and {r for r, _ in again.ignored} <= {"repeat", "withdrawn"}


def test_update_and_cancel_in_one_batch_withdraw_what_was_shown() -> None:
    st = reduce(AlertSet(), ACTUAL, NOW).state
    b = apply_all(st, [CANCEL, UPDATE], LATER)
    assert [(c.kind, c.alert) for c in b.changes] == [("withdrawn", ACTUAL)]
    assert b.state.alerts == {}
    # an update chain within one batch is one update of what was shown
    second = replace(UPDATE, identifier="TEST-VMA-2026-1205-00X", sent=UPDATE.sent + 60,
                     references=(("vma@cap.example.se", UPDATE.identifier),))
    b = apply_all(st, [second, UPDATE], NOW)
    assert [(c.kind, c.alert, c.replaced) for c in b.changes] == [("updated", second, (ACTUAL,))]


def test_memory_is_bounded() -> None:
    st = apply_all(AlertSet(), [ACTUAL, CANCEL_UNKNOWN], NOW).state
    assert st.seen and st.gone
    far = NOW + 30 * 86400
    out = expire(st, far).state
    assert out.alerts == {} and not out.seen and not out.gone


def test_withdrawn_message_still_listed_stays_withdrawn() -> None:
    msgs = [replace(ACTUAL, expires=None), replace(UPDATE, expires=None), CANCEL]
    st = apply_all(AlertSet(), msgs, LATER).state
    t = LATER
    for _ in range(10):  # a feed that keeps listing all three for ten weeks
        t += 7 * 86400
        b = apply_all(st, msgs, t)
        assert b.changes == ()
        st = b.state
    assert st.alerts == {}


def test_ack_and_error_show_nothing() -> None:
    for kind in ("Ack", "Error"):
        o = reduce(AlertSet(), replace(ACTUAL, msg_type=kind), NOW)
        assert o.changes == () and o.ignored == "not_alert"


ALL = [ACTUAL, TEST, UPDATE, CANCEL, CANCEL_UNKNOWN, POLY, KI_VMA,
       parse_cap(fixture("cap-circle-hede.xml"))]
KI_NEWS = parse_krisinformation(fixture("krisinformation-news.json")).alerts


@settings(max_examples=200, deadline=None)
@given(polls=st.lists(st.lists(st.sampled_from(ALL + KI_NEWS), max_size=6), max_size=5),
       step=st.floats(0, 6 * 3600))
def test_any_sequence_of_polls(polls: list[list[OfficialAlert]], step: float) -> None:
    """Whatever the feeds list, in whatever order over several polls: polling again changes
    nothing, a test message is never public, nothing expired is held, a Cancel's targets are
    gone, the same alert is never held twice, and the changes account for every difference."""
    state, now = AlertSet(), NOW
    for msgs in polls:
        b = apply_all(state, msgs, now)
        before = dict(state.alerts)
        for c in b.changes:
            if c.kind in ("withdrawn", "expired"):
                before.pop(c.alert.key)
            else:
                for r in c.replaced:
                    before.pop(r.key, None)
                before[c.alert.key] = c.alert
        assert before == dict(b.state.alerts)
        again = apply_all(b.state, msgs, now)
        assert again.changes == () and dict(again.state.alerts) == dict(b.state.alerts)
        state = b.state
        held_now = list(state.alerts.values())
        assert all(a.actual for a in state.public(now))
        assert not any(a.expired(now) for a in held_now)
        ids = [a.identifier for a in held_now]
        assert len(ids) == len(set(ids))  # one alert, one entry, across sources
        if CANCEL in msgs:
            assert UPDATE.key not in state.alerts
        now += step
