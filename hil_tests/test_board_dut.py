"""The HIL board backend (hil_tests/rig/boarddut.py) against a board's console stand-in (a pty
speaking the raw REPL, the real MicroPython unix interpreter behind it): it writes the site's
config wired to the rig's broker, resets the board into the firmware and reads its console.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.config import load_sites
from gateway.tooling import deploy
from gateway.tooling.compiler import compile_site
from hil_tests.rig.boarddut import BoardFirmware
from hil_tests.rig.fakeboard import FakeBoard

pytestmark = [pytest.mark.hil, pytest.mark.needs("unix")]


def test_board_firmware_writes_the_rig_config_and_boots_it(tmp_path: Path):
    site = load_sites()["are-kall"]
    with FakeBoard(tmp_path / "flash", boot_s=20.0) as board:
        deploy.deploy(site, board.path, workdir=tmp_path / "work", log=lambda *a: None,
                      boot_timeout=20)
        fw = BoardFirmware(site, board.path, mqtt={"host": "127.0.0.1", "port": 18830,
                                                   "user": site.id, "password": "pw"})
        fw.start()
        try:
            assert fw.wait_log(f"config {compile_site(site)['hash']}", timeout=20), fw.log()
            on_board = json.loads((board.flash / "config.json").read_text())
            assert on_board["mqtt"]["port"] == 18830 and on_board["mqtt"]["password"] == "pw"
            assert board.resets == 2  # the deploy's reset and the rig's
        finally:
            fw.stop()
        with pytest.raises(NotImplementedError, match="power_cut"):
            fw.kill()
