"""Every HAL module offers what the firmware uses, the way hal/unix.py offers it.

The board modules import `machine` and `network`, which CPython and the unix port lack, so they
are read with `ast` here: the public names of hal/unix.py (functions, classes, constants; not
imported modules) must exist in hal/esp32.py, hal/rp2.py and hal/qemu.py, with the same parameters
and defaults, async where unix's is async; a class must have the same public methods (same
signatures) and at least unix's public instance attributes. Names a board module imports from
hal/board.py are looked up there. The firmware never sees which HAL it got (hal/__init__.py).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

HAL = Path(__file__).resolve().parent.parent / "sot" / "hal"
REFERENCE = "unix"
BOARDS = ("esp32", "rp2", "qemu")


def _module(name: str) -> ast.Module:
    return ast.parse((HAL / f"{name}.py").read_text(), filename=f"hal/{name}.py")


def _signature(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    kind = "async def" if isinstance(fn, ast.AsyncFunctionDef) else "def"
    return f"{kind}({ast.unparse(fn.args)})"


def _class_shape(cls: ast.ClassDef) -> dict[str, object]:
    methods: dict[str, str] = {}
    constants: set[str] = set()
    attrs: set[str] = set()
    for node in cls.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if not node.name.startswith("_") or node.name == "__init__":
                methods[node.name] = _signature(node)
            for sub in ast.walk(node):
                if (isinstance(sub, ast.Attribute) and isinstance(sub.ctx, ast.Store)
                        and isinstance(sub.value, ast.Name) and sub.value.id == "self"
                        and not sub.attr.startswith("_")):
                    attrs.add(sub.attr)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            constants.update(t.id for t in targets if isinstance(t, ast.Name)
                             and not t.id.startswith("_"))
    return {"methods": methods, "constants": constants, "attrs": attrs}


def interface(name: str) -> dict[str, object]:
    """Public name -> what it is: a signature string, a class shape, or "value"."""
    out: dict[str, object] = {}
    for node in _module(name).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out[node.name] = _signature(node)
        elif isinstance(node, ast.ClassDef):
            out[node.name] = _class_shape(node)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name):
                    out[t.id] = "value"
        elif (isinstance(node, ast.ImportFrom) and node.module
              and node.module.startswith("sot.hal.")):
            source = interface(node.module.rsplit(".", 1)[1])
            for alias in node.names:
                if alias.name in source:
                    out[alias.asname or alias.name] = source[alias.name]
    return {k: v for k, v in out.items() if not k.startswith("_")}


def differences(ref: dict[str, object], other: dict[str, object]) -> list[str]:
    problems = []
    for name, want in sorted(ref.items()):
        got = other.get(name)
        if got is None:
            problems.append(f"{name}: missing")
        elif isinstance(want, dict):
            if not isinstance(got, dict):
                problems.append(f"{name}: not a class")
                continue
            for m, sig in sorted(want["methods"].items()):  # type: ignore[union-attr]
                gsig = got["methods"].get(m)  # type: ignore[union-attr]
                if gsig != sig:
                    problems.append(f"{name}.{m}: {gsig or 'missing'}, unix has {sig}")
            extra = set(got["methods"]) - set(want["methods"])  # type: ignore[arg-type]
            if extra:
                problems.append(f"{name}: public methods unix lacks: {sorted(extra)}")
            for attr in sorted(want["constants"] | want["attrs"]):  # type: ignore[operator]
                if attr not in got["constants"] | got["attrs"]:  # type: ignore[operator]
                    problems.append(f"{name}.{attr}: missing")
        elif want != got:
            problems.append(f"{name}: {got}, unix has {want}")
    return problems


def test_the_reference_interface_is_what_the_firmware_uses():
    ref = interface(REFERENCE)
    expected = {"NAME", "RESERVED", "HARD_RESET_KEEPS_FLASH",
                "init", "configure", "epoch", "Uart", "open_connection",
                "Flash", "Watchdog", "reset_cause", "Buttons", "display", "heap_used"}
    assert set(ref) == expected
    # And the firmware calls nothing else on `hal`.
    firmware = HAL.parent
    used = set()
    for src in firmware.glob("*.py"):
        used |= set(re.findall(r"\bhal\.([A-Za-z_]\w*)", src.read_text()))
    used -= {"unix", "esp32", "rp2"}  # module paths in comments
    assert used <= expected, used - expected


@pytest.mark.parametrize("board", BOARDS)
def test_board_hal_matches_the_unix_hal(board: str):
    problems = differences(interface(REFERENCE), interface(board))
    assert not problems, f"hal/{board}.py differs from hal/unix.py:\n" + "\n".join(problems)


def test_the_checker_sees_a_changed_signature():
    ref = interface(REFERENCE)
    changed = dict(ref, open_connection="def(host, port)")  # not async
    assert differences(ref, changed) == ["open_connection: def(host, port), unix has "
                                         "async def(host, port, ca=None)"]


@pytest.mark.parametrize("board", BOARDS)
def test_the_platform_selects_the_board_module(board: str):
    tree = ast.parse((HAL / "__init__.py").read_text())
    chosen = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = ast.unparse(node.test)
            for sub in node.body:
                if isinstance(sub, ast.ImportFrom):
                    chosen[test] = sub.module
    assert any(f"'{board}'" in t and m == f"sot.hal.{board}" for t, m in chosen.items()), chosen
