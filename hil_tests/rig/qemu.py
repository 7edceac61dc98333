"""The qemu board: the firmware's 32-bit frozen build in qemu-system-arm, driven through its
serial console the way mpremote drives a board (docs/firmware-build.md).

    with QemuBoard(image) as board:
        board.exec("import gc; print(gc.mem_free())")

The image is `gateway.firmware.build_qemu()`'s: ports/qemu for the MPS2-AN385 with the firmware
and its unit tests frozen in. qemu puts the console (UART0) on a pty; `exec()` uses the raw REPL
on it: Ctrl-A enters it, the code is sent and Ctrl-D runs it, and the board answers
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
import time
import tty
from pathlib import Path

from .proc import stop_process

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
        while 0 not in self.ptys:
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
