"""Field-bus faults M1-M7 (Modbus RTU), through the firmware's own bus code.

The firmware's bus owner, devices, point decoding and Modbus master run under MicroPython
(`hil_tests/mp/bus_probe.py`, the unix HAL's Uart on a pty) against the pymodbus plant built
from the device profiles. Faults are made on the wire between them (`busrig.Wire`, the link's
on_bytes hook) or in the plant (power). What the probe reports after every poll cycle is compared
with the plant's registers and with what crossed the wire.

Two checks recur:
- wrong values: every value the firmware reports equals the plant's value for that point, or is
  null. The plant holds still in these tests, so any other number came from a corrupted, foreign
  or misplaced frame.
- accounting: the plant answers every request once, and the wire counts the replies it spoiled
  ("hits"). The master's `ok` count must equal replies - hits: no spoiled reply was accepted and
  no clean reply was lost to the fault before it (resync within one poll). A retry is a request
  of its own on the wire, so this holds with retries too. A clean reply the plant was too slow
  with (a loaded machine) may have been given up on; those are counted apart, see `accounting`.

M8 (random frames into the parser) is a firmware unit test.
"""

from __future__ import annotations

import dataclasses
import itertools
import statistics
import time
from pathlib import Path
from typing import Any

import pytest
import serial

from gateway.config import Site, load_sites
from hil_tests.conftest import wait_for
from hil_tests.rig import present
from hil_tests.rig.broker import Broker
from hil_tests.rig.busrig import BusRig, Request, Wire, periods_ms, t35_s, with_crc, wrong_values
from hil_tests.rig.gatewayproc import GatewayThread
from hil_tests.rig.links import PtyLink
from hil_tests.rig.sitesim import SimulatedSite

pytestmark = [pytest.mark.hil, pytest.mark.needs("unix", "bus")]

SITE = "are-kall"
BUS = "rs485"
# Short timings for the faults that do not depend on them: 200 ms timeout, a cycle every 100 ms.
FAST = {"timeout_ms": 200, "poll_ms": 100}
# For the bit-flip and framing faults, which count every reply (`accounting`): a 500 ms timeout,
# so that a plant or controller slowed by a loaded machine is seldom taken for a silent one. The
# master shortens a unit's timeout to its measured latency, down to the profile's floor (100 ms
# without one): the floor is raised to the timeout too, or a 100 ms stall of a process on a
# loaded CI machine is a timeout (CI failed on that).
FAULTS = {"timeout_ms": 500, "poll_ms": 100}
FAULTS_FLOOR_MS = FAULTS["timeout_ms"]
WRITE_FUNCTIONS = (5, 6, 15, 16)
# The shortest timeout the master gives a unit whose profile sets none (sot/modbus/master.py).
MASTER_MIN_TIMEOUT_MS = 100


@pytest.fixture(scope="module")
def site() -> Site:
    return load_sites()[SITE]


def settle(rig: BusRig, timeout: float = 10.0) -> dict[str, Any]:
    """Wait for a cycle in which every device is online; return it."""
    return rig.wait(lambda: next((c for c in reversed(rig.cycles())
                                  if all(d["st"] == "online" for d in c["dev"].values())), None),
                    timeout, "every device online")


def wrong_in(cycles: list[dict[str, Any]], truth: dict[str, dict[str, Any]]) -> list[tuple]:
    return [(c["n"], *w) for c in cycles for w in wrong_values(c, truth)]


