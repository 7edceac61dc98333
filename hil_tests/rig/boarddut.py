"""Device under test on a real board (`pytest hil_tests --target board --board-port ...
--bus-port ...`): the firmware on the board, driven through its serial console, and the plant
simulator on a USB-RS485 adapter wired to the board's RS-485 bus.

`BoardFirmware` offers the part of the unix runner's interface (hil_tests/rig/dut.py
`Firmware`) that a board can: `start()` writes the site's compiled config (wired to the rig's
broker) to the board's flash through the raw REPL and hard-resets it into the firmware;
`log()`/`wait_log()` read the console; `stop()` interrupts the firmware (Ctrl-C). A power cut
(`kill()`) needs a relay the rig does not have: it raises, and scenarios that cut power declare
`needs("power_cut")`, which a board target lacks.

Untested: this machine has no board. The raw REPL client is the one `sot firmware deploy` uses
(gateway/tooling/deploy.py), tested against hil_tests/rig/fakeboard.py.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway import config
from gateway.tooling import compiler
from gateway.tooling.deploy import RawRepl

from .plant import Plant, PlantThread
from .scenario import PlantPhysics


@dataclass
class SerialLink:
    """The plant's end of a real RS-485 bus: a USB adapter (there is no controller end here)."""

    plant_path: str
    device_path: str = "uart"  # the board's UART: named by the site's [board] section

    def close(self) -> None:
        pass

    def plant_reports(self, on: bool = True) -> None:
        """A real line needs no pacing of requests to the plant (links.py, frames)."""

    def plant_done(self) -> None:
        pass


class BoardFirmware:
    def __init__(self, site: config.Site, port: str, *, mqtt: dict[str, Any]) -> None:
        self.site = site
        self.port = port
        self.mqtt = mqtt
        self.repl: RawRepl | None = None
        self._reader: threading.Thread | None = None
        self._stop = threading.Event()
        self.pid = None  # no process on this machine
        self.resets = 0

    def start(self) -> BoardFirmware:
        compiled = compiler.compile_site(self.site, mqtt=self.mqtt)
        self.repl = RawRepl(self.port)
        self.repl.enter()
        text = compiler.to_json(compiled)
        self.repl.exec("f = open('config.json', 'w')")
        for i in range(0, len(text), 200):
            self.repl.exec(f"f.write({json.dumps(text[i:i + 200])})")
        self.repl.exec("f.close()")
        self.repl.reset()
        self.resets += 1
        self._stop.clear()
        self._reader = threading.Thread(target=self._read, name="board-console", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        repl = self.repl
        while repl is not None and not self._stop.is_set():
            try:
                repl.console += repl.s.read(max(1, repl.s.in_waiting))
            except Exception:  # noqa: BLE001 -- USB-CDC boards drop off the bus on reset
                time.sleep(0.5)

    def log(self) -> str:
        return bytes(self.repl.console).decode(errors="replace") if self.repl else ""

    def alive(self) -> bool:
        return self.repl is not None and not self._stop.is_set()

    def wait_log(self, text: str, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return True
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        self._stop.set()
        if self._reader is not None:
            self._reader.join(2)
        if self.repl is not None:
            try:
                self.repl.enter()  # Ctrl-C: the firmware stops, the board stays at the prompt
            finally:
                self.repl.close()
                self.repl = None

    def kill(self) -> None:
        raise NotImplementedError("a power cut needs a relay on the board's supply; scenarios "
                                  "that cut power declare needs('power_cut')")


class BoardSite:
    """The same face as hil_tests/rig/sitesim.py's SimulatedSite: plant, physics, firmware."""

    def __init__(self, site: config.Site, workdir: Path, *, board_port: str,
                 bus_port: str | None, mqtt_host: str, mqtt_port: int,
                 login: dict[str, str] | None = None) -> None:
        self.site = site
        self.workdir = Path(workdir)
        links = {b.name: SerialLink(bus_port) for b in site.buses} if bus_port else {}
        self.plant = Plant(site, links)  # type: ignore[arg-type]  # SerialLink: a PtyLink's face
        self.physics = PlantPhysics(self.plant, site)
        self.thread = PlantThread(self.plant)
        self.firmware = BoardFirmware(site, board_port, mqtt={"host": mqtt_host,
                                                              "port": mqtt_port, **(login or {})})
        self.bus_port = bus_port

    def start(self) -> BoardSite:
        if self.bus_port:
            self.thread.start()
        self.firmware.start()
        return self

    def stop(self) -> None:
        try:
            self.firmware.stop()
        finally:
            if self.thread.running:
                self.thread.stop()
