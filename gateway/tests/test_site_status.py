"""One answer to "is this site online, stale or lost?" (docs/mqtt.md, "Site status").

What a coordinator sees on the dashboard (the store's summary, also `GET /api/sites`), what the
public sees on the signage and what the alert rules see must agree for the same site at the
same moment: a site the alert engine takes as online must not be lost on the public screen."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from gw_samples import SITES, TS, birth, present, state, status, will
from pg_cluster import backend_fixture, pg_cluster_fixture, store_fixture  # noqa: F401

from gateway.alerts.rules import SiteView, site_view
from gateway.model import SiteInfo, SiteSnapshot, SiteSummary, site_status
from gateway.signage import signage_view
from gateway.store import Store

HB = 30  # the sites' configured heartbeat (gw_samples.SITES)


@pytest.fixture
def db(store: Store) -> Store:
    """Every test here runs on SQLite and on PostgreSQL (`pg_cluster.py`)."""
    store.upsert_sites(SITES)
    return store


def put(db: Store, kind: str, doc: dict[str, Any], received: float) -> None:
    getattr(db, f"put_{kind}")("are-kall", doc, json.dumps(doc), received)


@dataclass
class Seen:
    """The site as each part shows it at `now`."""

    dashboard: SiteSummary
    api: dict[str, Any]
    signage: dict[str, Any]
    rules: SiteView


def seen(db: Store, now: float) -> Seen:
    summary = present(db.site_overview("are-kall", now))
    return Seen(dashboard=summary, api=summary.as_json(),
                signage=present(signage_view(db, "are-kall", now)),
                rules=site_view(db.snapshots("are-kall")[0], now, listening_since=TS - 600))


def online_with_state(db: Store, at: float = TS) -> None:
    put(db, "status", status(ts=int(at)), at)
    put(db, "birth", birth(ts=int(at)), at)
    put(db, "state", state(ts=int(at)), at)


def test_a_fresh_state_is_online_and_current_everywhere(db: Store):
    online_with_state(db)
    s = seen(db, TS + 5)
    assert s.dashboard.link == "online" and s.dashboard.current
    assert s.api["status"] == "online" and s.api["stale"] is False and s.api["age_s"] == 5.0
    assert s.signage["stale"] is False and s.signage["lost"] is False
    assert s.signage["has_data"] is True and s.signage["mode"] == "on_backup"
    assert s.rules.status == "online" and s.rules.state is not None


def test_silent_past_three_heartbeats_is_stale_everywhere(db: Store):
    online_with_state(db)
    before = seen(db, TS + 3 * HB - 1)
    assert before.dashboard.stale is False and before.signage["stale"] is False
    assert before.rules.state is not None
    after = seen(db, TS + 3 * HB + 1)
    # the dashboard greys it (last known, not current), the screen says stale with its age,
    # and the rules no longer act on the power situation it last reported
    assert after.dashboard.stale is True and not after.dashboard.current
    assert after.dashboard.mode == "on_backup"  # still shown, as the last known
    assert after.api["stale"] is True and after.api["status"] == "online"
    assert after.signage["stale"] is True and after.signage["lost"] is False
    assert after.signage["stale_after_s"] == 3 * HB
    assert after.rules.state is None and after.rules.state_age_s == 3 * HB + 1


def test_a_will_newer_than_the_state_is_lost_everywhere(db: Store):
    online_with_state(db)
    put(db, "status", will(), TS + 10)  # the broker published the controller's Will
    s = seen(db, TS + 12)  # the data is only 12 s old, but the link is gone
    assert s.dashboard.link == "lost" and s.dashboard.lost and not s.dashboard.current
    assert s.api["status"] == "lost"
    assert s.signage["lost"] is True and s.signage["stale"] is True
    assert s.rules.status == "lost" and s.rules.status_since == TS + 10


def test_a_will_older_than_the_latest_state_is_online_everywhere(db: Store):
    """The site has spoken since its Will (a state arrived after it): it is online, on the
    dashboard and the public screen as for the alert rules. Before site_status the screen
    showed such a site as lost while the alert engine took it as online."""
    put(db, "birth", birth(), TS)
    put(db, "status", will(), TS)
    put(db, "state", state(ts=TS + 5), TS + 5)
    s = seen(db, TS + 10)
    assert s.dashboard.link == "online" and not s.dashboard.lost and s.dashboard.current
    assert s.api["status"] == "online" and s.api["stale"] is False
    assert s.signage["lost"] is False and s.signage["stale"] is False
    assert s.rules.status == "online" and s.rules.state is not None


def test_a_birth_may_shorten_the_heartbeat_never_lengthen_it(db: Store):
    put(db, "status", status(), TS)
    put(db, "birth", birth(heartbeat_s=10), TS)
    put(db, "state", state(), TS)
    assert seen(db, TS + 29).dashboard.stale is False
    s = seen(db, TS + 31)  # 3 x 10 s, not 3 x 30 s
    assert s.dashboard.heartbeat_s == 10 and s.api["heartbeat_s"] == 10
    assert s.dashboard.stale and s.signage["stale"] and s.rules.state is None
    assert s.signage["stale_after_s"] == 30 and s.rules.heartbeat_s == 10

    put(db, "birth", birth(seq=2, heartbeat_s=600), TS)  # claims longer than configured
    s = seen(db, TS + 3 * HB + 1)
    assert s.dashboard.heartbeat_s == HB
    assert s.dashboard.stale and s.signage["stale"] and s.rules.state is None


def test_a_site_never_heard_is_unknown_and_stale_everywhere(db: Store):
    s = seen(db, TS)
    assert s.dashboard.link == "unknown" and s.dashboard.last_heard is None
    assert s.dashboard.stale and not s.dashboard.lost and not s.dashboard.has_data
    assert s.api["status"] is None and s.api["stale"] is True and s.api["age_s"] is None
    assert s.signage["has_data"] is False and s.signage["stale"] is True
    assert s.signage["lost"] is False
    assert s.rules.status is None and s.rules.state is None and s.rules.state_age_s is None


def test_the_state_age_is_taken_from_the_older_of_ts_and_receive_time(db: Store):
    """A retained state replayed by the broker keeps its old ts: it is as old as its ts says."""
    put(db, "status", status(), TS + 200)
    put(db, "state", state(ts=TS), TS + 200)
    s = seen(db, TS + 201)
    assert s.dashboard.last_heard == TS and s.dashboard.age_s == 201.0
    assert s.dashboard.stale and s.signage["stale"] and s.rules.state is None


# --- every part agrees, whatever the site said and whenever we look --------------------------

STORIES: dict[str, list[tuple[str, dict[str, Any], float]]] = {
    "never heard": [],
    "online, no state yet": [("status", status(), TS)],
    "fresh": [("status", status(), TS), ("state", state(), TS)],
    "will after state": [("status", status(), TS), ("state", state(), TS),
                         ("status", will(), TS + 20)],
    "will before state": [("status", will(), TS), ("state", state(ts=TS + 20), TS + 20)],
    "will, no state": [("status", will(), TS)],
    "short birth heartbeat": [("birth", birth(heartbeat_s=5), TS), ("status", status(), TS),
                              ("state", state(), TS)],
    "state with a future ts": [("status", status(), TS), ("state", state(ts=TS + 500), TS)],
}


@pytest.mark.parametrize("story", STORIES)
@pytest.mark.parametrize("later", [1, 14, 16, 89, 91, 600])
def test_dashboard_signage_and_rules_agree(db: Store, story: str, later: float):
    for kind, doc, received in STORIES[story]:
        put(db, kind, doc, received)
    now = TS + 20 + later
    s = seen(db, now)
    snap = db.snapshots("are-kall")[0]
    st = site_status(snap, now)
    d = s.dashboard
    assert (d.link, d.stale, d.lost, d.heartbeat_s, d.last_heard) == \
        (st.link, st.stale, st.lost, st.heartbeat_s, st.last_heard)
    assert s.api["status"] == (None if st.link == "unknown" else st.link)
    assert s.api["stale"] == st.stale
    assert s.signage["lost"] == st.lost
    assert s.signage["stale"] == (st.stale or st.lost)
    assert s.signage["stale_after_s"] == st.stale_after_s
    assert s.rules.status == (None if st.link == "unknown" else st.link)
    assert (s.rules.state is None) == st.stale
    assert s.rules.heartbeat_s == st.heartbeat_s


def test_site_status_is_a_pure_function_of_the_snapshot():
    info = SiteInfo("x", "X", "Åre", 63.0, 13.0, None)  # no heartbeat configured: 30 s
    snap = SiteSnapshot(info=info, status=will(), status_received=TS + 1, birth=None,
                        state=state(), state_ts=TS, state_received=TS + 2)
    st = site_status(snap, TS + 90)
    assert (st.link, st.stale, st.heartbeat_s, st.age_s) == ("online", False, 30, 90.0)
    assert site_status(snap, TS + 91).stale
    lost = SiteSnapshot(info=info, status=will(), status_received=TS + 3, birth=None,
                        state=state(), state_ts=TS, state_received=TS + 2)
    assert site_status(lost, TS + 5).lost and not site_status(lost, TS + 5).stale


def test_the_api_row_has_exactly_the_documented_fields(db: Store):
    """`SiteSummary.as_json()` is what `GET /api/sites` returns: the fields gateway/web/openapi.json
    documents, no more (the model's extra attributes stay out of the API)."""
    doc = json.loads((Path(__file__).parents[1] / "web" / "openapi.json").read_text())
    documented = set(doc["components"]["schemas"]["SiteSummary"]["properties"])
    online_with_state(db)
    assert set(seen(db, TS).api) == documented
    assert set(seen(db, TS).api) == set(present(db.site_overview("harjedalen-hede", TS)).as_json())