def accounting(rig: BusRig, line: dict[str, Any]) -> tuple[int, int, int, dict[str, int]]:
    """(replies the master accepted, clean replies on the wire, clean replies that came late,
    wire counters) for the requests sent by the time of a report.

    Replies to those requests that are still on their way are waited for. A clean reply that
    left the plant later than 3/4 of the shortest timeout the master may have given its unit is
    "late": on a loaded machine the pymodbus plant is sometimes that slow, and the master may
    rightly have given up on it. The master shortens a unit's timeout to 4 times its measured
    reply time, down to the profile's `min_timeout_ms` (100 ms without one; docs/architecture.md,
    "Polling"). Late replies loosen `ok == clean` to `clean - late <= ok <= clean`, and only
    when there are any."""
    reqs, reps = rig.wires[BUS].answers(line["stats"]["requests"])
    spoiled = [p for p in reps if p.fault is not None and p.fault != "garbage between"
               and not p.fault.startswith("exception")]
    assert rig.compiled is not None
    late_s = {d["unit"]: 0.75 * min(FAULTS["timeout_ms"], d["tmin"] or MASTER_MIN_TIMEOUT_MS)
              / 1000 for d in rig.compiled["devices"]}
    spoilt = {id(p) for p in spoiled}
    late = sum(1 for p in reps if id(p) not in spoilt and p.request is not None
               and p.t - p.request.t > late_s.get(p.request.unit, 0.0))
    wire = {"requests": len(reqs), "replies": len(reps), "hits": len(spoiled),
            "noise": sum(1 for p in reps if p.fault == "garbage between"), "late": late}
    return line["stats"]["ok"], len(reps) - len(spoiled), late, wire


def faulted_run(rig: BusRig, inject, seconds: float) -> tuple[list, list, float]:
    """Settle, make the fault for `seconds`, stop it. Returns (cycles under the fault, the three
    cycles reported after it stopped, when it stopped)."""
    settle(rig)
    t = time.monotonic()
    inject(rig.wires[BUS])
    time.sleep(seconds)
    rig.wires[BUS].clear()
    stopped = time.monotonic()
    return rig.cycles(t), rig.wait_cycles(3), stopped


def test_the_wire_ties_a_late_reply_to_its_own_request():
    """The accounting below rests on the wire's record. A loaded machine once made the plant
    answer a request after the controller had given up on it and sent the next one; the link
    then read both replies in one go. The wire counted one reply and CI failed. Each reply must
    be counted, and tied to the request it answers, so that the first shows as late."""
    wire = Wire(units=(1, 2))
    read_1 = with_crc(bytes([1, 3, 0, 0, 0, 2]))
    read_2 = with_crc(bytes([2, 4, 0, 10, 0, 1]))
    reply_1 = with_crc(bytes([1, 3, 4, 0, 1, 0, 2]))
    reply_2 = with_crc(bytes([2, 4, 2, 0, 9]))
    with PtyLink(name="wire", on_bytes=wire.hook) as link, \
            serial.Serial(link.device_path, timeout=2) as controller, \
            serial.Serial(link.plant_path, timeout=2) as plant:
        controller.write(read_1)
        assert plant.read(8) == read_1
        time.sleep(0.2)  # the controller gives up and asks the next device
        controller.write(read_2)
        assert plant.read(8) == read_2
        plant.write(reply_1 + reply_2)  # the slow plant answers both at once
        assert controller.read(len(reply_1 + reply_2)) == reply_1 + reply_2
        reqs, reps = wire.answers(2, wait_s=2)
    answered = [(p.request, p) for p in reps if p.request is not None]
    assert [(q.unit, p.size) for q, p in answered] == [(1, 9), (2, 7)], reps
    assert answered[0][1].t - answered[0][0].t >= 0.2  # the late one is seen as late
    assert answered[1][1].t - answered[1][0].t < 0.2


# --- M1: a silent device ---------------------------------------------------------------------


@dataclasses.dataclass
class SilentRun:
    unit: int
    timeout_s: float
    poll_ms: int
    t3_5: float
    t_off: float
    t_on: float
    offline: dict[str, Any]
    online: dict[str, Any]
    baseline: list[dict[str, Any]]  # cycles before the power cut
    down: list[dict[str, Any]]  # cycles reported from the offline event until back online
    requests: list[Request]  # every request on the wire
    bursts: list[list[Request]]  # requests to the silent device, per cycle, after the power cut


