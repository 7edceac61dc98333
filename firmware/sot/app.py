# The running controller: one task per RS-485 bus, the site logic loop and the telemetry session.
import asyncio
import gc

from sot import hal
from sot.bus import BusOwner
from sot.device import Device
from sot.site import Site
from sot.telemetry import Session

SITE_TICK_MS = 500
HEAP_LOG_MS = 60000


def log(*args):
    print(*args)


async def site_loop(site, session, site_id):
    last = None
    heap_at = 0
    peak = 0
    while True:
        now = hal.epoch()
        for etype, data in site.update(now):
            log("I", site_id, "event", etype, data)
            session.event(now, etype, data)
        d = site.discrete()
        if d != last:
            last = d
            session.state_changed()
        heap_at += SITE_TICK_MS
        if heap_at >= HEAP_LOG_MS:
            # Live data after a collection: what the firmware really holds, not the garbage that
            # waits for the next automatic collection.
            heap_at = 0
            gc.collect()
            used = hal.heap_used()
            if used > peak:
                peak = used
            log("I heap live", used, "peak", peak, "free", gc.mem_free())
        await asyncio.sleep_ms(SITE_TICK_MS)


def run(cfg, boot, reset):
    devices = {}
    for d in cfg["devices"]:
        devices[d["name"]] = Device(d)
    site = Site(cfg, devices)
    session = Session(cfg, hal, boot, reset, site, log=log)

    # A device's change of availability reaches MQTT through the site loop, which turns it into
    # events and a state in one step: publishing from the bus callback would send a state whose
    # mode was computed before the change.
    owners = []
    for b in cfg["buses"]:
        uart = hal.Uart(b["port"], b["baud"])
        on_bus = [devices[d["name"]] for d in cfg["devices"] if d["bus"] == b["name"]]
        owners.append(BusOwner(b, on_bus, uart, log=log))

    async def main():
        for o in owners:
            asyncio.create_task(o.run())
        asyncio.create_task(session.run())
        await site_loop(site, session, cfg["site"])

    gc.collect()
    log("I heap live at start", hal.heap_used(), "free", gc.mem_free())
    asyncio.run(main())
