"""One simulated SOT-punkt: plant (pymodbus on pty links, with physics) + the real firmware.

Used by `sot demo` and by the HIL tests, so both run exactly the same rig.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from gateway.config import Site

from .dut import Firmware
from .links import PtyLink
from .plant import Plant, PlantThread
from .scenario import PlantPhysics


class SimulatedSite:
    def __init__(
        self,
        site: Site,
        workdir: Path,
        *,
        mqtt_host: str,
        mqtt_port: int,
        time_scale: float = 1.0,
        heartbeat_s: int | None = None,
        keepalive_s: int | None = None,
        physics: dict[str, Any] | None = None,
        watchdog: bool = False,
        extra_config: dict[str, Any] | None = None,
        login: dict[str, str] | None = None,
        exercise: bool = False,
        clock_scale: float = 1.0,
        bus_links: dict[str, PtyLink] | None = None,
    ) -> None:
        """login: {"user", "password"} of the site's MQTT account (Broker.login(site.id)).
        time_scale speeds up the plant's physics (fuel, run hours); clock_scale the firmware's
        monotonic clock (Firmware, docs/testing.md "A faster clock").
        exercise: keep the site's test-run schedule ([exercise]); without it the controller
        runs none, so a test that happens to run at the scheduled hour sees no generator start
        it did not ask for.
        bus_links: links the caller owns and closes, by bus name (`Plant`), e.g. one paced at
        the bus's baud rate; other buses get an unpaced link."""
        if not exercise and site.exercise is not None:
            site = dataclasses.replace(site, exercise=None)
        self.site = site
        self.workdir = Path(workdir) / site.id
        self.mqtt: dict[str, Any] = {"host": mqtt_host, "port": mqtt_port, **(login or {})}
        if heartbeat_s is not None:
            self.mqtt["heartbeat_s"] = heartbeat_s
        if keepalive_s is not None:
            self.mqtt["keepalive_s"] = keepalive_s
        self.plant = Plant(site, bus_links)
        self.physics = PlantPhysics(self.plant, site, time_scale, **(physics or {}))
        self.thread = PlantThread(self.plant)
        self.firmware: Firmware | None = None
        self.watchdog = watchdog
        self.extra_config = extra_config
        self.clock_scale = clock_scale

    def start(self) -> SimulatedSite:
        self.thread.start()
        self.start_firmware()
        return self

    def start_firmware(self) -> Firmware:
        self.firmware = Firmware(
            self.site, self.workdir / "flash", bus_ports=self.plant.ports(), mqtt=self.mqtt,
            watchdog=self.watchdog, extra_config=self.extra_config, clock_scale=self.clock_scale,
        )
        return self.firmware.start()

    # --- the panel beside the till ---

    @property
    def flash(self) -> Path:
        return self.workdir / "flash"

    def press(self, button: str) -> None:
        """Press a panel button: "ack", "shop" or "next" (the unix HAL reads them from flash)."""
        with open(self.flash / "buttons", "a") as f:
            f.write(button + "\n")

    def panel_text(self) -> str:
        """The texts on the panel's current frame, one per line ("" before the first frame)."""
        try:
            return (self.flash / "panel.txt").read_text()
        except OSError:
            return ""

    def panel_png(self) -> Path:
        return self.flash / "panel.png"

    def stop(self) -> None:
        try:
            if self.firmware is not None:
                self.firmware.stop()
        finally:
            self.thread.stop()

    def __enter__(self) -> SimulatedSite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        """Stopped; the end of the firmware's log goes to the test's output, which pytest shows
        when the test failed."""
        self.stop()
        if self.firmware is not None:
            print(self.firmware.log()[-3000:])
