"""Grid loss to alert and signage (issue 16): from the grid going at the site's meter to the
coordinator's alert and the public screen showing it.

    python -m hil_tests.bench.bench_gridloss [--cuts 30] [--hold 0] [--no-write]

The rig of `bench_crisis`, with one site: a private Mosquitto, the gateway (`GatewayThread`,
the production `Gateway`) with its web side, and Kall (the plant simulator plus the real
firmware under the MicroPython unix port, its clock at real time). Kall's RS-485 bus is a link
paced at the bus's baud rate, 11 bits a character, so the Modbus frames take their wire time.
One public screen (an SSE client, as the kiosk's browser is) watches
`/signage/are-kall/events`; an MQTT subscriber notes when the controller's messages pass the
broker.

Per cut, all on the host's clock (`time.time()`, which the gateway stores alerts with):

- t0: the plant's step that sets the grid meter to 0 V, 0 Hz (`PlantPhysics.grid_lost`), seen
  from a tick hook that runs right after it;
- the meter's first reply with the grid gone reaching the controller (a hook on the paced link);
- the controller's `grid_lost` event and its first state with the grid lost, at the subscriber;
- the alert: the `fired` time of the `grid_lost` alert as the gateway stored it;
- the screen: the first SSE `state` event whose power is no longer "grid".

Then the grid comes back, and the next cut waits until the alert has resolved, the screen shows
the grid again and a random pause of up to one poll period has passed, so cuts land at random
points of the controller's poll cycle. The generator's start delay is set past the end of a cut,
so each cut is the grid alone (no engine start, no cool-down to wait out).

The gateway runs with a bench copy of config/alerts.toml in which `grid_lost` has `hold_s` 0
(`--hold` sets another) and `clear_s` 0 (the shipped 300 s would make every cut last five
minutes); the firmware debounces as the site file says. The debounce and the hold are
subtracted from each latency, which is compared with the floor:

    floor = poll period of the meter's block + its read's wire time + MQTT hop

(the read: 8 request + 5 + 2 * count reply bytes at 11 bits each; t3.5 only when another frame
precedes it in the cycle, as in `bench_poll`; the hop: the median publish-to-receive time of a
small QoS 1 message through the same broker, measured here). Goal: p99 <= floor + 300 ms.

Writes the section "Grid loss to alert and signage" of docs/benchmarks.md (other sections are
kept) unless --no-write.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import struct
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.alerts.config import load_rules
from gateway.alerts.engine import MIN_ROUND_S
from gateway.config import CONFIG_DIR, Site, load_sites
from hil_tests.bench import report
from hil_tests.bench.bench_crisis import pct
from hil_tests.rig.broker import Broker
from hil_tests.rig.busrig import BITS_PER_CHAR, t35_s
from hil_tests.rig.gatewayproc import GatewayThread, rig_config
from hil_tests.rig.links import TO_CONTROLLER, PtyLink
from hil_tests.rig.sitesim import SimulatedSite
from hil_tests.rig.sse import state_events

SECTION = "Grid loss to alert and signage"
SITE = "are-kall"
RULE = "grid_lost"
GOAL_MS = 300.0
REQUEST_BYTES = 8
HOP_MESSAGES = 200
# Longer than any cut: the plant's generator stays stopped, the site's mode stays "grid_lost".
NO_START_S = 3600.0


# --- what happened when ------------------------------------------------------------------------


class Timeline:
    """(host time, kind, value) in the order noted, from any thread; waiters look for the first
    item of a kind after a moment that meets a test."""

    def __init__(self) -> None:
        self.items: list[tuple[float, str, Any]] = []
        self.cond = threading.Condition()

    def note(self, kind: str, value: Any, at: float | None = None) -> None:
        with self.cond:
            self.items.append((time.time() if at is None else at, kind, value))
            self.cond.notify_all()

    def first(self, kind: str, after: float, test: Callable[[Any], bool]) -> float | None:
        with self.cond:
            return next((t for t, k, v in self.items if k == kind and t >= after and test(v)),
                        None)

    def wait(self, kind: str, after: float, test: Callable[[Any], bool],
             timeout: float) -> float:
        end = time.monotonic() + timeout
        with self.cond:
            while (t := self.first(kind, after, test)) is None:
                left = end - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"no {kind} after {after:.3f} within {timeout} s")
                self.cond.wait(left)
        return t


class Screen(threading.Thread):
    """The kiosk: reads the SSE stream and notes the power each `state` event shows."""

    def __init__(self, url: str, timeline: Timeline) -> None:
        super().__init__(name="screen", daemon=True)
        self.url = url
        self.timeline = timeline

    def run(self) -> None:
        for state in state_events(self.url):
            self.timeline.note("screen", state["power"], time.time())


@dataclass(frozen=True)
class GridRead:
    """The read that carries the grid's state: the meter's block holding voltage_l1 (the site
    logic calls the grid lost when every phase is below 50 V)."""

    unit: int
    function: int
    start: int
    count: int
    offset: int  # voltage_l1's first byte in the reply's data
    first_in_cycle: bool  # no frame before it in the bus cycle: no t3.5 to wait

    def volts(self, frame: bytes) -> float | None:
        """voltage_l1 from a reply frame of this read (unit, function, byte count, data, CRC),
        None for any other frame. The SDM630's floats are big-endian, high word first."""
        n = 2 * self.count
        if len(frame) != 5 + n or frame[0] != self.unit or frame[1] != self.function \
                or frame[2] != n:
            return None
        return float(struct.unpack_from(">f", frame, 3 + self.offset)[0])


