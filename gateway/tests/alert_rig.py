"""A store, an ingest and an alert engine on one hand-moved clock, for the alert tests.

Messages go in through `Ingest.handle`, as from MQTT; `advance(s)` moves the clock in heartbeat
steps, republishing each site's current state (as a controller does every heartbeat) and
evaluating every site, as the engine's timer does. Notifications are queued in the store and
read back from there: nothing is sent.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gw_samples import SITES, TS, Clock, raw

from gateway.alerts.config import AlertConfig, Contact, load_rules
from gateway.alerts.engine import AlertEngine
from gateway.config import CONFIG_DIR
from gateway.ingest import Ingest
from gateway.store import AlertRecord, PgStore, SiteInfo, SqliteStore

# Two more sites in Åre, so a regional grid loss has sites to group.
MORE_SITES = [
    SiteInfo("are-duved", "Duved", "Åre", 63.39, 12.93, 30),
    SiteInfo("are-undersaker", "Undersåker", "Åre", 63.32, 13.31, 30),
]
ALL_SITES = SITES + MORE_SITES
HEARTBEAT_S = 30

CONTACTS = {
    "Åre": (Contact("Anna (samordnare)", ("coordinator",), file="are.jsonl"),
            Contact("Bo (beredskapschef)", ("coordinator",), file="are.jsonl"),
            Contact("Teknikjour", ("technician",), file="are.jsonl")),
    "*": (Contact("Länets samordnare", ("coordinator", "technician"), file="other.jsonl"),),
}


def shipped_config() -> AlertConfig:
    rules, grouping = load_rules(CONFIG_DIR / "alerts.toml")
    return AlertConfig(rules=rules, grouping=grouping, contacts=CONTACTS)


def normal_state(**over: Any) -> dict[str, Any]:
    """All clear: grid on, generator stopped in auto and ready, plenty of fuel, all online."""
    doc: dict[str, Any] = {
        "mode": "normal",
        "grid": {"state": "ok", "v": 231.0, "f": 50.0, "src": "grid", "since": None},
        "genset": {"state": "stopped", "mode": "auto", "ready": True, "run_s": None,
                   "since": None, "alarms": []},
        "fuel": {"pct": 90.0, "litres": 360.0, "burn_lph": 3.4, "hours_left": 105.9,
                 "refuel_by": None},
        "tanks": {"diesel": 14500, "petrol": 9200},
        "pumps": {"available": 2, "total": 2},
        "devices": {"grid": "online", "genset": "online", "tank": "online", "pumps": "online"},
        "capability": {"power": "grid", "hours_left": 105.9,
                       "fuel_for_sale": {"diesel": 14300, "petrol": 9000}, "shop_open": True,
                       "info_point": True},
    }
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(doc.get(k), dict):
            doc[k] = {**doc[k], **v}
        else:
            doc[k] = v
    return doc


class Rig:
    def __init__(self, path: Path | Callable[[], SqliteStore | PgStore],
                 config: AlertConfig | None = None, clock: Clock | None = None) -> None:
        """`path`: a SQLite file, or what opens a store (`pg_cluster.Backend.open`)."""
        self.path = path
        self.clock = clock or Clock(TS)
        self.store: SqliteStore | PgStore = SqliteStore(path) if isinstance(path, Path) else path()
        self.store.upsert_sites(ALL_SITES)
        self.ingest = Ingest(self.store, self.clock)
        self.config = config or shipped_config()
        self.engine = AlertEngine(self.store, self.config, self.clock)
        self.engine.listening_since = self.clock.t
        self.current: dict[str, dict[str, Any]] = {}
        self.seq: dict[str, int] = {}
        self.silent: set[str] = set()

    def close(self) -> None:
        self.store.close()

    def publish(self, site: str, sub: str, doc: dict[str, Any]) -> str:
        seq = self.seq.get(site, 0) + 1
        self.seq[site] = seq
        msg = {**copy.deepcopy(doc), "boot": 1, "seq": seq, "ts": int(self.clock.t)}
        return self.ingest.handle(f"sot/v1/{site}/{sub}", raw(msg)).outcome

    def state(self, site: str = "are-kall", **over: Any) -> None:
        """Set and publish the site's state; `advance` keeps publishing it every heartbeat."""
        self.current[site] = normal_state(**over)
        self.silent.discard(site)
        assert self.publish(site, "state", self.current[site]) == "stored"

    def go_silent(self, site: str) -> None:
        self.silent.add(site)

    def evaluate(self) -> None:
        self.engine.evaluate_sites()

    def advance(self, seconds: float, step: float = HEARTBEAT_S) -> None:
        end = self.clock.t + seconds
        while self.clock.t < end:
            self.clock.t = min(end, self.clock.t + step)
            for site, doc in self.current.items():
                if site not in self.silent:
                    self.publish(site, "state", doc)
            self.evaluate()

    # --- what a coordinator would see --------------------------------------------------------

    def open_alerts(self) -> dict[str, AlertRecord]:
        return {a.key: a for a in self.store.alerts()}

    def firing(self) -> set[str]:
        return {k for k, a in self.open_alerts().items() if a.status == "firing"}

    def messages(self) -> list[dict[str, Any]]:
        """Every queued notification, oldest first, with its alert's key."""
        keys = {a.id: a.key for a in self.store.alerts(open_only=False)}
        rows = self.store.notifications(limit=100_000)
        return [{**r, "key": keys[r["alert_id"]]} for r in reversed(rows)]

    def told(self, key: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
        return [m for m in self.messages()
                if (key is None or m["key"] == key) and (kind is None or m["kind"] == kind)]
