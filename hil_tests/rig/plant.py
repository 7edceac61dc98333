"""The plant simulator: the site's Modbus devices, built from the same profiles as the firmware.

One pymodbus RTU server (`ModbusSerialServer`, pymodbus 3.16 `SimDevice`/`SimData` API) per bus
listens on the plant end of a `PtyLink`; each configured device is a `SimDevice` with the
device's unit id. Adding a profile in `config/devices/` gives a simulator for free.

Register map of a simulated device, per function code (3 = holding, 4 = input registers; a
profile may use both):

- the profile's read blocks (`Profile.blocks()`, the same reads the controller makes) are
  served; registers inside a block that no point claims read 0;
- any request touching an address outside those blocks gets exception 2 (illegal data
  address), as ComAp and other strict controllers answer;
- writes (functions 5, 6, 15, 16, ...) and coil/discrete-input reads get exception 1: the
  profiles describe read-only measurements; except a function-16 write of a profile's
  `[control]` registers (the system control key and its complement, docs/commands.md), which
  is served, recorded in `control_writes` and handed to the `on_control` listeners (the
  scenario physics starts or stops the set) when the complement matches; or, for a `[control]`
  of function 5 (ComAp's remote start/stop coil), a function-5 write of that coil (1 or 0).

The register values live in the plant (`set`, `get`, `set_raw`, `get_raw`), not in pymodbus:
the `SimDevice.action` hook copies the requested registers into pymodbus' block before each
answer, so changing a value never needs the event loop and is safe from any thread.

Silence. On a real RS-485 bus a device that is off, or a unit id nobody has, gives no answer and
the master times out. pymodbus 3.16 answers an unknown unit id with exception 4 (device failure)
instead, so each server gets a `trace_packet` hook that replaces every outgoing frame whose unit
id is not a powered device of that bus with b"" (nothing is sent). `power(device, False)` uses
the same hook. A catch-all `SimDevice(id=0)` takes requests for unknown unit ids, so pymodbus
answers them with a plain exception (dropped by the hook) instead of logging a KeyError.

Values. `set()` takes engineering units (raw = round(value / scale) for integer types) or, for a
point with an enum map, a label, which becomes the first raw value mapped to it in the profile.
`None` writes the point's "n/a" sentinel: the highest raw of its first invalid range (0xFFFF for
a DSE u16, 0xFFFFFFFF for a tank probe fault). 32-bit values are split high word first unless
the point's word order is "little". Points without a `sim` value start at raw 0.
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from gateway.config import Device, Point, Site

from .links import PtyLink
from .loopthread import LoopThread

log = logging.getLogger(__name__)

REGISTER_FUNCTIONS = (3, 4)
_STRUCT = {"u16": ">H", "s16": ">h", "u32": ">I", "s32": ">i", "f32": ">f"}


# --- value encoding --------------------------------------------------------------------------


def encode(point: Point, value: Any, current: list[int] | None = None) -> list[int]:
    """Engineering value, enum label or None -> the point's registers (as sent on the wire).

    A bit field is merged into `current` (the registers as they are); None writes the n/a
    sentinel over the whole register. A str point takes text, NUL-padded to its length."""
    if point.type == "str":
        text = str(value or "").encode("ascii")[: 2 * point.length]
        text += bytes(2 * point.length - len(text))
        return [int.from_bytes(text[i:i + 2], "big") for i in range(0, len(text), 2)]
    if point.bits is not None and value is not None:
        field = _field_raw(point, value)
        lsb, width = point.bits
        if not 0 <= field < (1 << width):
            raise ValueError(f"point '{point.name}': {value!r} does not fit {width} bit(s)")
        whole = decode_raw(point, current) if current else 0
        whole = (int(whole) & ~(((1 << width) - 1) << lsb)) | (field << lsb)
        return encode_raw(point, whole)
    if value is None:
        if not point.invalid:
            raise ValueError(f"point '{point.name}' has no n/a value (no invalid range)")
        raw: int | float = point.invalid[0][1]
    elif isinstance(value, str):
        if point.enum is None:
            raise ValueError(f"point '{point.name}' has no enum map; got label {value!r}")
        raw = next((k for k, v in point.enum.items() if v == value), -1)
        if raw < 0:
            raise ValueError(f"point '{point.name}': no raw value for label {value!r} "
                             f"(labels: {', '.join(sorted(set(point.enum.values())))})")
    elif point.type == "f32":
        raw = float(value) / point.scale
    else:
        raw = round(float(value) / point.scale)
    return encode_raw(point, raw)


def _field_raw(point: Point, value: Any) -> int:
    if isinstance(value, str):
        if point.enum is None or value not in point.enum.values():
            raise ValueError(f"point '{point.name}': no raw value for label {value!r}")
        return next(k for k, v in point.enum.items() if v == value)
    return int(value)


def encode_raw(point: Point, raw: int | float) -> list[int]:
    try:
        data = struct.pack(_STRUCT[point.type], raw)
    except struct.error:
        raise ValueError(f"point '{point.name}': raw value {raw!r} does not fit a "
                         f"{point.type}") from None
    regs = [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]
    if point.word_order == "little":
        regs.reverse()
    return regs


def decode_raw(point: Point, regs: list[int]) -> int | float:
    words = list(regs)
    if point.word_order == "little":
        words.reverse()
    data = b"".join(w.to_bytes(2, "big") for w in words)
    return struct.unpack(_STRUCT[point.type], data)[0]


def decode(point: Point, regs: list[int]) -> Any:
    """Registers -> engineering value, enum label (the raw integer if unmapped) or None (n/a)."""
    if point.type == "str":
        return b"".join(w.to_bytes(2, "big") for w in regs).rstrip(b"\0 ").decode("ascii")
    raw = decode_raw(point, regs)
    if point.type != "f32":
        assert isinstance(raw, int)  # only an f32 decodes to a float
        # Sentinels are given as unsigned codes of the register(s), also for signed types.
        unsigned = raw & (0xFFFF if point.count == 1 else 0xFFFFFFFF)
        if any(lo <= unsigned <= hi for lo, hi in point.invalid):
            return None
    if point.bits is not None:
        raw = (int(raw) >> point.bits[0]) & ((1 << point.bits[1]) - 1)
    if point.enum is not None:
        return point.enum.get(int(raw), int(raw))
    if point.scale == 1.0:
        return raw
    value = raw * point.scale
    # Drop the binary noise of the scaling (27.400000000000002 -> 27.4).
    return value if math.isnan(value) else round(value, 9)


# --- simulated devices -----------------------------------------------------------------------


class SimulatedDevice:
    """Register image of one device: per function code, a list from `base[fc]` upwards."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.powered = True
        self.blocks = device.profile.blocks()
        ctl = device.profile.control
        # the remote-control registers: written, never polled (a coil of function 5 instead)
        self.coil = ctl["register"] if ctl and ctl.get("function") == 5 else None
        if ctl and self.coil is None:
            self.blocks.append((3, ctl["register"], 2 if ctl["complement"] else 1, 0))
        self.base: dict[int, int] = {}
        self.image: dict[int, list[int]] = {}
        for fc in REGISTER_FUNCTIONS:
            mine = [(start, count) for f, start, count, _slow in self.blocks if f == fc]
            if mine:
                lo = min(start for start, _ in mine)
                hi = max(start + count for start, count in mine)
                self.base[fc] = lo
                self.image[fc] = [0] * (hi - lo)

    def served(self, fc: int, address: int, count: int) -> bool:
        return any(f == fc and start <= address and address + count <= start + n
                   for f, start, n, _slow in self.blocks)

    def sim_device(self, action: Callable[..., Any]) -> SimDevice:
        registers: dict[int, list[SimData]] = {fc: [] for fc in REGISTER_FUNCTIONS}
        for fc, start, count, _slow in self.blocks:
            registers[fc].append(SimData(address=start, count=count, datatype=DataType.REGISTERS))
        return SimDevice(id=self.device.unit, simdata=_tables(registers[3], registers[4],
                                                              self.coil), action=action)