def grid_read(site: Site) -> GridRead:
    meter = next(d for d in site.devices if d.profile.kind == "grid_meter")
    p = meter.profile.point("voltage_l1")
    on_bus = [d for d in site.devices if d.bus == meter.bus]
    for fc, start, count, slow in meter.profile.blocks():
        if fc == p.function and start <= p.address < start + count:
            first = on_bus[0] is meter and meter.profile.blocks()[0][:3] == (fc, start, count)
            if slow:
                raise RuntimeError("the grid's voltages are in the slow poll class")
            return GridRead(meter.unit, fc, start, count, 2 * (p.address - start), first)
    raise RuntimeError("no block holds voltage_l1")


# --- the rig's parts ---------------------------------------------------------------------------


def bench_rules(workdir: Path, hold_s: float) -> Path:
    """config/alerts.toml with grid_lost's hold_s and clear_s replaced; checked by loading it."""
    text = (CONFIG_DIR / "alerts.toml").read_text()
    head = f"[rule.{RULE}]"
    at = text.index(head)
    end = text.find("\n[", at + len(head))
    end = len(text) if end < 0 else end
    block = text[at:end]
    for key, value in (("hold_s", hold_s), ("clear_s", 0)):
        block, n = re.subn(rf"^{key} = [0-9.]+", f"{key} = {value}", block, flags=re.M)
        if n != 1:
            raise RuntimeError(f"alerts.toml: no single {key} under {head}")
    path = workdir / "alerts-bench.toml"
    path.write_text(text[:at] + block + text[end:])
    rule = load_rules(path)[0][RULE]
    assert rule.hold_s == hold_s and rule.clear_s == 0
    return path


def mqtt_hop(broker: Broker, n: int = HOP_MESSAGES) -> list[float]:
    """Seconds from publish() to on_message of small QoS 1 messages, one at a time."""
    got: dict[int, float] = {}
    arrived = threading.Event()

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        got[int(msg.payload)] = time.perf_counter()
        arrived.set()

    sub, pub = broker.client("bench-hop-sub"), broker.client("bench-hop-pub")
    subscribed = threading.Event()
    sub.on_message = on_message
    sub.on_subscribe = lambda *_a: subscribed.set()
    out: list[float] = []
    try:
        for c in (sub, pub):
            c.connect(broker.host, broker.port)
            c.loop_start()
        sub.subscribe("bench/hop", qos=1)
        if not subscribed.wait(10):
            raise RuntimeError("the hop subscriber was not subscribed within 10 s")
        for i in range(n):
            arrived.clear()
            sent = time.perf_counter()
            pub.publish("bench/hop", str(i), qos=1)
            if not arrived.wait(5):
                raise RuntimeError(f"hop message {i} did not arrive")
            out.append(got[i] - sent)
            time.sleep(0.005)
    finally:
        for c in (sub, pub):
            c.disconnect()
            c.loop_stop()
    return out


