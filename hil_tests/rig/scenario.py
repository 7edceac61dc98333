"""Plant physics: the grid, and a genset whose controller behaves like a DSE AMF module.

Stepped by the plant every `plant.tick_s` (~100 ms) in the plant's event loop. The scenario
methods (`grid_lost`, `grid_restored`, `fail_next_start`, `set_control_mode`) only record what
should happen; the next step applies it, so they are safe to call from any thread.

Automatic mains failure sequence, as a DSE 7310 runs it in auto mode (delays are constructor
parameters, in real seconds; the DSE defaults are longer):

    grid lost ── start_delay_s ──> starting ── crank_s ──> running
                                       └── failed start ──> stopped (latched until the grid
                                                            returns or the mode is changed)
    grid back ── return_delay_s ──> cooling ── cooldown_s ──> stopped
                                       └── grid lost again ──> running (takes the load back)

- Grid lost: every grid meter (kind "grid_meter") reads 0 V, 0 Hz, 0 W and the genset's mains
  sensing 0 V, 0 Hz; the values from before the loss come back with the grid.
- Only "auto" starts on grid loss; "manual" (and test/config) leaves the engine as it is; "off"
  stops it at once. The mode is read from the genset's control_mode register on every step, so
  `plant.set("genset", "control_mode", ...)` works as well as `set_control_mode()`.
- While the engine turns (running, cooling) fuel drains at
  burn_lph * time_scale / tank_litres * 100 % per real hour and run hours advance time_scale
  times faster than real time (`time_scale` 600 in the demo: an hour of running in 6 s). An
  empty tank stops the engine, and a start with an empty tank fails.
- Cranking drags engine speed to `crank_rpm` and the battery down by `crank_drop_v`.

Values written to fuel_level and run_hours from outside (a test setting the tank to 5 %) are
taken over on the next step.
"""

from __future__ import annotations

from typing import Any

from gateway.config import Site

from .plant import Plant

GRID_METER_POINTS = ("voltage_l1", "voltage_l2", "voltage_l3", "frequency", "total_power")
GENSET_MAINS_POINTS = ("mains_voltage_l1", "mains_frequency")
ENGINE_STATES = ("stopped", "starting", "running", "cooling")