@pytest.fixture(scope="module")
def silent(site: Site, tmp_path_factory: pytest.TempPathFactory) -> SilentRun:
    """The genset loses power, goes offline, is re-probed, and gets power back as soon as a
    failed re-probe has ended, so that it is noticed only at the next re-probe.

    The site's own bus settings (9600 baud, 1 s timeout, 1 s poll) on a link paced at 9600
    baud, 11 bits a character."""
    genset = site.device("genset").unit
    bus = site.buses[0]
    rig = BusRig(site, tmp_path_factory.mktemp("m1"), paced=True)
    with rig:
        settle(rig)
        rig.wait_cycles(5, timeout=15)
        t_off = time.monotonic()
        present(rig.plant).power("genset", False)
        offline = rig.wait(lambda: next((e for e in rig.events("genset", t_off)
                                         if e["st"] == "offline"), None), 15, "genset offline")
        probe = rig.wait(lambda: rig.wires[BUS].requests_since(offline["rx"], genset), 15,
                         "the first re-probe")[0]
        rig.wait(lambda: any(tx[0] == genset for c in rig.cycles(probe.t) for tx in c["tx"]),
                 10, "the re-probe's cycle to end")
        t_on = time.monotonic()
        present(rig.plant).power("genset", True)
        online = rig.wait(lambda: next((e for e in rig.events("genset", t_on)
                                        if e["st"] == "online"), None), 15, "genset online")
        rig.wait_cycles(2)
        cycles = rig.cycles()
        per_cycle = rig.requests_per_cycle(cycles)
        bursts = [[r for r in reqs if r.unit == genset] for c, reqs in zip(cycles[1:], per_cycle,
                                                                          strict=True)
                  if c["rx"] > t_off]
        return SilentRun(
            unit=genset, timeout_s=bus.timeout_ms / 1000, poll_ms=bus.poll_ms, t3_5=t35_s(bus.baud),
            t_off=t_off, t_on=t_on, offline=offline, online=online,
            baseline=[c for c in cycles if c["rx"] < t_off][2:],
            down=[c for c in cycles if offline["rx"] < c["rx"] < online["rx"]],
            requests=rig.wires[BUS].requests_since(0.0),
            bursts=[b for b in bursts if b])


def test_m1_silent_device_times_out_at_the_configured_limit(silent: SilentRun):
    # How long each unanswered request was waited for: until the next request went out, less
    # the t3.5 silence before it. None may exceed the configured timeout; a re-probe (the first
    # request to the device once it is offline, when no reply time is known) waits all of it.
    # The next request to the *same* unit may come later: after a timeout the master holds that
    # unit until twice the request's deadline after it (its late reply must not answer the next
    # request, M6), so a gap to the same unit is measured against that late window.
    reqs = silent.requests
    waits = [(b.t - a.t - silent.t3_5, a, b) for a, b in zip(reqs, reqs[1:], strict=False)
             if a.unit == silent.unit and silent.t_off < a.t < silent.t_on]
    assert waits, "no request to the silent device"
    slack = 0.05
    too_long = [round(w, 3) for w, a, b in waits
                if w > (2 if b.unit == a.unit else 1) * silent.timeout_s + slack]
    assert not too_long, f"waited longer than the {silent.timeout_s} s timeout: {too_long}"
    reprobes = [b[0] for b in silent.bursts if b[0].t > silent.offline["rx"]]
    print("waits for the silent device (s):", [round(w, 3) for w, _a, _b in waits])
    short = [round(w, 3) for w, a, _b in waits if a in reprobes and w < silent.timeout_s - slack]
    assert reprobes and not short, f"re-probes gave up before the timeout: {short}"


def test_m1_offline_within_3_misses_or_5_s(silent: SilentRun):
    took = silent.offline["rx"] - silent.t_off
    print(f"offline after {silent.offline['m']} misses, {took:.2f} s after the power cut")
    assert silent.offline["m"] <= 3, f"offline after {silent.offline['m']} misses"
    assert took <= 5.0, f"offline {took:.2f} s after the power cut"


def test_m1_values_null_while_offline(silent: SilentRun):
    assert silent.down, "no cycle reported while the device was offline"
    for c in silent.down:
        g = c["dev"]["genset"]
        assert g["on"] is False and all(v is None for v in g["v"].values()), (c["n"], g)


