"""A board's USB serial console, for tools that talk to boards (mpremote, `sot firmware deploy`,
the HIL board backend) on a machine without one.

The console is a pty; behind it is the real MicroPython unix interpreter with a folder that stands
in for the board's flash as its working directory. The part of a board that the unix port lacks
is played here, in Python: MicroPython's raw REPL protocol (Ctrl-A enters it; code then Ctrl-D
runs it and the board answers "OK", the output, Ctrl-D, the error text, Ctrl-D, ">"; Ctrl-D at
an empty prompt is a soft reset; Ctrl-B leaves it; raw-paste mode, Ctrl-E "A" Ctrl-A, as
MicroPython 1.14 and later offer it: "R\\x01", the window size, \\x01 per window taken, \\x04 at
the end of the code), and `machine.reset()`: a hard reset that runs the board's
`main.py` the way a board boots, for `boot_s` seconds with its output on the console, then stops
it (by pid) and goes back to the prompt. The code a tool sends runs in one interpreter process
that keeps its globals until a reset, as on a board (mpremote's `fs cp` relies on that).

Not a board: no frozen modules, no pins, the heap of the unix port. Only the console protocol
and the file system are faithful.
"""

from __future__ import annotations

import os
import select
import struct
import subprocess
import threading
import time
import tty
from pathlib import Path

from gateway.tooling import firmware

from .proc import stop_process

BANNER = b"MicroPython (fake board: unix port behind a pty)\r\n"
RAW_PROMPT = b"raw REPL; CTRL-B to exit\r\n>"
# Raw-paste mode (what mpremote uses when the board offers it): the board grants the code in
# windows of this many bytes, sending \x01 each time it has taken one in.
PASTE_WINDOW = 512
RESET_CODE = 42

# Runs inside MicroPython: executes length-prefixed code blocks in one set of globals and frames
# the results as the raw REPL does (output, \x04, error text, \x04).
DRIVER = r"""
import sys, io
sys.path.insert(0, sys.argv[1])
g = {"__name__": "__main__"}
inp = sys.stdin.buffer
out = sys.stdout
while True:
    line = inp.readline()
    if not line:
        break
    code = inp.read(int(line))
    err = ""
    try:
        exec(code, g)
    except SystemExit as e:
        if e.args and e.args[0] == "machine.reset":
            sys.exit(42)
    except BaseException as e:
        buf = io.StringIO()
        sys.print_exception(e, buf)
        err = buf.getvalue()
    out.write("\x04" + err + "\x04>")
"""

MACHINE = """# stand-in for a board's machine module (hil_tests/rig/fakeboard.py)
def reset():
    raise SystemExit("machine.reset")

def soft_reset():
    raise SystemExit("machine.reset")

def unique_id():
    return b"fakebrd1"
"""


