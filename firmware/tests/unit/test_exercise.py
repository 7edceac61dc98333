# Generator test runs (sot/exercise.py) under MicroPython: the schedule on the controller's own
# clock, the start through the gen_test path with its preconditions, what is measured, pass and
# fail with the reason, one exercise_done record per run, and no cmd_result for a scheduled run.
from fakes import MemFlash
from sot.command import Commands
from sot.device import Device
from sot.exercise import CATCHUP_MIN, RESULT_FILE, Exercise

# 2026-12-01 is the first Tuesday of December: 10:00 in Sweden (CET) is 09:00 UTC.
TUE_1000 = 1796115600
WEEK = 7 * 86400
CONTROL = {"register": 4104, "complement": 1, "start": 35732, "stop": 35733}
MONTHLY = {"every": "month", "weekday": 1, "at": 600, "minutes": 2, "on_load": False}
POINTS = (("gen_voltage_l1",), ("gen_frequency",), ("gen_power_kw",), ("alarm_low_oil_pressure",),
          ("alarm_battery_low_voltage",))


class _Fuel:
    def __init__(self):
        self.rate = None
        self.litres = 300.0


class _Site:
    def __init__(self, mode="auto"):
        self.genset = Device({"name": "genset", "kind": "genset", "unit": 1, "blocks": [],
                              "points": POINTS})
        self.genset.online = True
        self.genset.verified = True
        self.genset.values = {"control_mode": mode, "can_remote_start": 1,
                              "alarm_low_oil_pressure": "ok", "alarm_battery_low_voltage": "ok"}
        self.ready = mode == "auto"
        self.gen_cfg = {"start_timeout_s": 30}
        self.grid_cfg = {"nominal_v": 230, "tolerance_pct": 10, "f_min": 47.5, "f_max": 52.0}
        self.gen = "stopped"
        self.grid = "ok"
        self.mode = "normal"
        self.fuel = _Fuel()

    def running(self, v=230.0, f=50.0, kw=10.0):
        self.gen = "running"
        self.genset.values.update({"gen_voltage_l1": v, "gen_frequency": f, "gen_power_kw": kw})


class _Owner:
    def __init__(self):
        self.writes = []
        self.made = []

    def run_queue(self):
        while self.writes:
            co = self.writes.pop(0)(self)
            try:
                co.send(None)
            except StopIteration:
                pass

    async def write_registers(self, dev, start, values):
        self.made.append((start, values))


def make(site=None, sched=MONTHLY, flash=None, key=None):
    site = site or _Site()
    flash = flash or MemFlash()
    cfg = {"site": "are-kall", "mqtt": {"cmd_key": key} if key else {},
           "devices": [{"name": "genset", "control": CONTROL}], "exercise": sched}
    results, events = [], []
    c = Commands(cfg, flash, site, log=lambda *a: None, clock=lambda: TUE_1000)
    c.owner = _Owner()
    c.result_cb = lambda ts, etype, data: results.append(data)
    ex = Exercise(cfg, flash, site, c, lambda ts, etype, data: events.append((etype, data)),
                  log=lambda *a: None)
    return site, c, ex, results, events


def step(site, c, ex, now):
    ex.tick(now)
    c.tick(now)
    c.owner.run_queue()


def test_the_schedule_falls_on_the_first_weekday_of_the_month_at_local_time():
    site, c, ex, _, _ = make()
    assert ex.slot(TUE_1000 - 60) is None  # 09:59 local
    assert ex.slot(TUE_1000) is not None
    assert ex.slot(TUE_1000 + (CATCHUP_MIN - 1) * 60) is not None  # a late boot catches up
    assert ex.slot(TUE_1000 + CATCHUP_MIN * 60) is None
    assert ex.slot(TUE_1000 + WEEK) is None  # the second Tuesday: monthly runs once
    assert ex.slot(TUE_1000 + 86400) is None  # Wednesday
    ex.sched = dict(MONTHLY, every="week")
    assert ex.slot(TUE_1000 + WEEK) is not None
    # summer time: the first Tuesday of June 2027, 10:00 CEST is 08:00 UTC
    june = 1811836800  # 2027-06-01 08:00 UTC
    assert ex.slot(june) is not None and ex.slot(june - 60) is None
    assert ex.slot(1000) is None  # a clock never set runs nothing