def test_m1_other_devices_keep_their_poll_rate(silent: SilentRun):
    """Rate: cycles start every poll_ms (the owner sleeps poll_ms less the time the cycle took).
    A cycle that re-probes the silent device pays its timeout and is longer; between re-probes
    the others must be back on their rate. Measured from the probe's clock (start of each
    cycle's first transaction); a period counts for the window it starts in, and periods that
    start with a re-probe cycle are left out. The baseline is the same measure before the cut."""
    base = statistics.mean(periods_ms(silent.baseline))
    windows: list[list[int]] = [[]]
    for a, b in zip(silent.down, silent.down[1:], strict=False):
        if any(tx[0] == silent.unit for tx in a["tx"]):
            windows.append([])
            continue
        windows[-1].append(b["t0"] - a["t0"])
        others = {tx[0] for tx in a["tx"] if tx[6] is None}
        assert len(others) == len(a["dev"]) - 1, f"cycle {a['n']}: read only units {others}"
    windows = [w for w in windows if len(w) >= 3]
    assert windows, "no window between re-probes to measure"
    rates = [statistics.mean(w) / base for w in windows]
    print(f"baseline period {base:.1f} ms; windows (mean ms, periods):",
          [(round(statistics.mean(w), 1), len(w)) for w in windows])
    assert all(0.9 <= r <= 1.1 for r in rates), (
        f"baseline period {base:.0f} ms; windows' mean periods "
        f"{[round(statistics.mean(w)) for w in windows]} ms")


def _probes(silent: SilentRun) -> tuple[list[Request], list[list[Request]]]:
    """The burst (requests of one cycle to the device) that took it offline, and the re-probe
    bursts after it, the last being the one that found it back."""
    cause = [b for b in silent.bursts if b[0].t < silent.offline["rx"]][-1]
    probes = [b for b in silent.bursts if silent.offline["rx"] < b[0].t < silent.online["rx"]]
    return cause, probes


def test_m1_reprobed_every_10_s(silent: SilentRun):
    cause, probes = _probes(silent)
    firsts = [b[0].t for b in [cause, *probes]]
    gaps = [round(b - a, 2) for a, b in zip(firsts, firsts[1:], strict=False)]
    print("re-probe intervals (s):", gaps)
    assert len(gaps) >= 2, f"too few re-probes seen: {gaps}"
    assert max(gaps) <= 10.0, f"re-probe intervals {gaps} s"


def test_m1_back_online_within_10_s_of_returning(silent: SilentRun):
    took = silent.online["rx"] - silent.t_on
    assert took <= 10.0, f"online {took:.2f} s after power returned"
    # Worst case: power returns just after a failed probe's last request, so it is noticed at
    # the next probe: the longest gap from a burst's last request to the next burst's first,
    # plus the time the successful probe took to bring it online (measured above).
    cause, probes = _probes(silent)
    bursts = [cause, *probes]
    back = bursts[-1]
    gaps = [b2[0].t - b1[-1].t for b1, b2 in zip(bursts, bursts[1:], strict=False)]
    worst = max(gaps) + (silent.online["rx"] - back[0].t)
    print(f"back online {took:.2f} s after power returned; worst case {worst:.2f} s")
    assert worst <= 10.0, f"worst case {worst:.2f} s (gaps {[round(g, 2) for g in gaps]} s)"


# --- M2: bit flips ---------------------------------------------------------------------------


@pytest.mark.parametrize("pct", [1, 10, 50])
def test_m2_bit_flips_never_give_a_corrupt_value(site: Site, tmp_path: Path, pct: int):
    with BusRig(site, tmp_path, bus=FAULTS, seed=pct, min_timeout_ms=FAULTS_FLOOR_MS) as rig:
        truth = rig.truth()
        during, after, _ = faulted_run(rig, lambda w: w.flip_bits(pct), 6.0)
        assert not wrong_in(during + after, truth), wrong_in(during + after, truth)[:10]
        ok, clean, late, wire = accounting(rig, after[-1])
        print(f"{pct} %: wire {wire}, accepted {ok}, stats {after[-1]['stats']}")
        assert wire["hits"] >= 2, f"the fault hardly happened: {wire}"
        assert wire["replies"] == wire["requests"], wire  # one chunk per frame, every request
        assert clean - late <= ok <= clean, (
            f"accepted {ok} replies, {clean} went through unspoiled ({late} late): {wire}")


# --- M3: framing faults ----------------------------------------------------------------------

FRAMING = {
    "garbage between frames": lambda w: w.garbage(10, "between"),
    "garbage before a frame": lambda w: w.garbage(10, "before"),
    "truncated frame": lambda w: w.truncate(10),
    "frame from another unit": lambda w: w.other_unit(10),
    "wrong function code": lambda w: w.wrong_function(10),
    "wrong byte count": lambda w: w.wrong_byte_count(10),
}


