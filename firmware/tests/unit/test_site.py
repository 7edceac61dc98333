# Site logic, table-driven, under MicroPython: readings in, states and events out.
from sot.device import Device
from sot.site import Site

CFG = {
    "grid": {"nominal_v": 230.0, "tolerance_pct": 10.0, "f_min": 47.5, "f_max": 52.0,
             "debounce_s": 3.0},
    "genset": {"rated_kw": 20.0, "tank_litres": 400.0, "burn_lph": 4.0, "start_timeout_s": 30.0},
}


def make_site():
    meter = Device({"name": "grid", "kind": "grid_meter", "unit": 1, "blocks": [], "points": []})
    gen = Device({"name": "genset", "kind": "genset", "unit": 10, "blocks": [], "points": []})
    tank = Device({"name": "tank", "kind": "tank_gauge", "unit": 20, "blocks": [],
                   "points": [("diesel_litres",), ("petrol_litres",)]})
    for d in (meter, gen, tank):
        d.online = True
    tank.values.update({"diesel_litres": 5000, "petrol_litres": 0})
    gen.values.update({"engine_state": "stopped", "control_mode": "auto", "fuel_level": 50.0,
                       "mains_voltage_l1": 230.0, "mains_frequency": 50.0})
    site = Site(CFG, {"grid": meter, "genset": gen, "tank": tank})
    return site, meter, gen


def set_grid(meter, v, f=50.0):
    meter.values.update({"voltage_l1": v, "voltage_l2": v, "voltage_l3": v, "frequency": f})


def types(events):
    return [e[0] for e in events]


def step(site, t, ms=None):
    """One step at epoch second t; the monotonic clock in step with it unless given."""
    return site.update(t, int(t * 1000) if ms is None else ms)


def run(site, t0, t1, every=1):
    out = []
    t = t0
    while t <= t1:
        out += step(site, t)
        t += every
    return out


def test_normal_at_start_without_events():
    site, meter, gen = make_site()
    set_grid(meter, 231.0)
    assert step(site, 1000) == []
    assert site.mode == "normal" and site.grid == "ok"


def test_the_debounce_is_counted_between_the_readings_times():
    # The bus stamps each reading with the monotonic time it was asked for. The debounce runs
    # from the first reading that showed the loss to the one that has shown it for 3 s, however
    # often the step runs in between and whatever whole second the epoch clock shows.
    site, meter, gen = make_site()
    set_grid(meter, 231.0)
    meter.read_ms = 50_000
    step(site, 1000, 50_010)
    set_grid(meter, 0.0, 0.0)
    meter.read_ms = 51_000
    assert step(site, 1001, 51_450) == []
    # Steps without a new reading (the site's own tick) add no time, even as the second turns.
    assert step(site, 1002, 51_950) == []
    assert step(site, 1003, 52_450) == []
    meter.read_ms = 52_000
    assert step(site, 1003, 52_460) == []
    meter.read_ms = 53_000
    assert step(site, 1004, 53_010) == []  # 2 s of readings
    meter.read_ms = 53_790
    assert step(site, 1004, 53_800) == []  # 2.79 s: not yet
    meter.read_ms = 53_990  # a reply 10 ms quicker than the one that first showed the loss
    ev = step(site, 1004, 54_000)
    assert types(ev)[:2] == ["grid_lost", "mode_changed"], ev
    assert site.grid_since == 1001  # the outage began at the first sight of it


def test_a_late_step_does_not_stretch_the_debounce():
    # The step that comes half a second after the reading commits as the reading allows; the
    # reading's time, not the step's, is what counts.
    site, meter, gen = make_site()
    set_grid(meter, 231.0)
    step(site, 1000)
    set_grid(meter, 0.0, 0.0)
    meter.read_ms = 2_000_000
    step(site, 1001, 2_000_499)
    meter.read_ms = 2_003_000
    assert types(step(site, 1004, 2_003_499))[:2] == ["grid_lost", "mode_changed"]


def test_flicker_shorter_than_debounce_is_not_an_outage():
    site, meter, gen = make_site()
    set_grid(meter, 231.0)
    step(site, 1000)
    set_grid(meter, 0.0, 0.0)
    ev = run(site, 1001, 1002)  # 2 s < debounce 3 s
    set_grid(meter, 230.0)
    ev += run(site, 1003, 1010)
    assert ev == [], ev
    assert site.grid == "ok"