class FakeBoard:
    def __init__(self, flash_dir: Path, *, boot_s: float = 3.0) -> None:
        self.flash = Path(flash_dir)
        self.boot_s = boot_s
        self.dir = self.flash.parent / (self.flash.name + "-fakeboard")
        self.master = -1
        self.slave = -1
        self.path = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.resets = 0
        self.console_log = bytearray()  # everything the board wrote to its console
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # --- lifecycle ---

    def start(self) -> FakeBoard:
        self.flash.mkdir(parents=True, exist_ok=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "driver.py").write_text(DRIVER)
        (self.dir / "lib").mkdir(exist_ok=True)
        (self.dir / "lib" / "machine.py").write_text(MACHINE)
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self._spawn()
        self._thread = threading.Thread(target=self._serve, name="fakeboard", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        stop_process(self.proc)
        self.proc = None
        for fd in (self.master, self.slave):
            if fd >= 0:
                os.close(fd)
        self.master = self.slave = -1

    def __enter__(self) -> FakeBoard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self) -> None:
        stop_process(self.proc)
        self.proc = subprocess.Popen(
            [firmware.micropython(), str(self.dir / "driver.py"), str(self.dir / "lib")],
            cwd=self.flash, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True)

    # --- the console ---

    def _write(self, data: bytes) -> None:
        self.console_log += data
        os.write(self.master, data)

    def _read_child(self, timeout: float) -> bytes:
        assert self.proc is not None and self.proc.stdout is not None
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not r:
            return b""
        return os.read(self.proc.stdout.fileno(), 4096)

    def _serve(self) -> None:
        raw = False
        paste = False  # in raw-paste mode, reading the code up to its \x04
        buf = bytearray()
        taken = 0  # code bytes read in raw-paste mode since the last window was granted
        while not self._stop.is_set():
            r, _, _ = select.select([self.master], [], [], 0.1)
            if not r:
                continue
            try:
                data = os.read(self.master, 4096)
            except OSError:
                return
            i = 0
            while i < len(data):
                if paste:
                    end = data.find(b"\x04", i)
                    chunk = data[i:] if end < 0 else data[i:end]
                    buf += chunk
                    taken += len(chunk)
                    while taken >= PASTE_WINDOW:  # room for another window of code
                        taken -= PASTE_WINDOW
                        self._write(b"\x01")
                    if end < 0:
                        break
                    i, paste = end + 1, False
                    self._write(b"\x04")  # end of code acknowledged; it runs
                    self._run(bytes(buf))
                    buf = bytearray()
                    continue
                ch = data[i:i + 1]
                i += 1
                if not raw:
                    if ch == b"\x01":
                        raw, buf = True, bytearray()
                        self._write(RAW_PROMPT)
                    elif ch == b"\x04":
                        self._soft_reset(raw=False)
                    continue
                if ch == b"\x02":
                    raw = False
                    self._write(b"\r\n" + BANNER + b">>> ")
                elif ch == b"\x01":
                    buf = bytearray()
                    self._write(RAW_PROMPT)
                elif ch == b"\x03":
                    buf = bytearray()
                elif ch == b"\x05" and data[i:i + 2] == b"A\x01":
                    i += 2
                    paste, buf, taken = True, bytearray(), 0
                    self._write(b"R\x01" + struct.pack("<H", PASTE_WINDOW))
                elif ch == b"\x04":
                    if not buf:
                        self._soft_reset(raw=True)
                    else:
                        self._write(b"OK")
                        self._run(bytes(buf))
                        buf = bytearray()
                else:
                    buf += ch

    def _soft_reset(self, raw: bool) -> None:
        self._spawn()
        self._write(b"OK\r\nMPY: soft reboot\r\n" + (RAW_PROMPT if raw else BANNER + b">>> "))

    def _run(self, code: bytes) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(b"%d\n" % len(code) + code)
        self.proc.stdin.flush()
        seen = b""
        while not self._stop.is_set():
            data = self._read_child(0.2)
            if not data:
                if self.proc.poll() is None:
                    continue
                if self.proc.returncode == RESET_CODE:
                    self._hard_reset()
                    return
                self._write(b"\x04process ended\x04>")
                self._spawn()
                return
            self._write(data)
            seen += data
            # the driver ends every run with output, \x04, error text, \x04, ">"
            if seen.count(b"\x04") >= 2 and seen.endswith(b"\x04>"):
                return

    def _hard_reset(self) -> None:
        """machine.reset(): the board boots and runs main.py, output on the console."""
        self.resets += 1
        self._write(b"\r\n" + BANNER)
        main = self.flash / "main.py"
        if main.exists():
            boot = subprocess.Popen([firmware.micropython(), "main.py", "."], cwd=self.flash,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            assert boot.stdout is not None
            deadline = time.monotonic() + self.boot_s
            while time.monotonic() < deadline and not self._stop.is_set():
                r, _, _ = select.select([boot.stdout], [], [], 0.1)
                if r:
                    data = os.read(boot.stdout.fileno(), 4096)
                    if not data:
                        break
                    self._write(data.replace(b"\n", b"\r\n"))
            stop_process(boot)
        self._spawn()
        self._write(b">>> ")
