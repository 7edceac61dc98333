"""Device under test: the real firmware in the MicroPython unix port.

`Firmware` builds the firmware image (ROMFS of .mpy files, as a board gets it), writes the site's
compiled config into a folder that stands in for flash (wired to the plant's pty links and a
private broker), and runs `micropython -X heapsize=<heap> unix_boot.py <image> <flash>`, the heap
being the board's 64 KiB in 64-bit terms plus the image (see BOARD_HEAP_KIB below). It is
stopped or killed by its process id; a `kill -9` is the rig's stand-in for a power cut.

With `watchdog=True` the rig also plays the board's hardware watchdog: the unix HAL rewrites
`wdt` in the flash folder on every feed ("<timeout_ms> <feeds>"); when no feed comes within the
timeout, or the process ends on its own (on a board an uncaught exception stops the program and
the watchdog bites), the rig kills the process, writes `reset_cause` = "wdt" into the flash
folder (the board's reset-reason register) and starts it again. `resets` counts those.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from gateway import config
from gateway.tooling import compiler, firmware

from .proc import stop_process

# The controller's RAM budget for the firmware is 64 KiB on a 32-bit board (ESP32, RP2040).
# The unix port is 64-bit: a MicroPython object is made of 8-byte words and the collector hands
# out 32-byte blocks, where a board has 4-byte words and 16-byte blocks, so the same objects take
# twice the bytes here. The unix heap is therefore twice the board budget (plus the ROMFS image,
# which a board keeps in flash). docs/architecture.md, "Memory", has the measurements.
BOARD_HEAP_KIB = 64
WORD_FACTOR = 2
# A board runs the firmware frozen into its image: function objects, qstrs and module tables of
# the firmware's own code stay in flash. The unix port builds them in its heap (from the ROMFS
# image): measured live after start-up, 37.4 KiB on the 32-bit qemu board against about 107 KiB
# here, i.e. 2 x 37.4 + 32 KiB. The unix heap gets those 32 KiB on top, so that its headroom is
# the board's in 64-bit terms; the budget itself is held on the 32-bit build
# (hil_tests/test_memory_soak.py, test_a_compressed_storm_day_on_the_32_bit_board).
FROZEN_CODE_KIB = 32
# TLS (a config with mqtt.ca) costs the unix port about 5.7 KiB of the MicroPython heap, measured
# after a collection: the context with the parsed CA 3.0 KiB, one connection 2.6 KiB (mbedTLS's
# record buffers come from the C heap on this build). The unix heap gets this much on top, so
# that the rig's margin is what it was before TLS; on a 32-bit board these objects take about
# half the bytes, out of its own budget (docs/benchmarks.md, "Firmware memory", with TLS).
TLS_HEAP_KIB = 6


class Firmware:
    def __init__(
        self,
        site: config.Site,
        flash_dir: Path,
        *,
        bus_ports: dict[str, str],
        mqtt: dict[str, Any],
        board_heap_kib: int = BOARD_HEAP_KIB,
        watchdog: bool = False,
        extra_config: dict[str, Any] | None = None,
        clock_scale: float = 1.0,
    ) -> None:
        """clock_scale: the firmware's monotonic clock and sleeps run this many times faster
        than the host's (SOT_TIME_SCALE, firmware/sot/hal/unix_clock.py; docs/testing.md)."""
        self.site = site
        self.flash_dir = Path(flash_dir)
        self.bus_ports = bus_ports
        self.mqtt = mqtt
        self.board_heap_kib = board_heap_kib
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.flash_dir.parent / f"{site.id}-firmware.log"
        self.watchdog = watchdog
        self.extra_config = extra_config or {}  # rig-only knobs, e.g. heap_log_ms for the soak
        self.clock_scale = clock_scale
        self.tls = False  # set at start from the compiled config (mqtt.ca)
        self.resets = 0
        self._wd_thread: threading.Thread | None = None
        self._powered = False
        self._lock = threading.RLock()

    def start(self) -> Firmware:
        with self._lock:
            self._spawn()
            self._powered = True
        if self.watchdog and (self._wd_thread is None or not self._wd_thread.is_alive()):
            self._wd_thread = threading.Thread(target=self._watch, name="wdt", daemon=True)
            self._wd_thread.start()
        return self

    def _spawn(self) -> None:
        image = firmware.build_image()
        compiled = compiler.compile_site(self.site, bus_ports=self.bus_ports, mqtt=self.mqtt)
        firmware.write_config(self.flash_dir, {**compiled, **self.extra_config})
        heap = self.heap_budget_base() + image.stat().st_size
        self.tls = bool(compiled["mqtt"].get("ca"))
        if self.tls:
            heap += TLS_HEAP_KIB * 1024
        env = dict(os.environ, MICROPYPATH=".frozen")
        env.pop("SOT_TIME_SCALE", None)
        if self.clock_scale != 1:
            env["SOT_TIME_SCALE"] = repr(float(self.clock_scale))
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

    # --- the watchdog peripheral -------------------------------------------------------------

    def _feed_mark(self) -> tuple[int, str] | None:
        try:
            path = self.flash_dir / "wdt"
            return path.stat().st_mtime_ns, path.read_text()
        except OSError:
            return None

    def _watch(self) -> None:
        armed_mark = self._feed_mark()
        armed = False
        last_feed = time.monotonic()
        timeout = 8.0
        while True:
            time.sleep(0.1)
            with self._lock:
                if not self._powered:
                    if self.proc is None:
                        return  # stopped for good
                    continue
                mark = self._feed_mark()
                if mark is not None and mark != armed_mark:
                    armed_mark = mark
                    armed = True
                    last_feed = time.monotonic()
                    try:
                        timeout = int(mark[1].split()[0]) / 1000
                    except (ValueError, IndexError):
                        pass
                dead = self.proc is None or self.proc.poll() is not None
                bites = armed and time.monotonic() - last_feed > timeout
                if not (dead or bites):
                    continue
                if dead and not armed:
                    # ended before the watchdog was started: the watchdog was never running
                    self._powered = False
                    continue
                if self.proc is not None and self.proc.poll() is None:
                    os.kill(self.proc.pid, signal.SIGCONT)  # a frozen process must die too
                    os.kill(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(5)
                self.resets += 1
                (self.flash_dir / "reset_cause").write_text("wdt")
                with open(self.log_path, "ab") as f:
                    f.write(b"--- rig: watchdog reset\n")
                self._spawn()
                armed = False
                armed_mark = self._feed_mark()
                last_feed = time.monotonic()

    def heap_budget(self) -> int:
        """Heap bytes the firmware may use here, the ROMFS image not counted (64 KiB x 2, plus
        FROZEN_CODE_KIB, plus TLS_HEAP_KIB with TLS)."""
        return self.heap_budget_base() + (TLS_HEAP_KIB * 1024 if self.tls else 0)

    def heap_budget_base(self) -> int:
        """The board's heap in 64-bit terms plus what its frozen code keeps out of it."""
        return (self.board_heap_kib * WORD_FACTOR + FROZEN_CODE_KIB) * 1024

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
        with self._lock:
            self._powered = False
            return self._stop(sig, timeout)

    def _stop(self, sig: int, timeout: float) -> int | None:
        rc = stop_process(self.proc, sig, timeout)
        self.proc = None
        return rc

    def kill(self) -> int | None:
        """Power cut: SIGKILL, so nothing is flushed and no MQTT DISCONNECT is sent."""
        return self.stop(signal.SIGKILL)