def test_outage_backup_and_restore():
    site, meter, gen = make_site()
    set_grid(meter, 231.0)
    step(site, 1000)
    set_grid(meter, 0.0, 0.0)
    ev = run(site, 1001, 1005)
    assert types(ev) == ["grid_lost", "mode_changed", "capability_changed"], ev
    assert site.mode == "grid_lost"
    assert ev[0][1]["state"] == "lost"
    gen.values["engine_state"] = "running"
    ev = step(site, 1012)
    assert types(ev) == ["gen_running", "mode_changed", "capability_changed"], ev
    assert ev[0][1]["after_s"] == 11  # outage began when the dip began (1001)
    assert site.mode == "on_backup"
    snap = site.snapshot(1012)
    assert snap["capability"]["power"] == "backup"
    assert snap["fuel"]["refuel_by"] == 1012 + 50 * 3600
    set_grid(meter, 229.0)
    ev = run(site, 1100, 1104)
    assert types(ev) == ["grid_restored", "mode_changed", "capability_changed"], ev
    assert ev[0][1]["outage_s"] == 99
    assert site.mode == "normal"
    gen.values["engine_state"] = "cooling"
    ev = step(site, 1110)
    assert types(ev) == ["gen_stopped"], ev
    assert ev[0][1]["run_s"] == 98


def test_rejected_grid_counts_as_down():
    site, meter, gen = make_site()
    set_grid(meter, 231.0)
    step(site, 1000)
    set_grid(meter, 180.0)  # present but far below 230 V - 10 %
    ev = run(site, 1001, 1005)
    assert types(ev)[0] == "grid_lost" and ev[0][1]["state"] == "rejected"
    set_grid(meter, 231.0, 55.0)  # right voltage, frequency out of limits: still rejected
    ev = run(site, 1006, 1012)
    assert site.grid == "rejected"


def test_failed_to_start():
    site, meter, gen = make_site()
    set_grid(meter, 231.0)
    step(site, 1000)
    set_grid(meter, 0.0, 0.0)
    ev = run(site, 1001, 1030)
    assert "gen_failed_to_start" not in types(ev)
    ev = step(site, 1031)
    assert types(ev) == ["gen_failed_to_start", "mode_changed"], ev
    assert ev[0][1]["waited_s"] == 30 and ev[0][1]["mode"] == "auto"
    assert site.mode == "backup_failed" and site.gen == "fault"
    assert run(site, 1032, 1040) == []  # reported once per outage


def test_start_during_outage_announces_nothing():
    site, meter, gen = make_site()
    set_grid(meter, 0.0, 0.0)
    gen.values["engine_state"] = "running"
    assert step(site, 1000) == []
    assert site.mode == "on_backup"


def test_silent_meter_falls_back_to_genset_mains_sensing():
    site, meter, gen = make_site()
    set_grid(meter, 231.0)
    step(site, 1000)
    meter._set_offline()
    ev = step(site, 1001)
    assert types(ev) == ["device_offline", "mode_changed"], ev
    assert site.grid == "ok" and site.grid_src == "genset"
    assert site.mode == "degraded"


def test_everything_silent_is_unknown_never_old_numbers():
    site, meter, gen = make_site()
    set_grid(meter, 231.0)
    step(site, 1000)
    meter._set_offline()
    gen._set_offline()
    step(site, 1001)
    snap = site.snapshot(1001)
    assert snap["grid"]["state"] == "unknown" and snap["grid"]["v"] is None
    assert snap["fuel"]["pct"] is None and snap["fuel"]["why"] == "offline"
    assert snap["genset"]["state"] == "unknown" and snap["genset"]["why"] == "offline"
    assert snap["mode"] == "degraded"


def test_fuel_hours_left():
    site, meter, gen = make_site()
    set_grid(meter, 231.0)
    step(site, 1000)
    f = site.snapshot(1000)["fuel"]
    assert f["litres"] == 200.0 and f["hours_left"] == 50.0
    assert f["refuel_by"] is None  # only meaningful while the generator runs
    gen.values["fuel_level"] = None  # sentinel / out-of-range reading
    step(site, 1001)
    f = site.snapshot(1001)["fuel"]
    assert f["pct"] is None and f["hours_left"] is None and f["why"] == "invalid"


