"""Only firmware/sot/hal/ touches hardware: no other firmware file imports `machine`, `network`
or `termios` (docs/architecture.md, "Checks").

Every .py file under firmware/ is parsed with `ast` (a comment or a string that names the
modules does not count; an import inside a function or a try block does). Allowed besides hal/:
the fakes under tests/board_fakes/, which *are* those modules on the unix port, and the unit
tests of the board HAL, which read what the fake hardware saw (listed below, with why).
"""

from __future__ import annotations

import ast
from pathlib import Path

FIRMWARE = Path(__file__).resolve().parent.parent
HARDWARE = {"machine", "network", "termios"}
HAL = FIRMWARE / "sot" / "hal"
FAKES = FIRMWARE / "tests" / "board_fakes"
# Tests of hal/board.py and hal/board_display.py: they import the fake `machine`/`network` to
# inspect the bytes, pin transitions and NIC arguments the HAL produced (never to drive the
# firmware around the HAL).
HAL_TESTS = {
    FIRMWARE / "tests" / "unit" / "test_board_hal.py",
    FIRMWARE / "tests" / "unit" / "test_board_display.py",
}


def hardware_imports(source: str, filename: str) -> list[tuple[int, str]]:
    """(line, module) for every import of a hardware module in `source`."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(node.lineno, n) for n in names if n.split(".")[0] in HARDWARE]
    return found


def allowed(path: Path) -> bool:
    return path.is_relative_to(HAL) or path.is_relative_to(FAKES) or path in HAL_TESTS


def test_only_the_hal_imports_hardware_modules():
    offenders = []
    for path in sorted(FIRMWARE.rglob("*.py")):
        if allowed(path):
            continue
        for line, module in hardware_imports(path.read_text(encoding="utf-8"), str(path)):
            offenders.append(f"{path.relative_to(FIRMWARE.parent)}:{line}: imports {module}")
    assert not offenders, "only firmware/sot/hal/ may import machine, network or termios:\n" + \
        "\n".join(offenders)


def test_the_check_sees_every_form_of_import():
    src = ("import os\nimport machine\nfrom network import LAN\nimport termios as t\n"
           "def f():\n    import machine.mem\n"
           "try:\n    from machine import Pin\nexcept ImportError:\n    pass\n"
           "x = 'import machine'  # import network\nfrom . import network\n")
    assert hardware_imports(src, "x.py") == [(2, "machine"), (3, "network"), (4, "termios"),
                                             (6, "machine.mem"), (8, "machine")]


def test_the_allowed_places_exist():
    # A moved HAL test or fakes folder would otherwise widen nothing and hide nothing silently.
    assert (HAL / "esp32.py").exists() and (FAKES / "machine.py").exists()
    assert all(p.exists() for p in HAL_TESTS)