def watch_mqtt(broker: Broker, timeline: Timeline) -> Any:
    """A subscriber to the site's events and states: when each passed the broker."""
    c = broker.client("bench-watch")
    ready = threading.Event()

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        now = time.time()
        doc = json.loads(msg.payload)
        if msg.topic.endswith("/event"):
            timeline.note("event", doc.get("type"), now)
        elif msg.topic.endswith("/state"):
            timeline.note("state", (doc.get("grid") or {}).get("state"), now)

    c.on_message = on_message
    c.on_subscribe = lambda *_a: ready.set()
    c.connect(broker.host, broker.port)
    c.loop_start()
    c.subscribe([(f"sot/v1/{SITE}/event", 1), (f"sot/v1/{SITE}/state", 1)])
    if not ready.wait(10):
        raise RuntimeError("the MQTT watcher was not subscribed within 10 s")
    return c


def newest_alert(gw: GatewayThread) -> Any:
    store = gw.gateway.store
    assert store is not None
    rows = gw.thread.call(lambda: store.alerts(open_only=False, site=SITE, limit=20))
    return next((a for a in rows if a.rule == RULE), None)


def wait_alert(gw: GatewayThread, *, newer_than: int = 0, resolved: int = 0,
               timeout: float = 30) -> Any:
    """The first grid_lost alert newer than id `newer_than` once it has fired, or alert
    `resolved` once it has resolved. Polls the store every 20 ms: what counts is the alert's
    own `fired` time, not when this sees it."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        a = newest_alert(gw)
        if a is not None and (a.id == resolved and a.status == "resolved" if resolved
                              else a.id > newer_than and a.fired is not None):
            return a
        time.sleep(0.02)
    raise RuntimeError(f"the {RULE} alert did not reach the expected state within {timeout} s")


# --- the measurement ---------------------------------------------------------------------------


@dataclass
class Cut:
    """One grid loss; host times in seconds."""

    t0: float
    read: float | None  # the meter's reply with the grid gone, at the controller
    event: float | None  # the controller's grid_lost event, at the MQTT subscriber
    state: float | None  # its first state with the grid lost, at the MQTT subscriber
    alert: float  # the alert's stored `fired` time
    screen: float  # the SSE state event showing power other than the grid


def measure(n: int, hold_s: float, workdir: Path) -> dict[str, Any]:
    site = load_sites()[SITE]
    meter_bus = next(d for d in site.devices if d.profile.kind == "grid_meter").bus
    bus = next(b for b in site.buses if b.name == meter_bus)
    read = grid_read(site)
    timeline = Timeline()
    byte_s = BITS_PER_CHAR / bus.baud

    def on_bytes(direction: str, data: bytes) -> bytes:
        if direction == TO_CONTROLLER:
            v = read.volts(data)
            if v is not None:  # at the controller once the paced link has delivered it
                timeline.note("read", v, time.time() + len(data) * byte_s)
        return data

    rules = bench_rules(workdir, hold_s)
    started = time.monotonic()
    with ExitStack() as stack:
        broker = Broker(workdir=workdir / "broker")
        stack.callback(broker.cleanup)
        broker.start()
        link = stack.enter_context(PtyLink(bus.baud, bits_per_byte=BITS_PER_CHAR,
                                           on_bytes=on_bytes, name=f"{SITE}-{bus.name}"))
        gw = GatewayThread(rig_config(broker, workdir, alerts={
            "files_dir": str(workdir), "rules": str(rules),
            "contacts": str(CONFIG_DIR / "contacts.toml")}))
        stack.callback(gw.stop)
        gw.start()
        sim = SimulatedSite(site, workdir, mqtt_host=broker.host, mqtt_port=broker.port,
                            physics={"start_delay_s": NO_START_S}, login=broker.login(SITE),
                            bus_links={bus.name: link})
        grid = [sim.physics.grid_present]

        def after_physics(_now: float) -> None:  # the plant's tick, right after the physics
            if sim.physics.grid_present != grid[0]:
                grid[0] = sim.physics.grid_present
                timeline.note("plant", grid[0])

        sim.plant.on_tick(after_physics)
        stack.callback(sim.stop)
        sim.start()
        watcher = watch_mqtt(broker, timeline)
        stack.callback(watcher.loop_stop)
        stack.callback(watcher.disconnect)
        timeline.wait("state", 0, lambda s: s == "ok", 60)
        Screen(f"{gw.url}/signage/{SITE}/events", timeline).start()
        timeline.wait("screen", 0, lambda p: p == "grid", 30)
        hop = mqtt_hop(broker)

        cuts: list[Cut] = []
        rnd = random.Random(16)
        poll_s = bus.poll_ms / 1000
        for i in range(n):
            before = newest_alert(gw)
            last_id = before.id if before is not None else 0
            mark = time.time()
            sim.physics.grid_lost()
            t0 = timeline.wait("plant", mark, lambda g: g is False, 5)
            alert = wait_alert(gw, newer_than=last_id, timeout=30 + hold_s)
            screen = timeline.wait("screen", t0, lambda p: p != "grid", 30)
            cuts.append(Cut(
                t0=t0, read=timeline.first("read", t0, lambda v: v < 50),
                event=timeline.first("event", t0, lambda e: e == RULE),
                state=timeline.first("state", t0, lambda s: s == "lost"),
                alert=alert.fired, screen=screen))
            c = cuts[-1]
            print(f"cut {i + 1}/{n}: alert {(c.alert - t0) * 1000:.0f} ms, screen "
                  f"{(c.screen - t0) * 1000:.0f} ms; the meter's reply at "
                  + ", the event at ".join("–" if t is None else f"{(t - t0) * 1000:.0f} ms"
                                           for t in (c.read, c.event)), flush=True)
            mark = time.time()
            sim.physics.grid_restored()
            back = timeline.wait("plant", mark, lambda g: g is True, 5)
            wait_alert(gw, resolved=alert.id)
            timeline.wait("screen", back, lambda p: p == "grid", 30)
            timeline.wait("state", back, lambda s: s == "ok", 30)
            # The loop above follows the controller's polls; a pause of up to one poll period
            # puts the next cut at a random point of the cycle.
            time.sleep(rnd.uniform(0.1, 0.1 + poll_s))
        stats = gw.get("/api/stats")
        if stats["rejected"]:
            raise RuntimeError(f"the gateway rejected messages: {stats['rejected_by_reason']}")
    return {"cuts": cuts, "hop": hop, "site": site, "bus": bus, "read": read,
            "hold_s": hold_s, "debounce_s": float(site.grid["debounce_s"]),
            "shipped_hold_s": load_rules(CONFIG_DIR / "alerts.toml")[0][RULE].hold_s,
            "seconds": time.monotonic() - started}


# --- the report --------------------------------------------------------------------------------


def floor_parts(res: dict[str, Any]) -> dict[str, float]:
    """Milliseconds: the poll period, the read's wire time, the MQTT hop, and their sum."""
    bus, read = res["bus"], res["read"]
    wire = (REQUEST_BYTES + 5 + 2 * read.count) * BITS_PER_CHAR / bus.baud
    if not read.first_in_cycle:
        wire += t35_s(bus.baud)
    parts = {"poll": float(bus.poll_ms), "wire": wire * 1000,
             "hop": statistics.median(res["hop"]) * 1000}
    parts["floor"] = parts["poll"] + parts["wire"] + parts["hop"]
    return parts


