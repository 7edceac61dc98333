"""Valid controller payloads and sites for the gateway tests; override any key per test."""

from __future__ import annotations

import copy
import json
from typing import Any

from gateway.store import SiteInfo
from hil_tests.rig import present  # noqa: F401 - the tests import it from here

TS = 1_795_444_065  # 2026-11-23


class Clock:
    """A clock the test moves by hand: pass it where the gateway takes `clock`."""

    def __init__(self, t: float = TS) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

SITES = [
    SiteInfo("are-kall", "Kall", "Åre", 63.4667, 13.25, 30),
    SiteInfo("harjedalen-hede", "Hede", "Härjedalen", 62.4167, 13.5, 30),
    SiteInfo("krokom-follinge", "Föllinge", "Krokom", 63.6667, 14.6167, 30),
]


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def status(**over: Any) -> dict[str, Any]:
    return _merge({"state": "online", "boot": 4, "bdseq": 1, "seq": 0, "ts": TS}, over)


def will(**over: Any) -> dict[str, Any]:
    return _merge({"state": "lost", "boot": 4, "bdseq": 1}, over)


def birth(**over: Any) -> dict[str, Any]:
    return _merge({
        "boot": 4, "seq": 1, "ts": TS, "bdseq": 1, "fw": "0.1.0", "config": "3f2a9c01b7de",
        "name": "Kall", "municipality": "Åre", "reset": "power_on", "heartbeat_s": 30,
        "devices": [{"name": "grid", "profile": "eastron-sdm630", "unit": 1, "bus": "rs485"},
                    {"name": "genset", "profile": "dse-gencomm", "unit": 10, "bus": "rs485"},
                    {"name": "tank", "profile": "station-tank-gauge", "unit": 20,
                     "bus": "rs485"}],
    }, over)


def state(**over: Any) -> dict[str, Any]:
    return _merge({
        "boot": 4, "seq": 17, "ts": TS, "mode": "on_backup",
        "grid": {"state": "lost", "v": 0.0, "f": 0.0, "src": "grid", "since": TS - 54},
        "genset": {"state": "running", "mode": "auto", "ready": True, "run_s": 45,
                   "battery_v": 27.1, "run_hours": 412.6, "since": TS - 45, "alarms": []},
        "fuel": {"pct": 62.0, "litres": 248.0, "burn_lph": 3.4, "hours_left": 72.9,
                 "refuel_by": TS + 262440, "confidence": "medium", "src": "load"},
        "tanks": {"diesel": 14500, "petrol": 9200},
        "pumps": {"available": 2, "total": 2},
        "devices": {"grid": "online", "genset": "online", "tank": "offline"},
        "capability": {"power": "backup", "hours_left": 72.9,
                       "fuel_for_sale": {"diesel": 14300, "petrol": 9000}, "shop_open": True,
                       "info_point": True},
    }, over)


EVENT_DATA: dict[str, dict[str, Any]] = {
    "grid_lost": {"v": 0.0, "f": 0.0, "state": "lost"},
    "grid_restored": {"v": 231.2, "f": 50.0, "outage_s": 3600},
    "gen_running": {"after_s": 9.5},
    "gen_stopped": {"run_s": 3720},
    "gen_failed_to_start": {"state": "fault", "mode": "auto", "waited_s": 30},
    "mode_changed": {"from": "normal", "to": "grid_lost"},
    "device_offline": {"device": "tank"},
    "device_online": {"device": "tank"},
    "gen_not_ready": {"mode": "manual", "why": "mode"},
    "gen_ready": {"mode": "auto"},
    "gen_max_runtime": {"run_s": 259200, "max_h": 72},
    "fuel_jump": {"from": 49.0, "to": 12.0, "litres": -148.0},
    "refuelled": {"from": 12.0, "to": 90.0, "litres": 312.0},
    "capability_changed": {"power": "none", "hours_left": 50.0, "shop_open": True,
                           "info_point": False, "fuel_for_sale": {"diesel": 0, "petrol": 0}},
    "shop_opened": {},
    "shop_closed": {},
    "safe_mode": {"resets": 3, "hung": "telemetry"},
    "exercise_done": {"trigger": "schedule", "cmd": None, "minutes": 15, "on_load": False,
                      "started": 1795424400, "start_s": 6, "stable_s": 8, "v_min": 228.4,
                      "v_max": 232.1, "f_min": 49.9, "f_max": 50.1, "load_kw": 0.0,
                      "fuel_used_l": 0.9, "alarms": ["battery_low_voltage"], "result": "pass",
                      "why": None},
}


def event(type: str = "grid_lost", **over: Any) -> dict[str, Any]:
    """`data=` replaces the type's sample data rather than merging into it."""
    doc = _merge({"boot": 4, "seq": 20, "ts": TS, "type": type, "hist": False}, over)
    doc["data"] = copy.deepcopy(over.get("data", EVENT_DATA.get(type, {})))
    return doc


def raw(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()

