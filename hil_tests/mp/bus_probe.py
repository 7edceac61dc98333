# Runs the firmware's own field-bus code for one compiled site config and reports what it sees,
# for the field-bus fault tests and the poll benchmark (hil_tests/rig/busrig.py starts and reads
# it). Real sot.bus/device/points/modbus and the unix HAL's Uart; no MQTT, no site logic, so a
# failure points at the bus code.
#
#   MICROPYPATH=.frozen:<firmware .mpy build> micropython -X heapsize=<n> bus_probe.py \
#       <compiled config.json> <seconds | forever>
#
# One JSON object a line; "k" is the kind, "t" ms since the probe started:
#   ready  {"heap", "free"}                       config loaded, UARTs open, polling starts
#   cycle  {"bus", "n", "t0", "busy_us", "tx", "dev", "stats", "mem"}
#          after each poll cycle of a bus owner. n: the owner's cycle count; t0 (ms): start of
#          the cycle's first transaction; busy_us: from there to the end of its last one;
#          tx: [unit, fc, start, count, at_us, dur_us, error class or null] per read, at_us
#          from the first; dev: {name: {"on": online, "st": status, "m": misses, "v": values,
#          "f": points that read invalid (where the firmware keeps them)}}; stats: the
#          master's counters; mem: gc.mem_alloc()
#   dev    {"bus", "dev", "on", "st", "m", "err"} status change (the owner's on_change)
#   log    {"msg"}                                a line the bus owner logged
#   end    {}                                     the duration is over
#
# A cycle is noticed by watching BusOwner.cycles every WATCH_MS; the owner sleeps at least 10 ms
# between cycles, so every cycle is reported on its own and before the next one starts. The
# timings come from wrapping Master.read_registers, not from the watcher.
import asyncio
import gc
import json
import sys
import time

from sot import config, hal
from sot.bus import BusOwner
from sot.device import Device

WATCH_MS = 2

_t_start = time.ticks_ms()


def now_ms():
    return time.ticks_diff(time.ticks_ms(), _t_start)


def emit(kind, fields):
    fields["k"] = kind
    fields["t"] = now_ms()
    # Streamed, not json.dumps: a cycle report of a big site is a few KB, and one string of that
    # size may not find room in a fragmented 64 KiB-class heap.
    json.dump(fields, sys.stdout)
    sys.stdout.write("\n")


class _ConfigFile:
    """What sot.config.load expects of the flash: open(name). Here: one given file."""

    def __init__(self, path):
        self.path = path

    def open(self, name):
        return open(self.path, "rb")


class Watch:
    """One bus owner under observation: its transactions and its cycle reports."""

    def __init__(self, owner):
        self.owner = owner
        self.tx = []  # (cycle, unit, fc, start, count, t_start_us, t_end_us, error)
        self.seen = owner.cycles
        self.t0_ms = None
        master = owner.master
        read = master.read_registers

        async def timed(unit, fc, start, count, *args, **kwargs):
            cycle = owner.cycles
            if self.t0_ms is None:
                self.t0_ms = now_ms()
            t = time.ticks_us()
            err = None
            try:
                return await read(unit, fc, start, count, *args, **kwargs)
            except Exception as e:
                err = e.__class__.__name__
                raise
            finally:
                self.tx.append((cycle, unit, fc, start, count, t, time.ticks_us(), err))

        master.read_registers = timed

    def check(self):
        o = self.owner
        if o.cycles == self.seen:
            return
        self.seen = o.cycles
        done = [r for r in self.tx if r[0] < o.cycles]
        self.tx = [r for r in self.tx if r[0] >= o.cycles]
        tx = []
        busy = 0
        if done:
            first = done[0][5]
            for r in done:
                tx.append([r[1], r[2], r[3], r[4], time.ticks_diff(r[5], first),
                           time.ticks_diff(r[6], r[5]), r[7]])
            busy = time.ticks_diff(done[-1][6], first)
        devs = {}
        for d in o.devices:
            info = {"on": d.online, "st": status(d), "m": d.misses, "v": d.values}
            if hasattr(d, "faults"):  # points that read invalid (sentinel, out of range)
                info["f"] = sorted(d.faults)
            devs[d.name] = info
        emit("cycle", {"bus": o.name, "n": o.cycles, "t0": self.t0_ms, "busy_us": busy, "tx": tx,
                       "dev": devs, "stats": o.master.stats, "mem": gc.mem_alloc()})
        self.t0_ms = None


def status(dev):
    # Device.status() where the firmware has it (online/offline/mismatch/unknown).
    if hasattr(dev, "status"):
        return dev.status()
    return {True: "online", False: "offline", None: "unknown"}[dev.online]


def on_change(bus):
    # The owner calls on_change(device) or, in older firmware, on_change(device, online).
    def changed(dev, *_):
        err = getattr(dev, "last_error", None)
        emit("dev", {"bus": bus, "dev": dev.name, "on": dev.online, "st": status(dev),
                     "m": dev.misses, "err": None if err is None else repr(err)})

    return changed


def log(*args):
    emit("log", {"msg": " ".join(str(a) for a in args)})


async def run(owners, seconds):
    watches = [Watch(o) for o in owners]
    for o in owners:
        asyncio.create_task(o.run())
    t_end = None if seconds is None else time.ticks_add(time.ticks_ms(), int(seconds * 1000))
    while t_end is None or time.ticks_diff(t_end, time.ticks_ms()) > 0:
        for w in watches:
            w.check()
        await asyncio.sleep_ms(WATCH_MS)
    emit("end", {})


def main(argv):
    if len(argv) != 3:
        print("usage: bus_probe.py <config.json> <seconds | forever>")
        sys.exit(2)
    cfg = config.load(_ConfigFile(argv[1]))
    seconds = None if argv[2] == "forever" else float(argv[2])
    owners = []
    for b in cfg["buses"]:
        uart = hal.Uart(b["port"], b["baud"])
        devices = [Device(d) for d in cfg["devices"] if d["bus"] == b["name"]]
        owners.append(BusOwner(b, devices, uart, on_change=on_change(b["name"]), log=log))
    gc.collect()
    emit("ready", {"heap": gc.mem_alloc(), "free": gc.mem_free()})
    asyncio.run(run(owners, seconds))


main(sys.argv)
