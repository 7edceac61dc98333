"""HIL fixtures: a private broker, the gateway, and a site under test running the real firmware.

Targets (`--target`):
- `sim` (the default): the firmware in the MicroPython unix port against the plant simulator
  on ptys. It can do everything a scenario asks for.
- `board`: a real board on `--board-port` (its USB serial console, driven through the raw REPL
  like mpremote: hil_tests/rig/boarddut.py) with the plant simulator on a USB-RS485 adapter at
  `--bus-port`. It has `network` and, with `--bus-port`, `bus`; not `panel` (the rig cannot
  see a board's display nor press its buttons), `flash`, `power_cut`, `unix` or `qemu`.
- `qemu`: the 32-bit frozen build on the qemu board (hil_tests/rig/qemu.py), booted by the rig
  on this host: UART1 on the plant simulator's pty link, UART2 through a rig-side bridge to the
  broker, the console driven through the raw REPL. It has `bus`, `network` and `qemu`; not
  `panel` (no display: frames are rendered and dropped), `flash` (the rig cannot reach the
  board's littlefs while the firmware runs), `power_cut` (the flash is RAM: a qemu restart
  loses it) or `unix`.

Every HIL scenario declares what it needs with `@pytest.mark.needs(...)` (module `pytestmark`
or per test); a scenario whose needs the target lacks is skipped with those needs named, and a
HIL scenario that declares nothing is a collection error. Capabilities:

    bus        the firmware's RS-485 bus reaches the rig's plant simulator
    network    the firmware's MQTT reaches the rig's broker
    panel      the rig reads the panel's frame and presses its buttons
    flash      the rig reads and writes the firmware's flash (journal, watchdog file)
    power_cut  the rig cuts the power (kill -9) and restarts the firmware
    unix       the scenario runs the firmware as a unix process of its own (heap of the unix
               port, SIGSTOP, the firmware's MQTT client or Modbus master alone)
    qemu       the rig builds the 32-bit qemu board's image and boots it on this host

Not run here: there is no board on this machine. The board path is plumbing, kept small; the
scenarios written against `site_under_test` (hil_tests/test_any_target.py) are what run on
every target. Under `--target sim` (make test) each of them also runs on the qemu board
(`[qemu]`), skipped with the reason where it needs what that board lacks. A board's MQTT must
reach the rig's broker, which listens on 127.0.0.1 in this rig: on a real rig the broker needs
the rig's LAN address (not done).
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
from hil_tests.rig.gatewayproc import GatewayThread, rig_config, running_gateway

HIL_DIR = Path(__file__).resolve().parent
CAPABILITIES = ("bus", "network", "panel", "flash", "power_cut", "unix", "qemu")
QEMU_CAPABILITIES = {"bus", "network", "qemu"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--target",
        choices=["sim", "qemu", "board"],
        default="sim",
        help="device under test: sim (MicroPython unix port + plant simulator), qemu (the "
             "32-bit build on the qemu board + plant simulator) or board",
    )
    parser.addoption("--board-port", default=None,
                     help="--target board: the board's serial console (e.g. /dev/ttyUSB0)")
    parser.addoption("--bus-port", default=None,
                     help="--target board: the USB-RS485 adapter the plant simulator answers on")


def target_capabilities(config: pytest.Config) -> set[str]:
    if config.getoption("--target") == "sim":
        return set(CAPABILITIES)
    if config.getoption("--target") == "qemu":
        return set(QEMU_CAPABILITIES)
    return {"network"} | ({"bus"} if config.getoption("--bus-port") else set())


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "needs(*capabilities): what a HIL scenario needs of the target: "
        + ", ".join(CAPABILITIES) + " (hil_tests/conftest.py)")
    if config.getoption("--target") == "board" and not config.getoption("--board-port"):
        raise pytest.UsageError("--target board needs --board-port (the board's serial console)"
                                " and, for the bus scenarios, --bus-port (the USB-RS485 adapter)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    have = target_capabilities(config)
    target = config.getoption("--target")
    for item in items:
        # Only the scenarios under hil_tests/ run against a target; the gateway's own tests that
        # use a broker (marked hil too) run on this host whatever the target.
        if item.get_closest_marker("hil") is None or HIL_DIR not in item.path.parents:
            continue
        marks = list(item.iter_markers("needs"))
        if not marks:
            raise pytest.UsageError(f"{item.nodeid}: a HIL scenario must declare what it needs "
                                    f"of the target with @pytest.mark.needs(...) "
                                    f"({', '.join(CAPABILITIES)})")
        need = {c for m in marks for c in m.args}
        unknown = need - set(CAPABILITIES)
        if unknown:
            raise pytest.UsageError(f"{item.nodeid}: unknown capability "
                                    f"{', '.join(sorted(unknown))}")
        missing = sorted(need - have)
        if missing:
            item.add_marker(pytest.mark.skip(
                reason=f"target {target} lacks {', '.join(missing)}"))


@pytest.fixture(params=["target", "qemu"])
def site_under_test(broker: Broker, tmp_path: Path, request: pytest.FixtureRequest):
    """The demo site "are-kall" under test on the chosen target, its MQTT at the rig's broker.
    Under `--target sim` the scenario runs a second time on the qemu board (`[qemu]`), so that
    make test runs the target-agnostic scenarios on the 32-bit build too.

    Offers `firmware` (start/stop/log/wait_log/alive), `plant` and `physics` on every target."""
    site = load_sites()["are-kall"]
    cfg = request.config
    target = cfg.getoption("--target")
    if request.param == "qemu":
        if target != "sim":
            pytest.skip(f"the [qemu] run is the extra one of --target sim; here the target is "
                        f"{target}")
        need = {c for m in request.node.iter_markers("needs") for c in m.args}
        missing = sorted(need - QEMU_CAPABILITIES)
        if missing:
            pytest.skip(f"target qemu lacks {', '.join(missing)}")
        target = "qemu"
    login = broker.login(site.id)
    if target == "sim":
        from hil_tests.rig.sitesim import SimulatedSite

        s: Any = SimulatedSite(site, tmp_path, mqtt_host=broker.host, mqtt_port=broker.port,
                               heartbeat_s=5, keepalive_s=5, login=login)
    elif target == "qemu":
        from hil_tests.rig.qemu import qemu_site

        s = qemu_site(site, tmp_path, mqtt_host=broker.host, mqtt_port=broker.port,
                      heartbeat_s=5, keepalive_s=5, login=login)
    else:
        from hil_tests.rig.boarddut import BoardSite

        s = BoardSite(site, tmp_path, board_port=cfg.getoption("--board-port"),
                      bus_port=cfg.getoption("--bus-port"), mqtt_host=broker.host,
                      mqtt_port=broker.port, login=broker.login(site.id))
    s.start()
    try:
        yield s
    finally:
        s.stop()


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
    with running_gateway(rig_config(broker, tmp_path)) as gw:
        yield gw


FIRST_POLL_S = 0.02


def wait_for(check: Callable[..., Any], timeout: float, what: str, every: float = 0.25) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout` s.

    The pause between checks starts at FIRST_POLL_S and grows by half each time up to `every`:
    a condition that is met within a moment is seen within a moment (most waits of the suite
    are short, and a fixed `every` cost each of them about half of it), while a long wait
    still checks only every `every` s. docs/testing.md, "Waiting"."""
    deadline = time.monotonic() + timeout
    last: Any = None
    pause = min(FIRST_POLL_S, every)
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as e:  # noqa: BLE001 -- a not-yet-ready service is retried
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 1.5, every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")
