# The running controller: one task per RS-485 bus, the site logic loop, the panel with its
# buttons, the telemetry session, and the supervisor that feeds the watchdog while they all
# check in (sot/supervisor.py).
import asyncio
import gc
import time

from sot import hal
from sot.bus import BusOwner
from sot.crisis import Crisis
from sot.device import Device
from sot.site import Site
from sot.supervisor import WDT_MS, Supervisor
from sot.telemetry import Session

SITE_TICK_MS = 500
PANEL_TICK_MS = 250  # buttons are read this often; the frame is redrawn only when it changes
PANEL_IDLE_MS = 60000  # back to the overview this long after the last button press
HEAP_LOG_MS = 60000
PAGES = 3
# How long each task may go without checking in before the supervisor lets the watchdog reset
# the board: a bus round with every device silent, an MQTT connect that times out.
LIMIT_MS = {"site": 10000, "panel": 20000, "telemetry": 60000, "bus": 30000}


def log(*args):
    print(*args)


class Heap:
    def __init__(self, every_ms=HEAP_LOG_MS):
        self.peak = 0
        self.at = 0
        self.every = every_ms

    def tick(self, ms):
        self.at += ms
        if self.at < self.every:
            return
        # Live data after a collection: what the firmware really holds, not the garbage that
        # waits for the next automatic collection.
        self.at = 0
        gc.collect()
        used = hal.heap_used()
        if used > self.peak:
            self.peak = used
        log("I heap live", used, "peak", self.peak, "free", gc.mem_free())


class SiteTask:
    """The site logic's step: readings in, events and a state out. It runs right after each bus
    poll that brought new values, so a change is judged when its reading arrives, and on its own
    every SITE_TICK_MS for what goes by the clock alone (the start timeout, fuel, test runs)."""

    def __init__(self, site, session, site_id, sup, heap, commands=None, exercise=None):
        self.site = site
        self.session = session
        self.site_id = site_id
        self.sup = sup
        self.heap = heap
        self.commands = commands
        self.exercise = exercise
        self.last = None
        self.failed = False

    def step(self):
        site = self.site
        now = hal.epoch()
        for etype, data in site.update(now, time.ticks_ms()):
            log("I", self.site_id, "event", etype, data)
            self.session.event(now, etype, data)
        if self.exercise is not None:
            self.exercise.tick(now)  # measure a test run (before it may end below), or the schedule
        if self.commands is not None:
            self.commands.tick(now)  # a remote run: local control wins, a test run ends
        d = site.discrete()
        if d != self.last:
            self.last = d
            self.session.state_changed()

    def after_poll(self):
        """The step from a bus owner's task. A failure here must not take the bus down with
        it: it is logged once, and the site loop's own step meets it too, so the supervisor
        names the site task as the one that failed (sot/supervisor.py)."""
        try:
            self.step()
        except Exception as e:  # noqa: BLE001
            if not self.failed:
                self.failed = True
                log("E site: step after a poll failed:", repr(e))

    async def run(self):
        while True:
            self.sup.alive("site")
            self.step()
            self.heap.tick(SITE_TICK_MS)
            await asyncio.sleep_ms(SITE_TICK_MS)


class PanelTask:
    """Owns the display and the buttons: ack (the crisis message), shop (open/closed), next
    (page). Runs without any network: everything it shows comes from the site and flash."""

    def __init__(self, cfg, site, session, crisis, flash, sup, health, exercise=None):
        from sot.panel import Panel

        self.exercise = exercise  # the last test run on the details page
        self.site = site
        self.session = session
        self.crisis = crisis
        self.flash = flash
        self.sup = sup
        self.safe = health["safe"]
        self.buttons = hal.Buttons()
        pcfg = cfg.get("panel") or {}
        self.panel = Panel(hal.display(pcfg), pcfg.get("language", "sv"))
        self.page = 0
        self.idle_ms = 0
        self.shown = None  # the crisis message id last seen, to jump to a new severe one
        self.key = None
        self.frames = 0
        self.error = None  # why the last frame fell back to "no data", if it did

    def press(self, name, now):
        # On the console: the commissioning checklist sees each button arrive
        # (docs/commissioning.md)
        log("I panel: button", name)
        self.idle_ms = 0
        if name == "next":
            self.page = (self.page + 1) % PAGES
        elif name == "ack":
            m = self.crisis.acknowledge(now)
            if m is not None:
                log("I panel: crisis message", m["id"], "acknowledged")
                self.session.crisis_ack(m["id"])
        elif name == "shop":
            site = self.site
            site.shop_open = not site.shop_open
            self.flash.write("shop", b"1" if site.shop_open else b"0")
            etype = "shop_opened" if site.shop_open else "shop_closed"
            log("I panel:", etype)
            self.session.event(now, etype, {})

    def view(self, now):
        site = self.site
        cur = self.crisis.current(now)
        if cur is not None and cur["id"] != self.shown:
            self.shown = cur["id"]
            if cur["severity"] == "severe" and cur["acked"] is None:
                self.page = 1  # a severe new message takes the screen until acknowledged
                self.idle_ms = 0
        # The message page shows no site data: a long message needs that heap for its lines.
        want = self.page != 1 or self.panel.mono
        snap = site.snapshot(now) if site.mode is not None and want else None
        return {"now": now, "page": self.page, "link": "ok" if self.session.connected else "down",
                "safe_mode": self.safe, "shop_open": site.shop_open, "snap": snap,
                "crisis": self.crisis.view(cur), "crisis_count": len(self.crisis.active(now)),
                "exercise": None if self.exercise is None else (self.exercise.last or ())}

    async def run(self):
        while True:
            self.sup.alive("panel")
            now = hal.epoch()
            for name in self.buttons.poll():
                self.press(name, now)
            self.idle_ms += PANEL_TICK_MS
            if self.idle_ms >= PANEL_IDLE_MS and self.page:
                self.page = 0
            cur = self.crisis.current(now)
            fuel = self.site.fuel
            # Redraw when something the clerk sees changes (the clock shows minutes).
            key = (self.page, self.session.connected, self.site.shop_open, self.site.discrete(),
                   None if cur is None else (cur["id"], cur["ts"], cur["acked"]),
                   len(self.crisis.msgs), None if fuel.pct is None else int(fuel.pct), now // 60,
                   None if self.exercise is None else self.exercise.last)
            if key != self.key:
                self.key = key
                if not self.panel.render(self.view(now)) and self.panel.error != self.error:
                    log("E panel: fallback screen:", self.panel.error)  # once per new cause
                self.error = self.panel.error
                self.frames += 1
                gc.collect()  # a frame leaves ~8 KiB of garbage: free it before it fragments
            await asyncio.sleep_ms(PANEL_TICK_MS)