def test_fuel_for_sale_needs_power_and_stock():
    site, meter, gen = make_site()
    set_grid(meter, 231.0)
    step(site, 1000)
    assert site.snapshot(1000)["capability"]["fuel_for_sale"] == {"diesel": 5000, "petrol": 0}
    set_grid(meter, 0.0, 0.0)
    ev = run(site, 1001, 1010)
    assert site.snapshot(1010)["capability"]["fuel_for_sale"] == {"diesel": 0, "petrol": 0}
    cap = [e[1] for e in ev if e[0] == "capability_changed"]
    assert len(cap) == 1 and cap[0]["power"] == "none" and cap[0]["info_point"] is False, ev


def test_nothing_is_decided_before_every_device_was_polled():
    site, meter, gen = make_site()
    set_grid(meter, 231.0)
    gen.online = None  # not polled yet
    assert step(site, 1000) == []
    assert site.mode is None
    gen.online = True
    assert step(site, 1001) == []  # first decision: no mode_changed from a made-up state
    assert site.mode == "normal"


def test_published_numbers_have_one_decimal():
    site, meter, gen = make_site()
    set_grid(meter, 231.04)
    gen.values["fuel_level"] = 80.0
    site.cfg["genset"]["burn_lph"] = 3.4
    step(site, 1000)
    snap = site.snapshot(1000)
    # == 94.1 as a double; MicroPython's own float printing may still show 94.09999999999999
    assert snap["fuel"]["hours_left"] == 94.1
    assert snap["grid"]["v"] == 231.0


def test_active_alarms_are_listed_with_their_severity():
    site, meter, gen = make_site()
    gen.points = (("alarm_fail_to_start",), ("alarm_low_oil_pressure",), ("fuel_level",))
    gen.values.update({"alarm_fail_to_start": "shutdown", "alarm_low_oil_pressure": "inactive"})
    set_grid(meter, 231.0)
    step(site, 1000)
    assert site.snapshot(1000)["genset"]["alarms"] == [["fail_to_start", "shutdown"]]


def test_many_alarms_keep_the_state_within_1_kib():
    import json

    site, meter, gen = make_site()
    names = ["alarm_%s_%d" % (kind, i) for i in range(8) for kind in ("charge_alt_failure",)]
    names += ["alarm_emergency_stop_%d" % i for i in range(8)]
    gen.points = tuple((n,) for n in names)
    for i, n in enumerate(names):
        gen.values[n] = "warning" if i < 8 else "trip"
    set_grid(meter, 231.0)
    step(site, 1000)
    snap = site.snapshot(1000)
    alarms = snap["genset"]["alarms"]
    assert len(alarms) == 6 and all(sev == "trip" for _n, sev in alarms)  # the worst first
    assert snap["genset"]["alarms_more"] == 10
    assert len(json.dumps(snap)) < 1024 - 60  # room for boot, seq and ts


def test_identity_mismatch_and_sensor_faults_are_events_once():
    site, meter, gen = make_site()
    set_grid(meter, 231.0)
    step(site, 1000)
    gen.faults.add("fuel_level")
    ev = step(site, 1001)
    assert ev == [("sensor_fault", {"device": "genset", "point": "fuel_level"})]
    assert step(site, 1002) == []
    gen.faults.discard("fuel_level")
    assert step(site, 1003) == [("sensor_ok", {"device": "genset", "point": "fuel_level"})]
    gen.mismatch = ("model", 1234)
    gen._set_offline("mismatch")
    ev = step(site, 1004)
    assert ev[0] == ("device_mismatch", {"device": "genset", "point": "model", "got": 1234})
    assert site.snapshot(1004)["devices"]["genset"] == "mismatch"


# --- table-driven scenarios: (time, readings to set) steps, then what the clerk/municipality sees


def play(site, meter, gen, steps):
    """steps: [(t, {"grid": volts or None, "gen": {point: value}})...]; each step runs the
    logic every second up to its time. Returns every event."""
    out = []
    t = None
    for when, change in steps:
        if t is not None:
            out += run(site, t + 1, when - 1)
        g = change.get("grid", ...)
        if g is not ...:
            set_grid(meter, g, 50.0 if g else 0.0)
        gen.values.update(change.get("gen", {}))
        out += step(site, when)
        t = when
    return out


def test_grid_returning_during_cool_down():
    site, meter, gen = make_site()
    ev = play(site, meter, gen, [
        (1000, {"grid": 231.0}),
        (1001, {"grid": 0.0}),
        (1015, {"gen": {"engine_state": "running"}}),
        (1200, {"grid": 231.0}),                         # grid back: the set cools down, then stops
        (1205, {"gen": {"engine_state": "cooling"}}),
        (1300, {"gen": {"engine_state": "stopped"}}),
    ])
    assert types(ev) == ["grid_lost", "mode_changed", "capability_changed",   # no power
                         "gen_running", "mode_changed", "capability_changed",  # backup power
                         "grid_restored", "mode_changed", "capability_changed",  # grid again
                         "gen_stopped"], types(ev)
    assert site.mode == "normal" and site.gen == "stopped"
    assert "gen_failed_to_start" not in types(ev)


