"""`sot sites`, `sot alerts` and `sot ack` on a gateway's database, as a coordinator runs them."""

from __future__ import annotations

from pathlib import Path

import pytest
from alert_rig import Rig
from gw_samples import present

from gateway.cli import main
from gateway.store import SqliteStore

FAILED = {"mode": "backup_failed", "grid": {"state": "lost"}, "genset": {"state": "fault"},
          "capability": {"power": "none"}}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    rig = Rig(tmp_path / "sot.sqlite3")
    for s in ("are-kall", "krokom-follinge"):
        rig.state(s)
    rig.state("krokom-follinge", **FAILED)
    rig.advance(60)
    rig.close()
    return tmp_path / "sot.sqlite3"


def test_sites_alerts_and_ack(db: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["sites", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "krokom-follinge" in out and "backup_failed" in out

    assert main(["alerts", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "backup_failed:krokom-follinge" in out and "Föllinge (Krokom): ingen ström" in out

    store = SqliteStore(db)
    aid = present(store.alert("backup_failed:krokom-follinge")).id
    store.close()
    assert main(["ack", str(aid), "--by", "Åsa", "--note", "tekniker på väg", "--db",
                 str(db)]) == 0
    assert "acknowledged" in capsys.readouterr().out
    # twice: nothing to acknowledge, said so, non-zero exit
    assert main(["ack", "backup_failed:krokom-follinge", "--db", str(db)]) == 1
    assert "acknowledged, nothing to acknowledge" in capsys.readouterr().err
    assert main(["ack", "no-such-alert", "--db", str(db)]) == 1

    store = SqliteStore(db)
    a = present(store.alert(aid))
    assert a.status == "acknowledged" and a.acked_by == "Åsa" and a.ack_note == "tekniker på väg"
    assert store.audit_log()[0]["action"] == "ack"
    store.close()
    assert main(["alerts", "--db", str(db)]) == 0
    assert "kvitterat av / acknowledged by Åsa" in capsys.readouterr().out


def test_a_missing_database_is_named(tmp_path: Path):
    with pytest.raises(SystemExit, match="no database"):
        main(["alerts", "--db", str(tmp_path / "nope.sqlite3")])
