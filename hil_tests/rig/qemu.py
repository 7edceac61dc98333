"""The qemu board: the firmware's 32-bit frozen build in qemu-system-arm, driven through its
serial console the way mpremote drives a board (docs/firmware-build.md).

    with QemuBoard(image) as board:
        board.exec("import gc; print(gc.mem_free())")

The image is `gateway.tooling.firmware.build_qemu()`'s: ports/qemu for the MPS2-AN385 with the
firmware and its unit tests frozen in. qemu puts the console (UART0) on a pty; `exec()` uses the raw
REPL on it: Ctrl-A enters it, the code is sent and Ctrl-D runs it, and the board answers
"OK", the output, Ctrl-D, the error text, Ctrl-D, ">". More serial lines (UART1..3) can be
given to qemu as chardev specs (a host tty path, `tcp:127.0.0.1:PORT,reconnect=1`, `pty`).
qemu is stopped by its pid.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import termios
import threading
import time
import tty
from pathlib import Path
from typing import Any

from .proc import stop_process
from .tcpproxy import FreezableProxy, TlsModem

PTY_RE = re.compile(rb"char device redirected to (\S+) \(label serial(\d+)\)")


class BoardError(Exception):
    """The board did not answer as a MicroPython raw REPL does (or the code raised: see .err)."""

    def __init__(self, msg: str, out: str = "", err: str = "") -> None:
        super().__init__(msg)
        self.out = out
        self.err = err


class QemuBoard:
    def __init__(self, image: Path, *, serials: tuple[str, ...] = (), log: Path | None = None):
        self.image = Path(image)
        self.serials = serials
        self.log_path = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.ptys: dict[int, str] = {}
        self.fd = -1
        self._pending = b""

    # --- power ---------------------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> QemuBoard:
        cmd = ["qemu-system-arm", "-machine", "mps2-an385", "-nographic", "-monitor", "null",
               "-semihosting", "-serial", "pty"]
        for spec in self.serials:
            cmd += ["-serial", spec]
        cmd += ["-kernel", str(self.image)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        assert self.proc.stdout is not None
        out = self.proc.stdout.fileno()
        seen = b""
        deadline = time.monotonic() + timeout
        want = {0} | {i + 1 for i, spec in enumerate(self.serials) if spec == "pty"}
        while not want <= set(self.ptys):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.stop()
                raise BoardError(f"qemu named no console pty: {seen.decode(errors='replace')}")
            r, _, _ = select.select([out], [], [], left)
            if r:
                chunk = os.read(out, 4096)
                seen += chunk
                for path, n in PTY_RE.findall(seen):
                    self.ptys[int(n)] = path.decode()
        self.fd = os.open(self.ptys[0], os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.fd)
        attr = termios.tcgetattr(self.fd)
        attr[3] &= ~termios.ECHO
        termios.tcsetattr(self.fd, termios.TCSANOW, attr)
        self.enter_raw(timeout)
        return self

    def stop(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.proc is not None:
            stop_process(self.proc)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> QemuBoard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the console ---------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            _, w, _ = select.select([], [self.fd], [], 5)
            if not w:
                raise BoardError("the console does not take input")
            n = os.write(self.fd, view[:256])
            view = view[n:]

    def read_until(self, marker: bytes, timeout: float, sink=None) -> bytes:
        """Console bytes up to and including `marker`; sink(chunk) sees each chunk as it comes."""
        buf = self._pending
        deadline = time.monotonic() + timeout
        while marker not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not self.alive():
                self._pending = b""
                why = "timed out" if left <= 0 else "qemu ended"
                raise BoardError(f"{why} waiting for {marker!r}; got {buf[-2000:]!r}",
                                 out=buf.decode(errors="replace"))
            r, _, _ = select.select([self.fd], [], [], min(left, 0.5))
            if r:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:
                    chunk = b""
                if sink is not None and chunk:
                    sink(chunk)
                buf += chunk
                if self.log_path is not None and chunk:
                    with open(self.log_path, "ab") as f:
                        f.write(chunk)
        i = buf.index(marker) + len(marker)
        self._pending = buf[i:]
        return buf[:i]

    def enter_raw(self, timeout: float = 10.0) -> None:
        """Interrupt whatever runs and enter the raw REPL (as mpremote does)."""
        self.write(b"\r\x03\x03")
        time.sleep(0.1)
        self._drain()
        self.write(b"\r\x01")
        self.read_until(b"raw REPL; CTRL-B to exit\r\n>", timeout)

    def _drain(self) -> None:
        self._pending = b""
        while select.select([self.fd], [], [], 0.05)[0]:
            try:
                if not os.read(self.fd, 4096):
                    return
            except OSError:
                return

    def soft_reset(self, timeout: float = 10.0) -> None:
        """A fresh heap (Ctrl-D in the raw REPL), as mpremote does before it runs a script."""
        self.write(b"\x04")
        self.read_until(b"soft reboot", timeout)
        self.read_until(b"raw REPL; CTRL-B to exit\r\n>", timeout)

    def exec_raw(self, code: str, timeout: float = 60.0, sink=None) -> tuple[str, str]:
        """Run `code`; returns (stdout, error text). The board is back at the raw REPL after."""
        self.write(code.encode() + b"\x04")
        ok = self.read_until(b"OK", 10)
        if not ok.endswith(b"OK"):
            raise BoardError(f"raw REPL refused the code: {ok!r}")
        out = self.read_until(b"\x04", timeout, sink)[:-1]
        err = self.read_until(b"\x04", 10)[:-1]
        self.read_until(b">", 10)
        return out.decode(errors="replace"), err.decode(errors="replace")

    def exec(self, code: str, timeout: float = 60.0) -> str:
        """Run `code`; its output, or BoardError with the traceback if it raised."""
        out, err = self.exec_raw(code, timeout)
        if err:
            raise BoardError(f"the board raised:\n{err}", out=out, err=err)
        return out

    def start_exec(self, code: str) -> None:
        """Start `code` and return at once (for the whole app): read its output with
        read_until()/read_available()."""
        self.write(code.encode() + b"\x04")
        ok = self.read_until(b"OK", 10)
        if not ok.endswith(b"OK"):
            raise BoardError(f"raw REPL refused the code: {ok!r}")

    def read_available(self, timeout: float = 0.2) -> bytes:
        buf, self._pending = self._pending, b""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            r, _, _ = select.select([self.fd], [], [], left)
            if not r:
                break
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
        if self.log_path is not None and buf:
            with open(self.log_path, "ab") as f:
                f.write(buf)
        return buf


class BrokerBridge:
    """The rig-side end of the qemu board's MQTT line (UART2): qemu connects the line to this
    listener on 127.0.0.1 (`serial` is its chardev spec, reconnecting as a board's network
    does) and every connection is relayed to the rig's broker. The one place where the qemu
    board's MQTT byte stream meets the broker: the board has no TLS stack, so a broker that
    wants TLS is reached by wrapping the upstream leg here, not by changing the board."""

    def __init__(self, host: str, port: int, ca: str | None = None) -> None:
        # With the CA the upstream leg is TLS, verified against it: the board's TLS stand-in,
        # a modem that does TLS (hal/qemu.py, rig/tcpproxy.py TlsModem).
        self.proxy = TlsModem(port, ca, host) if ca else FreezableProxy(port, host)
        self.serial = f"tcp:127.0.0.1:{self.proxy.port},reconnect=1"

    def close(self) -> None:
        self.proxy.close()


class QemuFirmware:
    """The whole firmware on the qemu board, as rig/dut.py's Firmware runs it on the unix port:
    UART1 on the plant's pty link, UART2 through the rig's BrokerBridge to the broker, UART3 the
    buttons.
    The site's compiled config is written to the board's flash through the raw REPL, then
    `sot.main` is started there; its log lines come back on the console."""

    def __init__(self, site: Any, workdir: Path, *, bus_ports: dict[str, str],
                 mqtt: dict[str, Any], extra_config: dict[str, Any] | None = None) -> None:
        if len(site.buses) != 1:
            raise ValueError("the qemu board has one bus UART (UART1)")
        self.site = site
        self.workdir = Path(workdir)
        self.bus_ports = bus_ports
        self.mqtt = mqtt
        self.extra_config = extra_config or {}
        self.resets = 0  # no watchdog peripheral on this board
        self.board: QemuBoard | None = None
        self.bridge: BrokerBridge | None = None
        self.log_path = self.workdir / f"{site.id}-qemu.log"
        self._buttons = -1
        self._reader: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> QemuFirmware:
        from gateway.tooling import compiler, firmware

        self.workdir.mkdir(parents=True, exist_ok=True)
        compiled = compiler.compile_site(self.site, bus_ports=self.bus_ports, mqtt=self.mqtt)
        # No TLS on this board: the bridge's upstream leg does it, holding the CA (a modem
        # that does TLS, hal/qemu.py), so the board's own config goes without it.
        ca = self.mqtt.get("ca")
        compiled["mqtt"].pop("ca", None)
        text = compiler.to_json({**compiled, **self.extra_config}).encode()
        bus = next(iter(self.bus_ports.values()))
        self.bridge = BrokerBridge(self.mqtt["host"], self.mqtt["port"], ca)
        self.board = QemuBoard(firmware.build_qemu(), serials=(bus, self.bridge.serial, "pty"))
        self.board.start()
        board = self.board
        board.soft_reset()
        board.exec("from sot import hal\nhal.mount_flash(fresh=True)\n"
                   "f = open('/flash/config.json', 'wb')")
        for i in range(0, len(text), 512):
            board.exec(f"f.write({text[i:i + 512]!r})")
        board.exec("f.close()")
        board.soft_reset()  # the app starts on a fresh heap, as after a power-up
        self._buttons = os.open(board.ptys[3], os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self._buttons)
        board.start_exec(f"import sys\nsys.argv.clear()\nsys.argv.extend(['sot', "
                         f"'{int(time.time())}'])\nimport sot.main\n")
        self._reader = threading.Thread(target=self._read_console, name="qemu-console",
                                        daemon=True)
        self._reader.start()
        return self

    def _read_console(self) -> None:
        board = self.board
        while not self._stop.is_set() and board is not None and board.alive():
            data = board.read_available(0.2)
            if data:
                with open(self.log_path, "ab") as f:
                    f.write(data.replace(b"\r\n", b"\n"))

    def press(self, button: str) -> None:
        os.write(self._buttons, button.encode() + b"\n")

    def faults(self) -> int:
        """1 if the board faulted (the port prints the fault and qemu exits) or the app ended
        (the raw REPL's end-of-output mark), else 0: on a board either means a reset."""
        text = self.log()
        return int(not self.alive() or "Fault" in text or "\x04" in text)

    def heap_budget(self) -> int:
        from gateway.tooling import firmware

        return firmware.QEMU_HEAP

    def alive(self) -> bool:
        return self.board is not None and self.board.alive()

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
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        self._stop.set()
        if self._reader is not None:
            self._reader.join(2)
        if self._buttons >= 0:
            os.close(self._buttons)
            self._buttons = -1
        if self.board is not None:
            self.board.stop()
            self.board = None
        if self.bridge is not None:
            self.bridge.close()
            self.bridge = None

    kill = stop


def qemu_site(site: Any, workdir: Path, **kw: Any):
    """rig/sitesim.py's SimulatedSite with the firmware on the qemu board."""
    from .sitesim import SimulatedSite

    class QemuSite(SimulatedSite):
        def start_firmware(self) -> QemuFirmware:  # type: ignore[override]
            fw = QemuFirmware(self.site, self.workdir, bus_ports=self.plant.ports(),
                              mqtt=self.mqtt, extra_config=self.extra_config)
            self.firmware = fw  # type: ignore[assignment]
            return fw.start()

        def press(self, button: str) -> None:
            assert isinstance(self.firmware, QemuFirmware)
            self.firmware.press(button)

    kw.pop("watchdog", None)
    return QemuSite(site, workdir, **kw)