def span(cuts: list[Cut], start: Callable[[Cut], float | None],
         stop: Callable[[Cut], float | None], minus: float = 0.0) -> list[float]:
    """Milliseconds from start to stop, less `minus` seconds, of the cuts that have both."""
    return [(b - a - minus) * 1000 for c in cuts
            if (a := start(c)) is not None and (b := stop(c)) is not None]


def stages(res: dict[str, Any]) -> list[tuple[str, list[float]]]:
    cuts: list[Cut] = res["cuts"]
    deb = res["debounce_s"]
    return [
        ("cut → the meter's reply with the grid gone at the controller",
         span(cuts, lambda c: c.t0, lambda c: c.read)),
        (f"that reply → the controller's `{RULE}` event, less {deb:g} s",
         span(cuts, lambda c: c.read, lambda c: c.event, deb)),
        ("event → the controller's state with the grid lost",
         span(cuts, lambda c: c.event, lambda c: c.state)),
        ("that state → the alert fired", span(cuts, lambda c: c.state, lambda c: c.alert)),
        ("that state → the screen's event", span(cuts, lambda c: c.state, lambda c: c.screen)),
    ]


def para(text: str) -> str:
    return textwrap.fill(" ".join(text.split()), 100, break_long_words=False,
                         break_on_hyphens=False)


