"""`sot firmware deploy`: put a site's compiled config (and the firmware, unless the board runs a
frozen build) on a board over its USB serial console, check it, and reset the board.

Host tooling, not part of the gateway service. Steps (docs/hardware.md, "From a blank board"):

1. compile the site's config (with the site's MQTT password from `sot mqtt-auth`, if given);
2. ask the board whether the firmware is frozen into it (`import sot`: a frozen module's
   `__file__` names no file on the board's file system); if not, compile the firmware to `.mpy`
   for the board's architecture (`[board] kind`: esp32 -> xtensawin, rp2 -> armv6m; none:
   portable bytecode) and copy `sot/` and a `main.py` that starts it. A frozen firmware says
   itself where it reads its config (its HAL's start-up mounts the flash, `hal.Flash()` names
   the file: `/config.json` on a board whose littlefs is the root, `/flash/config.json` on the
   qemu board) and whether its flash survives a hard reset (`hal.HARD_RESET_KEEPS_FLASH`);
3. copy `config.json` there with `mpremote` (after the same start-up, in the same session);
4. read back the hash of the config the board now holds (computed from the file on the board)
   and compare it with the compiled one;
5. reset the board through the raw REPL, on the same serial handle: `machine.reset()`, or a
   soft reset (Ctrl-D at the prompt) where a hard reset would lose the flash (the qemu board's
   flash is RAM; its `machine.reset()` ends qemu). Then wait for the firmware's boot line
   `I <site> boot N reset ... config <hash>` on the console, or for the REPL prompt: a board
   that does not start the firmware by itself (the qemu board runs no `main.py`).

`RawRepl` is the small pyserial client of MicroPython's raw REPL that steps 4-5 and the HIL
board backend (hil_tests/rig/boarddut.py) use.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway import config
from gateway.tooling import compiler

MAIN_PY = "import sot.main\n"
# The frozen firmware's own start-up (the HAL mounts the flash where the board has it).
START = "from sot import hal\nhal.init(['sot'])\n"
PROBE = ("try:\n import sot\nexcept ImportError:\n print('SOTFW none -')\nelse:\n"
         " import os\n try:\n  os.stat(getattr(sot, '__file__', ''))\n  where = 'file'\n"
         " except (OSError, TypeError):\n  where = 'frozen'\n"
         " print('SOTFW', where, sot.VERSION)\n"
         " if where == 'frozen':\n  from sot import hal, config\n  hal.init(['sot'])\n"
         "  print('SOTCFG', hal.Flash().path(config.FILE),"
         " int(getattr(hal, 'HARD_RESET_KEEPS_FLASH', 1)))\n")
BOOT_RE = re.compile(r"I (\S+) boot (\d+) reset (\S+) config ([0-9a-f]+)")
# The prompt after a soft reset: the board sits at its REPL, no firmware started. (Leaving the
# raw REPL prints a prompt too, before the reset: only one after "soft reboot" counts.)
SOFT_PROMPT_RE = re.compile(r"soft reboot[\s\S]*?^>>> ", re.M)


class DeployError(Exception):
    pass


class RawRepl:
    """MicroPython's raw REPL over a serial port (pyserial): enter, run code, read the output."""

    def __init__(self, port: str, baud: int = 115200, timeout: float = 10.0) -> None:
        import serial

        self.port = port
        self.timeout = timeout
        self.s = serial.Serial(port, baud, timeout=0.1)
        self.console = bytearray()  # what the board printed outside raw REPL answers
        self._pending = bytearray()

    def close(self) -> None:
        self.s.close()

    def read_until(self, marker: bytes, timeout: float | None = None) -> bytes:
        """Bytes up to and including `marker`; what came after it is kept for the next read."""
        wait = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        while True:
            i = self._pending.find(marker)
            if i >= 0:
                data = bytes(self._pending[:i + len(marker)])
                del self._pending[:i + len(marker)]
                return data
            if time.monotonic() > deadline:
                raise DeployError(f"{self.port}: no {marker!r} from the board within {wait} s; "
                                  f"got {bytes(self._pending[-200:])!r}")
            self._pending += self.s.read(max(1, self.s.in_waiting))

    def enter(self) -> None:
        self.s.write(b"\r\x03\x03")  # stop the running program
        time.sleep(0.1)
        self.console += self._pending + self.s.read(self.s.in_waiting)
        self._pending = bytearray()
        self.s.write(b"\r\x01")
        self.console += self.read_until(b"raw REPL; CTRL-B to exit\r\n>")

    def exec(self, code: str, timeout: float | None = None) -> str:
        """Run `code` (in raw REPL) and return its output; raise DeployError with the board's
        error text if it raised."""
        self.s.write(code.encode())
        self.s.write(b"\x04")
        ok = self.read_until(b"OK", timeout)
        if not ok.endswith(b"OK"):
            raise DeployError(f"{self.port}: the board did not take the code: {ok!r}")
        out = self.read_until(b"\x04", timeout)[:-1]
        err = self.read_until(b"\x04", timeout)[:-1]
        self.read_until(b">", timeout)
        if err:
            raise DeployError(f"{self.port}: the board raised: {err.decode(errors='replace')}")
        return out.decode(errors="replace")

    def reset(self) -> None:
        """Hard reset; the board boots into main.py and keeps printing on the console."""
        self.s.write(b"import machine\nmachine.reset()\n\x04")
        self.s.write(b"\r\x02")  # leave raw REPL in case the reset is slow

    def soft_reset(self) -> None:
        """Leave the raw REPL and soft-reset at the prompt (Ctrl-D): a fresh interpreter that
        runs main.py where the port has one; the flash is not touched."""
        self.s.write(b"\r\x02")
        time.sleep(0.1)
        self.s.write(b"\x04")

    def watch(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str] | None:
        """Read the console until `pattern` matches a line, or `timeout` s."""
        deadline = time.monotonic() + timeout
        start = len(self.console)
        self.console += self._pending
        self._pending = bytearray()
        while time.monotonic() < deadline:
            try:
                self.console += self.s.read(max(1, self.s.in_waiting))
            except Exception:  # noqa: BLE001 -- a USB-CDC board drops off the bus on reset
                time.sleep(0.5)
                try:
                    self.s.close()
                    self.s.open()
                except Exception:  # noqa: BLE001
                    continue
            m = pattern.search(self.console[start:].decode(errors="replace"))
            if m:
                return m
        return None