def test_a_scheduled_run_passes_with_its_measurements_and_no_command_result():
    site, c, ex, results, events = make()
    step(site, c, ex, TUE_1000 + 5)
    assert c.owner.made == [(4104, [35732, 0xFFFF - 35732])]
    assert c.running is not None and ex.run is not None
    step(site, c, ex, TUE_1000 + 6)
    site.fuel.rate = 3.6
    site.running(v=228.0, f=49.9, kw=0.0)
    step(site, c, ex, TUE_1000 + 12)
    site.running(v=233.0, f=50.2, kw=0.0)
    step(site, c, ex, TUE_1000 + 72)
    site.genset.values["alarm_battery_low_voltage"] = "warning"
    step(site, c, ex, TUE_1000 + 100)
    step(site, c, ex, TUE_1000 + 12 + 120)  # two minutes from running: stopped
    assert c.owner.made[-1] == (4104, [35733, 0xFFFF - 35733])
    assert results == []  # a scheduled run is no command: no cmd_result
    assert len(events) == 1 and events[0][0] == "exercise_done"
    d = events[0][1]
    assert d["result"] == "pass" and d["why"] is None, d
    assert d["trigger"] == "schedule" and d["cmd"] is None and d["minutes"] == 2
    assert d["started"] == TUE_1000 + 5 and d["start_s"] == 7 and d["stable_s"] == 7
    assert (d["v_min"], d["v_max"], d["f_min"], d["f_max"]) == (228.0, 233.0, 49.9, 50.2)
    assert d["alarms"] == ["battery_low_voltage"]  # a warning is seen, not a failure
    assert d["fuel_used_l"] == 0.1, d  # 3.6 L/h for 120 s: 0.12 L
    assert ex.last == (TUE_1000 + 5, "pass")
    step(site, c, ex, TUE_1000 + 200)
    step(site, c, ex, TUE_1000 + 400)
    assert len(events) == 1  # the slot is taken: no second run in its window


def test_a_reboot_in_the_window_does_not_run_it_again_and_the_panel_keeps_the_result():
    site, c, ex, _, events = make()
    step(site, c, ex, TUE_1000 + 5)
    site.running()
    step(site, c, ex, TUE_1000 + 10)
    site.gen = "stopped"  # stopped on site: local control wins
    step(site, c, ex, TUE_1000 + 20)
    assert events[-1][1]["result"] == "fail" and events[-1][1]["why"] == "local:stop"
    flash = ex.flash
    assert flash.read(RESULT_FILE) == b"%d fail" % (TUE_1000 + 5)
    site2, c2, ex2, _, events2 = make(flash=flash)
    assert ex2.last == (TUE_1000 + 5, "fail")
    step(site2, c2, ex2, TUE_1000 + 600)
    assert events2 == [] and c2.owner.made == []


def test_not_in_auto_fails_the_scheduled_run_with_the_reason_and_nothing_written():
    site, c, ex, _, events = make(site=_Site(mode="manual"))
    step(site, c, ex, TUE_1000 + 1)
    assert c.owner.made == []
    assert [e[0] for e in events] == ["exercise_done"]
    d = events[0][1]
    assert d["result"] == "fail" and d["why"] == "mode:manual" and d["start_s"] is None


def test_the_grid_down_at_the_slot_postpones_within_the_window():
    site, c, ex, _, events = make()
    site.grid = "lost"
    step(site, c, ex, TUE_1000 + 1)
    assert c.owner.made == [] and events == []
    site.grid = "ok"
    step(site, c, ex, TUE_1000 + 30)
    assert len(c.owner.made) == 1


def test_out_of_band_voltage_a_shutdown_alarm_and_a_slow_start_fail():
    for setup, why in (
            (lambda s: s.running(v=260.0), "unstable"),
            (lambda s: (s.running(), s.genset.values.update(
                {"alarm_low_oil_pressure": "shutdown"})), "alarm:low_oil_pressure"),
    ):
        site, c, ex, _, events = make()
        step(site, c, ex, TUE_1000 + 1)
        setup(site)
        for t in range(5, 200, 5):
            step(site, c, ex, TUE_1000 + t)
        assert events[-1][1]["result"] == "fail" and events[-1][1]["why"] == why, events
    site, c, ex, _, events = make()
    step(site, c, ex, TUE_1000 + 1)
    step(site, c, ex, TUE_1000 + 40)
    site.running()
    for t in range(41, 200, 5):
        step(site, c, ex, TUE_1000 + t)
    assert events[-1][1]["why"] == "slow_start" and events[-1][1]["start_s"] == 40


