"""Lint and type checks as tests, so that `make test` (and CI) fails on them like on any test.

ruff checks all Python: the gateway's rules from pyproject.toml, and in firmware/ the same
rules less what MicroPython does otherwise (firmware/ruff.toml). mypy checks gateway/ and
hil_tests/ ([tool.mypy] in pyproject.toml; its cache is build/mypy-cache, a few seconds cold and
well under one warm). The firmware's own type check against the boards' stubs is
firmware/tests/test_types.py, and what may import hardware modules firmware/tests/
test_hal_boundary.py. docs/architecture.md, "Checks".
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, input=stdin,
                          capture_output=True, text=True, timeout=300)


def test_ruff_finds_nothing_in_firmware_gateway_and_hil_tests():
    # conftest.py: the root one (how the suite is spread over xdist workers)
    res = run("ruff", "check", "--no-cache", "firmware", "gateway", "hil_tests", "conftest.py")
    assert res.returncode == 0, f"ruff:\n{res.stdout[-6000:]}{res.stderr[-2000:]}"


def test_ruff_keeps_the_micropython_exceptions_to_firmware():
    # The same code passes as firmware and fails as gateway code: UP041 would turn
    # asyncio.TimeoutError into the builtin, which MicroPython's asyncio does not raise.
    code = "import asyncio\n\ntry:\n    pass\nexcept asyncio.TimeoutError:\n    pass\n"

    def check(name: str) -> subprocess.CompletedProcess[str]:
        return run("ruff", "check", "--no-cache", "--stdin-filename", name, "-", stdin=code)

    fw, gw = check("firmware/sot/x.py"), check("gateway/x.py")
    assert fw.returncode == 0, fw.stdout + fw.stderr
    assert gw.returncode == 1 and "UP041" in gw.stdout, gw.stdout + gw.stderr


def test_mypy_finds_nothing_in_gateway_and_hil_tests():
    res = run("mypy")  # files, strictness and cache directory: [tool.mypy] in pyproject.toml
    assert res.returncode == 0, f"mypy:\n{res.stdout[-6000:]}{res.stderr[-2000:]}"