def test_generator_switched_to_manual_locally():
    site, meter, gen = make_site()
    ev = play(site, meter, gen, [
        (1000, {"grid": 231.0}),
        (1010, {"gen": {"control_mode": "manual"}}),
    ])
    assert types(ev) == ["gen_not_ready"], ev
    assert ev[0][1] == {"mode": "manual", "why": "mode"}
    snap = site.snapshot(1010)
    assert snap["genset"]["ready"] is False and snap["genset"]["mode"] == "manual"
    # then the grid fails: the set in manual does not start -> failed to start, backup failed
    ev = play(site, meter, gen, [(1011, {"grid": 0.0}), (1050, {})])
    assert "gen_failed_to_start" in types(ev) and site.mode == "backup_failed"
    assert [e[1]["mode"] for e in ev if e[0] == "gen_failed_to_start"] == ["manual"]
    ev = play(site, meter, gen, [(1060, {"gen": {"control_mode": "auto"}})])
    assert types(ev) == ["gen_ready"], ev


def test_shutdown_alarm_makes_the_set_not_ready():
    site, meter, gen = make_site()
    gen.points = (("alarm_low_oil_pressure",), ("fuel_level",))
    gen.values["alarm_low_oil_pressure"] = "inactive"
    ev = play(site, meter, gen, [(1000, {"grid": 231.0}),
                                 (1005, {"gen": {"alarm_low_oil_pressure": "shutdown"}})])
    assert types(ev) == ["gen_not_ready"] and ev[0][1]["why"] == "alarm", ev


def test_ready_is_unknown_when_the_controller_is_silent():
    site, meter, gen = make_site()
    play(site, meter, gen, [(1000, {"grid": 231.0})])
    assert site.snapshot(1000)["genset"]["ready"] is True
    gen._set_offline()
    ev = step(site, 1001)
    assert "gen_not_ready" not in types(ev)
    assert site.snapshot(1001)["genset"]["ready"] is None


def test_fuel_sender_jump_is_not_burn():
    site, meter, gen = make_site()
    ev = play(site, meter, gen, [
        (1000, {"grid": 0.0, "gen": {"engine_state": "running", "fuel_level": 50.0}}),
        (1600, {"gen": {"fuel_level": 49.0}}),
        (1601, {"gen": {"fuel_level": 12.0}}),           # sender jumps down 37 % in a second
    ])
    jumps = [e for e in ev if e[0] == "fuel_jump"]
    assert len(jumps) == 1 and jumps[0][1]["from"] == 49.0 and jumps[0][1]["to"] == 12.0, ev
    f = site.snapshot(1601)["fuel"]
    # the rate is still the nominal 4 L/h: 12 % of 400 L = 48 L -> 12 h, not a burn of 148 L/s
    assert f["burn_lph"] == 4.0 and f["hours_left"] == 12.0, f
    ev = play(site, meter, gen, [(1700, {"gen": {"fuel_level": 90.0}})])
    assert [e[0] for e in ev] == ["refuelled"] and ev[0][1]["litres"] == 312.0, ev


def test_burn_rate_prefers_the_ecu_then_the_load_curve():
    site, meter, gen = make_site()
    site.gen_cfg["burn_curve"] = [[25, 2.5], [50, 3.4], [75, 4.9], [100, 6.1]]
    play(site, meter, gen, [(1000, {"grid": 0.0, "gen": {"engine_state": "running",
                                                          "gen_power_kw": 15.0}})])
    f = site.snapshot(1000)["fuel"]
    assert f["src"] == "load" and f["burn_lph"] == 4.9 and f["confidence"] == "medium", f
    gen.values["fuel_rate"] = 6.0
    step(site, 1001)
    f = site.snapshot(1001)["fuel"]
    assert f["src"] == "ecu" and f["confidence"] == "high", f
    # smoothed: one second of 6.0 L/h moves the estimate only a little from 4.9
    assert 4.9 < site.fuel.rate < 5.0 and f["burn_lph"] < 5.0, f
    play(site, meter, gen, [(1002, {}), (4000, {})])
    f = site.snapshot(4000)["fuel"]
    assert f["burn_lph"] == 6.0 and abs(f["hours_left"] - 200 / 6.0) < 0.2, f
    assert abs(f["refuel_by"] - (4000 + 200 / 6.0 * 3600)) < 600, f  # within 10 min


