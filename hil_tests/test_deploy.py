"""`sot firmware deploy` against a board's console, driven by the real mpremote: a pty speaking
MicroPython's raw REPL with the real MicroPython unix interpreter behind it
(hil_tests/rig/fakeboard.py; the firmware is copied as .mpy), and the qemu board's console (the
32-bit image with the firmware frozen in: only the config is copied). The deployed firmware then
boots and must report the site's config hash.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.config import load_sites
from gateway.tooling import compiler, deploy
from hil_tests.rig.fakeboard import FakeBoard

pytestmark = [pytest.mark.hil]

SITE = "are-kall"


@pytest.fixture
def board(tmp_path: Path):
    b = FakeBoard(tmp_path / "flash", boot_s=20.0).start()
    yield b
    b.stop()


@pytest.mark.needs("unix")  # the fake board: a pty with the unix interpreter
def test_deploy_copies_firmware_and_config_checks_the_hash_and_boots(board: FakeBoard,
                                                                     tmp_path: Path):
    site = load_sites()[SITE]
    res = deploy.deploy(site, board.path, credentials={SITE: "s3cret"},
                        workdir=tmp_path / "work", log=lambda *a: None)
    expected = compiler.compile_site(site, mqtt={"user": SITE, "password": "s3cret"})["hash"]
    assert res.ok and res.board_hash == expected and not res.frozen
    on_board = json.loads((board.flash / "config.json").read_text())
    assert on_board["hash"] == expected and on_board["mqtt"]["password"] == "s3cret"
    assert (board.flash / "sot" / "main.mpy").exists() and (board.flash / "main.py").exists()
    assert "sot/app.mpy" in res.copied and "config.json" in res.copied
    # the reset ran main.py: the real firmware booted from the copied .mpy and said its hash
    assert board.resets == 1
    assert res.boot_line is not None and res.boot_hash == expected, board.console_log[-800:]


@pytest.mark.needs("unix")  # the fake board: a pty with the unix interpreter
def test_deploy_refuses_a_board_that_keeps_another_config(board: FakeBoard, tmp_path: Path,
                                                          monkeypatch):
    # A read-only or full flash leaves the old file: the board's own hash tells.
    site = load_sites()[SITE]
    real = deploy._mpremote

    def no_config(port, *args, **kw):
        out = real(port, *args, **kw)
        if ":config.json" in args:  # the board keeps (or ends up with) another file
            (board.flash / "config.json").write_text(json.dumps({"hash": "0123456789ab"}))
        return out

    monkeypatch.setattr(deploy, "_mpremote", no_config)
    with pytest.raises(deploy.DeployError, match="holds config 0123456789ab"):
        deploy.deploy(site, board.path, workdir=tmp_path / "work", log=lambda *a: None)
    assert board.resets == 0  # not reset into a config that is not the site's


@pytest.mark.needs("unix")  # the fake board: a pty with the unix interpreter
def test_cli_deploy_reports_the_boot_line(board: FakeBoard, capsys):
    from gateway import cli

    rc = cli.main(["firmware", "deploy", "--port", board.path, "--site",
                   "config/sites/are-kall.toml", "--boot-timeout", "20"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "booted: I are-kall boot 1 reset" in out


@pytest.mark.needs("qemu")
def test_deploy_to_the_frozen_qemu_board_copies_only_the_config_and_it_outlives_a_soft_reset(
        tmp_path: Path):
    # The 32-bit image (gateway/tooling/firmware.py build_qemu) has the firmware frozen in and its
    # flash as littlefs in RAM at /flash: deploy must ask the board where the config goes, copy only
    # that with mpremote, check the hash there and reset the board without losing its flash.
    from gateway.tooling import firmware
    from hil_tests.rig.qemu import QemuBoard

    site = load_sites()[SITE]
    expected = compiler.compile_site(site, mqtt={"user": SITE, "password": "s3cret"})["hash"]
    with QemuBoard(firmware.build_qemu(), log=tmp_path / "console.log") as board:
        res = deploy.deploy(site, board.ptys[0], credentials={SITE: "s3cret"},
                            workdir=tmp_path / "work", boot_timeout=10, log=lambda *a: None)
        assert res.frozen and res.copied == ["/flash/config.json"], res
        assert res.ok and res.board_hash == expected and res.reset == "soft" and res.at_prompt
        # qemu is still running (machine.reset() would have ended it, and the flash with it),
        # and the firmware started after the soft reset reads the deployed config from flash.
        assert board.alive()
        board.enter_raw()
        board.start_exec("import sys\nsys.argv[:] = ['sot']\nimport sot.main\n")
        line = board.read_until(expected.encode(), 20).decode(errors="replace")
        assert f"I {SITE} boot 1 reset" in line and f"config {expected}" in line, line
    # The flash is RAM: a new qemu has none of it (deploy again after every qemu start).
    with QemuBoard(firmware.build_qemu()) as board:
        out = board.exec("from sot import hal\nhal.init(['sot'])\nimport os\n"
                         "print(os.listdir('/flash'))")
        assert out.strip() == "[]"


@pytest.mark.needs("qemu")
def test_cli_deploy_to_the_qemu_board_says_it_waits_at_its_repl(capsys):
    # No main.py runs on the qemu board: the technician is told how to start the firmware
    # instead of being told that no boot line came.
    from gateway import cli
    from gateway.tooling import firmware
    from hil_tests.rig.qemu import QemuBoard

    with QemuBoard(firmware.build_qemu()) as board:
        rc = cli.main(["firmware", "deploy", "--port", board.ptys[0], "--site",
                       "config/sites/are-kall.toml", "--boot-timeout", "10"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "config at /flash/config.json, soft reset" in out and "import sot.main" in out, out