class PlantPhysics:
    def __init__(self, plant: Plant, site: Site | None = None, time_scale: float = 1.0, *,
                 start_delay_s: float = 2.0, crank_s: float = 3.0, return_delay_s: float = 2.0,
                 cooldown_s: float = 5.0, gen_voltage: float = 230.0, gen_frequency: float = 50.0,
                 rated_rpm: float = 1500.0, crank_rpm: float = 250.0,
                 crank_drop_v: float = 4.0, load_pct: float = 50.0) -> None:
        self.plant = plant
        self.site = site or plant.site
        self.time_scale = time_scale
        self.start_delay_s = start_delay_s
        self.crank_s = crank_s
        self.return_delay_s = return_delay_s
        self.cooldown_s = cooldown_s
        self.gen_voltage = gen_voltage
        self.gen_frequency = gen_frequency
        self.rated_rpm = rated_rpm
        self.crank_rpm = crank_rpm
        self.crank_drop_v = crank_drop_v
        gensets = [d.name for d in self.site.devices if d.profile.kind == "genset"]
        if not gensets:
            raise ValueError(f"site '{self.site.id}' has no genset device")
        self.genset = gensets[0]
        self.grid_meters = [d.name for d in self.site.devices if d.profile.kind == "grid_meter"]
        g = self.site.genset
        # The shop's load while on backup, and what the set burns at it: from the site's burn
        # curve when it has one (the firmware estimates the rate from the same curve and the
        # load it reads), else its nominal burn.
        self.load_kw = g["rated_kw"] * load_pct / 100
        curve = g.get("burn_curve")
        lph = _interpolate(curve, load_pct) if curve else g["burn_lph"]
        # Percent of the tank burnt per second of engine time.
        self._burn_pct_s = lph / g["tank_litres"] * 100 / 3600

        # Requests from the scenario methods (single assignments: thread-safe).
        self._grid_wanted = True
        self._fail_next = False
        self._reset_latch = False
        # State owned by step().
        self._grid = True
        self._grid_snapshot: dict[tuple[str, int, int], list[int]] = {}
        state = self._genset_get("engine_state")
        self._state = "running" if state == "running" else "stopped"
        self._failed = False
        self._start_due: float | None = None
        self._crank_end = 0.0
        self._return_due: float | None = None
        self._cool_end = 0.0
        self._battery_before_crank: Any = None
        self._last: float | None = None
        self._fuel = self._genset_get("fuel_level")
        self._fuel_raw = self._raw("fuel_level")
        self._run_s = self._run_seconds()
        self._run_raw = self._raw("run_hours")
        if self._state == "running":
            self._engine_values(running=True)
        self._remote: str | None = None  # "start"/"stop" asked through the control registers
        self._remote_run = False  # running because of a remote start: the grid does not stop it
        plant.on_tick(self.step)
        plant.on_control(self._on_control)

    # --- scenario controls ---

    def grid_lost(self) -> None:
        self._grid_wanted = False

    def grid_restored(self) -> None:
        self._grid_wanted = True

    def fail_next_start(self, fail: bool = True) -> None:
        """The next start attempt cranks for crank_s, then gives up (fail to start)."""
        self._fail_next = bool(fail)

    def set_control_mode(self, mode: str) -> None:
        if mode not in ("auto", "manual", "off"):
            raise ValueError(f"control mode must be auto, manual or off, got {mode!r}")
        self.plant.set(self.genset, "control_mode", mode)
        self._reset_latch = True

    def _on_control(self, device: str, key: int) -> None:
        """A remote-control write the controller accepted (plant thread; a single assignment)."""
        ctl = self.plant.devices[device].device.profile.control or {}
        if device == self.genset and key == ctl.get("start"):
            self._remote = "start"
        elif device == self.genset and key == ctl.get("stop"):
            self._remote = "stop"

    # --- state ---

    @property
    def grid_present(self) -> bool:
        return self._grid

    @property
    def engine_state(self) -> str:
        return self._state

    @property
    def control_mode(self) -> str:
        mode = self._genset_get("control_mode")
        return mode if isinstance(mode, str) else "off"

    @property
    def failed_start(self) -> bool:
        """Latched after a failed start; cleared when the grid returns or the mode is set."""
        return self._failed

    @property
    def fuel_level(self) -> float | None:
        """Percent, with more precision than the integer register; None while it reads n/a."""
        return self._fuel

    @property
    def run_hours(self) -> float:
        return self._run_s / 3600

    # --- the step ---

    def step(self, now: float) -> None:
        dt = 0.0 if self._last is None else max(0.0, now - self._last)
        self._last = now
        if self._reset_latch:
            self._reset_latch = False
            self._failed = False
        if self._grid_wanted != self._grid:
            self._apply_grid(self._grid_wanted)
        self._take_external_values()
        mode = self.control_mode
        auto = mode == "auto"
        state = self._state
        remote, self._remote = self._remote, None
        if remote == "start" and auto and state == "stopped":  # a remote start (Auto only)
            self._remote_run = True
            self._start_due = None
            self._crank(now)
            state = self._state
        elif remote == "stop" and self._remote_run and state in ("starting", "running"):
            self._remote_run = False
            self._cool_end = now + self.cooldown_s
            self._set_state("cooling")
            state = self._state
        if state == "stopped":
            if auto and not self._grid and not self._failed:
                if self._start_due is None:
                    self._start_due = now + self.start_delay_s
                elif now >= self._start_due:
                    self._start_due = None
                    self._crank(now)
            else:
                self._start_due = None
        elif mode == "off":
            self._stop()
        elif state == "starting":
            if now >= self._crank_end:
                self._end_crank()
        elif state == "running":
            if auto and self._grid and not self._remote_run:
                if self._return_due is None:
                    self._return_due = now + self.return_delay_s
                elif now >= self._return_due:
                    self._return_due = None
                    self._cool_end = now + self.cooldown_s
                    self._set_state("cooling")
            else:
                self._return_due = None
        elif state == "cooling":
            if not self._grid and not (self._remote_run or remote == "stop"):
                self._set_state("running")
            elif now >= self._cool_end:
                self._stop()
        if self._state in ("running", "cooling") and dt:
            self._burn(dt)

    def _apply_grid(self, present: bool) -> None:
        self._grid = present
        targets = [(m, p) for m in self.grid_meters for p in GRID_METER_POINTS]
        targets += [(self.genset, p) for p in GENSET_MAINS_POINTS]
        targets = [(d, p) for d, p in targets if self.plant.has_point(d, p)]
        if not present:
            for dev, name in targets:
                pt = self.plant.devices[dev].device.profile.point(name)
                key = (dev, pt.function, pt.address)
                self._grid_snapshot[key] = self.plant.get_raw(dev, pt.address, pt.function,
                                                              pt.count)
                self.plant.set(dev, name, 0)
        else:
            self._failed = False
            for (dev, fc, address), regs in self._grid_snapshot.items():
                self.plant.set_raw(dev, address, fc, regs)
            self._grid_snapshot.clear()

    def _crank(self, now: float) -> None:
        self._crank_end = now + self.crank_s
        self._set_state("starting")
        self._genset_set("engine_speed", self.crank_rpm)
        battery = self._genset_get("battery_voltage")
        self._battery_before_crank = battery
        if isinstance(battery, int | float):
            self._genset_set("battery_voltage", max(0.0, battery - self.crank_drop_v))

    def _end_crank(self) -> None:
        if self._battery_before_crank is not None:
            self._genset_set("battery_voltage", self._battery_before_crank)
            self._battery_before_crank = None
        if self._fail_next or (self._fuel is not None and self._fuel <= 0):
            self._fail_next = False
            self._failed = True
            self._stop()
        else:
            self._set_state("running")
            self._engine_values(running=True)

    def _stop(self) -> None:
        if self._battery_before_crank is not None:
            self._genset_set("battery_voltage", self._battery_before_crank)
            self._battery_before_crank = None
        self._start_due = self._return_due = None
        self._remote_run = False
        self._set_state("stopped")
        self._engine_values(running=False)

    def _burn(self, dt: float) -> None:
        engine_s = dt * self.time_scale
        if self._fuel is not None:
            self._fuel = max(0.0, self._fuel - self._burn_pct_s * engine_s)
            self._genset_set("fuel_level", self._fuel)
            self._fuel_raw = self._raw("fuel_level")
        self._run_s += engine_s
        if self.plant.has_point(self.genset, "run_hours"):
            self._genset_set("run_hours", self._run_s / 3600)
            self._run_raw = self._raw("run_hours")
        if self._fuel is not None and self._fuel <= 0:
            self._stop()

    def _take_external_values(self) -> None:
        if self._raw("fuel_level") != self._fuel_raw:
            self._fuel = self._genset_get("fuel_level")
            self._fuel_raw = self._raw("fuel_level")
        if self._raw("run_hours") != self._run_raw:
            self._run_s = self._run_seconds()
            self._run_raw = self._raw("run_hours")

    # --- register helpers (tolerate genset profiles without some points) ---

    def _set_state(self, state: str) -> None:
        self._state = state
        self._genset_set("engine_state", state)

    def _engine_values(self, running: bool) -> None:
        self._genset_set("engine_speed", self.rated_rpm if running else 0)
        self._genset_set("gen_voltage_l1", self.gen_voltage if running else 0)
        self._genset_set("gen_frequency", self.gen_frequency if running else 0)
        self._genset_set("gen_power_kw", self.load_kw if running else 0)

    def _genset_set(self, point: str, value: Any) -> None:
        if self.plant.has_point(self.genset, point):
            self.plant.set(self.genset, point, value)

    def _genset_get(self, point: str) -> Any:
        if self.plant.has_point(self.genset, point):
            return self.plant.get(self.genset, point)
        return None

    def _raw(self, point: str) -> list[int] | None:
        if not self.plant.has_point(self.genset, point):
            return None
        pt = self.plant.devices[self.genset].device.profile.point(point)
        return self.plant.get_raw(self.genset, pt.address, pt.function, pt.count)

    def _run_seconds(self) -> float:
        hours = self._genset_get("run_hours")
        return float(hours) * 3600 if isinstance(hours, int | float) else 0.0


def _interpolate(curve: list[list[float]], x: float) -> float:
    if x <= curve[0][0]:
        return curve[0][1]
    for (x0, y0), (x1, y1) in zip(curve, curve[1:], strict=False):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return curve[-1][1]
