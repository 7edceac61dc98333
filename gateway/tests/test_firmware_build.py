"""`sot firmware build`: the .mpy files are compiled for the architecture asked for, never
reused from a build for another one, and packed into the ROMFS image docs/architecture.md
promises (build/firmware/<board>/sot.romfs), which the MicroPython unix port mounts and
lists every firmware module in."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from gateway import cli
from gateway.tooling import firmware

# The architecture in an .mpy header (byte 2, bits 2-7): 0 for bytecode, which any port loads.
# mpy-cross sets it only for a module with native code (the firmware has none today, so its
# files for a -march are bytecode too); the rebuild check must not rely on that.
BYTECODE = 0
FUTURE = 4_000_000_000  # an mtime in 2096: a file left alone by a build keeps it


def arch(path: Path) -> int:
    head = path.read_bytes()[:4]
    assert head[:1] == b"M", path
    return head[2] >> 2


def archs(out: Path) -> set[int]:
    return {arch(p) for p in out.rglob("*.mpy")}


def modules() -> set[str]:
    base = firmware.FIRMWARE_SRC
    return {p.relative_to(base).with_suffix(".mpy").as_posix() for p in base.glob("sot/**/*.py")}


def romfs_listing(image: Path) -> set[str]:
    """The files in the image, as the MicroPython unix port sees it mounted."""
    script = (
        "import os, sys, vfs\n"
        "vfs.mount(vfs.VfsRom(open(sys.argv[1], 'rb').read()), '/rom')\n"
        "def walk(d, rel):\n"
        "    for e in os.ilistdir(d):\n"
        "        name, kind = e[0], e[1]\n"
        "        if kind == 0x4000:\n"
        "            walk(d + '/' + name, rel + name + '/')\n"
        "        else:\n"
        "            print(rel + name)\n"
        "walk('/rom', '')\n"
    )
    res = subprocess.run([firmware.micropython(), "-c", script, str(image)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return set(res.stdout.split())


def test_a_plain_build_after_a_march_build_recompiles_and_writes_the_romfs_image(
        tmp_path: Path, capsys):
    out = tmp_path / "unix"
    firmware.build(out, march="xtensawin")
    for p in out.rglob("*.mpy"):
        os.utime(p, (FUTURE, FUTURE))  # newer than every source: only a change of target counts
    assert cli.main(["firmware", "build", "--out", str(out)]) == 0
    assert all(p.stat().st_mtime < FUTURE for p in out.rglob("*.mpy")), "ESP32 files reused"
    assert archs(out) == {BYTECODE}
    image = out / firmware.IMAGE_NAME
    assert f"ROMFS image: {image}" in capsys.readouterr().out
    listed = romfs_listing(image)
    assert listed == modules()
    assert {"sot/main.mpy", "sot/site.mpy", "sot/hal/unix.mpy"} <= listed
    # the same build again changes nothing
    for p in out.rglob("*.mpy"):
        os.utime(p, (FUTURE, FUTURE))
    firmware.build_board("unix", out)
    assert all(p.stat().st_mtime == FUTURE for p in out.rglob("*.mpy"))


def test_a_march_build_that_stops_half_way_leaves_nothing_for_the_next_build_to_reuse(
        tmp_path: Path):
    src, out = tmp_path / "src", tmp_path / "out"
    (src / "sot").mkdir(parents=True)
    for name in ("a", "b", "c"):
        (src / "sot" / f"{name}.py").write_text(f"def {name}():\n    return 1\n")
    firmware.compile_tree(src, "sot/**/*.py", out)
    (src / "sot" / "b.py").write_text("def b(:\n")  # the xtensawin build fails at b.py
    with pytest.raises(RuntimeError, match="mpy-cross failed"):
        firmware.compile_tree(src, "sot/**/*.py", out, march="xtensawin")
    # a.mpy was compiled for the ESP32 before the build stopped; the next plain build must not
    # take it for its own, however new it looks
    os.utime(out / "sot" / "a.mpy", (FUTURE, FUTURE))
    (src / "sot" / "b.py").write_text("def b():\n    return 2\n")
    firmware.compile_tree(src, "sot/**/*.py", out)
    assert (out / "sot" / "a.mpy").stat().st_mtime < FUTURE
    assert archs(out) == {BYTECODE}