def _tables(holding: list[SimData], inputs: list[SimData], coil: int | None = None
            ) -> tuple[list[SimData], list[SimData], list[SimData], list[SimData]]:
    """The four separate tables (coils, discrete inputs, holding, input registers).

    pymodbus needs at least one entry in each table and bit tables of DataType.BITS: an empty
    table gets a placeholder (one INVALID register, or 16 bits that the action refuses).
    `coil`: a remote-control coil (a profile's [control] of function 5) to serve.
    """
    return ([SimData(address=0 if coil is None else coil, datatype=DataType.BITS)],
            [SimData(address=0, datatype=DataType.BITS)],
            holding or [SimData(address=0, datatype=DataType.INVALID)],
            inputs or [SimData(address=0, datatype=DataType.INVALID)])


# --- the plant -------------------------------------------------------------------------------


class Plant:
    """All simulated devices of a site; asyncio-native (start/stop in the plant's event loop).

    `bus_links` maps bus names to links the caller owns (e.g. paced ones); buses without one get
    an unpaced `PtyLink` that the plant creates in `start()` and closes in `stop()`.
    `set`/`get`/`set_raw`/`get_raw`/`power` may be called from any thread.
    """

    def __init__(self, site: Site, bus_links: dict[str, PtyLink] | None = None, *,
                 tick_s: float = 0.1) -> None:
        self.site = site
        self.tick_s = tick_s
        self._given_links = dict(bus_links or {})
        unknown = set(self._given_links) - {b.name for b in site.buses}
        if unknown:
            raise KeyError(f"bus_links: no bus named {', '.join(sorted(unknown))} in site "
                           f"'{site.id}'")
        self.links: dict[str, PtyLink] = dict(self._given_links)
        self.devices = {d.name: SimulatedDevice(d) for d in site.devices}
        self._lock = threading.RLock()
        self._servers: dict[str, ModbusSerialServer] = {}
        self._tickers: list[Callable[[float], None]] = []
        self._tick_task: asyncio.Task[None] | None = None
        self.control_writes: list[tuple[str, list[int]]] = []
        self._control: list[Callable[[str, int], None]] = []
        self.running = False
        for sd in self.devices.values():
            for p in sd.device.profile.points:
                if p.sim is not None:
                    try:
                        current = self._read(sd, p.function, p.address, p.count)
                        self._write(sd, p.function, p.address, encode(p, p.sim, current))
                    except ValueError as e:
                        raise ValueError(f"{sd.device.profile.path.name}: sim value: {e}") from None

    # --- lifecycle ---

    async def start(self) -> None:
        if self.running:
            return
        try:
            for bus in self.site.buses:
                link = self.links.get(bus.name)
                if link is None:
                    link = self.links[bus.name] = PtyLink(name=f"{self.site.id}-{bus.name}")
                link.plant_reports()
                on_bus = [sd for sd in self.devices.values() if sd.device.bus == bus.name]
                sims = [sd.sim_device(partial(self._on_request, sd)) for sd in on_bus]
                sims.append(SimDevice(id=0, simdata=_tables([], [])))
                server = ModbusSerialServer(
                    sims, port=link.plant_path, baudrate=bus.baud,
                    trace_packet=partial(self._trace_packet, bus.name))
                await server.serve_forever(background=True)
                self._servers[bus.name] = server
            self._tick_task = asyncio.get_running_loop().create_task(self._tick_loop())
            self.running = True
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        self.running = False
        if self._tick_task is not None:
            self._tick_task.cancel()
            try:
                await self._tick_task
            except asyncio.CancelledError:
                pass
            self._tick_task = None
        for server in self._servers.values():
            await server.shutdown()
        self._servers.clear()
        for link in self.links.values():
            link.plant_reports(False)
        for name in list(self.links):
            if name not in self._given_links:
                self.links.pop(name).close()

    def run_in_thread(self) -> PlantThread:
        """Start the plant in a background thread with its own event loop."""
        return PlantThread(self).start()

    def port(self, bus: str) -> str:
        """The controller-side device path of a bus."""
        if bus not in self.links:
            if all(b.name != bus for b in self.site.buses):
                raise KeyError(f"no bus '{bus}' in site '{self.site.id}'")
            raise RuntimeError(f"bus '{bus}' has no link before the plant is started")
        return self.links[bus].device_path

    def ports(self) -> dict[str, str]:
        """Controller-side device path of every bus: `compile_site(..., bus_ports=...)`."""
        return {b.name: self.port(b.name) for b in self.site.buses}

    # --- physics hook ---

    def on_tick(self, fn: Callable[[float], None]) -> None:
        """Call `fn(now)` every `tick_s` in the plant's loop (now: the loop's monotonic clock)."""
        self._tickers.append(fn)

    def on_control(self, fn: Callable[[str, int], None]) -> None:
        """fn(device, key) for every valid remote-control write (key and complement agree)."""
        self._control.append(fn)

    def _control_write(self, sd: SimulatedDevice, address: int,
                       values: list[int]) -> ExcCodes | None:
        ctl = sd.device.profile.control
        n = 2 if ctl and ctl["complement"] else 1
        if not ctl or address != ctl["register"] or len(values) != n:
            return ExcCodes.ILLEGAL_FUNCTION
        self.control_writes.append((sd.device.name, list(values)))
        if n == 1 or values[0] + values[1] == 0xFFFF:
            for fn in self._control:
                fn(sd.device.name, values[0])
        return None

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            for fn in list(self._tickers):
                try:
                    fn(now)
                except Exception:
                    log.exception("plant tick %r failed", fn)
            await asyncio.sleep(self.tick_s)

    # --- values ---

    def set(self, device: str, point: str, value: Any) -> None:
        sd, p = self._point(device, point)
        with self._lock:  # a bit field is read, merged and written back as one step
            current = self._read(sd, p.function, p.address, p.count) if p.bits else None
            self._write(sd, p.function, p.address, encode(p, value, current))

    def get(self, device: str, point: str) -> Any:
        sd, p = self._point(device, point)
        return decode(p, self._read(sd, p.function, p.address, p.count))

    def set_raw(self, device: str, address: int, fc: int, regs: list[int]) -> None:
        regs = list(regs)
        if not all(isinstance(r, int) and 0 <= r <= 0xFFFF for r in regs):
            raise ValueError(f"registers must be 0..65535, got {regs}")
        self._write(self._device(device), fc, address, regs)

    def get_raw(self, device: str, address: int, fc: int, count: int = 1) -> list[int]:
        return self._read(self._device(device), fc, address, count)

    def has_point(self, device: str, point: str) -> bool:
        return any(p.name == point for p in self._device(device).device.profile.points)

    def power(self, device: str, on: bool) -> None:
        """A device that is off stays silent: requests to it time out."""
        self._device(device).powered = bool(on)

    def powered(self, device: str) -> bool:
        return self._device(device).powered

    def _device(self, name: str) -> SimulatedDevice:
        try:
            return self.devices[name]
        except KeyError:
            raise KeyError(f"no device '{name}' in site '{self.site.id}' "
                           f"(have: {', '.join(self.devices)})") from None

    def _point(self, device: str, point: str) -> tuple[SimulatedDevice, Point]:
        sd = self._device(device)
        try:
            return sd, sd.device.profile.point(point)
        except KeyError:
            raise KeyError(f"device '{device}' ({sd.device.profile.id}) has no point "
                           f"'{point}'") from None

    def _write(self, sd: SimulatedDevice, fc: int, address: int, regs: list[int]) -> None:
        if not sd.served(fc, address, len(regs)):
            raise ValueError(f"device '{sd.device.name}': function {fc} registers "
                             f"{address}..{address + len(regs) - 1} are not served")
        off = address - sd.base[fc]
        with self._lock:
            sd.image[fc][off:off + len(regs)] = regs

    def _read(self, sd: SimulatedDevice, fc: int, address: int, count: int) -> list[int]:
        if not sd.served(fc, address, count):
            raise ValueError(f"device '{sd.device.name}': function {fc} registers "
                             f"{address}..{address + count - 1} are not served")
        off = address - sd.base[fc]
        with self._lock:
            return sd.image[fc][off:off + count]

    # --- pymodbus hooks ---

    async def _on_request(self, sd: SimulatedDevice, function_code: int, start_address: int,
                          address: int, count: int, registers: list[int],
                          set_values: list[int] | list[bool] | None) -> ExcCodes | None:
        """SimDevice.action: refresh pymodbus' block from the plant's image before it answers.

        pymodbus has already checked the address range against the served blocks. `registers`
        is the whole table of this function code, starting at `start_address` (== base).
        """
        if set_values is not None and function_code == 16:
            return self._control_write(sd, address, [int(v) for v in set_values])
        if function_code == 5 and sd.coil is not None and address == sd.coil:
            # pymodbus asks twice: with the value to write, then (None) for its echo
            return None if set_values is None else \
                self._control_write(sd, address, [1 if set_values[0] else 0])
        if set_values is not None or function_code not in REGISTER_FUNCTIONS:
            return ExcCodes.ILLEGAL_FUNCTION
        off = address - sd.base[function_code]
        first = address - start_address
        with self._lock:
            registers[first:first + count] = sd.image[function_code][off:off + count]
        return None

    def _trace_packet(self, bus: str, sending: bool, packet: bytes) -> bytes:
        # pymodbus sends (or here drops) one frame for every request it decoded: the link may
        # pass the next request (links.py, frames).
        if sending:
            self.links[bus].plant_done()
        # RTU frame: unit id, function, data..., CRC. Only powered, configured units answer.
        if sending and packet:
            unit = packet[0]
            if not any(sd.device.unit == unit and sd.device.bus == bus and sd.powered
                       for sd in self.devices.values()):
                return b""
        return packet


# --- running a plant from synchronous code ---------------------------------------------------


class PlantThread(LoopThread):
    """Runs a plant in a background thread with its own event loop.

    `call(fn, *args)` runs `fn` in the plant's loop and returns its result (awaiting it when it
    is a coroutine), so tests and the demo can drive the plant and its physics from their own
    thread. Also a context manager.
    """

    def __init__(self, plant: Plant) -> None:
        super().__init__(f"plant-{plant.site.id}")
        self.plant = plant

    def start(self, timeout: float = 10.0) -> PlantThread:
        self.start_loop(timeout)
        try:
            self.call(self.plant.start, timeout=timeout)
        except BaseException:
            self.stop_loop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        try:
            if self.running:
                self.call(self.plant.stop, timeout=timeout)
        finally:
            self.stop_loop(timeout)

    def __enter__(self) -> PlantThread:
        return self if self.running else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
