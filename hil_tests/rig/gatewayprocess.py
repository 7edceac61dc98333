"""The gateway as its own process (`sot gateway --config FILE`), for tests that kill it with
`kill -9` (fault scenario N7). Stopped or killed by its process id."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .proc import stop_process


def _toml(cfg: dict[str, dict[str, Any]]) -> str:
    out = []
    for section, values in cfg.items():
        out.append(f"[{section}]")
        out += [f"{k} = {json.dumps(v)}" for k, v in values.items() if v is not None]
    return "\n".join(out) + "\n"


class GatewayProcess:
    def __init__(self, workdir: Path, *, host: str, port: int,
                 login: dict[str, str] | None = None) -> None:
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.db = self.dir / "sot.sqlite3"
        self.conf = self.dir / "gateway.toml"
        login = login or {}
        self.conf.write_text(_toml({
            "mqtt": {"host": host, "port": port, "user": login.get("user"),
                     "password": login.get("password"), "ca": login.get("ca"),
                     "keepalive_s": 10},
            "http": {"host": "127.0.0.1", "port": 0},
            "store": {"path": str(self.db)},
            "alerts": {"files_dir": str(self.dir)},
        }))
        self.log_path = self.dir / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> GatewayProcess:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "gateway", "--config",
                                      str(self.conf)], stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_process(self.proc, sig, grace=10.0)
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


def event_keys(db: Path, site: str) -> list[tuple[int, int]]:
    """(boot, seq) of every event of `site` filed in the gateway database at `db`."""
    if not db.exists():
        return []
    for _ in range(20):
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            try:
                return [(b, s) for b, s in con.execute(
                    "SELECT boot, seq FROM events WHERE site = ? ORDER BY boot, seq", (site,))]
            finally:
                con.close()
        except sqlite3.OperationalError:
            time.sleep(0.1)  # not created yet, or being migrated
    return []