@pytest.mark.parametrize("fault", list(FRAMING))
def test_m3_framing_faults_resync_within_one_poll(site: Site, tmp_path: Path, fault: str):
    with BusRig(site, tmp_path, bus=FAULTS, seed=7, min_timeout_ms=FAULTS_FLOOR_MS) as rig:
        truth = rig.truth()
        during, after, stopped = faulted_run(rig, FRAMING[fault], 5.0)
        assert not wrong_in(during + after, truth), wrong_in(during + after, truth)[:10]
        ok, clean, late, wire = accounting(rig, after[-1])
        print(f"{fault}: wire {wire}, accepted {ok}, stats {after[-1]['stats']}")
        assert wire["replies"] == wire["requests"], wire
        if fault == "garbage between frames":
            # Between frames nothing is spoiled: every reply must be read.
            assert wire["noise"] >= 5 and wire["hits"] == 0, wire
            assert wire["replies"] - late <= ok <= wire["replies"], (
                f"accepted {ok} of {wire['replies']} replies ({late} late): {wire}")
        elif fault == "garbage before a frame":
            # Resync may save the frame behind the garbage, but must never lose a clean one.
            assert wire["hits"] >= 5, wire
            assert ok >= clean - late, (
                f"accepted {ok} replies, {clean} unspoiled ({late} late): {wire}")
        else:
            assert wire["hits"] >= 5, wire
            assert clean - late <= ok <= clean, (
                f"accepted {ok} replies, {clean} went through unspoiled ({late} late): {wire}")
        # The first cycle that started after the fault stopped reads everything it asks for.
        first_clean = after[1]
        failed = [tx for tx in first_clean["tx"] if tx[6] is not None]
        assert not failed, f"cycle {first_clean['n']} after the fault: {failed}"


def test_m3_accounting_holds_when_the_plant_stalls(site: Site, tmp_path: Path):
    """On a loaded machine the plant's thread sometimes stalls past the master's timeout (CI
    failed twice on it). The master gives up, asks the next device, and the plant then answers
    both. Stalls of 0.5 s every 60 requests, under the wrong-byte-count fault: the plant still
    answers every request, the late replies are seen as late, and no value is wrong."""
    with BusRig(site, tmp_path, bus=FAULTS, seed=7, min_timeout_ms=FAULTS_FLOOR_MS) as rig:
        sent = itertools.count(1)

        def stall(req: Request) -> None:
            if next(sent) % 60 == 0:
                assert rig.plant_thread is not None and rig.plant_thread.loop is not None
                rig.plant_thread.loop.call_soon_threadsafe(time.sleep, 0.8)

        rig.wires[BUS].before_request = stall
        truth = rig.truth()
        during, after, _ = faulted_run(rig, FRAMING["wrong byte count"], 5.0)
        assert not wrong_in(during + after, truth), wrong_in(during + after, truth)[:10]
        ok, clean, late, wire = accounting(rig, after[-1])
        print(f"wire {wire}, accepted {ok}, stats {after[-1]['stats']}")
        assert after[-1]["stats"]["timeouts"] >= 2, after[-1]["stats"]  # the stalls were felt
        assert wire["replies"] == wire["requests"], wire
        assert late >= 2 and clean - late <= ok <= clean, (
            f"accepted {ok} replies, {clean} went through unspoiled ({late} late): {wire}")


# --- M4: exception responses -----------------------------------------------------------------

EXCEPTION_CODES = (0x01, 0x02, 0x03, 0x04, 0x06, 0x0A, 0x0B)


