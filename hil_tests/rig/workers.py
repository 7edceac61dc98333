"""Gateway workers as processes of their own (`sot gateway --config FILE`, one `[worker] name`
each) over one PostgreSQL store and one broker, for the fault tests that kill -9 them; and the
configuration folder of the many sites `hil_tests/rig/fleet.py` speaks for."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from gateway.config import CONFIG_DIR

from .fleet import site_id
from .gatewayprocess import _toml
from .proc import stop_process

CONTACTS = """
[[municipality]]
name = "*"

[[municipality.contact]]
name = "Jour"
roles = ["coordinator", "technician"]
file = "notifications.jsonl"
"""


def fleet_config(folder: Path, n_sites: int) -> Path:
    """`folder` with sites/ (n_sites copies of the shipped are-kall, as f-00000...: 20 a
    municipality), devices/ (the shipped profiles), the shipped alert rules and one `file`
    contact for every municipality."""
    sites = folder / "sites"
    sites.mkdir(parents=True, exist_ok=True)
    src = (CONFIG_DIR / "sites" / "are-kall.toml").read_text()
    for i in range(n_sites):
        (sites / f"{site_id(i)}.toml").write_text(
            src.replace('id = "are-kall"', f'id = "{site_id(i)}"')
               .replace('municipality = "Åre"', f'municipality = "Kommun {i // 20:03d}"'))
    devices = folder / "devices"
    if not devices.exists():
        devices.symlink_to(CONFIG_DIR / "devices")
    (folder / "alerts.toml").write_text((CONFIG_DIR / "alerts.toml").read_text())
    (folder / "contacts.toml").write_text(CONTACTS)
    return folder


class WorkerProcess:
    """One gateway worker: `start()`, `kill()` (SIGKILL), `stop()` (SIGTERM), `log()`."""

    def __init__(self, workdir: Path, name: str, *, mqtt: dict[str, Any], store_url: str,
                 config_dir: Path, files_dir: Path, ttl_s: float = 6.0,
                 tick_s: float = 1.0) -> None:
        self.name = name
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf = self.dir / "gateway.toml"
        self.conf.write_text(_toml({
            "mqtt": {"keepalive_s": 10, "cmd_keys": str(self.dir / "cmd-keys.json"),
                     "session_expiry_s": 10, **mqtt},
            "http": {"host": "127.0.0.1", "port": 0},
            "store": {"url": store_url},
            "sites": {"dir": str(config_dir / "sites")},
            "alerts": {"files_dir": str(files_dir), "tick_s": tick_s},
            "worker": {"name": name, "lease_ttl_s": ttl_s},
        }))
        self.log_path = self.dir / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "gateway", "--config", str(self.conf)],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_process(self.proc, sig, grace=15.0)
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""