def run(cfg, boot, reset, health):
    flash = hal.Flash()
    devices = {}
    for d in cfg["devices"]:
        devices[d["name"]] = Device(d)
    site = Site(cfg, devices)
    site.shop_open = flash.read("shop") != b"0"
    site.safe_mode = health["safe"]
    crisis = Crisis(flash, log=log)
    commands = None
    exercise = None
    keyed = bool(cfg["mqtt"].get("cmd_key"))
    if keyed or cfg.get("exercise"):
        # Only a controller given a command key or a test-run schedule loads the command and
        # test-run code (docs/commands.md): on the unix port the modules' bytecode sits in the
        # heap. Without a key it takes no commands: only its own schedule starts the set.
        from sot.command import Commands

        commands = Commands(cfg, flash, site, log=log)
    session = Session(cfg, hal, boot, reset, site, log=log, crisis=crisis, health=health,
                      commands=commands if keyed else None)
    if commands is not None:
        from sot.exercise import Exercise

        exercise = Exercise(cfg, flash, site, commands, session.event, log=log)
    gc.collect()  # the journal's scan of flash leaves garbage between the session's objects
    if health["safe"]:
        log("W supervisor: SAFE MODE after", health["resets"], "watchdog resets; hung:",
            health["hung"], "- left out:", health["skip"])
        session.event(hal.epoch(), "safe_mode",
                      {"resets": health["resets"], "hung": health["hung"]})
    sup = Supervisor(hal.Watchdog(WDT_MS), flash, safe=health["safe"], resets=health["resets"],
                     log=log)
    heap = Heap(cfg.get("heap_log_ms") or HEAP_LOG_MS)  # the memory soak samples more often

    # A device's change of availability reaches MQTT through the site loop, which turns it into
    # events and a state in one step: publishing from the bus callback would send a state whose
    # mode was computed before the change.
    steps = SiteTask(site, session, cfg["site"], sup, heap, commands, exercise)
    owners = []
    for b in cfg["buses"]:
        uart = hal.Uart(b["port"], b["baud"])
        on_bus = [devices[d["name"]] for d in cfg["devices"] if d["bus"] == b["name"]]
        owners.append(BusOwner(b, on_bus, uart, log=log))
        owners[-1].after_poll = steps.after_poll
        if commands is not None and site.genset in on_bus:
            commands.owner = owners[-1]  # the genset's bus owner makes the command's writes
    panel = PanelTask(cfg, site, session, crisis, flash, sup, health, exercise)

    async def main():
        for o in owners:
            name = "bus:" + o.name
            o.checkin = _checkin(sup, name)
            sup.start(name, o.run, LIMIT_MS["bus"])
        sup.start("site", steps.run, LIMIT_MS["site"])
        sup.start("panel", panel.run, LIMIT_MS["panel"])
        if "telemetry" not in health["skip"]:
            session.checkin = _checkin(sup, "telemetry")
            sup.start("telemetry", session.run, LIMIT_MS["telemetry"])
        await sup.run()

    gc.collect()
    # Collect early (a quarter of the free heap allocated since the last collection) rather
    # than when the heap is exhausted: garbage left lying around splits the free space.
    gc.threshold(gc.mem_free() // 4)
    log("I heap live at start", hal.heap_used(), "free", gc.mem_free())
    asyncio.run(main())


def _checkin(sup, name):
    def f():
        sup.alive(name)

    return f