@dataclasses.dataclass
class ExceptionRun:
    devices: dict[int, tuple[str, int]]  # code -> (device name, unit)
    block: tuple[int, int, int]  # (fc, start, count) answered with the exception
    blocks: int  # blocks per full cycle, all devices
    cycles: list[dict[str, Any]]
    requests: list[list[Request]]  # per cycle after the first
    logs: list[str]
    events: list[dict[str, Any]]
    truth: dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def exceptions(site: Site, tmp_path_factory: pytest.TempPathFactory) -> ExceptionRun:
    """Seven more grid meters on the bus (the smallest profile with several blocks: a controller
    has room for only so many devices); each answers its middle block (total power, function 04)
    with one of the exception codes, from the first poll on. 15 s: longer than a re-probe and a
    slow-poll interval, so a repeated report would show."""
    meter = site.device("grid")
    extra = tuple(dataclasses.replace(meter, name=f"meter_{code:02x}", unit=100 + code)
                  for code in EXCEPTION_CODES)
    fc, start, count = meter.profile.blocks()[1][:3]
    block = (fc, start, count)
    rig = BusRig(dataclasses.replace(site, devices=site.devices + extra),
                 tmp_path_factory.mktemp("m4"), bus={"timeout_ms": 300, "poll_ms": 500})
    for code in EXCEPTION_CODES:
        rig.wires[BUS].exception(100 + code, block[0], block[1], code)
    with rig:
        truth = rig.truth()
        rig.run_for(15)
        cycles = rig.cycles()
        return ExceptionRun(
            devices={code: (f"meter_{code:02x}", 100 + code) for code in EXCEPTION_CODES},
            block=block, blocks=rig.blocks(), cycles=cycles,
            requests=rig.requests_per_cycle(cycles), logs=rig.logs(), events=rig.events(),
            truth=truth)


def test_m4_exception_responses_cause_no_retry_storm(exceptions: ExceptionRun):
    fc, start, _count = exceptions.block
    worst_block = worst_total = 0
    for reqs in exceptions.requests:
        worst_total = max(worst_total, len(reqs))
        for _name, unit in exceptions.devices.values():
            n = sum(1 for r in reqs if (r.unit, r.fc, r.start) == (unit, fc, start))
            worst_block = max(worst_block, n)
    print(f"per cycle: at most {worst_block} requests to a failing block, {worst_total} in all "
          f"({exceptions.blocks} blocks configured, {len(exceptions.requests)} cycles)")
    # Bounded: the failing block is asked at most twice a cycle (a read and one retry), the bus
    # carries at most two requests per configured block a cycle.
    assert worst_block <= 2, f"a failing block was requested {worst_block} times in one cycle"
    assert worst_total <= 2 * exceptions.blocks, (
        f"{worst_total} requests in one cycle for {exceptions.blocks} blocks")
    assert not wrong_in(exceptions.cycles, exceptions.truth)


def test_m4_exception_reported_once(exceptions: ExceptionRun):
    for code, (name, _unit) in exceptions.devices.items():
        lines = [m for m in exceptions.logs if name in m.split() and m[:1] in "WE"]
        assert len(lines) == 1, f"exception {code:02x} ({name}) reported {len(lines)}x: {lines}"
        changes = [e["st"] for e in exceptions.events if e["dev"] == name and e["st"] != "online"]
        assert len(changes) <= 1, f"exception {code:02x} ({name}): status changes {changes}"


# --- M5: sentinels and absurd values ---------------------------------------------------------


def _registers(type_: str, raw: int) -> list[int]:
    return [raw >> 16, raw & 0xFFFF] if type_ in ("u32", "s32") else [raw & 0xFFFF]


def test_m5_sentinels_and_absurd_values_are_never_numbers(site: Site, tmp_path: Path):
    genset = site.device("genset")
    prof = genset.profile
    # Every fast-polled numeric point with a DSE "n/a" band (identity points stay as they are:
    # changing them makes another device of it, which is M7).
    sentinel_points = [p for p in prof.points
                       if p.invalid and p.enum is None and getattr(p, "bits", None) is None
                       and getattr(p, "poll", "fast") == "fast" and p.name not in prof.identity]
    assert {p.type for p in sentinel_points} >= {"u16", "s16", "u32"}
    with BusRig(site, tmp_path, bus=FAST) as rig:
        settle(rig)

        def after_change() -> dict[str, Any]:
            return rig.wait_cycles(2)[1]  # the second report begins after the change

        def check(c: dict[str, Any], names: list[str]) -> None:
            g = c["dev"]["genset"]
            assert g["st"] == "online", g
            numbers = {n: g["v"][n] for n in names if g["v"].get(n) is not None}
            assert not numbers, f"reported as numbers: {numbers}"
            if "f" in g:  # the firmware keeps invalid points as sensor faults
                assert set(names) <= set(g["f"]), f"not flagged as sensor faults: {g['f']}"
            assert not wrong_values(c, rig.truth()), wrong_values(c, rig.truth())

        for k in range(8):  # the whole band: 0xFFF8-0xFFFF, 0x7FF8-0x7FFF, 0xFFFFFFF8-...
            for p in sentinel_points:
                lo, hi = p.invalid[0]
                assert lo + k <= hi
                present(rig.plant).set_raw("genset", p.address, p.function,
                                           _registers(p.type, lo + k))
            check(after_change(), [p.name for p in sentinel_points])

        for p in sentinel_points:
            present(rig.plant).set("genset", p.name, p.sim or 0)
        present(rig.plant).set("genset", "fuel_level", 100)  # the top of the range is a number
        c = after_change()
        assert c["dev"]["genset"]["v"]["fuel_level"] == 100
        present(rig.plant).set("genset", "fuel_level", 150)
        present(rig.plant).set("genset", "mains_voltage_l1", 10000)
        present(rig.plant).set("grid", "voltage_l1", 10000.0)
        c = after_change()
        check(c, ["fuel_level", "mains_voltage_l1"])
        assert c["dev"]["grid"]["v"]["voltage_l1"] is None, c["dev"]["grid"]


