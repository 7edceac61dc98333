"""Text a site can send that no output may choke on, written straight into the store (past the
ingest, as if it had been filed before the ingest refused such text): a lone UTF-16 surrogate
escaped in the stored JSON, C0 control characters, U+FFFE, and markup."""

from __future__ import annotations

import json
from typing import Any

from gw_samples import TS, birth, state, status

# JSON text with "\ud800" escapes: valid JSON, decodes to a str that UTF-8 cannot encode
SURROGATE = "\\ud800"
BAD = f"X{SURROGATE}\\u0001\\u001b[31m\\ufffe<b>"
# what every output shows instead: U+FFFD for each forbidden character, markup escaped or inert
SHOWN = "X\ufffd\ufffd\ufffd[31m\ufffd"


def _poisoned(doc: dict[str, Any], marker: str = "@@BAD@@") -> str:
    return json.dumps(doc, ensure_ascii=True).replace(marker, BAD)


def poison(db: Any, site: str = "are-kall", ts: float = TS) -> None:
    """The site's latest status, birth and state, and one event, hold bad text in every string
    a page, the API, the signage or its event stream shows."""
    m = "@@BAD@@"
    st = state(ts=int(ts), mode=m, grid={"state": m}, genset={"state": m},
               devices={m: "offline", "genset": m, "tank": "mismatch"},
               capability={"power": m, "fuel_for_sale": {m: 1200, "diesel": 300},
                           "shop_open": True, "info_point": True, "hours_left": 12.0})
    rows = {"status": _poisoned(status(ts=int(ts), state=m)),
            "birth": _poisoned(birth(ts=int(ts), fw=m, name=m)),
            "state": _poisoned(st)}
    db._db.execute("DELETE FROM site_status WHERE site = ?", (site,))
    db._db.execute(
        "INSERT INTO site_status (site, status, status_ts, status_received, birth, birth_ts, "
        "birth_received, state, state_ts, state_received) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (site, rows["status"], int(ts), ts, rows["birth"], int(ts), ts, rows["state"], int(ts),
         ts))
    db._db.execute(
        "INSERT INTO events (site, boot, seq, ts, type, data, hist, received) "
        "VALUES (?, 4, 99, ?, ?, ?, 0, ?)",
        (site, int(ts), "sensor_fault\x01", _poisoned({"device": m, "detail": m}), ts))
    # an alert whose text names a device, and a crisis message the panel's staff acknowledged
    db._db.execute(
        "INSERT INTO alerts (key, rule, site, municipality, detail, severity, status, started, "
        "fired, sv, en, data) VALUES (?, 'device_offline', ?, 'Åre', ?, 'warning', 'firing', ?, "
        "?, ?, ?, ?)",
        (f"device_offline:{site}:bad", site, "X\x01", ts, ts, "Enheten X\x01\x1b\ufffe svarar inte",
         "Device X\x0b does not answer", _poisoned({"site_name": m, "device": m})))
    db._db.execute("INSERT INTO crisis_messages (id, payload, created_by, updated) "
                   "VALUES ('m1', ?, 'kim', ?)",
                   (json.dumps({"id": "m1", "ts": int(ts), "sv": "Vatten finns", "en": "",
                                "severity": "info", "from": "Kommunen"}), ts))
    db._db.execute("INSERT INTO crisis_sent (site, crisis_id, ts) VALUES (?, 'm1', ?)",
                   (site, ts - 1))
    db._db.execute("INSERT INTO crisis_acks (site, crisis_id, boot, seq, ts, by, received) "
                   "VALUES (?, 'm1', 4, 100, ?, ?, ?)", (site, int(ts), "Olle\x01\x1b", ts))
