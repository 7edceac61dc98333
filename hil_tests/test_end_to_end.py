"""End to end through real parts: plant simulator (pymodbus) -> firmware (MicroPython unix port)
-> Mosquitto -> gateway (SQLite, HTTP API). What a coordinator would see on the API is what the
tests assert."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_sites
from hil_tests.conftest import wait_for
from hil_tests.rig import present
from hil_tests.rig.broker import Broker
from hil_tests.rig.gatewayproc import GatewayThread
from hil_tests.rig.sitesim import SimulatedSite

pytestmark = [pytest.mark.hil, pytest.mark.needs("unix", "bus", "network", "power_cut")]

SITE = "are-kall"
KEEPALIVE_S = 5


def site_row(gw: GatewayThread, site: str = SITE) -> dict[str, Any] | None:
    return next((r for r in gw.get("/api/sites") if r["id"] == site), None)


def event_types(gw: GatewayThread, site: str = SITE) -> list[str]:
    return [e["type"] for e in gw.get(f"/api/sites/{site}/events?limit=100")]


@pytest.fixture
def sim(broker: Broker, gateway: GatewayThread, tmp_path: Path, request: pytest.FixtureRequest):
    site = load_sites()[SITE]
    genset = getattr(request, "param", None)
    if genset:
        site = dataclasses.replace(site, genset={**site.genset, **genset})
    s = SimulatedSite(
        site,
        tmp_path,
        mqtt_host=broker.host,
        mqtt_port=broker.port,
        heartbeat_s=5,
        keepalive_s=KEEPALIVE_S,
        physics={"start_delay_s": 1.0, "crank_s": 2.0, "cooldown_s": 2.0},
        login=broker.login(SITE),
    )
    s.start()
    try:
        yield s
    finally:
        s.stop()
        if s.firmware is not None:
            print(s.firmware.log()[-4000:])


def test_grid_loss_reaches_the_gateway_and_killing_the_controller_shows_it_lost(
    sim: SimulatedSite, gateway: GatewayThread
):
    row = wait_for(
        lambda: (r := site_row(gateway)) and r["mode"] == "normal" and r,
        30,
        "the site to report normal operation",
    )
    assert row["status"] == "online" and row["grid_state"] == "ok"
    assert row["fuel_pct"] == 80 and row["hours_left"] == pytest.approx(0.8 * 400 / 3.4, abs=0.1)
    assert row["devices"] == {"grid": "online", "genset": "online", "tank": "online",
                              "pumps": "online"}
    assert "grid_lost" not in event_types(gateway)  # start-up announces no outage

    sim.physics.grid_lost()
    wait_for(lambda: "grid_lost" in event_types(gateway), 15, "a grid_lost event in the database")
    # The event and the next state are two messages: over TLS the state may land a moment later.
    row = wait_for(lambda: (r := site_row(gateway)) and r["grid_state"] == "lost" and r, 5,
                   "the state after the grid loss")
    assert row["mode"] in ("grid_lost", "on_backup")
    lost = next(e for e in gateway.get(f"/api/sites/{SITE}/events") if e["type"] == "grid_lost")
    assert lost["data"]["v"] == 0 and lost["hist"] is False

    row = wait_for(
        lambda: (r := site_row(gateway)) and r["mode"] == "on_backup" and r,
        20,
        "the generator to carry the site",
    )
    assert row["genset_state"] == "running"
    assert "gen_running" in event_types(gateway)

    present(sim.firmware).kill()  # power cut: no DISCONNECT, the broker publishes the Will
    row = wait_for(
        lambda: (r := site_row(gateway)) and r["status"] == "lost" and r,
        1.5 * KEEPALIVE_S + 5,
        "the site to be shown lost",
    )
    assert row["mode"] == "on_backup"  # last known state is kept, flagged by the status

    # Every message the firmware sent met the v1 schema: the gateway rejected none.
    stats = gateway.get("/api/stats")
    assert stats["rejected"] == 0, stats["rejected_by_reason"]
    assert stats["accepted_by_topic"].get("event", 0) >= 3


@pytest.mark.parametrize("sim", [{"start_timeout_s": 6.0}], indirect=True)
def test_generator_that_fails_to_start_is_reported(sim: SimulatedSite, gateway: GatewayThread):
    wait_for(lambda: (r := site_row(gateway)) and r["mode"] == "normal", 30, "normal operation")
    sim.physics.fail_next_start(True)
    sim.physics.grid_lost()
    row = wait_for(
        lambda: (r := site_row(gateway)) and r["mode"] == "backup_failed" and r,
        25,
        "the site to report backup failed",
    )
    assert row["genset_state"] == "fault"
    types = event_types(gateway)
    assert "gen_failed_to_start" in types and "gen_running" not in types
    failed = next(
        e for e in gateway.get(f"/api/sites/{SITE}/events") if e["type"] == "gen_failed_to_start"
    )
    assert failed["data"]["mode"] == "auto" and failed["data"]["waited_s"] >= 6

    sim.physics.grid_restored()
    wait_for(lambda: "grid_restored" in event_types(gateway), 15, "grid_restored")
    wait_for(lambda: (r := site_row(gateway)) and r["mode"] == "normal", 10, "normal again")


def test_a_device_that_is_not_what_its_profile_says_is_never_trusted(
        broker: Broker, gateway: GatewayThread, tmp_path: Path):
    s = SimulatedSite(load_sites()[SITE], tmp_path, mqtt_host=broker.host,
                      mqtt_port=broker.port, heartbeat_s=5, login=broker.login(SITE))
    s.plant.set("genset", "model", 4321)  # not a model the DSE profile lists
    s.start()
    try:
        row = wait_for(lambda: (r := site_row(gateway)) and r["devices"].get("genset") == "mismatch"
                       and r, 30, "the genset shown as the wrong device")
        assert row["fuel_pct"] is None and row["genset_state"] == "unknown"
        assert row["mode"] == "degraded"
        s.plant.set("genset", "model", 32840)  # the right controller is fitted
        row = wait_for(lambda: (r := site_row(gateway)) and r["devices"]["genset"] == "online"
                       and r, 15, "the genset trusted again after its re-probe")
        assert row["fuel_pct"] == 80
        assert "device_online" in event_types(gateway)
    finally:
        s.stop()
        if s.firmware is not None:
            print(s.firmware.log()[-4000:])
