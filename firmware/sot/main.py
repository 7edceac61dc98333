# Controller start-up: read the config from flash, count the boot, then run one task per bus,
# the site logic, and the telemetry session. On unix: micropython -m sot.main <flash folder>.
import asyncio
import sys

from sot import hal
from sot import config as config_mod
from sot.bus import BusOwner
from sot.device import Device
from sot.site import Site
from sot.telemetry import Session

SITE_TICK_MS = 500


def log(*args):
    print(*args)


def next_boot(flash):
    raw = flash.read("boot")
    try:
        boot = int(raw) + 1 if raw else 1
    except ValueError:
        boot = 1  # a damaged counter restarts at 1 rather than stopping the controller
    flash.write("boot", str(boot).encode())
    return boot


async def site_loop(site, session, site_id):
    last = None
    while True:
        now = hal.epoch()
        for etype, data in site.update(now):
            log("I", site_id, "event", etype, data)
            session.event(now, etype, data)
        d = site.discrete()
        if d != last:
            last = d
            session.state_changed()
        await asyncio.sleep_ms(SITE_TICK_MS)


def main(argv):
    hal.init(argv)
    flash = hal.Flash()
    try:
        cfg = config_mod.load(flash)
    except config_mod.ConfigError as e:
        log("E config:", e)
        sys.exit(3)
    boot = next_boot(flash)
    reset = hal.reset_cause()
    log("I", cfg["site"], "boot", boot, "reset", reset, "config", cfg["hash"])

    devices = {}
    for d in cfg["devices"]:
        devices[d["name"]] = Device(d)
    site = Site(cfg, devices)
    session = Session(cfg, hal, boot, reset, site, log=log)

    def on_device(dev, online):
        session.state_changed()

    owners = []
    for b in cfg["buses"]:
        uart = hal.Uart(b["port"], b["baud"])
        on_bus = [devices[d["name"]] for d in cfg["devices"] if d["bus"] == b["name"]]
        owners.append(BusOwner(b, on_bus, uart, on_change=on_device, log=log))

    async def run():
        for o in owners:
            asyncio.create_task(o.run())
        asyncio.create_task(session.run())
        await site_loop(site, session, cfg["site"])

    asyncio.run(run())


main(sys.argv)
