"""The site compiler: one validated site (`gateway.config.Site`) into the compact JSON the
controller loads from flash as config.json. Host tooling: the running gateway never compiles.

Compiled site JSON (what `firmware/sot/config.py` reads). Points are positional lists, not
objects, because the controller keeps all of them in a 64 KiB heap; `firmware/sot/points.py`
documents the fields:

    {"site": "are-kall", "name": "Kall", "municipality": "Åre", "hash": "3f2a...",
     "mqtt": {"host", "port", "keepalive_s", "heartbeat_s", "user", "password",
              "journal_bytes"},
     "buses": [{"name", "port", "baud", "timeout_ms", "poll_ms", "slow_ms"}],
     "devices": [{"name", "kind", "profile", "bus", "unit",
                  "blocks": [[function, start, count, slow], ...],
                  "points": [[name, block, offset, type, scale, rmin, rmax, inv, enum, extra]],
                  "ident": [[point, [accepted values] or "prefix"]], "tmin": ms or null}],
     "grid": {...}, "genset": {...}}
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from gateway.config import Device, Point, Site, compact_number

TYPE_CODES = {"u16": 0, "s16": 1, "u32": 2, "s32": 3, "f32": 4, "str": 5}
LOW_WORD_FIRST = 8




def compile_point(p: Point, block: int, offset: int) -> list[Any]:
    """[name, block, offset, type, scale, rmin, rmax, inv, enum, extra] -- firmware/sot/points.py.

    extra: [lowest bit, width] of a bit field, the register count of a str point, else None."""
    code = TYPE_CODES[p.type] | (LOW_WORD_FIRST if p.count == 2 and p.word_order == "little" else 0)
    rmin, rmax = (None, None)
    if p.range:
        rmin, rmax = compact_number(p.range[0]), compact_number(p.range[1])
    inv = [x for band in p.invalid for x in band] or None
    enum: list[str | None] | None = None
    if p.enum is not None:
        enum = [None] * (max(p.enum) + 1)
        for raw, label in p.enum.items():
            enum[raw] = label
    extra: Any = list(p.bits) if p.bits else (p.length if p.type == "str" else None)
    scale = None if p.scale == 1.0 else p.scale
    return [p.name, block, offset, code, scale, rmin, rmax, inv, enum, extra]


def compile_device(dev: Device) -> dict[str, Any]:
    blocks = dev.profile.blocks()
    points = []
    for p in dev.profile.points:
        bi = next(
            i
            for i, (fc, start, count, _slow) in enumerate(blocks)
            if fc == p.function and start <= p.address and p.address + p.count <= start + count
        )
        points.append(compile_point(p, bi, p.address - blocks[bi][1]))
    return {
        "name": dev.name,
        "kind": dev.profile.kind,
        "profile": dev.profile.id,
        "bus": dev.bus,
        "unit": dev.unit,
        "blocks": [list(b) for b in blocks],
        "points": points,
        # identity: [[point name, accepted values or a str prefix]]; checked before values count
        "ident": [
            [k, v if isinstance(v, (list, str)) else [v]] for k, v in dev.profile.identity.items()
        ],
        "tmin": dev.profile.min_timeout_ms,
        **({"control": dev.profile.control} if dev.profile.control else {}),
    }


def compile_site(
    site: Site, *, bus_ports: dict[str, str] | None = None, mqtt: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The controller's config.json. `bus_ports` and `mqtt` override the wiring, which is how the
    simulator and the HIL rig point a controller at pty links and a private broker.

    `mqtt["ca"]`, the path of the municipality's CA certificate (PEM, `sot pki init`), becomes
    `mqtt.ca` in the config: the certificate in DER, base64. With it the controller connects
    with TLS only and verifies the broker's certificate against that CA (docs/mqtt.md, "TLS")."""
    bus_ports = bus_ports or {}
    mqtt = dict(mqtt or {})
    if mqtt.get("ca"):
        import base64

        from gateway import pki

        mqtt["ca"] = base64.b64encode(pki.ca_der(mqtt["ca"])).decode()
    out: dict[str, Any] = {
        "site": site.id,
        "name": site.name,
        "municipality": site.municipality,
        "mqtt": {**site.mqtt, **(mqtt or {})},
        "buses": [
            {
                "name": b.name,
                "port": bus_ports.get(b.name, b.port),
                "baud": b.baud,
                "timeout_ms": b.timeout_ms,
                "poll_ms": b.poll_ms,
                "slow_ms": b.slow_poll_ms,
            }
            for b in site.buses
        ],
        "devices": [compile_device(d) for d in site.devices],
        "grid": site.grid,
        "genset": site.genset,
        "station": site.station,
        "panel": site.panel,
    }
    # The board's pins only mean something on the board: a controller the simulator or the HIL
    # rig wires to ptys (bus_ports) runs on the unix port, which takes no pins.
    if site.board is not None and not bus_ports:
        out["board"] = site.board
    if site.exercise is not None:
        out["exercise"] = site.exercise  # the test-run schedule (firmware/sot/exercise.py)
    out["hash"] = config_hash(out)
    return out


def config_hash(compiled: dict[str, Any]) -> str:
    body = {k: v for k, v in compiled.items() if k not in ("hash", "mqtt", "board")}
    # The wiring (pty paths, broker address, the board's pins and network) is not part of what
    # the site *is*: the same site has the same hash in the simulator and on its board.
    body["buses"] = [{k: v for k, v in b.items() if k != "port"} for b in body.get("buses", [])]
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def to_json(compiled: dict[str, Any]) -> str:
    return json.dumps(compiled, separators=(",", ":"), ensure_ascii=False)
