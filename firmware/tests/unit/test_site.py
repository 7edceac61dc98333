# Site logic, table-driven, under MicroPython: readings in, states and events out.
from sot.device import Device
from sot.site import Site

CFG = {
    "grid": {"nominal_v": 230.0, "tolerance_pct": 10.0, "f_min": 47.5, "f_max": 52.0, "debounce_s": 3.0},
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


def run(site, t0, t1, step=1):
    out = []
    t = t0
    while t <= t1:
        out += site.update(t)
        t += step
    return out


def test_normal_at_start_without_events():
    site, meter, gen = make_site()
    set_grid(meter, 231.0)
    assert site.update(1000) == []
    assert site.mode == "normal" and site.grid == "ok"


def test_flicker_shorter_than_debounce_is_not_an_outage():
    site, meter, gen = make_site()
    set_grid(meter, 231.0)
    site.update(1000)
    set_grid(meter, 0.0, 0.0)
    ev = run(site, 1001, 1002)  # 2 s < debounce 3 s
    set_grid(meter, 230.0)
    ev += run(site, 1003, 1010)
    assert ev == [], ev
    assert site.grid == "ok"


def test_outage_backup_and_restore():
    site, meter, gen = make_site()
    set_grid(meter, 231.0)
    site.update(1000)
    set_grid(meter, 0.0, 0.0)
    ev = run(site, 1001, 1005)
    assert types(ev) == ["grid_lost", "mode_changed"], ev
    assert site.mode == "grid_lost"
    assert ev[0][1]["state"] == "lost"
    gen.values["engine_state"] = "running"
    ev = site.update(1012)
    assert types(ev) == ["gen_running", "mode_changed"], ev
    assert ev[0][1]["after_s"] == 11  # outage began when the dip began (1001)
    assert site.mode == "on_backup"
    snap = site.snapshot(1012)
    assert snap["capability"]["power"] == "backup"
    assert snap["fuel"]["refuel_by"] == 1012 + 50 * 3600
    set_grid(meter, 229.0)
    ev = run(site, 1100, 1104)
    assert types(ev) == ["grid_restored", "mode_changed"], ev
    assert ev[0][1]["outage_s"] == 99
    assert site.mode == "normal"
    gen.values["engine_state"] = "cooling"
    ev = site.update(1110)
    assert types(ev) == ["gen_stopped"], ev
    assert ev[0][1]["run_s"] == 98


def test_rejected_grid_counts_as_down():
    site, meter, gen = make_site()
    set_grid(meter, 231.0)
    site.update(1000)
    set_grid(meter, 180.0)  # present but far below 230 V - 10 %
    ev = run(site, 1001, 1005)
    assert types(ev)[0] == "grid_lost" and ev[0][1]["state"] == "rejected"
    set_grid(meter, 231.0, 55.0)  # right voltage, frequency out of limits: still rejected
    ev = run(site, 1006, 1012)
    assert site.grid == "rejected"


def test_failed_to_start():
    site, meter, gen = make_site()
    set_grid(meter, 231.0)
    site.update(1000)
    set_grid(meter, 0.0, 0.0)
    ev = run(site, 1001, 1030)
    assert "gen_failed_to_start" not in types(ev)
    ev = site.update(1031)
    assert types(ev) == ["gen_failed_to_start", "mode_changed"], ev
    assert ev[0][1]["waited_s"] == 30 and ev[0][1]["mode"] == "auto"
    assert site.mode == "backup_failed" and site.gen == "fault"
    assert run(site, 1032, 1040) == []  # reported once per outage


def test_start_during_outage_announces_nothing():
    site, meter, gen = make_site()
    set_grid(meter, 0.0, 0.0)
    gen.values["engine_state"] = "running"
    assert site.update(1000) == []
    assert site.mode == "on_backup"


def test_silent_meter_falls_back_to_genset_mains_sensing():
    site, meter, gen = make_site()
    set_grid(meter, 231.0)
    site.update(1000)
    meter._set_offline()
    ev = site.update(1001)
    assert types(ev) == ["device_offline", "mode_changed"], ev
    assert site.grid == "ok" and site.grid_src == "genset"
    assert site.mode == "degraded"


def test_everything_silent_is_unknown_never_old_numbers():
    site, meter, gen = make_site()
    set_grid(meter, 231.0)
    site.update(1000)
    meter._set_offline()
    gen._set_offline()
    site.update(1001)
    snap = site.snapshot(1001)
    assert snap["grid"]["state"] == "unknown" and snap["grid"]["v"] is None
    assert snap["fuel"]["pct"] is None and snap["fuel"]["why"] == "offline"
    assert snap["genset"]["state"] == "unknown" and snap["genset"]["why"] == "offline"
    assert snap["mode"] == "degraded"


def test_fuel_hours_left():
    site, meter, gen = make_site()
    set_grid(meter, 231.0)
    site.update(1000)
    f = site.snapshot(1000)["fuel"]
    assert f["litres"] == 200.0 and f["hours_left"] == 50.0
    assert f["refuel_by"] is None  # only meaningful while the generator runs
    gen.values["fuel_level"] = None  # sentinel / out-of-range reading
    f = site.snapshot(1000)["fuel"]
    assert f["pct"] is None and f["hours_left"] is None and f["why"] == "invalid"


def test_fuel_for_sale_needs_power_and_stock():
    site, meter, gen = make_site()
    set_grid(meter, 231.0)
    site.update(1000)
    assert site.snapshot(1000)["capability"]["fuel_for_sale"] is True
    set_grid(meter, 0.0, 0.0)
    run(site, 1001, 1010)
    assert site.snapshot(1010)["capability"]["fuel_for_sale"] is False


def test_nothing_is_decided_before_every_device_was_polled():
    site, meter, gen = make_site()
    set_grid(meter, 231.0)
    gen.online = None  # not polled yet
    assert site.update(1000) == []
    assert site.mode is None
    gen.online = True
    assert site.update(1001) == []  # first decision: no mode_changed from a made-up state
    assert site.mode == "normal"


def test_published_numbers_have_one_decimal():
    site, meter, gen = make_site()
    set_grid(meter, 231.04)
    gen.values["fuel_level"] = 80.0
    site.cfg["genset"]["burn_lph"] = 3.4
    site.update(1000)
    snap = site.snapshot(1000)
    # == 94.1 as a double; MicroPython's own float printing may still show 94.09999999999999
    assert snap["fuel"]["hours_left"] == 94.1
    assert snap["grid"]["v"] == 231.0


def test_active_alarms_are_listed_with_their_severity():
    site, meter, gen = make_site()
    gen.points = (("alarm_fail_to_start",), ("alarm_low_oil_pressure",), ("fuel_level",))
    gen.values.update({"alarm_fail_to_start": "shutdown", "alarm_low_oil_pressure": "inactive"})
    set_grid(meter, 231.0)
    site.update(1000)
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
    site.update(1000)
    snap = site.snapshot(1000)
    alarms = snap["genset"]["alarms"]
    assert len(alarms) == 6 and all(sev == "trip" for _n, sev in alarms)  # the worst first
    assert snap["genset"]["alarms_more"] == 10
    assert len(json.dumps(snap)) < 1024 - 60  # room for boot, seq and ts


def test_identity_mismatch_and_sensor_faults_are_events_once():
    site, meter, gen = make_site()
    set_grid(meter, 231.0)
    site.update(1000)
    gen.faults.add("fuel_level")
    ev = site.update(1001)
    assert ev == [("sensor_fault", {"device": "genset", "point": "fuel_level"})]
    assert site.update(1002) == []
    gen.faults.discard("fuel_level")
    assert site.update(1003) == [("sensor_ok", {"device": "genset", "point": "fuel_level"})]
    gen.mismatch = ("model", 1234)
    gen._set_offline("mismatch")
    ev = site.update(1004)
    assert ev[0] == ("device_mismatch", {"device": "genset", "point": "model", "got": 1234})
    assert site.snapshot(1004)["devices"]["genset"] == "mismatch"