def test_level_outside_the_trusted_band_lowers_confidence():
    site, meter, gen = make_site()
    site.gen_cfg["burn_curve"] = [[25, 2.5], [100, 6.1]]
    play(site, meter, gen, [(1000, {"grid": 0.0,
                                    "gen": {"engine_state": "running", "gen_power_kw": 10.0,
                                            "fuel_level": 3.0}})])
    f = site.snapshot(1000)["fuel"]
    assert f["pct"] == 3.0 and f["confidence"] == "low", f


def test_level_measured_rate_when_nothing_better():
    site, meter, gen = make_site()
    steps = [(1000, {"grid": 0.0, "gen": {"engine_state": "running", "fuel_level": 60.0}})]
    # 400 L tank losing 1 % (4 L) every 30 min: 8 L/h measured
    for i in range(1, 5):
        steps.append((1000 + i * 1800, {"gen": {"fuel_level": 60.0 - i}}))
    play(site, meter, gen, steps)
    step(site, 1000 + 4 * 1800 + 3000)
    f = site.snapshot(1000 + 4 * 1800 + 3000)["fuel"]
    assert f["src"] == "level" and 7.0 < f["burn_lph"] <= 8.0, f


def test_max_runtime_is_reported_once_per_run():
    site, meter, gen = make_site()
    site.gen_cfg["max_runtime_h"] = 1
    ev = play(site, meter, gen, [(1000, {"grid": 0.0, "gen": {"engine_state": "running"}}),
                                 (1000 + 3599, {}), (1000 + 3600, {}), (1000 + 3700, {})])
    assert types(ev).count("gen_max_runtime") == 1
    assert [e[1]["run_s"] for e in ev if e[0] == "gen_max_runtime"] == [3600]


def test_shop_closed_ends_the_information_point():
    site, meter, gen = make_site()
    play(site, meter, gen, [(1000, {"grid": 231.0})])
    assert site.snapshot(1000)["capability"]["info_point"] is True
    site.shop_open = False
    ev = step(site, 1001)
    assert types(ev) == ["capability_changed"]
    assert ev[0][1]["shop_open"] is False and ev[0][1]["info_point"] is False


def test_pumps_out_of_order_stop_the_sale_of_their_product():
    site, meter, gen = make_site()
    pumps = Device({"name": "pumps", "kind": "pump", "unit": 30, "blocks": [],
                    "points": [("pump1_state",), ("pump2_state",), ("pump1_product",),
                               ("pump2_product",)]})
    pumps.online = True
    pumps.values.update({"pump1_state": "idle", "pump2_state": "fault",
                         "pump1_product": "diesel", "pump2_product": "petrol"})
    site.devices["pumps"] = pumps
    site.pumps_dev = pumps
    site.tanks_dev.values["petrol_litres"] = 3000
    play(site, meter, gen, [(1000, {"grid": 231.0})])
    snap = site.snapshot(1000)
    assert snap["capability"]["fuel_for_sale"] == {"diesel": 5000, "petrol": 0}
    assert snap["pumps"] == {"available": 1, "total": 2}


def test_fuel_for_sale_is_unknown_when_a_gauge_or_the_pump_controller_is_silent():
    site, meter, gen = make_site()
    pumps = Device({"name": "pumps", "kind": "pump", "unit": 30, "blocks": [],
                    "points": [("pump1_state",), ("pump1_product",)]})
    pumps.online = True
    pumps.values.update({"pump1_state": "idle", "pump1_product": "diesel"})
    site.devices["pumps"] = pumps
    site.pumps_dev = pumps
    play(site, meter, gen, [(1000, {"grid": 231.0})])
    assert site.snapshot(1000)["capability"]["fuel_for_sale"]["diesel"] == 5000
    pumps._set_offline()
    step(site, 1001)
    assert site.snapshot(1001)["capability"]["fuel_for_sale"] == {"diesel": None, "petrol": None}
    site.tanks_dev._set_offline()
    set_grid(meter, 0.0, 0.0)
    run(site, 1002, 1010)
    # no power: nothing can be sold, whatever the gauges say
    assert site.snapshot(1010)["capability"]["fuel_for_sale"] == {"diesel": 0, "petrol": 0}


