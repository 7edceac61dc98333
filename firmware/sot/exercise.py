# Generator test runs (provkörning, docs/commands.md): the site's schedule run by the controller
# itself on its own clock (also with the link down), and the one result record of every test run,
# scheduled or commanded (`gen_test`).
#
# A run starts through the same path as the `gen_test` command (sot/command.py: preconditions
# checked here on the controller - Auto, remote start allowed, no latched shutdown - one writer
# on the bus, local control wins). While it runs this module measures it from the genset's
# readings; when it ends it emits ONE `exercise_done` event, journalled like every event, so a
# result made while the broker is away reaches the gateway later.
#
# The schedule (compiled by the host from the site's [exercise]): `every` "week" or "month" (the
# first such weekday of the month), `weekday` 0 = Monday, `at` minutes after local midnight
# (Europe/Stockholm, sot/localtime.py), `minutes`, `on_load`. A slot missed (controller off, grid
# down, the set busy) is caught up within CATCHUP_MIN; later it is left to the gateway's
# `exercise_overdue` alert. The day of the last slot taken is kept on flash, so a reboot during
# the window does not start a second run.
from sot import localtime
from sot.fuel import _r

LAST_FILE = "exslot"  # local day number of the last scheduled slot taken
RESULT_FILE = "exres"  # "<started> <pass|fail>" of the last run: the panel shows it after boot
CATCHUP_MIN = 60
CHECK_S = 20  # the schedule is looked at this often
STABLE_S = 30  # after reaching running, voltage and frequency must be in band within this
MAX_ALARMS = 6
EPOCH_MIN = 1577836800  # a clock before 2020 was never set: no schedule runs on it
_BAD = ("shutdown", "trip")


