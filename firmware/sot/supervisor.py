# The supervisor: feeds the hardware watchdog only while every task checks in.
#
# Each long-running task (a bus owner, the site loop, the panel, the telemetry session) calls
# `alive(name)` once per round; each has its own allowance (`limit_ms`), since a bus round with
# silent devices or an MQTT reconnect legitimately takes seconds. When a task stays silent past
# its allowance, or ends with an exception, the supervisor writes its name to flash (`hung`) and
# stops feeding: the watchdog then resets the board within its timeout. A task that blocks the
# whole event loop stops the supervisor too, and the watchdog bites just the same, with no name.
#
# Repeated resets must not become a reset loop (fault scenario P3). `boot_health()` counts watchdog
# resets in a row; from SAFE_AFTER of them the controller starts in safe mode: the panel and the
# polling keep running, the task that hung is left out when it is not one of them (when the
# culprit is unknown, the network session, the usual suspect, is left out), and a task that
# hangs in safe mode is restarted in place instead of resetting the board. HEALTHY_MS without a
# problem clears the count; safe mode itself lasts until the next reset or power-on.
import asyncio
import json
import time

WDT_MS = 8000
TICK_MS = 1000
SAFE_AFTER = 3
HEALTHY_MS = 600000
CORE = ("site", "panel")  # plus every "bus:<name>": never left out


def is_core(name):
    return name in CORE or name.startswith("bus:")


def boot_health(flash, reset):
    """Read and update the reset streak at start-up: {"resets", "hung", "safe", "skip"}."""
    resets = 0
    raw = flash.read("health")
    if raw:
        try:
            resets = int(json.loads(raw).get("resets", 0))
        except (ValueError, AttributeError, TypeError):
            resets = 0
    hung = None
    if reset == "wdt":
        resets += 1
        raw = flash.read("hung")
        hung = raw.decode() if raw else None
    else:
        resets = 0
    flash.write("health", json.dumps({"resets": resets}))
    flash.write("hung", b"")
    safe = resets >= SAFE_AFTER
    skip = ()
    if safe:
        skip = ("telemetry",) if hung is None or hung == "telemetry" else ()
    return {"resets": resets, "hung": hung, "safe": safe, "skip": skip}


class Supervisor:
    def __init__(self, wdt, flash, safe=False, resets=0, log=print):
        self.wdt = wdt
        self.flash = flash
        self.safe = safe
        self.resets = resets
        self.log = log
        self.tasks = {}  # name -> [last check-in ticks, limit_ms, factory, task]
        self.late = None
        self.restarts = 0
        self._healthy_ms = 0

    def alive(self, name):
        t = self.tasks.get(name)
        if t is not None:
            t[0] = time.ticks_ms()

    def start(self, name, factory, limit_ms):
        """Run `factory()` (a coroutine function) as a supervised task."""
        entry = self.tasks.get(name)
        if entry is None:
            entry = self.tasks[name] = [0, limit_ms, factory, None]
        entry[0] = time.ticks_ms()
        entry[3] = asyncio.create_task(self._guard(name, factory))

    async def _guard(self, name, factory):
        try:
            await factory()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 -- logged; the missing check-ins do the rest
            self.log("E supervisor: task", name, "died:", repr(e))
        # A task that ends stops checking in: handled as a hang.
        self.tasks[name][0] = time.ticks_add(time.ticks_ms(), -self.tasks[name][1] - 1)

    def check(self, now):
        """One round: the first task past its allowance, or None when all are well."""
        for name, t in self.tasks.items():
            if time.ticks_diff(now, t[0]) > t[1]:
                return name
        return None

    def step(self, now):
        """Feed or not; in safe mode restart a stuck task. Returns the late task or None."""
        late = self.check(now)
        if late is None:
            self.wdt.feed()
            self.late = None
            if self.resets:
                self._healthy_ms += TICK_MS
                if self._healthy_ms >= HEALTHY_MS:
                    self.resets = 0
                    self.flash.write("health", json.dumps({"resets": 0}))
                    self.log("I supervisor: healthy for", HEALTHY_MS // 1000,
                             "s; reset count cleared")
            return None
        self._healthy_ms = 0
        if self.safe:
            t = self.tasks[late]
            self.log("W supervisor: safe mode: restarting stuck task", late)
            if t[3] is not None:
                t[3].cancel()
            self.restarts += 1
            self.start(late, t[2], t[1])
            self.wdt.feed()
            return late
        if self.late is None:
            self.late = late
            self.log("E supervisor: task", late, "silent past", self.tasks[late][1], "ms: "
                     "no more watchdog feeds, the board resets")
            self.flash.write("hung", late.encode())
        return late

    async def run(self):
        while True:
            self.step(time.ticks_ms())
            await asyncio.sleep_ms(TICK_MS)
