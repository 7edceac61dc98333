"""HIL fixtures: a private broker, the gateway, and a simulated site running the real firmware.

`--target sim` (the default) runs the firmware in the MicroPython unix port against the plant
simulator. A board backend (`--target board --board-port ... --bus-port ...`) plugs in here; it
is not built yet, so asking for it fails loudly rather than silently testing the simulator.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway import mqttauth
from gateway.config import load_sites
from hil_tests.rig.broker import Broker
from hil_tests.rig.gatewayproc import GatewayThread


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--target",
        choices=["sim", "board"],
        default="sim",
        help="device under test: sim (MicroPython unix port + plant simulator)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--target") == "board":
        raise pytest.UsageError(
            "--target board: the board backend is not built yet; run with --target sim"
        )


# A second gateway worker's account, as `sot mqtt-auth --gateway-workers 2` makes it: test peers
# that read everything or publish like the gateway while the gateway itself is connected (the
# broker ties each account to one client id, so the gateway's own would replace the gateway).
OBSERVER = mqttauth.gateway_users(2)[1]


def site_logins() -> dict[str, str]:
    """A password for every configured site and two gateway accounts, as `sot mqtt-auth` makes
    them."""
    return mqttauth.passwords(load_sites(), gateway_workers=2)


@pytest.fixture
def broker() -> Iterator[Broker]:
    """Mosquitto with per-site credentials and ACLs, as in production."""
    b = Broker(auth=site_logins())
    b.start()
    try:
        yield b
    finally:
        b.cleanup()


@pytest.fixture
def gateway(broker: Broker, tmp_path: Path) -> Iterator[GatewayThread]:
    gw = GatewayThread(
        {
            "mqtt": {"host": broker.host, "port": broker.port,
                     **broker.login(mqttauth.GATEWAY_USER)},
            "http": {"host": "127.0.0.1", "port": 0},
            "store": {"path": str(tmp_path / "sot.sqlite3")},
            "alerts": {"files_dir": str(tmp_path)},
        }
    )
    gw.start()
    try:
        # Subscribed once it has heard its own retained `online` status (counted as ignored):
        # the TLS handshake makes the gateway's connect slower than a test's first publish.
        wait_for(lambda: gw.get("/api/stats")["ignored"] >= 1, 15, "the gateway subscribed")
        yield gw
    finally:
        gw.stop()


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.25) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as e:  # noqa: BLE001 -- a not-yet-ready service is retried
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")
