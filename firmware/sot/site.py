# Site logic: turns device readings into what a shop clerk and the municipality need to know
# (grid, generator, fuel, site mode, capability) and the events between those states.
#
# Pure logic: `update(now, ms)` reads the Device snapshots kept by the bus owners and returns the
# events of this step; the clocks are passed in, so tests drive it with made-up times. Nothing
# here touches hardware or the network.
import time

from sot.fuel import Fuel, _r

GRID_LOST_V = 50  # below this on every measured phase the grid is absent, not just out of limits
MAX_ALARMS = 6
PUMP_CAN_SELL = ("idle", "calling", "authorized", "fuelling")
# The grid debounce is measured between the times of the meter's readings, which the bus takes
# once a poll period: this much early still counts, so that a reply a few milliseconds quicker
# than the one that first showed the change (a retry, the scheduler) does not cost a whole period.
DEBOUNCE_SLACK_MS = 200


class Site:
    def __init__(self, cfg, devices):
        self.cfg = cfg
        self.grid_cfg = cfg["grid"]
        self.gen_cfg = cfg["genset"]
        self.devices = devices  # name -> bus.Device
        self.meter = self._first("grid_meter")
        self.genset = self._first("genset")
        self.tanks_dev = self._first("tank_gauge")
        self.pumps_dev = self._first("pump")
        # grid: committed state, the candidate waiting out the debounce, and when things began
        self.grid = None
        self.grid_since = None
        self._grid_cand = None
        self._grid_cand_since = None
        self._grid_cand_ms = 0  # ticks_ms of the reading that first showed the candidate
        self._debounce_ms = int(self.grid_cfg["debounce_s"] * 1000) - DEBOUNCE_SLACK_MS
        self.grid_v = None
        self.grid_f = None
        self.grid_src = None
        self.outage_start = None
        # generator
        self.gen = None
        self.gen_since = None
        self.failed_to_start = False
        self.ran = False  # the set reached running in this outage: it did start
        self.ready = None  # remote start possible: auto mode and no shutdown alarm
        self._max_run_told = False
        self.fuel = Fuel(self.gen_cfg)
        self.reserve = cfg.get("station", {}).get("reserve_litres", 0)
        self.mode = None
        # set by the app: the shop's open/closed button (kept on flash) and safe mode
        self.shop_open = True
        self.safe_mode = False
        self._cap = None
        self._dev_status = {}
        self._faults = {}

    def _first(self, kind):
        for d in self.devices.values():
            if d.kind == kind:
                return d
        return None

    # --- grid ----------------------------------------------------------------------------------

    def _grid_reading(self):
        """(voltages, frequency, source, device) from the grid meter, else the genset's mains
        sensing."""
        m = self.meter
        if m is not None and m.online:
            vs = [m.get(k) for k in ("voltage_l1", "voltage_l2", "voltage_l3")]
            vs = [v for v in vs if v is not None]
            f = m.get("frequency")
            if vs and f is not None:
                return vs, f, "grid", m
        g = self.genset
        if g is not None and g.online:
            v = g.get("mains_voltage_l1")
            f = g.get("mains_frequency")
            if v is not None and f is not None:
                return [v], f, "genset", g
        return None, None, None, None

    def _classify(self, vs, f):
        c = self.grid_cfg
        if vs is None:
            return "unknown"
        if max(vs) < GRID_LOST_V:
            return "lost"
        lo = c["nominal_v"] * (1 - c["tolerance_pct"] / 100)
        hi = c["nominal_v"] * (1 + c["tolerance_pct"] / 100)
        for v in vs:
            if v < lo or v > hi:
                return "rejected"
        if f < c["f_min"] or f > c["f_max"]:
            return "rejected"
        return "ok"

    def _update_grid(self, now, ms, events):
        vs, f, src, dev = self._grid_reading()
        # The reading's own time, so the debounce does not depend on when this step runs; a
        # device the bus has not read (tests set values directly) has none: the step's time.
        read_ms = ms if dev is None or dev.read_ms is None else dev.read_ms
        self.grid_v = vs[0] if vs else None
        self.grid_f = f
        self.grid_src = src
        raw = self._classify(vs, f)
        if self.grid is None or raw == "unknown":
            # Start-up (or meter silent): take the reading as it is, with no event, so a reboot
            # during an outage does not announce a false "restored" or a second "lost".
            if raw != self.grid:
                self.grid = raw
                self.grid_since = now
                if raw in ("lost", "rejected") and self.outage_start is None:
                    self.outage_start = now
                    self.ran = False
            self._grid_cand = None
            return
        if raw == self.grid:
            self._grid_cand = None
            return
        if raw != self._grid_cand:
            self._grid_cand = raw
            self._grid_cand_since = now
            self._grid_cand_ms = read_ms
        held = time.ticks_diff(read_ms, self._grid_cand_ms)
        if held < self._debounce_ms:
            return  # a flicker until the readings have shown it for the debounce time
        old = self.grid
        self.grid = raw
        self.grid_since = self._grid_cand_since
        self._grid_cand = None
        was_down = old in ("lost", "rejected")
        is_down = raw in ("lost", "rejected")
        if is_down and not was_down:
            self.outage_start = self.grid_since
            self.failed_to_start = False
            self.ran = False
            events.append(("grid_lost", {"state": raw, "v": self.grid_v, "f": f}))
        elif raw == "ok" and was_down:
            start = self.outage_start
            self.outage_start = None
            self.failed_to_start = False
            outage = None if start is None else int(self.grid_since - start)
            events.append(("grid_restored", {"v": self.grid_v, "f": f, "outage_s": outage}))

    # --- generator -----------------------------------------------------------------------------

    def _update_gen(self, now, events):
        g = self.genset
        state = g.get("engine_state") if g is not None and g.online else None
        if state is None:
            state = "unknown"
        if self.failed_to_start and state != "running":
            state = "fault"
        if state != self.gen:
            old = self.gen
            self.gen = state
            prev_since = self.gen_since
            self.gen_since = now
            if state == "running" and self.outage_start is not None:
                self.ran = True
            if state == "running" and old is not None:
                after = None if self.outage_start is None else int(now - self.outage_start)
                events.append(("gen_running", {"after_s": after}))
            elif old == "running":
                run = None if prev_since is None else int(now - prev_since)
                events.append(("gen_stopped", {"run_s": run}))
        down = self.grid in ("lost", "rejected")
        # A set that ran in this outage did start. When its controller's return delay is shorter
        # than our grid debounce it is already cooling down while the grid still counts as lost
        # here: that is a normal grid return, not a failure to start.
        if (down and not self.failed_to_start and not self.ran and self.gen != "running"
                and self.outage_start is not None
                and now - self.outage_start >= self.gen_cfg["start_timeout_s"]):
            self.failed_to_start = True
            mode = g.get("control_mode") if g is not None else None
            events.append(("gen_failed_to_start", {"state": self.gen, "mode": mode,
                                                   "waited_s": int(now - self.outage_start)}))
            self.gen = "fault"
            self.gen_since = now
        self._update_ready(events)
        max_s = self.gen_cfg.get("max_runtime_h", 72) * 3600
        if self.gen == "running":
            run = now - self.gen_since
            if run >= max_s and not self._max_run_told:
                self._max_run_told = True
                events.append(("gen_max_runtime", {"run_s": int(run),
                                                   "max_h": self.gen_cfg.get("max_runtime_h", 72)}))
        else:
            self._max_run_told = False

    def _alarm_worst(self):
        g = self.genset
        worst = None
        for p in g.points:
            name = p[0]
            if name.startswith("alarm_"):
                sev = g.get(name)
                if sev in ("shutdown", "trip"):
                    return sev
                if sev == "warning":
                    worst = sev
        return worst

    def _update_ready(self, events):
        # The set left in manual or off after a service visit is the most common reason a backup
        # never starts: only auto starts on a mains failure. A latched shutdown alarm blocks a
        # start just the same. Unknown (controller silent) is None, never "ready".
        g = self.genset
        if g is None or not g.online:
            ready, why = None, None
        else:
            mode = g.get("control_mode")
            if mode is None:
                ready, why = None, None
            elif mode != "auto":
                ready, why = False, "mode"
            elif self._alarm_worst() in ("shutdown", "trip"):
                ready, why = False, "alarm"
            elif g.get("can_remote_start") == 0:
                # A decoded bit is the integer 0 or 1 (None when unknown), never False: an
                # identity test against False would never match.
                ready, why = False, "capability"
            else:
                ready, why = True, None
        if ready is None or ready == self.ready:
            if ready is not None:
                self.ready = ready
            return
        if self.ready is not None:
            if ready:
                events.append(("gen_ready", {"mode": g.get("control_mode")}))
            else:
                events.append(("gen_not_ready", {"mode": g.get("control_mode"), "why": why}))
        self.ready = ready

    # --- mode ----------------------------------------------------------------------------------

    def _update_devices(self, events):
        # Availability and sensor faults: an event when they change, none for the first look.
        for d in self.devices.values():
            st = d.status()
            if st == "unknown":
                continue
            was = self._dev_status.get(d.name)
            if was is not None and was != st:
                if st == "mismatch":
                    events.append(("device_mismatch", {"device": d.name, "point": d.mismatch[0],
                                                       "got": d.mismatch[1]}))
                else:
                    events.append(("device_" + st, {"device": d.name}))
            self._dev_status[d.name] = st
            seen = self._faults.get(d.name)
            if seen is None:
                seen = self._faults[d.name] = set()
            for name in d.faults:
                if name not in seen:
                    events.append(("sensor_fault", {"device": d.name, "point": name}))
            for name in seen:
                if name not in d.faults and d.online:
                    events.append(("sensor_ok", {"device": d.name, "point": name}))
            self._faults[d.name] = set(d.faults)

    def _compute_mode(self):
        any_offline = False
        for d in self.devices.values():
            if d.online is False:
                any_offline = True
        if self.grid in ("lost", "rejected"):
            if self.gen == "running":
                return "on_backup"
            if self.failed_to_start or self.gen == "fault":
                return "backup_failed"
            return "grid_lost"
        if self.grid == "ok" and not any_offline:
            return "normal"
        return "degraded"

    def polled(self):
        """True once every device has been polled at least once (answered or not): before that
        the site's state is not known, and nothing is published or announced."""
        for d in self.devices.values():
            if d.online is None:
                return False
        return True

    def update(self, now, ms):
        """Advance the logic to `now` (epoch seconds; `ms` the monotonic ticks_ms of the same
        moment, which the grid debounce is counted on); returns [(event type, data), ...]."""
        events = []
        if self.mode is None and not self.polled():
            return events
        self._update_devices(events)
        self._update_grid(now, ms, events)
        self._update_gen(now, events)
        g = self.genset
        gon = g is not None and g.online
        self.fuel.update(now, g.get("fuel_level") if gon else None, self.gen == "running",
                         g.get("fuel_rate") if gon else None,
                         g.get("gen_power_kw") if gon else None, events)
        mode = self._compute_mode()
        if mode != self.mode:
            if self.mode is not None:
                events.append(("mode_changed", {"from": self.mode, "to": mode}))
            self.mode = mode
        cap = self._cap_discrete()
        if cap != self._cap:
            if self._cap is not None:
                events.append(("capability_changed", self.capability(now)))
            self._cap = cap
        return events

    # --- snapshot ------------------------------------------------------------------------------

    def power(self):
        return "grid" if self.grid == "ok" else "backup" if self.gen == "running" else \
            "unknown" if self.grid == "unknown" else "none"

    def tanks(self):
        """Station tanks: litres per product (None when the gauge cannot vouch for it)."""
        out = {}
        t = self.tanks_dev
        if t is not None:
            for p in t.points:
                name = p[0]
                if name.endswith("_litres"):
                    v = t.get(name) if t.online else None
                    out[name[:-7]] = None if v is None else int(v)
        return out

    def pumps(self):
        """{"available", "total", "products": {product: pumps that can sell}} or None."""
        pu = self.pumps_dev
        if pu is None or not pu.online:
            return None
        total = avail = 0
        products = {}
        for p in pu.points:
            name = p[0]
            if name.endswith("_state"):
                total += 1
                ok = pu.get(name) in PUMP_CAN_SELL
                if ok:
                    avail += 1
                prod = pu.get(name[:-6] + "_product")
                if prod is not None:
                    products[prod] = products.get(prod, 0) + (1 if ok else 0)
        return {"available": avail, "total": total, "products": products}

    def for_sale(self):
        """Litres that can be sold per product: needs power, a pump for it and stock above the
        reserve the pumps cannot draw. 0 = cannot sell; None = unknown."""
        out = {}
        power = self.power()
        pumps = self.pumps()
        silent = self.pumps_dev is not None and pumps is None  # configured but not answering
        for prod, litres in self.tanks().items():
            if power not in ("grid", "backup"):
                out[prod] = 0
            elif litres is None or silent:
                out[prod] = None
            elif pumps is not None and pumps["products"] and not pumps["products"].get(prod):
                out[prod] = 0
            elif pumps is not None and pumps["available"] == 0:
                out[prod] = 0
            else:
                out[prod] = max(0, litres - self.reserve)
        return out

    def _cap_discrete(self):
        sale = tuple(sorted(k for k, v in self.for_sale().items() if v))
        return (self.power(), self.shop_open, self._info_point(), sale)

    def _info_point(self):
        # The village's information point: the shop is open with power (its panel and signage
        # can show the municipality's messages).
        return self.shop_open and self.power() in ("grid", "backup")

    def capability(self, now):
        f = self.fuel.snapshot(now, self.gen == "running")
        return {"power": self.power(), "hours_left": f["hours_left"],
                "fuel_for_sale": self.for_sale(), "shop_open": self.shop_open,
                "info_point": self._info_point()}

    def discrete(self):
        """The values whose change triggers an immediate state publish."""
        g = self.genset
        mode = g.get("control_mode") if g is not None and g.online else None
        devs = tuple(d.status() for d in self.devices.values())
        return (self.mode, self.grid, self.gen, mode, self.ready, devs, self._cap, self.safe_mode)

    def snapshot(self, now):
        g = self.genset
        gon = g is not None and g.online
        grid = {"state": self.grid, "v": _r(self.grid_v), "f": _r(self.grid_f),
                "src": self.grid_src, "since": self.grid_since}
        if self.grid_v is None:
            grid["why"] = "offline"
        running = self.gen == "running"
        gen = {"state": self.gen, "mode": g.get("control_mode") if gon else None,
               "ready": self.ready if gon else None,
               "run_s": int(now - self.gen_since) if running and self.gen_since else None,
               "battery_v": _r(g.get("battery_voltage")) if gon else None,
               "run_hours": _r(g.get("run_hours")) if gon else None, "since": self.gen_since}
        if gon:
            # The worst first, at most MAX_ALARMS of them: a controller in a bad way can raise a
            # dozen at once, and the whole state must stay within the contract's 1 KiB.
            # An alarm point that could not be read (its page answered with an exception, or a
            # code the profile does not know) is unknown: with none known to be active the list
            # is null, never an empty "no active alarms"; `alarms_unknown` counts them.
            alarms = []
            more = 0
            unknown = 0
            for sev in ("trip", "shutdown", "warning", None):
                for p in g.points:
                    name = p[0]
                    if name.startswith("alarm_") and g.get(name) == sev:
                        if sev is None:
                            unknown += 1
                        elif len(alarms) < MAX_ALARMS:
                            alarms.append([name[6:], sev])
                        else:
                            more += 1
            gen["alarms"] = alarms if alarms or not unknown else None
            if more:
                gen["alarms_more"] = more
            if unknown:
                gen["alarms_unknown"] = unknown
        else:
            gen["why"] = "offline"
        fuel = self.fuel.snapshot(now, running, None if gon else "offline")
        pumps = self.pumps()
        if pumps is not None:
            del pumps["products"]
        devices = {}
        for d in self.devices.values():
            devices[d.name] = d.status()
        out = {"mode": self.mode, "grid": grid, "genset": gen, "fuel": fuel, "tanks": self.tanks(),
               "pumps": pumps, "devices": devices, "capability": self.capability(now)}
        if self.safe_mode:
            out["safe_mode"] = True
        return out
