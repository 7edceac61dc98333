# Generator fuel: litres in the tank, the burn rate, hours left and when to refuel.
#
# The burn rate comes from the best source that is valid right now:
#   "ecu"     the engine ECU's fuel rate (L/h), read from the genset controller   -> confidence high
#   "load"    the genset's electrical load through the site's load curve (L/h at
#             25/50/75/100 % of rated kW, interpolated)                           -> medium
#   "level"   the tank level falling over at least LEVEL_WINDOW_S of running       -> medium
#   "nominal" the site's configured burn at its typical backup load               -> low
# and is smoothed (exponential, time constant SMOOTH_S) so that one odd reading does not swing
# "hours left" by a day. While the set is not running, hours left is what the tank would last at
# the nominal burn: the figure a coordinator plans with before an outage.
#
# Tank senders are least trustworthy near empty and full (a float touching the bottom or the
# roof), so a level outside the trusted band is shown but never used to estimate a rate, and it
# lowers the confidence. A level that moves by more than jump_pct between two readings is not
# burn: up means the tank was refilled (event `refuelled`), down means the sender jumped, or fuel
# was lost (event `fuel_jump`); either way the level window starts again.

LEVEL_WINDOW_S = 1800
SMOOTH_S = 600


def interpolate(curve, x):
    """Piecewise-linear y(x) through [[x, y], ...] (x ascending); flat beyond the ends."""
    if x <= curve[0][0]:
        return curve[0][1]
    for i in range(1, len(curve)):
        x1, y1 = curve[i]
        if x <= x1:
            x0, y0 = curve[i - 1]
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return curve[-1][1]


class Fuel:
    def __init__(self, gen_cfg):
        self.cfg = gen_cfg  # read on use: the site config is the one place for these numbers
        self.pct = None
        self.litres = None
        self.rate = None  # smoothed L/h while running
        self.src = None
        self._t = None  # time of the last rate update
        self._last_pct = None
        self._first = None  # (t, litres): the first level change seen while running
        self._change = None  # (t, litres): the latest level change

    def _band(self):
        return self.cfg.get("fuel_trusted_pct") or (5, 95)

    def _raw_rate(self, running, ecu_lph, load_kw, now):
        if not running:
            return None, None
        if ecu_lph is not None and ecu_lph > 0:
            return ecu_lph, "ecu"
        curve = self.cfg.get("burn_curve")
        if load_kw is not None and curve:
            return interpolate(curve, load_kw * 100 / self.cfg["rated_kw"]), "load"
        # A sender reads in steps (1 % of a 400 L tank is an hour of burn), so the rate is taken
        # between level *changes*, never from a change to "now", which would saw-tooth.
        a = self._first
        b = self._change
        nominal = self.cfg["burn_lph"]
        if a is not None and b is not None and b[0] - a[0] >= LEVEL_WINDOW_S:
            r = (a[1] - b[1]) * 3600 / (b[0] - a[0])
            if 0 < r < nominal * 4:
                return r, "level"
        return nominal, "nominal"

    def update(self, now, pct, running, ecu_lph=None, load_kw=None, events=None):
        """Take this step's readings; appends refuel/jump events to `events`."""
        lo, hi = self._band()
        trusted = pct is not None and lo <= pct <= hi
        last = self._last_pct
        jumped = False
        if (pct is not None and last is not None
                and abs(pct - last) >= self.cfg.get("fuel_jump_pct", 10)):
            jumped = True
            kind = "refuelled" if pct > last else "fuel_jump"
            if events is not None:
                events.append((kind, {"from": _r(last), "to": _r(pct),
                                      "litres": _r((pct - last) / 100 * self.cfg["tank_litres"])}))
        self.pct = pct
        litres = None if pct is None else pct / 100 * self.cfg["tank_litres"]
        self.litres = litres
        # (litres is None only when pct is, which `trusted` already excludes.)
        if not running or not trusted or jumped or litres is None:
            self._first = self._change = None
        elif last is not None and pct != last:
            if self._first is None:
                self._first = (now, litres)
            else:
                self._change = (now, litres)
        if pct is not None:
            self._last_pct = pct
        raw, src = self._raw_rate(running, ecu_lph, load_kw, now)
        if raw is None:
            self.rate = None
            self.src = None
            self._t = None
            return
        if self.rate is None or self._t is None:
            self.rate = raw
        else:
            dt = now - self._t
            if dt > 0:
                self.rate += (raw - self.rate) * dt / (SMOOTH_S + dt)
        self._t = now
        self.src = src

    def snapshot(self, now, running, why=None):
        if self.pct is None:
            return {"pct": None, "litres": None, "burn_lph": None, "hours_left": None,
                    "refuel_by": None, "confidence": None, "src": None, "why": why or "invalid"}
        rate = self.rate if running and self.rate else self.cfg["burn_lph"]
        src = self.src if running and self.rate else "nominal"
        hours = self.litres / rate
        conf = "high" if src == "ecu" else "medium" if src in ("load", "level") else "low"
        lo, hi = self._band()
        if not (lo <= self.pct <= hi) and conf != "low":
            conf = "medium" if conf == "high" else "low"
        return {"pct": _r(self.pct), "litres": _r(self.litres), "burn_lph": _r(rate),
                "hours_left": _r(hours),
                "refuel_by": int(now + hours * 3600) if running else None,
                "confidence": conf, "src": src}


def _r(v):
    # One decimal: the nearest double to the tenth (MicroPython may print it with noise digits).
    if v is None:
        return None
    return int(v * 10 + (0.5 if v >= 0 else -0.5)) / 10
