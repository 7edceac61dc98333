"""`sot demo` as a person runs it: prints where to look, shows the storm, and leaves nothing
running when it stops (after --duration, or at Ctrl-C)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hil_tests.rig.broker import free_port

pytestmark = [pytest.mark.hil, pytest.mark.needs("unix")]

SOT = str(Path(sys.executable).parent / "sot")


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def leftovers(workdir: Path) -> list[str]:
    """Processes whose command line mentions the demo's folder (firmware, broker)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(workdir) in cmd:
            found.append(f"{pid}: {cmd}")
    return found


def run_demo(tmp_path: Path, *args: str, interrupt_after: float | None = None):
    mqtt_port, http_port = free_port(), free_port()
    cmd = [SOT, "demo", "--mqtt-port", str(mqtt_port), "--http-port", str(http_port),
           "--workdir", str(tmp_path), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        if interrupt_after is not None:
            time.sleep(interrupt_after)
            assert listening(mqtt_port) and listening(http_port)
            proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, out, mqtt_port, http_port


def test_demo_with_duration_shows_the_storm_and_stops_everything(tmp_path: Path):
    # 40 s: the storm at 20 s, the VMA at 21 s, the feed polled every 10 s
    rc, out, mqtt_port, http_port = run_demo(tmp_path, "--duration", "40")
    assert rc == 0, out
    assert f"http://127.0.0.1:{http_port}/" in out
    # the broker is TLS only: the demo names the port and the CA a client must trust
    assert f"over TLS only, port {mqtt_port}" in out
    assert re.search(r"CA certificate: /\S+/ca\.crt\n", out), out[:2000]
    assert "storm: grid lost at are-kall, harjedalen-hede" in out
    last = out[out.rindex("[   "):]  # the last status block
    for site in ("are-kall", "harjedalen-hede", "krokom-follinge"):
        assert site in last
    assert "grid=lost" in last and "krokom-follinge   normal" in last
    # The official VMA for Åre kommun reached Kall's panel and signage, and no other site's.
    assert "VMA: the official feed issues a VMA for Åre kommun" in out
    seen = re.findall(r"VMA på panelen / on the panel: (.*); på skylten / on the signage: (.*)",
                      out)
    assert seen and seen[-1] == ("are-kall", "are-kall"), out[-3000:]
    assert not any("hede" in p or "follinge" in p or "hede" in s or "follinge" in s
                   for p, s in seen)
    assert not listening(mqtt_port) and not listening(http_port)
    assert leftovers(tmp_path) == []


def test_demo_stops_cleanly_on_ctrl_c(tmp_path: Path):
    rc, out, mqtt_port, http_port = run_demo(tmp_path, interrupt_after=12)
    assert rc == 0, out
    assert "stopping:" in out
    assert not listening(mqtt_port) and not listening(http_port)
    assert leftovers(tmp_path) == []
