"""config/systemd/: the units a municipality's Debian server runs (docs/deploy.md).

- `systemd-analyze verify` on every unit (and on Debian's mosquitto.service with our drop-in):
  no unknown key, no bad value, every command there; skipped, saying so, on a machine without
  systemd-analyze. The units name /opt/sot (where docs/deploy.md installs the checkout); the
  test verifies copies that name this checkout instead.
- The gateway unit's ExecStart is run as written (the real `sot` command, a broken config file
  in place of /etc/sot/gateway.toml): the command line parses and the gateway gets as far as
  reading its configuration.
- The backup script against the tests' PostgreSQL: a dump, rotation, and the restore commands of
  docs/deploy.md giving back the data.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from gw_samples import SITES, Clock, event, raw
from pg_cluster import Cluster, pg_cluster_fixture  # noqa: F401 - fixture

from gateway.config import REPO_ROOT
from gateway.ingest import Ingest
from gateway.store import PgStore

UNITS = REPO_ROOT / "config" / "systemd"
INSTALLED = "/opt/sot"  # where docs/deploy.md puts the checkout
SOT = Path(sys.executable).with_name("sot")


def _copy_for_here(dest: Path) -> None:
    for f in UNITS.iterdir():
        if f.is_file():
            text = f.read_text().replace(INSTALLED, str(REPO_ROOT))
            (dest / f.name).write_text(text)
            (dest / f.name).chmod(f.stat().st_mode)


def _verify(args: list[str], env: dict[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here (Debian: package systemd); the "
                    "units are checked on machines that have it")
    return subprocess.run([analyze, "verify", "--man=no", *args], capture_output=True,
                          text=True, timeout=60, env=env, cwd=cwd)


def test_the_units_pass_systemd_analyze_verify(tmp_path: Path):
    _copy_for_here(tmp_path)
    # A template is verified as an instance of it, as `systemctl start sot-gateway@a` loads it.
    shutil.copy(tmp_path / "sot-gateway@.service", tmp_path / "sot-gateway@a.service")
    res = _verify(["./sot-gateway@a.service", "./sot-db-backup.service",
                   "./sot-db-backup.timer"], cwd=tmp_path)
    assert res.returncode == 0 and res.stderr == "" and res.stdout == "", res


def test_the_mosquitto_drop_in_passes_verify_on_debians_unit(tmp_path: Path):
    if not Path("/lib/systemd/system/mosquitto.service").exists():
        pytest.skip("Debian's mosquitto package (its mosquitto.service) is not installed here")
    drop = tmp_path / "mosquitto.service.d"
    drop.mkdir()
    shutil.copy(UNITS / "mosquitto.service.d" / "sot.conf", drop / "sot.conf")
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path}:"}  # ours first, then the system's
    res = _verify(["mosquitto.service"], env=env)
    assert res.returncode == 0 and res.stderr == "", res
    # ... and verify did read the drop-in: a wrong key in it is reported.
    with (drop / "sot.conf").open("a") as f:
        f.write("NoSuchKey=1\n")
    res = _verify(["mosquitto.service"], env=env)
    assert "sot.conf" in res.stderr and "NoSuchKey" in res.stderr, res


def _unit(name: str) -> dict[str, list[str]]:
    """Key -> values of a unit file (every section; a key may repeat)."""
    out: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def test_the_gateway_unit_runs_the_real_cli_with_its_options(tmp_path: Path):
    unit = _unit("sot-gateway@.service")
    assert unit["Restart"] == ["always"] and unit["User"] == ["sot"]
    # The instance picks the worker's own settings file.
    assert "--config /etc/sot/gateway-%i.toml" in unit["ExecStart"][0]
    argv = shlex.split(unit["ExecStart"][0].replace("%i", "a"))
    assert argv[0] == f"{INSTALLED}/.venv/bin/sot" and argv[1] == "gateway", argv
    # Every option the unit uses is one `sot gateway --help` lists.
    helptext = subprocess.run([str(SOT), "gateway", "--help"], capture_output=True, text=True,
                              timeout=60, check=True).stdout
    for arg in argv[2:]:
        if arg.startswith("--"):
            assert arg.split("=")[0] in helptext, arg
    # Run as written, with a config file that is wrong on purpose: the CLI takes the command
    # line and stops at the configuration, naming it (not at argparse's "usage:").
    config = tmp_path / "gateway.toml"
    config.write_text("[mqtt]\nport = \"eighty\"\n")
    args = [str(config) if a == "/etc/sot/gateway-a.toml" else a for a in argv[1:]]
    assert str(config) in args
    res = subprocess.run([str(SOT), *args], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res
    assert "invalid configuration" in res.stderr and "port" in res.stderr, res.stderr
    assert "usage:" not in res.stderr


def _restore_db(cluster: Cluster, name: str) -> str:
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name}")
        c.execute(f"CREATE DATABASE {name}")
    return cluster.url(name)


def test_backup_dumps_rotates_and_restores(pg_cluster: Cluster, tmp_path: Path):
    src = _restore_db(pg_cluster, f"bk_src_{os.getpid()}")
    store = PgStore(src)
    try:
        store.upsert_sites(SITES)
        ing = Ingest(store, Clock())
        for seq in (20, 21, 22):
            assert ing.handle("sot/v1/are-kall/event", raw(event(seq=seq))).accepted
    finally:
        store.close()

    unit = _unit("sot-db-backup.service")
    assert unit["ExecStart"] == [f"{INSTALLED}/config/systemd/sot-db-backup"]
    backups = tmp_path / "backups"
    env = {**os.environ, "PATH": f"{pg_cluster.bindir}:{os.environ['PATH']}",
           "PGHOST": "127.0.0.1", "PGPORT": str(pg_cluster.port), "PGUSER": "sot",
           "PGDATABASE": src.rsplit("/", 1)[1], "SOT_BACKUP_DIR": str(backups),
           "SOT_BACKUP_KEEP": "2"}
    for _ in range(3):
        res = subprocess.run([str(UNITS / "sot-db-backup")], env=env, capture_output=True,
                             text=True, timeout=120)
        assert res.returncode == 0, res.stderr
    dumps = sorted(backups.iterdir())
    assert len(dumps) == 2 and all(d.suffix == ".dump" for d in dumps), dumps  # 3rd rotated out
    assert "removed" in res.stdout

    # The restore of docs/deploy.md: into an empty database, as its owner.
    dest = _restore_db(pg_cluster, f"bk_dst_{os.getpid()}")
    res = subprocess.run([str(pg_cluster.bindir / "pg_restore"), "--exit-on-error",
                          "--no-owner", f"--dbname={dest}", str(dumps[-1])],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    store = PgStore(dest)
    try:
        assert store.site_ids() == {s.id for s in SITES}
        assert sorted(e["seq"] for e in store.events("are-kall")) == [20, 21, 22]
    finally:
        store.close()

    # A bad keep count is refused before anything is written or removed.
    res = subprocess.run([str(UNITS / "sot-db-backup")], env={**env, "SOT_BACKUP_KEEP": "0"},
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "SOT_BACKUP_KEEP" in res.stderr
    assert sorted(backups.iterdir()) == dumps


def test_the_settings_shown_in_deploy_md_are_valid():
    """docs/deploy.md's /etc/sot/gateway-a.toml passes the gateway's own settings check."""
    import re
    import tomllib

    from gateway.settings import with_defaults

    doc = (REPO_ROOT / "docs" / "deploy.md").read_text()
    section = doc.split("### 6. The gateway's settings", 1)[1]
    block = re.search(r"```toml\n(.*?)```", section, re.S)
    assert block is not None
    shown = tomllib.loads(block.group(1))
    from gateway.settings import SCHEMA
    if "worker" not in SCHEMA:
        # [worker] comes with the several-workers change (its own branch); until it is merged
        # this checkout cannot judge that section, and checks the rest.
        assert shown.pop("worker") == {"name": "a"}
    settings = with_defaults(shown, "docs/deploy.md")
    assert settings["store"]["url"] == "postgresql:///sot"
    assert settings["metrics"]["token_file"] == "/etc/sot/metrics-token"


def test_the_prometheus_config_and_alerts_in_deploy_md_pass_promtool(tmp_path: Path):
    """docs/deploy.md's scrape configuration and alert rules, as Prometheus reads them (Debian
    package prometheus brings promtool; docs/deploy.md, "Monitoring")."""
    import re

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed here (Debian: package prometheus); the "
                    "Prometheus examples are checked on machines that have it")
    doc = (REPO_ROOT / "docs" / "deploy.md").read_text()
    scrape, rules = re.findall(r"```yaml\n(.*?)```", doc, re.S)
    token = tmp_path / "token"
    token.write_text("x" * 32)
    (tmp_path / "scrape.yml").write_text(
        scrape.replace("/etc/prometheus/sot-metrics-token", str(token)))
    (tmp_path / "rules.yml").write_text(rules)
    for args in (["check", "config", "scrape.yml"], ["check", "rules", "rules.yml"]):
        res = subprocess.run([promtool, *args], cwd=tmp_path, capture_output=True, text=True,
                             timeout=60)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "SUCCESS" in res.stdout
