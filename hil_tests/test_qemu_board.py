"""The 32-bit build (docs/firmware-build.md): its inputs, its outputs and the board it makes.

The firmware's unit tests run on the board from firmware/tests/conftest.py (`name[qemu]`), the
storm day from test_memory_soak.py; this file checks the build around them."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from gateway.tooling import firmware
from hil_tests.rig.qemu import QemuBoard

pytestmark = [pytest.mark.hil, pytest.mark.needs("qemu", "bus", "network")]


def _header(mpy: Path) -> tuple[int, int, int]:
    """(version, sub-version, native architecture) of an .mpy file."""
    head = mpy.read_bytes()[:3]
    assert head[:1] == b"M", mpy
    return head[1], head[2] & 3, head[2] >> 2


def test_unix_interpreter_mpy_cross_and_the_board_agree_on_the_mpy_version():
    # Deployed .mpy files are compiled by the host's mpy-cross, the frozen ones by the image's
    # own; the unix port runs the tests and the demo: all must speak the same .mpy version.
    said = subprocess.run([firmware._tool("mpy-cross"), "--version"], capture_output=True,
                          text=True, check=True).stdout
    m = re.search(r"mpy v(\d+)\.(\d+)", said)
    assert m, said
    version, sub = int(m.group(1)), int(m.group(2))
    code = "import sys; print(sys.implementation._mpy)"
    unix = int(subprocess.run([firmware.micropython(), "-c", code], capture_output=True,
                              text=True, check=True).stdout)
    with QemuBoard(firmware.build_qemu()) as board:
        qemu = int(board.exec(code))
    for name, mpy in (("unix port", unix), ("qemu board", qemu)):
        assert (mpy & 0xFF, (mpy >> 8) & 3) == (version, sub), (name, mpy, version, sub)
    header = (firmware.micropython_source() / "py" / "persistentcode.h").read_text()
    assert f"#define MPY_VERSION {version}\n" in header
    assert f"#define MPY_SUB_VERSION {sub}\n" in header


def _mtimes(out: Path) -> dict[Path, int]:
    return {f: f.stat().st_mtime_ns for f in out.rglob("*.mpy")}


def test_one_architecture_is_never_reused_for_another(tmp_path: Path):
    # The same folder compiled for armv6m (RP2040) and then for the unix port: every module is
    # compiled again, not the RP2040's .mpy left in place because its source did not change.
    firmware.build(tmp_path, march="armv6m")
    before = _mtimes(tmp_path)
    firmware.build(tmp_path, march="armv6m")
    assert _mtimes(tmp_path) == before  # same target: nothing to do
    firmware.build(tmp_path)
    after = _mtimes(tmp_path)
    assert after.keys() == before.keys() and all(after[f] != before[f] for f in after)
    # The stamp's first line is the target; the second, the compiler's version.
    assert (tmp_path / ".march").read_text().splitlines()[0] == "bytecode"


def test_each_board_builds_into_its_own_folder():
    for board in ("rp2", "esp32", "unix"):
        out = firmware.build_board(board)
        assert out == firmware.FIRMWARE_OUT / board and (out / "manifest.py").exists()
        target = (out / ".march").read_text().splitlines()[0]
        assert target == (firmware.BOARDS[board] or "bytecode")
        assert (out / "sot" / "points.mpy").exists()


def test_the_image_has_the_firmware_frozen_and_a_64_kib_heap():
    with QemuBoard(firmware.build_qemu()) as board:
        out = board.exec("import gc, sys\nimport sot.points, sot.app\n"
                         "print(sys.platform, sot.points.__file__, gc.mem_free() + gc.mem_alloc())")
    platform, where, heap = out.split()
    assert platform == "qemu" and where.startswith("sot/")  # frozen, not from a file system
    assert 60 * 1024 < int(heap) <= 64 * 1024


def test_without_any_source_the_build_says_what_to_do(monkeypatch, tmp_path: Path):
    # Offline, no MICROPY_SRC and no vendored tarball: a message naming the ways out, no trace.
    monkeypatch.delenv("MICROPY_SRC", raising=False)
    monkeypatch.setattr(firmware, "_vendored", lambda: None)
    monkeypatch.setattr(firmware, "SOURCE_DIR", tmp_path)
    monkeypatch.setattr(firmware, "MICROPY_ARCHIVE_URL", "http://127.0.0.1:9/none.tar.gz")
    with pytest.raises(firmware.SourceMissing) as e:
        firmware.micropython_source()
    assert "MICROPY_SRC" in str(e.value) and firmware.MICROPY_COMMIT in str(e.value)


def test_a_source_that_is_not_the_pinned_commit_is_refused(monkeypatch, tmp_path: Path):
    # The vendored tarball (or a download) is checked against the pinned digest of the sources
    # compiled into the image.
    tree = tmp_path / "src" / "micropython-x"
    for part in firmware.DIGEST_PARTS:
        (tree / part).mkdir(parents=True)
    (tree / "py" / "a.c").write_text("int x;\n")
    tarball = tmp_path / "micropython-x.tar.gz"
    subprocess.run(["tar", "czf", str(tarball), "-C", str(tmp_path / "src"), "micropython-x"],
                   check=True)
    monkeypatch.delenv("MICROPY_SRC", raising=False)
    monkeypatch.setattr(firmware, "_vendored", lambda: tarball)
    monkeypatch.setattr(firmware, "SOURCE_DIR", tmp_path / "build")
    with pytest.raises(firmware.SourceMissing) as e:
        firmware.micropython_source()
    assert "does not match the pinned commit" in str(e.value)
