# One task owns each RS-485 bus: it polls every device on it, decodes the points and keeps the
# result in a `Device` object that the site logic reads (a snapshot, never a second bus user).
#
# Availability is a value. A device is `online` while it answers; after 3 unanswered requests
# or 5 s without a good read, whichever comes first, it is `offline` and every value it had
# becomes None, so a number that stopped being true is never shown as current. The master
# retries a failed request once, but not for a device that already missed: the retry is for a
# glitch, not for a dead slave. When the master holds a unit after a timeout (its late reply may
# still come, see master.py) and the hold ends past the 5 s, the device is offline at once. An
# offline device is re-probed with a single request at most every 10 s, so a dead slave costs one
# timeout per 10 s, not per cycle, and the others keep their poll rate (Victron drops after 5 s
# and re-probes every 10 s, docs/devices.md).
#
# Identity. On first contact, and on every return from offline, every block is read, slow ones
# too, and the profile's identity points are compared before any value counts: a device that is
# not what the profile says (a wrong unit id, a swapped controller) is `mismatch`, shows no
# values and never receives a write; it is checked again at each re-probe.
#
# Poll classes. Blocks of the "slow" class (identity, counters, capability bits) are read every
# `slow_ms`; the rest every cycle. An exception response to a block (illegal address, ...) is a
# configuration problem, not a silent device: its points read None, it is logged once, and the
# device stays online.
import asyncio
import time

from sot import points
from sot.modbus.master import Master
from sot.modbus.rtu import ModbusError, ModbusException

MISSES_OFFLINE = 3
SILENT_OFFLINE_MS = 5000
REPROBE_MS = 10000


class NotVerified(Exception):
    """A write to a device whose identity has not been confirmed (or did not match)."""