# The generator controller's return delay (how long it keeps carrying the load after the mains
# come back) against our grid debounce: when the engine starts cooling (or stops) before the
# debounce has passed, the grid still counts as lost here, but the set did start in this outage.
# Rows: (seconds after the grid's return that the engine leaves running, its state then).
RETURN_DELAY_ROWS = [(0, "cooling"), (1, "cooling"), (2, "cooling"), (1, "stopped"), (5, "cooling")]


def test_grid_return_with_a_return_delay_shorter_than_the_debounce_is_no_start_failure():
    for delay, state in RETURN_DELAY_ROWS:
        site, meter, gen = make_site()
        steps = [
            (1000, {"grid": 231.0}),
            (1001, {"grid": 0.0}),
            (1015, {"gen": {"engine_state": "running"}}),
            (1200, {"grid": 231.0}),
        ]
        if delay:
            steps.append((1200 + delay, {"gen": {"engine_state": state}}))
        else:
            steps[-1][1]["gen"] = {"engine_state": state}
        steps.append((1300, {"gen": {"engine_state": "stopped"}}))
        ev = play(site, meter, gen, steps)
        modes = [e[1]["to"] for e in ev if e[0] == "mode_changed"]
        assert "gen_failed_to_start" not in types(ev), (delay, state, types(ev))
        assert "backup_failed" not in modes, (delay, state, modes)
        assert types(ev).count("grid_restored") == 1 and site.mode == "normal", (delay, state)


def test_a_set_that_never_ran_still_fails_to_start_in_the_next_outage():
    site, meter, gen = make_site()
    ev = play(site, meter, gen, [
        (1000, {"grid": 231.0}),
        (1001, {"grid": 0.0}),
        (1015, {"gen": {"engine_state": "running"}}),
        (1200, {"grid": 231.0}),
        (1201, {"gen": {"engine_state": "cooling"}}),
        (1300, {"gen": {"engine_state": "stopped"}}),
        (2000, {"grid": 0.0}),                            # the next outage: it does not start
        (2040, {}),
    ])
    assert types(ev).count("gen_failed_to_start") == 1 and site.mode == "backup_failed"


def test_remote_start_not_allowed_makes_the_set_not_ready():
    # The capability bit decodes to the integer 0 or 1 (a bit field), never to False.
    site, meter, gen = make_site()
    gen.values["can_remote_start"] = 1
    ev = play(site, meter, gen, [(1000, {"grid": 231.0}),
                                 (1005, {"gen": {"can_remote_start": 0}})])
    assert types(ev) == ["gen_not_ready"] and ev[0][1]["why"] == "capability", ev
    assert site.snapshot(1005)["genset"]["ready"] is False
    ev = play(site, meter, gen, [(1010, {"gen": {"can_remote_start": 1}})])
    assert types(ev) == ["gen_ready"], ev


def test_alarms_that_cannot_be_read_are_unknown_not_none_active():
    site, meter, gen = make_site()
    gen.points = (("alarm_fail_to_start",), ("alarm_low_oil_pressure",), ("fuel_level",))
    # the alarm page answered with a Modbus exception: the bus owner set its points to None
    gen.values.update({"alarm_fail_to_start": None, "alarm_low_oil_pressure": None})
    set_grid(meter, 231.0)
    step(site, 1000)
    g = site.snapshot(1000)["genset"]
    assert g["alarms"] is None and g["alarms_unknown"] == 2
    gen.values["alarm_low_oil_pressure"] = "shutdown"  # one known active: listed, rest counted
    g = site.snapshot(1001)["genset"]
    assert g["alarms"] == [["low_oil_pressure", "shutdown"]] and g["alarms_unknown"] == 1
    gen.values.update({"alarm_fail_to_start": "inactive", "alarm_low_oil_pressure": "not_fitted"})
    g = site.snapshot(1002)["genset"]
    assert g["alarms"] == [] and "alarms_unknown" not in g


def test_alarms_not_fitted_raise_nothing():
    site, meter, gen = make_site()
    gen.points = (("alarm_fail_to_start",), ("alarm_low_oil_pressure",), ("fuel_level",))
    gen.values.update({"alarm_fail_to_start": "not_fitted", "alarm_low_oil_pressure": "not_fitted"})
    set_grid(meter, 231.0)
    assert step(site, 1000) == []
    assert step(site, 1001) == []
    assert site.snapshot(1001)["genset"]["alarms"] == [] and site.ready is True
