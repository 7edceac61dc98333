"""Device under test: the real firmware in the MicroPython unix port.

`Firmware` builds the firmware image (ROMFS of .mpy files, as a board gets it), writes the site's
compiled config into a folder that stands in for flash (wired to the plant's pty links and a
private broker), and runs `micropython -X heapsize=<heap> unix_boot.py <image> <flash>`, the heap
being the board's 64 KiB in 64-bit terms plus the image (see BOARD_HEAP_KIB below). It is
stopped or killed by its process id; a `kill -9` is the rig's stand-in for a power cut.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from gateway import config, firmware

# The controller's RAM budget for the firmware is 64 KiB on a 32-bit board (ESP32, RP2040).
# The unix port is 64-bit: a MicroPython object is made of 8-byte words and the collector hands
# out 32-byte blocks, where a board has 4-byte words and 16-byte blocks, so the same objects take
# twice the bytes here. The unix heap is therefore twice the board budget (plus the ROMFS image,
# which a board keeps in flash). docs/architecture.md, "Memory", has the measurements.
BOARD_HEAP_KIB = 64
WORD_FACTOR = 2


class Firmware:
    def __init__(
        self,
        site: config.Site,
        flash_dir: Path,
        *,
        bus_ports: dict[str, str],
        mqtt: dict[str, Any],
        board_heap_kib: int = BOARD_HEAP_KIB,
    ) -> None:
        self.site = site
        self.flash_dir = Path(flash_dir)
        self.bus_ports = bus_ports
        self.mqtt = mqtt
        self.board_heap_kib = board_heap_kib
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.flash_dir.parent / f"{site.id}-firmware.log"

    def start(self) -> Firmware:
        image = firmware.build_image()
        firmware.write_config(
            self.flash_dir, config.compile_site(self.site, bus_ports=self.bus_ports, mqtt=self.mqtt)
        )
        heap = self.board_heap_kib * 1024 * WORD_FACTOR + image.stat().st_size
        env = dict(os.environ, MICROPYPATH=".frozen")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                firmware.micropython(),
                "-X",
                f"heapsize={heap}",
                str(firmware.FIRMWARE_SRC / "sot" / "hal" / "unix_boot.py"),
                str(image),
                str(self.flash_dir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_log(self, text: str, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return True
            if not self.alive():
                return text in self.log()
            time.sleep(0.05)
        return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        rc = self.proc.returncode
        self.proc = None
        return rc

    def kill(self) -> int | None:
        """Power cut: SIGKILL, so nothing is flushed and no MQTT DISCONNECT is sent."""
        return self.stop(signal.SIGKILL)
