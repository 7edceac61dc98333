"""Generator test runs (provkörning) with the real firmware (unix port) on a simulated site, the
real Mosquitto with TLS and ACLs and the real gateway (docs/commands.md):

- a scheduled run while the broker is down runs on the controller's own clock, and its
  exercise_done record reaches the gateway after the broker is back, with no event lost;
- a gen_test command's run ends in its cmd_result and an exercise_done with what was measured;
- a flood of 100 commands a second leaves the bus poll period unchanged.

Remote start refused in Manual: hil_tests/test_commands.py."""

from __future__ import annotations

import json
import statistics
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from gateway import commands
from gateway.exercise import TZ
from gateway.mqttauth import GATEWAY_USER
from gateway.store import SqliteStore
from hil_tests.conftest import wait_for
from hil_tests.rig import present
from hil_tests.rig.broker import Broker
from hil_tests.rig.mqttpeer import Peer
from hil_tests.test_site_panel import ROOT, SITE, make_site

pytestmark = [pytest.mark.hil, pytest.mark.needs("unix", "bus", "network")]

KEY = "5a" * 32
START = [35732, 0xFFFF - 35732]
STOP = [35733, 0xFFFF - 35733]


def due_now() -> dict[str, Any]:
    """A weekly schedule whose slot began this local minute: the controller, started now, is
    within the slot's catch-up hour and runs it at once."""
    t = datetime.now(TZ)
    if t.second > 50:  # not across a midnight between here and the controller's first look
        time.sleep(11)
        t = datetime.now(TZ)
    return {"every": "week", "weekday": t.weekday(), "at": t.hour * 60 + t.minute, "minutes": 1,
            "on_load": False}


def check_measured(d: dict[str, Any]) -> None:
    """What the simulated set does on a remote start (hil_tests/rig/scenario.py): it cranks for
    2 s, then gives 230 V, 50 Hz and the shop's 10 kW; the site's start limit is 30 s."""
    assert d["result"] == "pass" and d["why"] is None, d
    assert d["minutes"] == 1 and d["on_load"] is False
    assert 1 <= d["start_s"] <= 15 and d["start_s"] <= d["stable_s"] <= 20, d
    assert d["v_min"] == d["v_max"] == 230.0 and d["f_min"] == d["f_max"] == 50.0, d
    assert d["load_kw"] == 10.0 and 0 <= d["fuel_used_l"] <= 0.5, d
    assert d["alarms"] == []


def test_a_scheduled_run_with_the_broker_down_reports_later_with_nothing_lost(
        broker: Broker, gateway: Any, tmp_path: Path):
    store = SqliteStore(str(tmp_path / "sot.sqlite3"))  # the gateway fixture's database
    broker.stop()  # the link is down from the controller's boot to after the run
    sim = make_site(tmp_path, broker.port, login=broker.login(SITE), exercise=due_now())
    sim.start()
    try:
        fw = present(sim.firmware)
        assert fw.wait_log("exercise: scheduled test run started", 30)
        assert fw.wait_log("exercise: done pass", 120)
        assert sim.plant.control_writes == [("genset", START), ("genset", STOP)]
        assert "W telemetry" not in fw.log() or fw.alive()
        time.sleep(2)
        assert store.events_of_type(SITE, "exercise_done") == []  # nothing got through
        broker.start()
        ev = wait_for(lambda: store.events_of_type(SITE, "exercise_done"), 60,
                      "the test run's record at the gateway")
        assert len(ev) == 1 and ev[0]["hist"] is True  # from the journal, after reconnecting
        d = ev[0]["data"]
        check_measured(d)
        assert d["trigger"] == "schedule" and d["cmd"] is None
        # nothing lost: every event of this boot is filed, seq after seq
        boot = ev[0]["boot"]
        seqs = wait_for(lambda: (s := store.event_seqs(SITE, boot, -1)) and
                        s[-1] >= ev[0]["seq"] and s, 30, "the journal replayed")
        assert seqs == list(range(seqs[0], seqs[-1] + 1)) and seqs[0] <= 1, seqs
        assert {e["type"] for e in store.events(SITE, 100)} >= {"gen_running", "gen_stopped",
                                                               "exercise_done"}
        assert "MemoryError" not in fw.log()
    finally:
        store.close()
        sim.stop()
        if sim.firmware is not None:
            print(sim.firmware.log()[-3000:])