class Exercise:
    """`event(ts, type, data)` journals an event (the session's). Hooked into `commands`
    (sot.command.Commands), which calls begin() and end() for every test run."""

    def __init__(self, cfg, flash, site, commands, event, log=print):
        self.sched = cfg.get("exercise")
        self.flash = flash
        self.site = site
        self.cmds = commands
        self.event = event
        self.log = log
        self.run = None  # the measurement of the run in progress
        self.last = None  # (started, "pass"|"fail") of the last run
        self._check = 0
        commands.exercise = self
        raw = flash.read(RESULT_FILE)
        if raw:
            try:
                ts, res = raw.split()
                self.last = (int(ts), res.decode())
            except ValueError:
                pass  # never written whole: no last run to show

    # --- the schedule --------------------------------------------------------------------------

    def slot(self, now):
        """The local day number when a scheduled run is due at `now` and not yet taken."""
        s = self.sched
        if not s or now < EPOCH_MIN:
            return None
        y, m, d, hh, mm = localtime.local(now)
        day = localtime.days_from_civil(y, m, d)
        if (day + 3) % 7 != s["weekday"] or (s["every"] == "month" and d > 7):
            return None  # 1970-01-01 was a Thursday: (day + 3) % 7 is 0 on a Monday
        late = hh * 60 + mm - s["at"]
        if not 0 <= late < CATCHUP_MIN:
            return None
        taken = self.flash.read(LAST_FILE)
        if taken and taken == str(day).encode():
            return None
        return day

    def tick(self, now):
        """From the site loop, before the commands' tick: measure, or look at the schedule."""
        if self.run is not None:
            self._measure(now, self.run)
            return
        if now < self._check:
            return
        self._check = now + CHECK_S
        day = self.slot(now)
        if day is None:
            return
        site = self.site
        # The set busy with the real thing (grid down) or a run of its own: wait, in the window.
        if site.mode is None or site.grid != "ok" or site.gen not in ("stopped",) \
                or self.cmds.running is not None:
            return
        self.flash.write(LAST_FILE, str(day))
        s = self.sched
        self.begin(now, "schedule", None, s["minutes"], s["on_load"])
        why = self.cmds.test_run(now, s["minutes"], s["on_load"])
        self.log("I exercise: scheduled test run", "started" if why is None else "refused", why)
        if why is not None:
            self.end(now, why)  # not started: a failed run, the record says why (not in Auto...)

    # --- one run -------------------------------------------------------------------------------

    def begin(self, now, trigger, cid, minutes, on_load):
        self.run = {"trigger": trigger, "cmd": cid, "minutes": minutes, "on_load": bool(on_load),
                    "started": now, "start_s": None, "stable_s": None, "v_min": None,
                    "v_max": None, "f_min": None, "f_max": None, "load_kw": None,
                    "fuel_used_l": 0.0, "alarms": [], "bad": None, "t": None, "l0": None}

    def _band(self, v, f):
        g = self.site.grid_cfg
        tol = g["nominal_v"] * g["tolerance_pct"] / 100
        return (v is not None and f is not None and abs(v - g["nominal_v"]) <= tol
                and g["f_min"] <= f <= g["f_max"])

    def _measure(self, now, r):
        site = self.site
        g = site.genset
        if g is None or not g.online:
            return
        for p in g.points:
            name = p[0]
            if name.startswith("alarm_"):
                sev = g.get(name)
                if sev in ("warning", "shutdown", "trip"):
                    if name[6:] not in r["alarms"] and len(r["alarms"]) < MAX_ALARMS:
                        r["alarms"].append(name[6:])
                    if sev in _BAD and r["bad"] is None:
                        r["bad"] = name[6:]
        if r["l0"] is None:
            r["l0"] = site.fuel.litres
        if site.gen != "running":
            r["t"] = None
            return
        t0 = r["started"]
        if r["start_s"] is None:
            r["start_s"] = now - t0
        v = g.get("gen_voltage_l1")
        f = g.get("gen_frequency")
        if r["stable_s"] is None and self._band(v, f):
            r["stable_s"] = now - t0
        # Minimum and maximum from the moment the set is stable (or should have been).
        if r["stable_s"] is not None or now - t0 - r["start_s"] > STABLE_S:
            for k, x in (("v", v), ("f", f)):
                if x is not None:
                    lo, hi = r[k + "_min"], r[k + "_max"]
                    r[k + "_min"] = x if lo is None or x < lo else lo
                    r[k + "_max"] = x if hi is None or x > hi else hi
        kw = g.get("gen_power_kw")
        if kw is not None and (r["load_kw"] is None or kw > r["load_kw"]):
            r["load_kw"] = kw
        rate = site.fuel.rate  # L/h while running (the controller's, else the burn curve's)
        t = r["t"]
        if t is not None and now <= t:
            return  # the same instant again (or a clock set back): nothing to add
        if t is not None and rate:
            r["fuel_used_l"] += rate * (now - t) / 3600
        r["t"] = now

    def end(self, now, why):
        """The run is over: `why` None when it ran its minutes and was stopped, else the reason
        it ended early (the command's: local:mode:manual, local:stop, fault, no_start, ...)."""
        r = self.run
        if r is None:
            return
        self._measure(now, r)
        self.run = None
        early = why == "grid_lost"  # the grid failed and the set took over: judged as far as run
        if early:
            why = None
        g = self.site.grid_cfg
        tol = g["nominal_v"] * g["tolerance_pct"] / 100
        used = r["fuel_used_l"]
        l1 = self.site.fuel.litres
        if not used and r["l0"] is not None and l1 is not None and r["l0"] > l1:
            used = r["l0"] - l1  # no rate known: the level's fall
        if why is None:
            if r["start_s"] is None:
                why = "no_start"
            elif r["start_s"] > self.site.gen_cfg["start_timeout_s"]:
                why = "slow_start"
            elif r["stable_s"] is None:
                why = "unstable"
            elif r["bad"] is not None:
                why = "alarm:" + r["bad"]
            elif r["v_min"] is not None and (r["v_min"] < g["nominal_v"] - tol
                                             or r["v_max"] > g["nominal_v"] + tol):
                why = "voltage"
            elif r["f_min"] is not None and (r["f_min"] < g["f_min"] or r["f_max"] > g["f_max"]):
                why = "frequency"
            elif r["on_load"] and not r["load_kw"]:
                why = "no_load"
        result = "pass" if why is None else "fail"
        if early and why is None:
            why = "grid_lost"  # a pass, cut short by a real outage (the set is running on)
        data = {"trigger": r["trigger"], "cmd": r["cmd"], "minutes": r["minutes"],
                "on_load": r["on_load"], "started": r["started"], "start_s": r["start_s"],
                "stable_s": r["stable_s"], "v_min": _r(r["v_min"]), "v_max": _r(r["v_max"]),
                "f_min": _r2(r["f_min"]), "f_max": _r2(r["f_max"]), "load_kw": _r(r["load_kw"]),
                "fuel_used_l": _r(used), "alarms": r["alarms"], "result": result, "why": why}
        self.last = (r["started"], result)
        self.flash.write(RESULT_FILE, "%d %s" % self.last)
        self.log("I exercise: done", result, why)
        self.event(now, "exercise_done", data)


def _r2(v):
    return None if v is None else int(v * 100 + 0.5) / 100
