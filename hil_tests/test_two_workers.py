"""Two gateway workers in one process each on its own loop, through the real Mosquitto with the
accounts and ACLs `sot mqtt-auth --gateway-workers 3` makes (the third watches): the rebirth
after CONNECT is asked once per site, not once per worker; a site's message is filed once; a
clean stop of the leader leaves the gateway `online` for the panels and the other worker leads
(docs/deploy.md, "Several workers")."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import mqttauth
from gateway.config import load_sites
from hil_tests.bench.bench_alerts import state_doc
from hil_tests.conftest import wait_for
from hil_tests.rig.broker import Broker
from hil_tests.rig.gatewayproc import GatewayThread, rig_config
from hil_tests.rig.mqttpeer import Peer

pytestmark = [pytest.mark.hil, pytest.mark.needs("unix", "network")]

SITE = "are-kall"
WATCH = mqttauth.gateway_users(3)[2]


@pytest.fixture
def broker3() -> Iterator[Broker]:
    b = Broker(auth=mqttauth.passwords(load_sites(), gateway_workers=3))
    b.start()
    try:
        yield b
    finally:
        b.cleanup()


def worker(broker: Broker, tmp_path: Path, name: str, account: str) -> GatewayThread:
    gw = GatewayThread(rig_config(broker, tmp_path, mqtt=broker.login(account),
                                  worker={"name": name, "lease_ttl_s": 1.5}))
    gw.user = f"viewer-{name}"  # each its own login in the shared store
    gw.start()
    wait_for(lambda: gw.get("/api/stats")["ignored"] >= 1, 15, f"{name} subscribed")
    return gw


def test_two_workers_ask_once_file_once_and_hand_over(broker3: Broker, tmp_path: Path):
    watch = Peer(broker3.port, "sot/v1/+/rebirth", "sot/v1/gateway/status",
                 **broker3.login(WATCH))
    a = b = None
    try:
        a = worker(broker3, tmp_path, "a", mqttauth.GATEWAY_USER)
        b = worker(broker3, tmp_path, "b", mqttauth.gateway_users(2)[1])
        assert a.get("/api/stats")["worker"]["leader"] == "a"
        time.sleep(0.5)
        rebirths = [t for t, _p, _r in watch.messages if t == f"sot/v1/{SITE}/rebirth"]
        assert len(rebirths) == 1, "the rebirth after CONNECT was asked by both workers"

        # a site's states: each filed once, by one worker or the other
        c = broker3.client(SITE, user=SITE)
        c.connect(broker3.host, broker3.port)
        c.loop_start()
        for seq in range(1, 21):
            c.publish(f"sot/v1/{SITE}/state", json.dumps(state_doc(seq, False)),
                      qos=1).wait_for_publish(5)
        c.disconnect()
        c.loop_stop()

        def filed() -> tuple[int, int]:
            sa, sb = a.get("/api/stats"), b.get("/api/stats")  # type: ignore[union-attr]
            return (sa["accepted_by_topic"].get("state", 0) + sa["outdated"],
                    sb["accepted_by_topic"].get("state", 0) + sb["outdated"])
        wait_for(lambda: sum(filed()) >= 20, 10, "20 states filed")
        na, nb = filed()
        assert na + nb == 20 and na and nb, (na, nb)

        # the leader stops cleanly: b says online again and leads
        a.stop()
        a = None
        wait_for(lambda: b.get("/api/stats")["worker"]["leading"], 5, "b to lead")
        wait_for(lambda: (watch.last("sot/v1/gateway/status") or {}).get("state") == "online",
                 5, "the gateway online again")
        states = [json.loads(p)["state"] for t, p, _r in watch.messages
                  if t == "sot/v1/gateway/status"]
        assert "offline" in states and states[-1] == "online"
    finally:
        watch.close()
        for gw in (a, b):
            if gw is not None:
                gw.stop()
