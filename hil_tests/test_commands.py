"""Signed commands through the real Mosquitto (with its ACLs) into the real firmware (unix port)
on a simulated site, signed by the gateway's signer (gateway/commands.py; docs/mqtt.md,
"Commands"). The peer publishes with a gateway account, as the gateway does, and reads the
controller's `cmd_result` events (the loss-free event path).

C1-C4: a captured command published again is refused as a replay; one byte of its arguments
changed is refused; a command queued while the site was offline is refused as expired; after a
power cut an old counter is refused; the same command delivered twice runs once; remote start
is refused in Manual with no effect on the generator."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from gateway import commands
from gateway.mqttauth import GATEWAY_USER
from gateway.store import SqliteStore
from hil_tests.conftest import wait_for
from hil_tests.rig import present
from hil_tests.rig.broker import Broker
from hil_tests.rig.mqttpeer import Peer
from hil_tests.test_site_panel import ROOT, SITE, make_site

KEY = "5a" * 32


@pytest.fixture
def peer(broker: Broker):
    p = Peer(broker.port, f"{ROOT}/#", **broker.login(GATEWAY_USER))
    yield p
    p.close()


@pytest.fixture
def sim(broker: Broker, tmp_path: Path):
    with make_site(tmp_path, broker.port, login={**broker.login(SITE), "cmd_key": KEY}) as s:
        yield s


def results(peer: Peer) -> list[dict[str, Any]]:
    return [e["data"] for e in peer.events(SITE) if e["type"] == "cmd_result"]


def send(peer: Peer, name: str, body: dict[str, Any] | bytes) -> None:
    peer.publish(f"{ROOT}/cmd/{name}", body if isinstance(body, bytes) else json.dumps(body))


def wait_results(peer: Peer, n: int) -> list[dict[str, Any]]:
    return wait_for(lambda: len(r := results(peer)) >= n and r, 20, f"{n} command results")


def test_replayed_tampered_expired_and_old_commands_are_refused(sim: Any, peer: Peer):
    fw = present(sim.firmware)
    wait_for(lambda: peer.last(f"{ROOT}/state"), 20, "a state")
    births = len(peer.payloads(f"{ROOT}/birth"))

    ok = commands.sign(SITE, "rebirth", KEY, 1)
    send(peer, "rebirth", ok)
    r = wait_results(peer, 1)
    assert r[0] == {"id": ok["id"], "name": "rebirth", "result": "done"}
    wait_for(lambda: len(peer.payloads(f"{ROOT}/birth")) > births, 10, "the birth it asked for")

    send(peer, "rebirth", ok)  # captured and published again (or delivered twice)
    r = wait_results(peer, 2)
    assert r[1]["result"] == "refused" and r[1]["why"] == "replay"

    t = commands.sign(SITE, "gen_test", KEY, 2, {"minutes": 15})
    raw = json.dumps(t).replace('"minutes": 15', '"minutes": 95').encode()  # one byte
    send(peer, "gen_test", raw)
    r = wait_results(peer, 3)
    assert r[2]["result"] == "refused" and r[2]["why"] == "bad_sig"

    # queued at the gateway while the site was offline for hours, delivered on reconnect
    old = commands.sign(SITE, "gen_start", KEY, 3, now=int(time.time()) - 3 * 3600)
    send(peer, "gen_start", old)
    r = wait_results(peer, 4)
    assert r[3]["result"] == "refused" and r[3]["why"] == "expired"

    # power cut; a command with a counter at or below the last accepted one is refused after it
    boot = present(peer.last(f"{ROOT}/birth"))["boot"]
    fw.kill()
    fw.start()
    wait_for(lambda: present(peer.last(f"{ROOT}/birth"))["boot"] > boot, 20,
             "the birth of the next boot (subscribed by then)")
    send(peer, "rebirth", commands.sign(SITE, "rebirth", KEY, 3))
    r = wait_for(lambda: [x for x in results(peer) if x not in r[:4]] or None, 20,
                 "a result after the power cut")
    assert r[-1]["result"] == "refused" and r[-1]["why"] == "replay"
    assert "cmd: refused rebirth replay" in fw.log()


def test_remote_start_refused_in_manual_and_the_generator_stays_still(sim: Any, peer: Peer):
    wait_for(lambda: (s := peer.last(f"{ROOT}/state")) and s["genset"]["ready"], 20,
             "a ready generator")
    sim.physics.set_control_mode("manual")
    wait_for(lambda: (s := peer.last(f"{ROOT}/state")) and s["genset"]["mode"] == "manual", 20,
             "the set in manual")
    send(peer, "gen_start", commands.sign(SITE, "gen_start", KEY, 1))
    r = wait_results(peer, 1)
    assert r[0]["result"] == "refused" and r[0]["why"] == "mode:manual"
    time.sleep(2)
    assert present(peer.last(f"{ROOT}/state"))["genset"]["state"] == "stopped"


def test_sot_cmd_through_the_running_gateway_files_result_and_audit(
        sim: Any, gateway: Any, broker: Broker, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]):
    from gateway import cli
    from hil_tests.conftest import OBSERVER

    keys = tmp_path / "cmd-keys.json"
    keys.write_text(json.dumps({SITE: KEY}))
    pwf = tmp_path / "pw"
    pwf.write_text(broker.login(OBSERVER)["password"] + "\n")
    db = str(tmp_path / "sot.sqlite3")  # the gateway fixture's database, read beside it
    store = SqliteStore(db)
    wait_for(lambda: store.latest(SITE), 30, "the gateway to hear the site")
    common = ["--keys", str(keys), "--ca", str(broker.ca),
              "--mqtt-host", broker.host, "--mqtt-port", str(broker.port),
              "--mqtt-user", OBSERVER, "--mqtt-password-file", str(pwf), "--db", db,
              "--by", "samordnare", "--wait", "30"]
    assert cli.main(["cmd", SITE, "rebirth", *common]) == 0
    assert "utfört / done" in capsys.readouterr().out
    sim.physics.set_control_mode("manual")
    wait_for(lambda: (s := store.latest(SITE)) and s["state"]["genset"]["mode"] == "manual", 20,
             "the set in manual at the gateway")
    assert cli.main(["cmd", SITE, "gen_start", *common]) == 1
    assert "vägrat / refused (mode:manual)" in capsys.readouterr().out
    audit = [(a["actor"], a["action"], a["target"].split("/")[1]) for a in
             store.audit_log() if a["action"].startswith("cmd_")]
    store.close()
    assert sorted(audit) == sorted([("samordnare", "cmd_sent", "rebirth"),
                                    (SITE, "cmd_result", "rebirth"),
                                    ("samordnare", "cmd_sent", "gen_start"),
                                    (SITE, "cmd_result", "gen_start")])


def gen_state(peer: Peer, want: str, timeout: float = 20) -> dict[str, Any]:
    return wait_for(lambda: (s := peer.last(f"{ROOT}/state")) and s["genset"]["state"] == want
                    and s, timeout, f"the generator {want}")


def test_remote_start_and_stop_write_the_control_key_and_the_set_runs(sim: Any, peer: Peer):
    wait_for(lambda: (s := peer.last(f"{ROOT}/state")) and s["genset"]["ready"], 20,
             "a ready generator")
    send(peer, "gen_start", commands.sign(SITE, "gen_start", KEY, 1))
    r = wait_results(peer, 2)
    assert [x["result"] for x in r] == ["accepted", "done"]
    # one function-16 write of the system control key and its complement (GenComm page 16)
    assert sim.plant.control_writes == [("genset", [35732, 0xFFFF - 35732])]
    gen_state(peer, "running")
    time.sleep(4)  # with the grid present a remote run is not ended by the Auto logic
    assert sim.physics.engine_state == "running"

    send(peer, "gen_stop", commands.sign(SITE, "gen_stop", KEY, 2))
    r = wait_results(peer, 3)
    assert r[2] == {"id": r[2]["id"], "name": "gen_stop", "result": "done"}
    assert sim.plant.control_writes[-1] == ("genset", [35733, 0xFFFF - 35733])
    gen_state(peer, "stopped")


def test_manual_during_a_remote_test_run_ends_it_with_a_result_that_says_so(sim: Any,
                                                                           peer: Peer):
    wait_for(lambda: (s := peer.last(f"{ROOT}/state")) and s["genset"]["ready"], 20,
             "a ready generator")
    send(peer, "gen_test", commands.sign(SITE, "gen_test", KEY, 1, {"minutes": 10}))
    gen_state(peer, "running")
    sim.physics.set_control_mode("manual")  # the technician on site takes over
    r = wait_for(lambda: [x for x in results(peer) if x["result"] != "accepted"] or None, 20,
                 "the test run's final result")
    assert r[0]["result"] == "failed" and r[0]["why"] == "local:mode:manual"
    assert len(sim.plant.control_writes) == 1  # no stop written over the person on site