# --- M6: a slow slave ------------------------------------------------------------------------


@pytest.mark.parametrize("late", [
    pytest.param(False, id="just inside the timeout"),
    pytest.param(True, id="late"),
])
def test_m6_slow_slave(site: Site, tmp_path: Path, late: bool):
    """The tank gauge answers slowly: 85 % of the 400 ms timeout, or 200 ms after it. Each of its
    replies is tagged: before the plant sees a request to the tank, the diesel volume is set to
    the request's sequence number, so a value tells which request it answered. A value must
    always be the answer to the last request sent to the tank, never to an earlier one."""
    timeout = 0.4
    tank = site.device("tank")
    block = tank.profile.blocks()[0]
    rig = BusRig(site, tmp_path, bus={"timeout_ms": int(timeout * 1000), "poll_ms": 500})
    wire = rig.wires[BUS]
    seq = itertools.count(1)

    def tag(req: Request) -> int | None:
        if (req.unit, req.fc, req.start) != (tank.unit, block[0], block[1]):
            return None
        n = next(seq)
        present(rig.plant).set("tank", "diesel_litres", n)
        return n

    wire.before_request = tag
    wire.delay(timeout + 0.2 if late else 0.85 * timeout, [tank.unit])
    with rig:
        cycles = rig.run_for(5.0)
        stats = cycles[-1]["stats"]
        requests = wire.requests_since(0.0)
        mismatched = []
        for c in cycles:
            got = c["dev"]["tank"]["v"].get("diesel_litres")
            sent = [r.note for r in requests if r.note is not None and r.t <= c["rx"]]
            if got is not None and sent and got != sent[-1]:
                mismatched.append((c["n"], got, sent[-3:]))
        assert not mismatched, f"tank value from an earlier request (cycle, value, tags sent): " \
                               f"{mismatched}"
        tank_values = [c["dev"]["tank"]["v"].get("diesel_litres") for c in cycles]
        print(f"late={late}: tank values {tank_values}, stats {stats}")
        if late:
            # Every tank reply is late: any tank value would have come from one.
            assert all(v is None for v in tank_values), tank_values
            assert stats["discarded"] > 0, stats
            assert wire.counts()["delayed"] >= 3
        else:
            assert stats["timeouts"] == 0, stats
            assert all(v is not None for v in tank_values[1:]), tank_values
            assert all(c["dev"]["tank"]["st"] == "online" for c in cycles[1:])


# --- M7: the wrong device at an address ------------------------------------------------------