@pytest.fixture
def peer(broker: Broker):
    p = Peer(broker.port, f"{ROOT}/#", **broker.login(GATEWAY_USER))
    yield p
    p.close()


@pytest.fixture
def keyed(broker: Broker, tmp_path: Path):
    with make_site(tmp_path, broker.port, login={**broker.login(SITE), "cmd_key": KEY}) as s:
        yield s


def of_type(peer: Peer, etype: str) -> list[dict[str, Any]]:
    return [e["data"] for e in peer.events(SITE) if e["type"] == etype]


def test_a_gen_test_command_ends_with_an_exercise_record_of_what_was_measured(keyed: Any,
                                                                             peer: Peer):
    wait_for(lambda: (s := peer.last(f"{ROOT}/state")) and s["genset"]["ready"], 20,
             "a ready generator")
    cmd = commands.sign(SITE, "gen_test", KEY, 1, {"minutes": 1})
    peer.publish(f"{ROOT}/cmd/gen_test", json.dumps(cmd))
    d = wait_for(lambda: of_type(peer, "exercise_done"), 120, "the test run's record")[0]
    # The record is emitted as the run ends and the command's final result right after it.
    wait_for(lambda: len(of_type(peer, "cmd_result")) >= 2, 20, "the command's final result")
    res = of_type(peer, "cmd_result")
    assert [r["result"] for r in res] == ["accepted", "done"]
    assert d["trigger"] == "command" and d["cmd"] == cmd["id"]
    check_measured(d)
    assert abs(d["started"] - cmd["issued"]) <= 5
    assert keyed.plant.control_writes == [("genset", START), ("genset", STOP)]
    wait_for(lambda: present(peer.last(f"{ROOT}/state"))["genset"]["state"] == "stopped", 20,
             "the set stopped again")


def test_a_flood_of_100_commands_a_second_leaves_the_poll_period_unchanged(keyed: Any,
                                                                          peer: Peer):
    """Forged, replayed, malformed and oversized commands at 100 a second for 5 s. The bus is
    polled at its configured 1 s throughout, the refusals are journalled at most 4 a minute,
    and a valid command after the flood is still taken."""
    from hil_tests.rig.links import TO_PLANT

    requests: list[float] = []

    def record(direction: str, data: bytes) -> bytes:
        # the grid meter's (unit 1) first read of each round
        if direction == TO_PLANT and data[:2] == b"\x01\x04" and data[2:4] == b"\x00\x00":
            requests.append(time.monotonic())
        return data

    keyed.plant.links["rs485"].on_bytes = record
    wait_for(lambda: (s := peer.last(f"{ROOT}/state")) and s["genset"]["ready"], 20,
             "a ready generator")
    ok = commands.sign(SITE, "rebirth", KEY, 1)
    peer.publish(f"{ROOT}/cmd/rebirth", json.dumps(ok))
    wait_for(lambda: of_type(peer, "cmd_result"), 20, "the first command's result")
    time.sleep(6)
    before = _periods(requests)

    forged = {**commands.sign(SITE, "gen_start", KEY, 2), "sig": "0" * 64}
    kinds: list[bytes | str] = [json.dumps(forged), json.dumps(ok), b'{"v": 1, "id": 7}',
                                b"{" + b"x" * 2000]
    t0 = time.monotonic()
    sent = 0
    while sent < 500:
        peer.publish(f"{ROOT}/cmd/gen_start", kinds[sent % len(kinds)])
        sent += 1
        lag = t0 + sent / 100 - time.monotonic()  # 100 a second
        if lag > 0:
            time.sleep(lag)
    flood_s = time.monotonic() - t0
    time.sleep(6)
    during = _periods([t for t in requests if t >= t0])

    fw = present(keyed.firmware)
    assert fw.alive() and "MemoryError" not in fw.log()
    print("poll periods before", before, "during", during, "flood", flood_s, "s for", sent)
    assert flood_s <= 6.0, flood_s  # the broker took them at (about) 100 a second
    assert before and during, (before, during)
    assert abs(statistics.median(during) - statistics.median(before)) <= \
        0.1 * statistics.median(before), (before, during)
    assert max(during) <= 1.1, during  # no round more than a tenth late
    refused = [r for r in of_type(peer, "cmd_result") if r["result"] == "refused"]
    assert 1 <= len(refused) <= 8, refused  # at most 4 a minute journalled; the rest counted
    assert fw.wait_log("refusals over 4 a minute")
    assert keyed.plant.control_writes == []  # nothing forged reached the generator
    peer.publish(f"{ROOT}/cmd/rebirth", json.dumps(commands.sign(SITE, "rebirth", KEY, 3)))
    wait_for(lambda: [r for r in of_type(peer, "cmd_result") if r["result"] == "done"
                      and r["id"] != ok["id"]], 20, "a valid command taken after the flood")