def test_a_gen_test_command_gives_its_result_and_an_exercise_record():
    import binascii
    import json

    from sot.command import canonical, canonical_args, hmac_sha256

    key = "00" * 32
    site, c, ex, results, events = make(sched=None, key=key)
    args = {"minutes": 1}
    body = {"v": 1, "id": "t1", "issued": TUE_1000, "expires": TUE_1000 + 120, "counter": 1,
            "args": args}
    body["sig"] = binascii.hexlify(hmac_sha256(binascii.unhexlify(key), canonical(
        "are-kall", "gen_test", "t1", TUE_1000, TUE_1000 + 120, 1, canonical_args(args)))).decode()
    assert c.receive("gen_test", json.dumps(body).encode(), TUE_1000) == "accepted"
    c.owner.run_queue()
    site.running(kw=4.0)
    step(site, c, ex, TUE_1000 + 5)
    step(site, c, ex, TUE_1000 + 65)
    assert [r["result"] for r in results] == ["accepted", "done"]
    d = events[-1][1]
    assert d["trigger"] == "command" and d["cmd"] == "t1" and d["result"] == "pass", d
    assert d["load_kw"] == 4.0 and d["start_s"] == 5


def test_without_a_schedule_nothing_starts():
    site, c, ex, _, events = make(sched=None)
    for t in range(0, 3600, 30):
        step(site, c, ex, TUE_1000 + t)
    assert events == [] and c.owner.made == []


def test_a_latched_shutdown_alarm_is_named_as_the_reason():
    site = _Site()
    site.genset.values["alarm_low_oil_pressure"] = "shutdown"
    site.ready = False  # what sot.site makes of a latched shutdown
    site, c, ex, _, events = make(site=site)
    step(site, c, ex, TUE_1000 + 1)
    assert c.owner.made == []
    assert events[0][1]["result"] == "fail" and events[0][1]["why"] == "alarm:low_oil_pressure"


def test_what_the_test_run_code_costs_in_heap():
    # On a board the module is frozen into flash: the heap holds the Exercise object and, while
    # a run lasts, its record (docs/commands.md, "Minne / Memory"). Eight of each, averaged: the
    # collector is conservative, one object alone is lost in its noise.
    import gc

    site, c, _, _, _ = make(sched=None)
    fl = MemFlash()
    cfg = {"exercise": MONTHLY}
    exs = [None] * 8
    site.running()
    gc.collect()
    a = gc.mem_alloc()
    for i in range(8):
        exs[i] = Exercise(cfg, fl, site, c, None, log=None)
    gc.collect()
    b = gc.mem_alloc()
    for ex in exs:
        ex.begin(TUE_1000, "schedule", None, 2, False)
        ex.tick(TUE_1000 + 5)
    gc.collect()
    d = gc.mem_alloc()
    obj, run = (b - a) // 8, (d - b) // 8
    assert obj <= 256 and run <= 512, (obj, run)  # measured: 152 and 384 (unix), 76 and 224 (qemu)


def test_a_real_outage_during_a_test_run_hands_the_set_over_without_a_stop():
    site, c, ex, _, events = make()
    step(site, c, ex, TUE_1000 + 1)
    site.running()
    step(site, c, ex, TUE_1000 + 5)
    site.grid = "lost"  # the set now carries the site
    step(site, c, ex, TUE_1000 + 30)
    assert c.owner.made == [(4104, [35732, 0xFFFF - 35732])]  # no stop written
    assert c.running is None
    d = events[-1][1]
    assert d["result"] == "pass" and d["why"] == "grid_lost" and d["start_s"] == 4, d
    step(site, c, ex, TUE_1000 + 200)
    assert len(events) == 1 and len(c.owner.made) == 1


COIL = {"register": 4700, "complement": 0, "function": 5, "start": 1, "stop": 0}


class _CoilOwner(_Owner):
    async def write_coil(self, dev, address, on):
        self.made.append((address, on))


def coil_site():
    site, c, ex, results, events = make(sched=None)
    c.control = COIL
    c.owner = _CoilOwner()
    return site, c, ex, results, events


def test_a_coil_control_holds_the_run_request_and_takes_it_back():
    # ComAp: the remote start/stop coil's state is the request (on = run)
    site, c, ex, _, events = coil_site()
    assert c.test_run(TUE_1000, 1, False) is None
    c.owner.run_queue()
    assert c.owner.made == [(4700, True)]
    site.running()
    step(site, c, ex, TUE_1000 + 5)
    step(site, c, ex, TUE_1000 + 65)
    assert c.owner.made == [(4700, True), (4700, False)]  # the minutes are up
    # local control wins, and the request is taken back so Auto does not restart it later
    site2, c2, ex2, _, _ = coil_site()
    c2.test_run(TUE_1000, 5, False)
    c2.owner.run_queue()
    site2.running()
    step(site2, c2, ex2, TUE_1000 + 5)
    site2.genset.values["control_mode"] = "manual"
    step(site2, c2, ex2, TUE_1000 + 10)
    assert c2.owner.made == [(4700, True), (4700, False)]
    assert c2.running is None
