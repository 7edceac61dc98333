"""Scenarios written against `site_under_test`, so they run on every target (`--target sim` here;
`--target board` on a rig with a board): what the municipality sees of a freshly started site.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.mqttauth import GATEWAY_USER
from gateway.tooling.compiler import compile_site
from hil_tests.conftest import wait_for
from hil_tests.rig.broker import Broker
from hil_tests.rig.mqttpeer import Peer

pytestmark = [pytest.mark.hil, pytest.mark.needs("bus", "network")]

ROOT = "sot/v1/are-kall"


def test_birth_carries_the_site_config_hash_and_every_device_is_seen(site_under_test: Any,
                                                                     broker: Broker):
    peer = Peer(broker.port, f"{ROOT}/#", **broker.login(GATEWAY_USER))
    try:
        birth = wait_for(lambda: peer.last(f"{ROOT}/birth"), 30, "the birth")
        assert birth["config"] == compile_site(site_under_test.site)["hash"]
        state = wait_for(lambda: (s := peer.last(f"{ROOT}/state"))
                         and set(s["devices"].values()) == {"online"} and s, 30,
                         "every device online")
        assert state["grid"]["state"] == "ok" and state["genset"]["mode"] == "auto"
        assert site_under_test.firmware.wait_log("I are-kall boot")
    finally:
        peer.close()