def _periods(ts: list[float]) -> list[float]:
    return [b - a for a, b in zip(ts, ts[1:], strict=False)]


def test_comap_remote_start_and_stop_through_its_coil(broker: Broker, peer: Peer,
                                                      tmp_path: Path):
    """ComAp's equivalent of GenComm's control key: the remote start/stop coil (function 5),
    its profile's [control]. The same site with an InteliLite 4 as its genset controller."""
    import dataclasses

    from gateway.config import Device, load_profiles, load_sites
    from hil_tests.rig.sitesim import SimulatedSite

    base = load_sites()[SITE]
    comap = load_profiles()["comap-intelilite4"]
    devices = tuple(Device(name=d.name, profile=comap, bus=d.bus, unit=d.unit)
                    if d.name == "genset" else d for d in base.devices)
    sim = SimulatedSite(dataclasses.replace(base, devices=devices), tmp_path,
                        mqtt_host="127.0.0.1", mqtt_port=broker.port, heartbeat_s=5,
                        keepalive_s=5, login={**broker.login(SITE), "cmd_key": KEY},
                        physics={"start_delay_s": 1.0, "crank_s": 2.0, "cooldown_s": 2.0})
    sim.start()
    try:
        wait_for(lambda: (s := peer.last(f"{ROOT}/state")) and s["genset"]["ready"], 30,
                 "a ready ComAp-controlled generator")
        peer.publish(f"{ROOT}/cmd/gen_start", json.dumps(commands.sign(SITE, "gen_start", KEY, 1)))
        r = wait_for(lambda: len(x := of_type(peer, "cmd_result")) >= 2 and x, 30, "two results")
        assert [x["result"] for x in r] == ["accepted", "done"], r
        assert sim.plant.control_writes == [("genset", [1])]  # the coil on: run
        assert sim.physics.engine_state == "running"
        peer.publish(f"{ROOT}/cmd/gen_stop", json.dumps(commands.sign(SITE, "gen_stop", KEY, 2)))
        r = wait_for(lambda: len(x := of_type(peer, "cmd_result")) >= 3 and x, 30, "the stop")
        assert r[2]["result"] == "done" and sim.plant.control_writes[-1] == ("genset", [0])
        wait_for(lambda: present(peer.last(f"{ROOT}/state"))["genset"]["state"] == "stopped",
                 30, "the set stopped")
    finally:
        sim.stop()
        if sim.firmware is not None:
            print(sim.firmware.log()[-3000:])
