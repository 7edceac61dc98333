"""Collect firmware unit tests and run them under the real MicroPython interpreter.

Each `firmware/tests/unit/test_*.py` is run once by `runner.py` in the unix port, with the
firmware and the test module imported from .mpy files; every `test_*` function becomes one pytest
item whose outcome is what the interpreter printed for it. CPython never imports these files.

The heap is the board's 64 KiB in the unix port's 64-bit terms (x2, the same accounting as the
HIL rig, docs/architecture.md "Memory"). Unlike on a board, the bytecode of the firmware *and*
of the test module sits in that heap; the whole-firmware memory budget is measured by the rig
and `make bench`, not here.

Each test runs a second time as `name[qemu]` on the 32-bit build: the qemu board's image has the
firmware and these modules frozen in (gateway/tooling/firmware.py, build_qemu(); built once,
cached in build/), and `runner.py` is started through the board's console as mpremote would, one
soft reset per module (docs/firmware-build.md). There the floats are single precision, the heap is
64 KiB of 4-byte words and the journal writes to littlefs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

FIRMWARE = Path(__file__).resolve().parent.parent
UNIT = FIRMWARE / "tests" / "unit"
HEAP = "128k"


def micropython() -> str:
    exe = Path(sys.executable).parent / "micropython"
    return str(exe) if exe.exists() else "micropython"


_built: Path | None = None


def firmware_build() -> Path:
    """The firmware as .mpy files (compiled once per session, incrementally): compiling the
    sources at import would spend most of the 64 KiB heap on the compiler, not on the test."""
    global _built
    if _built is None:
        from gateway.tooling import firmware

        _built = firmware.build()
    return _built


_tests_built: Path | None = None


def tests_build() -> Path:
    """The unit-test modules and their fakes as .mpy too: a test module compiled on the board
    would spend the heap the firmware under test needs."""
    global _tests_built
    if _tests_built is None:
        from gateway.tooling import firmware

        _tests_built = firmware.compile_tree(UNIT, "*.py", firmware.BUILD_DIR.parent / "unit-tests")
    return _tests_built


# Fake `machine` and `network` modules for the board HAL tests (test_board_*.py) only: on
# MICROPYPATH before everything else they shadow the unix port's own `machine`.
BOARD_FAKES = FIRMWARE / "tests" / "board_fakes"


def run_module(module: str, *names: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    path = f".frozen:{tests_build()}:{firmware_build()}"
    if module.startswith("test_board_"):
        path = f".frozen:{BOARD_FAKES}:{tests_build()}:{firmware_build()}"
    env = dict(os.environ, MICROPYPATH=path)
    return subprocess.run([micropython(), "-X", f"heapsize={HEAP}", str(UNIT / "runner.py"), module,
                           *names], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=str(FIRMWARE))


_board = None


def qemu_board():
    """One qemu board for the session (booting takes a fraction of a second; building the
    image the first time takes minutes, then it is cached)."""
    global _board
    if _board is None or not _board.alive():
        from gateway.tooling import firmware
        from hil_tests.rig.qemu import QemuBoard

        _board = QemuBoard(firmware.build_qemu()).start()
    return _board


def _stop_board() -> None:
    global _board
    if _board is not None:
        _board.stop()
        _board = None


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    # The qemu board spins a whole core while it waits at its REPL (about 1 s of CPU a second,
    # measured): stop it as soon as the firmware's unit tests are done, rather than at the end
    # of the session, so that it does not take a core from the gateway and HIL tests after them.
    if _board is not None and not isinstance(nextitem, MicroPythonTest):
        _stop_board()


def pytest_sessionfinish(session, exitstatus):
    _stop_board()


def run_on_board(module: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """runner.py for `module` on the qemu board, as a CompletedProcess like run_module()'s."""
    from hil_tests.rig.qemu import BoardError

    board = qemu_board()
    code = (f"import runner\ntry:\n    runner.main(['runner', {module!r}])\n"
            f"except SystemExit:\n    pass\n")
    try:
        board.soft_reset()
        out, err = board.exec_raw(code, timeout)
    except BoardError as e:  # a fault or a hang: the board is started again for the next one
        board.stop()
        return subprocess.CompletedProcess(["qemu", module], 1, e.out, str(e))
    out = out.replace("\r\n", "\n")
    return subprocess.CompletedProcess(["qemu", module], 1 if err else 0, out, err)


def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector):
    # Replaces pytest's own Python module collector for these files: CPython never imports them.
    if module_path.parent == UNIT:
        return MicroPythonModule.from_parent(parent, path=module_path)
    return None


class MicroPythonModule(pytest.File):
    def collect(self):
        self._result: subprocess.CompletedProcess[str] | None = None
        self._board_result: subprocess.CompletedProcess[str] | None = None
        names = re.findall(r"^(?:async\s+)?def\s+(test_\w+)\s*\(", self.path.read_text(), re.M)
        for name in sorted(set(names)):
            yield self._item(name)
        if self.path.stem.startswith("test_board_"):
            # The ESP32/RP2040 HALs against fake `machine`/`network` modules: the qemu board has
            # its own built-in `machine`, which no frozen fake may shadow, so these run on unix.
            return
        for name in sorted(set(names)):
            yield self._item(f"{name}[qemu]")

    def _item(self, name: str) -> MicroPythonTest:
        # `firmware`: runs a MicroPython process (or the qemu board), so `make check-fast`
        # leaves it out (docs/testing.md, "Tiers").
        item = MicroPythonTest.from_parent(self, name=name)
        item.add_marker(pytest.mark.firmware)
        return item

    def result(self, board: bool = False) -> subprocess.CompletedProcess[str]:
        if board:
            if self._board_result is None:
                self._board_result = run_on_board(self.path.stem)
            return self._board_result
        if self._result is None:
            self._result = run_module(self.path.stem)
        return self._result


class MicroPythonFailure(Exception):
    pass


class MicroPythonTest(pytest.Item):
    def runtest(self) -> None:
        board = self.name.endswith("[qemu]")
        name = self.name.removesuffix("[qemu]")
        res = self.parent.result(board)  # type: ignore[attr-defined]
        lines = res.stdout.splitlines()
        if f"PASS {name}" in lines:
            return
        where = "on the qemu board (32-bit build)" if board else "under MicroPython"
        raise MicroPythonFailure(
            f"{name} did not pass {where} (exit {res.returncode})\n"
            f"--- stdout ---\n{res.stdout[-3000:]}\n--- stderr ---\n{res.stderr[-3000:]}")

    def repr_failure(self, excinfo, style=None):  # type: ignore[override]
        if isinstance(excinfo.value, MicroPythonFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, 0, f"micropython: {self.path.stem}::{self.name}"
