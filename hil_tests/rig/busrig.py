"""Field-bus rig: the firmware's bus code under MicroPython against the pymodbus plant, with a
wire that can be watched and disturbed.

    bus_probe.py (MicroPython: sot.bus, sot.modbus, unix HAL Uart)
        │ pty
    PtyLink ── on_bytes ──> Wire: records every request and reply, injects faults
        │ pty
    Plant (pymodbus RTU server per bus, built from the device profiles)

`BusRig` starts the plant for a site (or some of its devices) on its own links, optionally paced
at the bus's baud rate, compiles the site with the links' pty paths, runs
`hil_tests/mp/bus_probe.py` with the firmware's .mpy files and reads its JSON lines on a thread
(see the probe's header for the line kinds). Every process it starts is stopped by its pid.

The wire works on frames: the link hands its hook one frame at a time (`links.rtu_frames`),
even when its pump was late and read two at once. A reply answers the oldest open request to
its unit and function, so a reply the plant was too slow with is tied to its own request, not
to the one the controller sent after giving up; open requests older than an answered one stay
unanswered (a silent device). A delayed reply is taken off the bridge and written into the
plant's end of the link when it is due, so it is paced like any reply and does not hold up the
replies of other devices meanwhile.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from gateway.config import Site
from gateway.tooling import compiler, firmware

from . import dut
from .links import TO_PLANT, PtyLink, crc
from .plant import Plant, PlantThread

PROBE = Path(__file__).resolve().parent.parent / "mp" / "bus_probe.py"
# A build of its own: firmware tests running at the same time rebuild build/firmware in place.
BUILD_OUT = firmware.BUILD_DIR.parent / "busrig"
# Modbus serial line: start, 8 data, parity (or a 2nd stop bit), stop.
BITS_PER_CHAR = 11
READ_FUNCTIONS = (3, 4)

_built: tuple[Path, int] | None = None
_build_lock = threading.Lock()


def build() -> tuple[Path, int]:
    """(folder of the firmware's .mpy files, size of its ROMFS image); built once per process."""
    global _built
    with _build_lock:
        if _built is None:
            image = firmware.build_image(BUILD_OUT)
            _built = (BUILD_OUT, image.stat().st_size)
        return _built


def with_crc(body: bytes) -> bytes:
    return body + crc(body)


def t35_s(baud: int) -> float:
    """Serial Line V1.02 §2.5.1.1: 3.5 characters, a fixed 1.75 ms above 19200 baud."""
    return 0.00175 if baud > 19200 else 3.5 * BITS_PER_CHAR / baud


# --- the wire --------------------------------------------------------------------------------


@dataclasses.dataclass
class Request:
    t: float  # time.monotonic() when the controller wrote it
    unit: int
    fc: int
    start: int | None
    count: int | None
    size: int
    note: Any = None


@dataclasses.dataclass
class Reply:
    t: float  # when the plant wrote it
    request: Request | None
    size: int
    fault: str | None  # what the wire did to it; None: delivered untouched
    delay: float = 0.0  # seconds it was held back


Fault = Callable[[bytes, Request], "bytes | None"]


class Wire:
    """A link's `on_bytes` hook: records the traffic and applies at most one fault at a time.

    A fault is applied to a share (`pct`) of the replies (plant -> controller), chosen with a
    seeded RNG, optionally only to replies from some unit ids. `hits` counts replies that a fault
    spoiled (changed, cut or replaced); `noise` counts garbage added between frames without
    touching one; `delayed` counts replies held back. An exception response put in place of a
    reply is a well-formed answer, not a hit.
    """

    def __init__(self, units: Iterable[int] = (), seed: int = 1) -> None:
        self.units_on_bus = sorted(units)
        self.rng = random.Random(seed)
        self._lock = threading.Lock()
        self.requests: list[Request] = []
        self.replies: list[Reply] = []
        self.hits = 0
        self.noise = 0
        self.delayed = 0
        # Called with each request before the plant sees it; its result becomes `Request.note`
        # (a test can change the plant's registers there, e.g. to tag each reply).
        self.before_request: Callable[[Request], Any] | None = None
        self._last: Request | None = None
        self._open: list[Request] = []  # requests not answered yet, oldest first
        self._inject_fd: int | None = None
        self._timers: list[threading.Timer] = []
        self._released: list[bytes] = []
        self._fault: tuple[str, Fault, float, set[int] | None] | None = None
        self._exceptions: dict[tuple[int, int, int | None], int] = {}
        self._delay: tuple[float, set[int] | None] | None = None

    # --- the hook ---

    def attach(self, link: PtyLink) -> None:
        """Late replies are written into the plant's end of the link when they are due, so they
        cross the bridge (and its pacing) like any reply, without holding up the others."""
        self._inject_fd = os.open(link.plant_path, os.O_WRONLY | os.O_NOCTTY)

    def close(self) -> None:
        with self._lock:
            timers, self._timers = self._timers, []
            fd, self._inject_fd = self._inject_fd, None
        for t in timers:
            t.cancel()
        if fd is not None:
            os.close(fd)

    def hook(self, direction: str, data: bytes) -> bytes:
        now = time.monotonic()
        if direction == TO_PLANT:
            req = _parse_request(now, data)
            if self.before_request is not None:
                req.note = self.before_request(req)
            with self._lock:
                self.requests.append(req)
                self._last = req
                self._open.append(req)
            return data
        with self._lock:
            due = self._released[0] if self._released else None
            if due is not None and data.startswith(due):
                self._released.pop(0)
            else:
                due = None
        if due is not None:  # a delayed reply coming back: it was recorded when it was held
            rest = data[len(due):]
            return due + (self._reply(now, rest) if rest else b"")
        return self._reply(now, data)

    def _answered(self, frame: bytes) -> Request | None:
        """The request a reply from the plant answers (the caller holds the lock): the oldest
        open one to its unit and function. The plant answers in order, so the open requests
        before that one will not be answered."""
        if len(frame) >= 2:
            unit, fc = frame[0], frame[1] & 0x7F
            for i, r in enumerate(self._open):
                if r.unit == unit and r.fc == fc:
                    del self._open[:i + 1]
                    return r
        return self._last

    def _reply(self, now: float, data: bytes) -> bytes:
        with self._lock:
            req = self._answered(data)
            fault = self._fault
            delay = self._delay
            code = self._exceptions.get((req.unit, req.fc, req.start)) if req else None
        what = None
        if code is not None and req is not None:
            data = with_crc(bytes([req.unit, req.fc | 0x80, code]))
            what = f"exception {code:02x}"
        elif fault is not None and req is not None:
            name, fn, pct, units = fault
            if (units is None or (data and data[0] in units)) and self.rng.random() * 100 < pct:
                out = fn(data, req)
                if out is not None:
                    data, what = out, name
        hold_s = None  # how long this reply is held back, if it is
        if delay is not None and (delay[1] is None or (data and data[0] in delay[1])):
            hold_s = delay[0]
        held = hold_s is not None
        with self._lock:
            self.replies.append(Reply(now, req, len(data), what, hold_s or 0.0))
            if what == "garbage between":
                self.noise += 1
            elif what is not None and not what.startswith("exception"):
                self.hits += 1
            if hold_s is not None:
                self.delayed += 1
                timer = threading.Timer(hold_s, self._release, (data,))
                self._timers = [t for t in self._timers if t.is_alive()] + [timer]
                timer.start()
        return b"" if held else data

    def _release(self, data: bytes) -> None:
        with self._lock:
            if self._inject_fd is None:
                return
            self._released.append(data)
            fd = self._inject_fd
        os.write(fd, data)

    def answers(self, n: int, wait_s: float = 2.0) -> tuple[list[Request], list[Reply]]:
        """The first `n` requests and the replies to them, once all `n` have crossed the wire
        and each has a reply, or `wait_s` has passed: on a loaded machine the link may carry
        the last request after the controller counted it, and a slow plant may answer after
        the controller has given up waiting."""
        deadline = time.monotonic() + wait_s
        while True:
            with self._lock:
                reqs = self.requests[:n]
                asked = {id(r) for r in reqs}
                reps = [p for p in self.replies if id(p.request) in asked]
            if (len(reqs) >= n and len(reps) >= len(reqs)) or time.monotonic() >= deadline:
                return reqs, reps
            time.sleep(0.02)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {"requests": len(self.requests), "replies": len(self.replies),
                    "hits": self.hits, "noise": self.noise, "delayed": self.delayed}

    # --- faults ---

    def clear(self) -> None:
        with self._lock:
            self._fault = None
            self._exceptions.clear()
            self._delay = None

    def _set(self, name: str, fn: Fault, pct: float, units: Iterable[int] | None) -> None:
        with self._lock:
            self._fault = (name, fn, float(pct), None if units is None else set(units))

    def flip_bits(self, pct: float, units: Iterable[int] | None = None) -> None:
        """Flip 1 to 3 random bits of a reply (CRC-16 detects every such error)."""

        def flip(data: bytes, req: Request) -> bytes | None:
            if not data:
                return None
            buf = bytearray(data)
            for bit in self.rng.sample(range(len(buf) * 8), self.rng.randint(1, 3)):
                buf[bit >> 3] ^= 1 << (bit & 7)
            return bytes(buf)

        self._set("bit flips", flip, pct, units)

    def garbage(self, pct: float, where: str = "between", units: Iterable[int] | None = None
                ) -> None:
        """1-16 random bytes after a reply ("between" frames) or in front of it ("before")."""
        if where not in ("between", "before"):
            raise ValueError("where: between or before")

        def add(data: bytes, req: Request) -> bytes:
            junk = self.rng.randbytes(self.rng.randint(1, 16))
            return data + junk if where == "between" else junk + data

        self._set(f"garbage {where}", add, pct, units)

    def truncate(self, pct: float, units: Iterable[int] | None = None) -> None:
        """Deliver only the first 1..n-1 bytes of a reply."""

        def cut(data: bytes, req: Request) -> bytes | None:
            return data[:self.rng.randint(1, len(data) - 1)] if len(data) > 1 else None

        self._set("truncated", cut, pct, units)

    def other_unit(self, pct: float, units: Iterable[int] | None = None) -> None:
        """Replace a reply by a well-formed reply (good CRC, the right length) from another unit
        id, carrying other data: accepting it would put another device's data in this one."""

        def replace(data: bytes, req: Request) -> bytes | None:
            if req.fc not in READ_FUNCTIONS or not req.count:
                return None
            others = [u for u in self.units_on_bus if u != req.unit] or [req.unit % 247 + 1]
            unit = self.rng.choice(others)
            body = bytes([unit, req.fc, 2 * req.count]) + self.rng.randbytes(2 * req.count)
            return with_crc(body)

        self._set("other unit", replace, pct, units)

    def wrong_function(self, pct: float, units: Iterable[int] | None = None) -> None:
        """Replace a reply by a well-formed one from the right unit with the other read function
        (03 <-> 04) and other data."""

        def replace(data: bytes, req: Request) -> bytes | None:
            if req.fc not in READ_FUNCTIONS or not req.count:
                return None
            fc = 4 if req.fc == 3 else 3
            data = self.rng.randbytes(2 * req.count)
            return with_crc(bytes([req.unit, fc, 2 * req.count]) + data)

        self._set("wrong function", replace, pct, units)

    def wrong_byte_count(self, pct: float, units: Iterable[int] | None = None) -> None:
        """Replace a reply by a well-formed one (good CRC) whose byte count is 2 more or 2 fewer
        than the request asked for."""

        def replace(data: bytes, req: Request) -> bytes | None:
            if req.fc not in READ_FUNCTIONS or not req.count:
                return None
            n = 2 * req.count + (2 if req.count == 1 or self.rng.random() < 0.5 else -2)
            return with_crc(bytes([req.unit, req.fc, n]) + self.rng.randbytes(n))

        self._set("wrong byte count", replace, pct, units)

    def exception(self, unit: int, fc: int, start: int, code: int) -> None:
        """Answer every read of the block (unit, fc, start) with exception `code`."""
        with self._lock:
            self._exceptions[(unit, fc, start)] = code

    def delay(self, seconds: float, units: Iterable[int] | None = None) -> None:
        """Hold replies (from these units) back for `seconds` before they go on the wire; the
        bridge carries the others meanwhile (needs `attach`)."""
        with self._lock:
            self._delay = (seconds, None if units is None else set(units))

    # --- reading the record ---

    def requests_since(self, t: float, unit: int | None = None) -> list[Request]:
        with self._lock:
            reqs = list(self.requests)
        return [r for r in reqs if r.t > t and (unit is None or r.unit == unit)]


def _parse_request(now: float, data: bytes) -> Request:
    unit = data[0] if data else -1
    fc = data[1] if len(data) > 1 else -1
    start = count = None
    if fc in READ_FUNCTIONS and len(data) >= 6:
        start = int.from_bytes(data[2:4], "big")
        count = int.from_bytes(data[4:6], "big")
    return Request(now, unit, fc, start, count, len(data))


# --- the rig ---------------------------------------------------------------------------------


class ProbeFailed(AssertionError):
    pass


class BusRig:
    """Plant + links + bus probe for one site. Use as a context manager or start()/stop().

    `devices`: names of the site's devices to put on the bus (default: all). `bus`: fields of
    every `config.Bus` to replace (timeout_ms, poll_ms, baud). `paced`: deliver bytes at the
    bus's baud rate, `bits_per_byte` bits each (11: Modbus RTU with parity or two stop bits).
    `setup(plant)` runs once the plant serves and before the probe's first request.
    `min_timeout_ms`: every device profile's floor for the master's adaptive timeout (a test
    that wants the bus's `timeout_ms` itself sets both alike).
    """

    def __init__(self, site: Site, workdir: Path, *, devices: Iterable[str] | None = None,
                 bus: dict[str, Any] | None = None, paced: bool = False,
                 bits_per_byte: int = BITS_PER_CHAR, seed: int = 1,
                 duration: float | None = None,
                 setup: Callable[[Plant], None] | None = None,
                 min_timeout_ms: int | None = None) -> None:
        if devices is not None:
            names = list(devices)
            missing = set(names) - {d.name for d in site.devices}
            if missing:
                raise KeyError(f"no device {', '.join(sorted(missing))} in site '{site.id}'")
            site = dataclasses.replace(site, devices=tuple(d for d in site.devices
                                                           if d.name in names))
        if min_timeout_ms is not None:
            site = dataclasses.replace(site, devices=tuple(
                dataclasses.replace(d, profile=dataclasses.replace(
                    d.profile, min_timeout_ms=min_timeout_ms)) for d in site.devices))
        if bus:
            site = dataclasses.replace(site, buses=tuple(dataclasses.replace(b, **bus)
                                                         for b in site.buses))
        self.site = site
        self.workdir = Path(workdir)
        self.paced = paced
        self.bits_per_byte = bits_per_byte
        self.duration = duration
        self.setup = setup
        self.stderr_path = self.workdir / "bus-probe.stderr"
        self.wires = {b.name: Wire((d.unit for d in site.devices if d.bus == b.name),
                                   seed=seed + i) for i, b in enumerate(site.buses)}
        self.links: dict[str, PtyLink] = {}
        self.plant: Plant | None = None
        self.plant_thread: PlantThread | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.compiled: dict[str, Any] | None = None
        self.lines: list[dict[str, Any]] = []
        self.other_output: list[str] = []
        self._reader: threading.Thread | None = None
        self._new_line = threading.Condition()

    # --- lifecycle ---

    def start(self, timeout: float = 15.0) -> BusRig:
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        mpy_dir, image_size = build()
        for b in self.site.buses:
            self.links[b.name] = PtyLink(b.baud if self.paced else None,
                                         bits_per_byte=self.bits_per_byte,
                                         on_bytes=self.wires[b.name].hook,
                                         name=f"{self.site.id}-{b.name}")
            self.wires[b.name].attach(self.links[b.name])
        self.plant = Plant(self.site, self.links)
        self.plant_thread = PlantThread(self.plant).start()
        if self.setup is not None:
            self.setup(self.plant)
        self.compiled = compiler.compile_site(self.site, bus_ports=self.plant.ports())
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg_path = self.workdir / "bus-config.json"
        cfg_path.write_text(compiler.to_json(self.compiled))
        # The heap the firmware runs with (dut.py): the board's budget in 64-bit terms plus the
        # image, which the probe loads as .mpy files into the heap instead of mapping it.
        heap = dut.BOARD_HEAP_KIB * 1024 * dut.WORD_FACTOR + image_size
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [firmware.micropython(), "-X", f"heapsize={heap}", str(PROBE), str(cfg_path),
                 "forever" if self.duration is None else str(self.duration)],
                stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                env=dict(os.environ, MICROPYPATH=f".frozen:{mpy_dir}"), start_new_session=True)
        self._reader = threading.Thread(target=self._read, name="bus-probe-reader", daemon=True)
        self._reader.start()
        self.wait(lambda: self.first("ready"), timeout, "the bus probe to start")

    def stop(self) -> int | None:
        rc = None
        if self.proc is not None:
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    os.kill(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(5)
            rc = self.proc.returncode
            if self.proc.stdout:
                self.proc.stdout.close()
        if self._reader is not None:
            self._reader.join(5)
            self._reader = None
        if self.plant_thread is not None:
            self.plant_thread.stop()
            self.plant_thread = None
        for wire in self.wires.values():
            wire.close()
        for link in self.links.values():
            link.close()
        return rc

    def __enter__(self) -> BusRig:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            rx = time.monotonic()
            text = raw.decode(errors="replace").rstrip("\n")
            try:
                line = json.loads(text)
            except ValueError:
                self.other_output.append(text)
                continue
            if not isinstance(line, dict):
                self.other_output.append(text)
                continue
            line["rx"] = rx
            if line.get("k") == "cycle":
                # Wire counters as the cycle ended: the owner sleeps >= 10 ms before the next
                # cycle, so no later request has gone out yet.
                line["wire"] = self.wires[line["bus"]].counts()
            with self._new_line:
                self.lines.append(line)
                self._new_line.notify_all()

    # --- observations ---

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def of_kind(self, kind: str, since: float = 0.0) -> list[dict[str, Any]]:
        with self._new_line:
            return [x for x in self.lines if x.get("k") == kind and x["rx"] > since]

    def first(self, kind: str, since: float = 0.0) -> dict[str, Any] | None:
        found = self.of_kind(kind, since)
        return found[0] if found else None

    def cycles(self, since: float = 0.0, bus: str | None = None) -> list[dict[str, Any]]:
        return [c for c in self.of_kind("cycle", since) if bus is None or c["bus"] == bus]

    def events(self, device: str | None = None, since: float = 0.0) -> list[dict[str, Any]]:
        return [e for e in self.of_kind("dev", since) if device is None or e["dev"] == device]

    def logs(self, since: float = 0.0) -> list[str]:
        return [x["msg"] for x in self.of_kind("log", since)]

    def output(self) -> str:
        """What the probe printed that was not a JSON line, and its stderr (for failures)."""
        err = ""
        try:
            err = self.stderr_path.read_text(errors="replace")
        except OSError:
            pass
        return "\n".join(self.other_output[-50:]) + "\n" + err[-4000:]

    def wait(self, check: Callable[[], Any], timeout: float, what: str) -> Any:
        """Wait until `check()` is truthy (re-checked at each new probe line); return it."""
        deadline = time.monotonic() + timeout
        with self._new_line:
            while True:
                got = check()
                if got:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                if not self.alive():
                    got = check()
                    if got:
                        return got
                    raise ProbeFailed(f"bus probe exited (rc {self.proc and self.proc.poll()}) "
                                      f"while waiting for {what}:\n{self.output()}")
                self._new_line.wait(min(left, 0.2))
        raise ProbeFailed(f"timed out after {timeout} s waiting for {what}\n{self.output()}")

    def wait_cycles(self, n: int, timeout: float = 10.0, bus: str | None = None
                    ) -> list[dict[str, Any]]:
        """The next `n` cycles reported from now on (on one bus, or any)."""
        t = time.monotonic()
        return self.wait(lambda: (c := self.cycles(t, bus)) and len(c) >= n and c[:n], timeout,
                         f"{n} poll cycles")

    def run_for(self, seconds: float) -> list[dict[str, Any]]:
        """Let the probe poll for `seconds`; the cycles reported meanwhile."""
        t = time.monotonic()
        time.sleep(seconds)
        if not self.alive():
            raise ProbeFailed(f"bus probe exited:\n{self.output()}")
        return self.cycles(t)

    def requests_per_cycle(self, cycles: list[dict[str, Any]], bus: str | None = None
                           ) -> list[list[Request]]:
        """The requests on the wire during each of `cycles` (consecutive reports of one bus):
        those after the previous report and up to this one. The first cycle given serves as the
        start and gets no list."""
        bus = bus or cycles[0]["bus"]
        reqs = self.wires[bus].requests_since(0.0)
        return [[r for r in reqs if a["rx"] < r.t <= b["rx"]]
                for a, b in zip(cycles, cycles[1:], strict=False)]

    # --- the truth ---

    def truth(self) -> dict[str, dict[str, Any]]:
        """Every point's value as the plant holds it (None: the plant's n/a)."""
        assert self.plant is not None
        return {d.name: {p.name: self.plant.get(d.name, p.name) for p in d.profile.points}
                for d in self.site.devices}

    def blocks(self) -> int:
        """Register blocks the compiled config reads per full cycle (all devices)."""
        assert self.compiled is not None
        return sum(len(d["blocks"]) for d in self.compiled["devices"])


def wrong_values(cycle: dict[str, Any], truth: dict[str, dict[str, Any]],
                 rel: float = 1e-6) -> list[tuple[str, str, Any, Any]]:
    """(device, point, reported, true) for every value that is neither the truth nor null."""
    bad = []
    for dev, st in cycle["dev"].items():
        for name, got in st["v"].items():
            if got is None:
                continue
            want = truth[dev][name]
            if isinstance(got, str) or isinstance(want, str) or want is None:
                same = got == want
            else:
                same = abs(got - want) <= rel * max(abs(want), 1e-9)
            if not same:
                bad.append((dev, name, got, want))
    return bad


def periods_ms(cycles: list[dict[str, Any]]) -> list[int]:
    """Start-to-start times of consecutive cycles (by their first transaction)."""
    return [b["t0"] - a["t0"] for a, b in zip(cycles, cycles[1:], strict=False)
            if a["t0"] is not None and b["t0"] is not None]
