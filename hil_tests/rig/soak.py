"""The memory soak (fault scenario P4): the whole firmware through a compressed day of a SOT-punkt.

One simulated site (plant + real firmware in its 64 KiB budget, see dut.py) runs through
`hours` simulated hours at `time_scale` (the plant's clock: fuel burns and the storm script run
that much faster). Every simulated hour brings what a day in a storm brings, in turn: the grid
lost and back, the generator's control mode switched to manual and back, crisis messages from
the municipality (new, updated, withdrawn, and an abusive one), the staff's buttons, a refill of
the tank when it runs low, and every sixth hour a broker restart. The firmware polls five times
as often as the demo site (poll_ms 200) and sends a state every 5 s, so a compressed day makes
more allocations than a real one, not fewer.

`run()` returns what the firmware logged about its heap (live after a collection, sampled every
`heap_log_ms`) and how many MemoryErrors it hit, with the counts of what happened.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from gateway import mqttauth
from gateway.config import load_sites

from .broker import Broker
from .mqttpeer import Peer
from .qemu import QemuFirmware, qemu_site
from .sitesim import SimulatedSite

SITE = "are-kall"
HEAP_RE = re.compile(r"^I heap live (\d+) peak (\d+) free (\d+)", re.M)
START_RE = re.compile(r"^I heap live at start (\d+) free (\d+)", re.M)


@dataclass
class SoakResult:
    hours: float
    real_s: float
    samples: int = 0
    start_live: int = 0
    peak_live: int = 0
    min_free: int = 0
    memory_errors: int = 0
    resets: int = 0
    faults: int = 0  # the qemu board faulted or the app ended (no watchdog there to reset it)
    states: int = 0
    events: int = 0
    acks: int = 0
    actions: dict[str, int] = field(default_factory=dict)
    heap_budget: int = 0


def run(workdir: Path, *, hours: float = 24, time_scale: float = 120,
        heap_log_ms: int = 5000, target: str = "unix") -> SoakResult:
    """target "unix": the firmware in the unix port (dut.py); "qemu": frozen into the 32-bit
    qemu board (qemu.py), where the heap is the board's own 64 KiB."""
    site = load_sites()[SITE]
    site = dataclasses.replace(site, buses=tuple(dataclasses.replace(b, poll_ms=200)
                                                 for b in site.buses))
    logins = mqttauth.passwords([SITE])
    broker = Broker(workdir=workdir / "broker", auth=logins).start()
    peer = None
    make = SimulatedSite if target == "unix" else qemu_site
    sim = make(site, workdir, mqtt_host=broker.host, mqtt_port=broker.port,
               heartbeat_s=5, keepalive_s=10, time_scale=time_scale, watchdog=True,
               extra_config={"heap_log_ms": heap_log_ms}, login=broker.login(SITE),
               physics={"start_delay_s": 1.0, "crank_s": 2.0, "cooldown_s": 2.0})
    actions: dict[str, int] = {}

    def did(what: str) -> None:
        actions[what] = actions.get(what, 0) + 1

    root = f"sot/v1/{SITE}"
    hour_s = 3600 / time_scale
    started = time.monotonic()
    try:
        sim.start()
        peer = Peer(broker.port, f"{root}/#", **broker.login(mqttauth.GATEWAY_USER))
        for h in range(int(hours)):
            slot = h % 6
            if slot == 0:
                sim.physics.grid_lost()
                did("grid lost")
            elif slot == 3:
                sim.physics.grid_restored()
                did("grid restored")
            if h % 8 == 5:
                sim.physics.set_control_mode("manual")
                did("genset to manual")
            elif h % 8 == 6:
                sim.physics.set_control_mode("auto")
                did("genset to auto")
            mid = f"m{h % 5}"
            if h % 4 == 2:
                peer.publish(f"{root}/crisis/{mid}", b"", retain=True)
                did("crisis withdrawn")
            else:
                text = f"Meddelande {h}: koka dricksvattnet i tre minuter. " * (h % 3 + 1)
                msg = {"id": mid, "sv": text.strip(), "en": f"Message {h}", "from": "Åre kommun",
                       "severity": ("info", "warning", "severe")[h % 3], "ts": 1795444000 + h}
                peer.publish(f"{root}/crisis/{mid}", json.dumps(msg), retain=True)
                did("crisis message")
            if h % 7 == 3:
                peer.publish(f"{root}/crisis/junk", b"\xff" + b"x" * 1500)
                did("abusive crisis payload")
            for button in ("next", "ack") if h % 2 else ("next",):
                sim.press(button)
                did(f"button {button}")
            if h % 12 == 11:
                sim.press("shop")
                did("button shop")
            fuel = sim.physics.fuel_level
            if fuel is not None and fuel < 25:
                sim.plant.set(sim.physics.genset, "fuel_level", 90)
                did("tank refilled")
            if h % 6 == 5:
                broker.stop()
                time.sleep(min(hour_s / 4, 3))
                broker.start()
                did("broker restart")
            time.sleep(hour_s)
        real_s = time.monotonic() - started
        faults = sim.firmware.faults() if isinstance(sim.firmware, QemuFirmware) else 0
        log = sim.firmware.log() if sim.firmware else ""
        samples = [(int(a), int(c)) for a, _b, c in HEAP_RE.findall(log)]
        start = START_RE.search(log)
        res = SoakResult(
            hours=hours, real_s=real_s, samples=len(samples),
            start_live=int(start.group(1)) if start else 0,
            peak_live=max((s[0] for s in samples), default=0),
            min_free=min((s[1] for s in samples), default=0),
            memory_errors=log.count("MemoryError"),
            resets=sim.firmware.resets if sim.firmware else 0,
            faults=faults,
            states=len(peer.payloads(f"{root}/state")),
            events=len(peer.payloads(f"{root}/event")),
            acks=sum(1 for t, _p, _r in peer.messages if t.endswith("/ack")),
            actions=actions,
        )
        if sim.firmware is not None:
            res.heap_budget = sim.firmware.heap_budget()
        return res
    finally:
        if peer is not None:
            peer.close()
        sim.stop()
        broker.cleanup()