@dataclass
class Result:
    port: str
    site: str
    expected_hash: str
    frozen: bool = False
    fw_version: str | None = None
    copied: list[str] = field(default_factory=list)
    board_hash: str | None = None
    config_path: str = "config.json"  # where on the board the firmware reads its config
    reset: str = "hard"  # or "soft": a hard reset would lose the board's flash
    boot_line: str | None = None
    boot_hash: str | None = None
    at_prompt: bool = False  # after the reset the board sat at its REPL: no firmware started

    @property
    def ok(self) -> bool:
        return self.board_hash == self.expected_hash and self.boot_hash in (None,
                                                                          self.expected_hash)


def _mpremote(port: str, *args: str, timeout: float = 120) -> str:
    cmd = [sys.executable, "-m", "mpremote", "connect", port, *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise DeployError(f"mpremote {' '.join(args)} failed ({r.returncode}): "
                          f"{(r.stderr or r.stdout).strip()[-400:]}")
    return r.stdout


def deploy(site: config.Site, port: str, *, credentials: dict[str, str] | None = None,
           workdir: Path | None = None, boot_timeout: float = 20.0, log: Any = print) -> Result:
    mqtt = None
    if credentials is not None:
        if site.id not in credentials:
            raise DeployError(f"no MQTT password for site '{site.id}' in the credentials file")
        mqtt = {"user": site.id, "password": credentials[site.id]}
    compiled = compiler.compile_site(site, mqtt=mqtt)
    res = Result(port, site.id, compiled["hash"])
    work = Path(workdir or tempfile.mkdtemp(prefix=f"sot-deploy-{site.id}-"))
    work.mkdir(parents=True, exist_ok=True)
    cfg = work / "config.json"
    cfg.write_text(compiler.to_json(compiled))

    probe = re.search(r"SOTFW (\S+) (\S+)", _mpremote(port, "exec", PROBE))
    if probe is None:
        raise DeployError(f"{port}: the board did not answer the firmware probe")
    where, version = probe.groups()
    res.frozen = where == "frozen"
    res.fw_version = None if version == "-" else version
    start = ""
    if res.frozen:
        said = re.search(r"SOTCFG (\S+) ([01])", probe.string)
        if said is None:
            raise DeployError(f"{port}: the frozen firmware did not say where it reads its "
                              f"config: {probe.string.strip()[-300:]}")
        res.config_path = said.group(1)
        res.reset = "hard" if said.group(2) == "1" else "soft"
        start = START  # mpremote soft-resets on connect: mount the flash again first
    copies: list[tuple[str, str]] = []
    if not res.frozen:
        from gateway.tooling import firmware

        # The board's own architecture (gateway/tooling/firmware.py BOARDS), keyed by board so that
        # one board's native files are never reused for another.
        kind = (site.board or {}).get("kind") or "unix"
        out = firmware.build_board(kind, work / f"firmware-{kind}")
        main = work / "main.py"
        main.write_text(MAIN_PY)
        # One file at a time to a named destination: `fs cp -r` nests into a folder that is
        # already there (sot/sot/...) on a second deploy.
        files = sorted((out / "sot").rglob("*.mpy"))
        dirs = sorted({str(f.parent.relative_to(out)) for f in files}, key=len)
        _mpremote(port, "exec", f"import os\nfor d in {dirs!r}:\n try:\n  os.mkdir(d)\n"
                  " except OSError:\n  pass\n")
        for f in files:
            rel = str(f.relative_to(out))
            copies.append((str(f), ":" + rel))
        copies.append((str(main), ":main.py"))
    copies.append((str(cfg), ":" + res.config_path))
    args: list[str] = ["exec", start, "+"] if start else []
    for src, dst in copies:
        args += ["fs", "cp", src, dst, "+"]
    _mpremote(port, *args[:-1])
    res.copied += [dst.lstrip(":") for _, dst in copies]
    log(f"copied {len(res.copied)} files to {port}"
        + (" (firmware frozen in the board: config only)" if res.frozen else ""))

    repl = RawRepl(port)
    try:
        repl.enter()
        printed = repl.exec(f"{start}import json\n"
                            f"print(json.load(open({res.config_path!r}))['hash'])")
        res.board_hash = printed.strip() or None
        if res.board_hash != res.expected_hash:
            raise DeployError(f"{port}: the board holds config {res.board_hash}, expected "
                              f"{res.expected_hash}")
        if res.reset == "hard":
            repl.reset()
            m = repl.watch(BOOT_RE, boot_timeout)
        else:
            repl.soft_reset()
            m = repl.watch(re.compile(f"{BOOT_RE.pattern}|{SOFT_PROMPT_RE.pattern}", re.M),
                           boot_timeout)
        if m is not None and m.group(0).startswith("soft reboot"):
            res.at_prompt = True
        elif m is not None:
            res.boot_line, res.boot_hash = m.group(0), m.group(4)
    finally:
        repl.close()
    return res


def load_credentials(path: Path) -> dict[str, str]:
    return json.loads(Path(path).read_text())
