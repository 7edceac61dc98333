"""`sot firmware deploy` against a board's console: a pty speaking MicroPython's raw REPL with the
real MicroPython unix interpreter behind it (hil_tests/rig/fakeboard.py), driven by the real
mpremote. The deployed firmware then boots on it and must report the site's config hash.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway import config, deploy
from gateway.config import load_sites
from hil_tests.rig.fakeboard import FakeBoard

pytestmark = [pytest.mark.hil, pytest.mark.needs("unix")]

SITE = "are-kall"


@pytest.fixture
def board(tmp_path: Path):
    b = FakeBoard(tmp_path / "flash", boot_s=20.0).start()
    yield b
    b.stop()


def test_deploy_copies_firmware_and_config_checks_the_hash_and_boots(board: FakeBoard,
                                                                     tmp_path: Path):
    site = load_sites()[SITE]
    res = deploy.deploy(site, board.path, credentials={SITE: "s3cret"},
                        workdir=tmp_path / "work", log=lambda *a: None)
    expected = config.compile_site(site, mqtt={"user": SITE, "password": "s3cret"})["hash"]
    assert res.ok and res.board_hash == expected and not res.frozen
    on_board = json.loads((board.flash / "config.json").read_text())
    assert on_board["hash"] == expected and on_board["mqtt"]["password"] == "s3cret"
    assert (board.flash / "sot" / "main.mpy").exists() and (board.flash / "main.py").exists()
    assert "sot/app.mpy" in res.copied and "config.json" in res.copied
    # the reset ran main.py: the real firmware booted from the copied .mpy and said its hash
    assert board.resets == 1
    assert res.boot_line is not None and res.boot_hash == expected, board.console_log[-800:]


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


def test_cli_deploy_reports_the_boot_line(board: FakeBoard, capsys):
    from gateway import cli

    rc = cli.main(["firmware", "deploy", "--port", board.path, "--site",
                   "config/sites/are-kall.toml", "--boot-timeout", "20"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "booted: I are-kall boot 1 reset" in out