class BusOwner:
    def __init__(self, bus_cfg, devices, uart, on_change=None, log=print):
        self.name = bus_cfg["name"]
        self.poll_ms = bus_cfg["poll_ms"]
        self.slow_ms = bus_cfg.get("slow_ms", 10000)
        self.devices = devices
        self.master = Master(uart, bus_cfg["baud"], bus_cfg["timeout_ms"])
        self.on_change = on_change  # called (device) when its status changes
        self.log = log
        self.cycles = 0
        self._last_slow = None
        self.checkin = _nothing  # the supervisor's check-in, once per round
        # Called after a poll that read new values or changed a device's availability: the
        # site logic's step, so a reading is judged when it arrives (sot/app.py).
        self.after_poll = _nothing
        self.writes = []  # coroutine functions f(owner) that write, run between polls in order

    def _changed(self, dev):
        if self.on_change:
            self.on_change(dev)

    async def _read_block(self, dev, bi):
        fc, start, count, _slow = dev.blocks[bi]
        at = time.ticks_ms()
        data = await self.master.read_registers(dev.unit, fc, start, count, dev.tmin)
        dev.read_ms = at
        for p in dev.points:
            if p[points.BLOCK] == bi:
                name = p[points.NAME]
                value, why = points.decode(p, data)
                dev.values[name] = value
                if why is None:
                    dev.faults.discard(name)
                else:
                    dev.faults.add(name)

    def _block_failed(self, dev, bi, err):
        # An exception response: the device answers, the request is wrong for it.
        if dev.block_errors.get(bi) != err.code:
            dev.block_errors[bi] = err.code
            fc, start, count, _slow = dev.blocks[bi]
            self.log("E bus", self.name, "device", dev.name, "fc", fc, start, "+", count, ":",
                     err.name, "(configuration problem; not retried)")
        for p in dev.points:
            if p[points.BLOCK] == bi:
                dev.values[p[points.NAME]] = None

    def _held_ms(self, dev):
        """How long the master still holds the device's unit after a timeout (0: not held)."""
        held = self.master.ready_at(dev.unit)
        if held is None:
            return 0
        return max(0, time.ticks_diff(held, time.ticks_us()) // 1000)

    def _too_late(self, dev, at):
        """True when an answer at `at` (ticks_ms) would come SILENT_OFFLINE_MS or more after the
        last good read: the device is then offline now, not when the time has run out."""
        return dev.last_ok is not None and time.ticks_diff(at, dev.last_ok) >= SILENT_OFFLINE_MS

    def _go_offline(self, dev):
        dev._set_offline()
        self.log("W bus", self.name, "device", dev.name, "offline:", repr(dev.last_error))
        self._changed(dev)

    async def poll_device(self, dev, now, slow_due):
        if dev.online is False and time.ticks_diff(now, dev.last_try) < REPROBE_MS - self.poll_ms:
            return  # re-probe in the last cycle before 10 s are up, never after
        held = self._held_ms(dev)
        if dev.online and dev.misses and self._too_late(dev, time.ticks_add(now, held)):
            self._go_offline(dev)
            return
        if held:
            return  # its late reply may still come: ask again next cycle, the bus stays free
        dev.last_try = now
        master = self.master
        retries = master.retries
        if dev.misses or dev.online is False:
            master.retries = 0
        first_contact = dev.online is not True
        ok = True
        for bi in range(len(dev.blocks)):
            if dev.blocks[bi][3] and not (slow_due or first_contact):
                continue
            try:
                await self._read_block(dev, bi)
                if bi in dev.block_errors:
                    del dev.block_errors[bi]
            except ModbusException as e:
                self._block_failed(dev, bi, e)
            except ModbusError as e:
                ok = False
                dev.last_error = e
                dev.misses += master.attempts
                break
            finally:
                master.retries = retries
            if dev.online is False and bi == 0:
                # Re-probe of an offline device: it answered, so read the rest right away.
                first_contact = True
        started = now
        now = time.ticks_ms()
        if ok:
            dev.misses = 0
            # When the device last answered, conservatively: the poll's start. The 5 s of
            # silence are counted from here, so they cover the whole time since it was last heard.
            dev.last_ok = started
            if first_contact:
                self._first_contact(dev)
            return
        # The next chance to hear from it is a cycle from now: if that is past the 5 s, or this
        # was the third unanswered request, it is offline now.
        if dev.online is not False and (dev.misses >= MISSES_OFFLINE
                                        or self._too_late(dev, time.ticks_add(now, self.poll_ms))):
            self._go_offline(dev)

    def _first_contact(self, dev):
        if dev.check_identity():
            dev.verified = True
            if dev.online is not True:
                dev.online = True
                dev.why = None
                self.log("I bus", self.name, "device", dev.name, "online")
                self._changed(dev)
            return
        was = dev.status()
        dev._set_offline("mismatch")
        if was != "mismatch":
            self.log("E bus", self.name, "device", dev.name, "identity mismatch:", dev.mismatch[0],
                     "=", repr(dev.mismatch[1]), "- no values, no writes")
            self._changed(dev)

    async def write_registers(self, dev, start, values):
        """The only way to write to a device: refused unless its identity was confirmed."""
        if not (dev.online and dev.verified):
            raise NotVerified(dev.name)
        return await self.master.write_registers(dev.unit, start, values, dev.tmin)

    async def write_coil(self, dev, address, on):
        """A coil, the same way: only to a device whose identity was confirmed."""
        if not (dev.online and dev.verified):
            raise NotVerified(dev.name)
        return await self.master.write_coil(dev.unit, address, on, dev.tmin)

    async def run(self):
        while True:
            self.checkin()
            started = time.ticks_ms()
            slow_due = (self._last_slow is None
                        or time.ticks_diff(started, self._last_slow) >= self.slow_ms)
            if slow_due:
                self._last_slow = started
            for dev in self.devices:
                while self.writes:  # queued by sot/command.py: made here, one writer on the bus
                    await self.writes.pop(0)(self)
                read, online = dev.read_ms, dev.online
                await self.poll_device(dev, time.ticks_ms(), slow_due)
                if dev.read_ms != read or dev.online != online:
                    self.after_poll()
            self.cycles += 1
            spent = time.ticks_diff(time.ticks_ms(), started)
            await asyncio.sleep_ms(max(10, self.poll_ms - spent))


def _nothing():
    pass