def test_m7_wrong_device_at_the_address_is_not_used(site: Site, tmp_path: Path):
    """A controller that is not the DSE the profile describes sits at the genset's address
    (another maker's code, an unknown model): from the first poll on."""

    def other_device(plant) -> None:
        plant.set("genset", "manufacturer", 7)
        plant.set("genset", "model", 4242)

    genset = site.device("genset").unit
    with BusRig(site, tmp_path, bus=FAST, setup=other_device) as rig:
        truth = rig.truth()
        cycles = rig.run_for(3.0)
        assert cycles
        for c in cycles:
            g = c["dev"]["genset"]
            assert g["st"] != "online" and all(v is None for v in g["v"].values()), (c["n"], g)
        said = [m for m in rig.logs() if "genset" in m.split() and m[:1] in "WE"]
        assert any("identity" in m or "mismatch" in m for m in said), said
        writes = [r for r in rig.wires[BUS].requests_since(0.0)
                  if r.unit == genset and r.fc in WRITE_FUNCTIONS]
        assert not writes, writes
        last = cycles[-1]
        assert all(d["st"] == "online" for n, d in last["dev"].items() if n != "genset")
        assert not wrong_in(cycles, truth)


# Alerts that fire on a measured value crossing a threshold (docs/alerts.md); device_offline and
# site_silent are about the link, not a reading.
THRESHOLD_RULES = ("grid_lost", "backup_failed", "gen_failed_to_start", "remote_start_not_ready",
                   "gen_max_runtime", "fuel_low", "fuel_for_sale")


def test_m5_invalid_readings_fire_no_threshold_alarm_at_the_gateway(
        site: Site, broker: Broker, gateway: GatewayThread, tmp_path: Path):
    """The whole way: plant -> firmware -> Mosquitto -> gateway ingest -> alert engine. DSE
    "n/a" codes on every fast genset point, fuel 150 %, 10 kV on the mains input and on the grid
    meter, an "n/a" tank: the gateway files nulls and raises no threshold alert (not even a
    pending one). Then a real grid loss through the same path does: the check can see one."""
    sim = SimulatedSite(site, tmp_path, mqtt_host=broker.host, mqtt_port=broker.port,
                        heartbeat_s=2, keepalive_s=10, login=broker.login(SITE)).start()

    def state() -> dict[str, Any]:
        return gateway.get(f"/api/sites/{SITE}")["state"] or {}

    def threshold_alerts() -> list[dict[str, Any]]:
        return [a for a in gateway.get("/api/alerts?all=1")
                if a.get("site") == SITE and a["rule"] in THRESHOLD_RULES]

    try:
        wait_for(lambda: set((state().get("devices") or {}).values()) == {"online"}, 40,
                 "every device online at the gateway")
        assert threshold_alerts() == []
        genset, tank = site.device("genset").profile, site.device("tank").profile

        def sentinels(dev: str, prof: Any, names: set[str] | None = None) -> None:
            for p in prof.points:
                if (p.invalid and p.enum is None and getattr(p, "bits", None) is None
                        and getattr(p, "poll", "fast") == "fast" and p.name not in prof.identity
                        and (names is None or p.name in names)):
                    sim.plant.set_raw(dev, p.address, p.function,
                                      _registers(p.type, p.invalid[0][0]))

        stages = [
            ("genset n/a codes", lambda: sentinels("genset", genset)),
            ("fuel 150 %", lambda: sim.plant.set("genset", "fuel_level", 150)),
            ("mains 10 kV", lambda: sim.plant.set("genset", "mains_voltage_l1", 10000)),
            ("grid meter 10 kV", lambda: sim.plant.set("grid", "voltage_l1", 10000.0)),
            ("tank n/a codes", lambda: sentinels("tank", tank)),
        ]
        for what, make in stages:
            seq = state()["seq"]
            make()
            wait_for(lambda seq=seq: state()["seq"] >= seq + 2, 15,
                     f"two states after {what}:\n{present(sim.firmware).log()[-1500:]}")
        shown = state()
        assert (shown.get("fuel") or {}).get("pct") is None, shown.get("fuel")
        # the meter's other phases still give a voltage; the 10 kV one is never a number
        assert ((shown.get("grid") or {}).get("v") or 0) < 300, shown.get("grid")
        assert shown["grid"].get("state") not in ("lost", "rejected"), shown["grid"]
        time.sleep(12)  # more than two of the engine's 5 s passes over every site
        assert threshold_alerts() == [], "a threshold alert from invalid readings"
        # control: the same path raises grid_lost for a real loss
        sim.plant.set("grid", "voltage_l1", 0.0)
        sim.physics.grid_lost()
        wait_for(lambda: [a for a in threshold_alerts() if a["rule"] == "grid_lost"], 60,
                 "grid_lost for a real loss")
    finally:
        sim.stop()