def row(name: str, v: list[float], n: int) -> str:
    if not v:
        return f"| {name} | – | – | – | – | – |"
    if len(v) < n:
        name += f" ({len(v)} of {n} cuts)"
    return (f"| {name} | {pct(v, 50):.0f} | {pct(v, 99):.0f} | {min(v):.0f} | {max(v):.0f} "
            f"| {statistics.mean(v):.0f} |")


def section(res: dict[str, Any], m: dict[str, str]) -> str:
    cuts: list[Cut] = res["cuts"]
    n = len(cuts)
    deb, hold = res["debounce_s"], res["hold_s"]
    waits = deb + hold
    hold_note = f", less the hold of {hold:g} s too for the alert" if hold else ""
    fl = floor_parts(res)
    goal = fl["floor"] + GOAL_MS
    alert = span(cuts, lambda c: c.t0, lambda c: c.alert, waits)
    screen = span(cuts, lambda c: c.t0, lambda c: c.screen, deb)  # the screen has no hold
    bus, read, hop = res["bus"], res["read"], res["hop"]
    parts = stages(res)
    poll_v, ctl_v, state_v, gw_alert, gw_screen = (v for _name, v in parts)

    def met(v: list[float]) -> str:
        p99 = pct(v, 99)
        return (f"met in this run ({p99:.0f} ≤ {goal:.0f} ms)" if p99 <= goal
                else f"**not met** ({p99:.0f} > {goal:.0f} ms)")

    def hi(v: list[float]) -> float:
        return max(v) if v else 0.0

    # The most the parts allow: a cut just after the meter's read, then each later stage at
    # the slowest this run saw.
    worst = fl["poll"] + fl["wire"] + max(0.0, hi(ctl_v)) + hi(state_v) + max(hi(gw_alert),
                                                                                hi(gw_screen))
    over = sum(1 for x, y in zip(alert, screen, strict=True) if max(x, y) > goal)
    out = [f"## {SECTION}", para(f"""
Measured {m['date']} on {m['cpu']} ({m['cores']} cores, 1-minute load {m['load']}), Python
{m['python']}, MicroPython {m['micropython']}, pymodbus {m['pymodbus']}; code at `{m['git']}`.
`python -m hil_tests.bench.bench_gridloss` (`make bench-gridloss`, part of `make bench`)
rewrites this section; this run took {res['seconds']:.0f} s."""), para(f"""
**Method.** A private Mosquitto, the gateway (the production `Gateway` with its web side) and
one site, Kall: the plant simulator and the real firmware under the MicroPython unix port, its
clock at real time. Kall's RS-485 link delivers each byte 11 bit times after the previous one at
the bus's {bus.baud} baud, so the Modbus frames take their wire time. {n} grid losses, one at a
time. The clock starts when the plant's step sets the grid meter to 0 V, 0 Hz (a hook that runs
right after it) and stops when the gateway stores the `{RULE}` alert as fired (its `fired`
time), and when the public screen (`/signage/{SITE}/events`, read as the kiosk's browser reads
it) gets a `state` event whose power is no longer the grid. Then the grid returns; the next cut
waits until the alert has resolved and the screen shows the grid again, plus a random pause of
up to one poll period, so that each cut lands at a random point of the controller's poll cycle.
The generator's start delay is longer than a cut: each cut is the grid alone."""), para(f"""
**Subtracted.** The controller's debounce as the site file sets it (`debounce_s` = {deb:g} s in
config/sites/{SITE}.toml) and the rule's hold. The gateway runs with a bench copy of
config/alerts.toml in which `{RULE}` has `hold_s` = {hold:g} (shipped:
{res['shipped_hold_s']:g} s) and `clear_s` = 0 (shipped: 300 s, which would make each cut last
five minutes). The shipped hold is not a wait that comes after the debounce: the rule counts it
from the `since` of the controller's state, the moment the controller first saw the loss, so
its {res['shipped_hold_s']:g} s contain the {deb:g} s of debounce; and an alert still pending
turns firing only when the engine's timed round next takes the site (at most `tick_s`, 5 s in
production, after its last evaluation) or when the site next sends something. With it the
alert comes
{res['shipped_hold_s']:g}–{res['shipped_hold_s'] + 5:g} s after the controller's first sight
of the loss whatever the path takes; with hold 0 what is measured is the path itself. Each
latency below is (stop − cut − {deb:g} s){hold_note}."""), para(f"""
**Floor** = poll period + wire time of the read + MQTT hop = {fl['poll']:.0f} +
{fl['wire']:.1f} + {fl['hop']:.2f} = **{fl['floor']:.0f} ms**. The grid's voltages are read
once per bus cycle (`poll_ms` of the bus) in the meter's block of {read.count} registers
(function {read.function}, from address {read.start}): 8 request + {5 + 2 * read.count} reply
bytes at 11 bits a character and {bus.baud} baud;
{"it is the cycle's first read, so no t3.5 silence comes before it" if read.first_in_cycle
 else "another frame precedes it in the cycle, so t3.5 is added"}. The hop is the median of
{len(hop)} QoS 1 messages from publish to delivery through the same broker, on loopback with
TLS (p99 {pct(hop, 99) * 1000:.2f} ms). A cut lands at a random point of the poll period, so
a path that adds nothing to the floor averages half a period below it. Goal: p99 ≤ floor +
{GOAL_MS:.0f} ms = {goal:.0f} ms."""),
        f"| milliseconds from the cut, less {deb:g} s{f' (alert: {waits:g} s)' if hold else ''}, "
        "to | p50 | p99 | min | max | mean |\n"
        "|---|---|---|---|---|---|\n"
        f"{row(f'the `{RULE}` alert fired', alert, n)}\n"
        f"{row('the public screen (SSE event)', screen, n)}",
        para(f"""Goal for the alert: {met(alert)}; for the screen: {met(screen)}. With {n}
samples p99 is the slowest one (nearest rank)."""),
        para("""Where the time goes, per cut (the same clock; the MQTT times are when the
message reached a subscriber of the broker):"""),
        "| milliseconds | p50 | p99 | min | max | mean |\n|---|---|---|---|---|---|\n"
        + "\n".join(row(name, v, n) for name, v in parts),
        para(f"""
**Reading the numbers.** The poll is what the floor allows for: the wait for the meter's next
read, 0–{fl['poll']:.0f} ms for a cut at a random moment (mean here
{statistics.mean(poll_v) if poll_v else 0:.0f} ms), plus the reply's {fl['wire']:.0f} ms on the
wire."""), para(f"""
The controller's own stage is the rest. Its site logic runs right after each poll that
brought new values (`BusOwner.after_poll`, `SiteTask` in firmware/sot/app.py), and the debounce
is counted between the times the bus asked for the readings (`Device.read_ms`), not on the
whole-second epoch clock: the event comes with the reading that has shown the loss for the
{deb:g} s, {deb:g} s of polls after the first. Less the {deb:g} s, this stage is how evenly the
bus keeps its cycle and the step's own work: here {min(ctl_v, default=0):.0f} to
{max(ctl_v, default=0):.0f} ms (p50 {pct(ctl_v, 50) if ctl_v else 0:.0f}). The state
follows the event after its PUBACK, with a garbage collection before it is built
(`Session._state` in firmware/sot/telemetry.py): p50
{pct(state_v, 50) if state_v else 0:.0f} ms."""), para(f"""
At the gateway the filed state wakes the alert engine, whose rounds start at most every
{MIN_ROUND_S:g} s (`MIN_ROUND_S` in gateway/alerts/engine.py), and the screen's event stream: p50
{pct(gw_alert, 50) if gw_alert else 0:.0f} and {pct(gw_screen, 50) if gw_screen else 0:.0f} ms,
at most {hi(gw_alert):.0f} and {hi(gw_screen):.0f} ms in this run. (The subscriber that
times the states shares the bench's process with the gateway, so it can hear a state some
milliseconds after the gateway did: a negative time here is that.)"""), para(f"""
What is left over the floor is the controller's stage, the state's publish after the
event's PUBACK and the gateway. The slowest of each in this run, after a cut just after the
meter's read, add up to {worst:.0f} ms, {worst - fl['floor']:+.0f} ms over the floor against
the goal's +{GOAL_MS:.0f} ms. In this run {over} of {n} cuts were over floor + {GOAL_MS:.0f}
ms.""")]
    return "\n\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cuts", type=int, default=30)
    ap.add_argument("--hold", type=float, default=0.0,
                    help="grid_lost's hold_s in the bench's copy of alerts.toml (subtracted)")
    ap.add_argument("--no-write", action="store_true", help="print, leave docs/ alone")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sot-bench-gridloss-") as d:
        res = measure(args.cuts, args.hold, Path(d))
    text = section(res, report.machine())
    print(text)
    if not args.no_write:
        report.write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
