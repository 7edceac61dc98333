# One task owns each RS-485 bus: it polls every device on it, decodes the points and keeps the
# result in a `Device` object that the site logic reads (a snapshot, never a second bus user).
#
# Availability is a value. A device is `online` while it answers; after 3 consecutive failed
# polls or 5 s without a good read it is `offline` and every value it had becomes None, so a
# number that stopped being true is never shown as current. An offline device is re-probed with
# a single read every 10 s, so a dead slave costs one timeout per 10 s, not one per cycle, and the
# others keep their poll rate (numbers from TOOLCHAIN.md: Victron drops after 5 s, re-probes 10 s).
import asyncio
import time

from sot import points
from sot.device import Device  # noqa: F401 -- re-exported for main
from sot.modbus.master import Master
from sot.modbus.rtu import ModbusError

MISSES_OFFLINE = 3
SILENT_OFFLINE_MS = 5000
REPROBE_MS = 10000


class BusOwner:
    def __init__(self, bus_cfg, devices, uart, on_change=None, log=print):
        self.name = bus_cfg["name"]
        self.poll_ms = bus_cfg["poll_ms"]
        self.devices = devices
        self.master = Master(uart, bus_cfg["baud"], bus_cfg["timeout_ms"])
        self.on_change = on_change  # called (device, online) when availability changes
        self.log = log
        self.cycles = 0

    async def poll_device(self, dev, now):
        if dev.online is False and time.ticks_diff(now, dev.last_try) < REPROBE_MS:
            return
        dev.last_try = now
        blocks = dev.blocks
        if dev.online is False:
            blocks = blocks[:1]  # re-probe: one read tells whether it is back
        ok = True
        for bi in range(len(dev.blocks)):
            if bi >= len(blocks):
                break
            fc, start, count = blocks[bi]
            try:
                data = await self.master.read_registers(dev.unit, fc, start, count)
            except ModbusError as e:
                ok = False
                dev.last_error = e
                break
            for p in dev.points:
                if p[points.BLOCK] == bi:
                    value, _why = points.decode(p, data)
                    dev.values[p[points.NAME]] = value
        now = time.ticks_ms()
        if ok and dev.online is False:
            # Back from offline: read everything before calling it online.
            dev.online = None
            dev.last_try = None
            return await self.poll_device(dev, now)
        if ok:
            dev.misses = 0
            dev.last_ok = now
            if dev.online is not True:
                dev.online = True
                dev.why = None
                self.log("I bus", self.name, "device", dev.name, "online")
                if self.on_change:
                    self.on_change(dev, True)
            return
        dev.misses += 1
        silent = dev.last_ok is not None and time.ticks_diff(now, dev.last_ok) >= SILENT_OFFLINE_MS
        if dev.online is not False and (dev.misses >= MISSES_OFFLINE or silent):
            dev._set_offline()
            self.log("W bus", self.name, "device", dev.name, "offline:", repr(dev.last_error))
            if self.on_change:
                self.on_change(dev, False)

    async def run(self):
        while True:
            started = time.ticks_ms()
            for dev in self.devices:
                await self.poll_device(dev, time.ticks_ms())
            self.cycles += 1
            spent = time.ticks_diff(time.ticks_ms(), started)
            await asyncio.sleep_ms(max(10, self.poll_ms - spent))
