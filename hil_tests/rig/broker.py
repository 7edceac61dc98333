"""A private Mosquitto broker on 127.0.0.1 for the demo and the tests.

Mosquitto runs in the foreground with a generated config (`log_dest stderr`: its stdout is
block-buffered) and is stopped by its process id. As root it drops to the `mosquitto` user, so
its folder is made readable for that user.

With `auth` ({user: password}, from gateway.mqttauth.passwords) it runs as production does:
the config `sot mqtt-auth` writes (no anonymous clients, the password_file and acl_file, the
user name as client id, the size limits); `login(user)` gives the keyword arguments a client
needs. Without `auth` it is an open broker, for tests of the protocol alone; the size limits
hold there too.

TLS, always (docs/mqtt.md, "TLS"): the listener has the certificate of a throw-away CA made once
per test session (`rig_pki()`, as `sot pki init` makes them), so a plaintext client is refused
as in production. `login(user)` includes `ca`, the CA's path, which every client of the rig
needs (the gateway's [mqtt] ca, `Peer(ca=...)`, the controller's compiled config);
`client(...)` is the one place a test gets a paho client set up for TLS. `tls=False` gives a
plaintext broker, used only to show that the clients refuse one.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .proc import stop_process

_pki: dict[str, dict[str, Path]] = {}


def rig_pki(name: str = "rig") -> dict[str, Path]:
    """A CA and a broker certificate for 127.0.0.1/localhost, made once per test process and
    removed at exit (key generation is the slow part of TLS). Another `name` is another CA: a
    broker with its certificate is one the clients must refuse. Keys are world-readable here:
    throw-away keys in a folder of their own, read by Mosquitto after it drops to its user."""
    if name not in _pki:
        from gateway import pki

        d = Path(tempfile.mkdtemp(prefix=f"sot-pki-{name}-"))
        os.chmod(d, 0o755)
        atexit.register(shutil.rmtree, d, True)
        paths = pki.init(d, org=f"SOT test {name}")
        for f in paths.values():
            os.chmod(f, 0o644)
        _pki[name] = paths
    return _pki[name]


def client_tls(c: Any, ca: Path | str) -> None:
    """Set paho client `c` to TLS (1.2 or newer) verifying the broker against CA `ca`."""
    c.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)


def find_mosquitto() -> str:
    for cand in (shutil.which("mosquitto"), "/usr/sbin/mosquitto", "/usr/bin/mosquitto"):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise RuntimeError("Mosquitto is not installed: run `make test` as root once, or "
                       "`sudo apt-get install mosquitto`")


# Ports for servers the rig starts. A port is chosen here and bound later, often by a child
# process (Mosquitto, PostgreSQL, a gateway), so between the two another process could take it.
# In one process that cannot happen: the ports are handed out in turn from a block and none comes
# again before the other ~500 have. Under pytest-xdist (docs/testing.md, "In parallel") each
# worker gwN has a block of its own, 20000 + 500 N, below the kernel's ephemeral range (32768 and
# up, where a connect() takes its local port and where a bind to port 0 lands), so no worker's
# port can be another's or an outgoing connection's. Outside xdist (one process, the demo) the
# kernel's bind to port 0 chooses, as before.
_PORT_BLOCK = 500
_PORT_BASE = 20000
_port_lock = threading.Lock()
_next_port: int | None = None


def _worker_block() -> tuple[int, int] | None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw") or not worker[2:].isdigit():
        return None
    low = _PORT_BASE + _PORT_BLOCK * int(worker[2:])
    if low + _PORT_BLOCK > 32768:
        return None
    return low, low + _PORT_BLOCK


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now and that this process has not handed out
    recently (see above)."""
    global _next_port
    block = _worker_block()
    if block is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    low, high = block
    with _port_lock:
        if _next_port is None:
            # Where in its block a worker starts differs from run to run, so that a run started
            # right after another does not meet the ports the other may still hold in TIME_WAIT.
            _next_port = low + (os.getpid() % _PORT_BLOCK)
        for _ in range(high - low):
            port = _next_port
            _next_port = low + (port + 1 - low) % (high - low)
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue  # held by someone else (another session, a socket in TIME_WAIT)
                return port
    raise RuntimeError(f"no free port in {low}..{high - 1} for {os.environ['PYTEST_XDIST_WORKER']}")


class Broker:
    """Start with `start()`, stop with `stop()`; also a context manager."""

    def __init__(self, port: int | None = None, *, workdir: Path | None = None,
                 persistence: bool = False, extra_conf: str = "",
                 auth: dict[str, str] | None = None, tls: bool = True,
                 pki_name: str = "rig") -> None:
        self.host = "127.0.0.1"
        self.tls = rig_pki(pki_name) if tls else None
        # The CA clients verify this broker against: the session's rig CA even when the broker
        # shows another CA's certificate (pki_name), so that the clients must refuse it.
        self.ca = rig_pki()["ca"]
        self.port = port or free_port()
        self._own_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="sot-broker-"))
        self.persistence = persistence
        self.extra_conf = extra_conf
        self.auth = auth
        self._auth_dir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir / "mosquitto.log"

    def _write_conf(self) -> Path:
        from gateway import mqttauth

        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o777)
        common = [
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.dir}/",
            "max_inflight_messages 100",
            self.extra_conf,
        ]
        if self.auth is not None:
            # Mosquitto reads these after dropping to its own user: a folder of their own in
            # /tmp, since the work folder may sit in a private (0700) temporary directory.
            if self._auth_dir is None:
                self._auth_dir = Path(tempfile.mkdtemp(prefix="sot-broker-auth-"))
                os.chmod(self._auth_dir, 0o755)
            pw, acl = mqttauth.write_files(self._auth_dir, self.auth, mode=0o644)
            text = mqttauth.conf_text(pw, acl, port=self.port, host=self.host, extra=common,
                                      tls=self.tls)
        else:
            text = "\n".join([*mqttauth.limit_lines(), *common, "allow_anonymous true",
                              f"listener {self.port} {self.host}",
                              *(mqttauth.tls_lines(self.tls) if self.tls else [])]) + "\n"
        conf = self.dir / "mosquitto.conf"
        conf.write_text(text)
        os.chmod(conf, 0o644)
        return conf

    def start(self, timeout: float = 10.0) -> Broker:
        conf = self._write_conf()
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([find_mosquitto(), "-c", str(conf)], stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {self.log()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.host}:{self.port}: {self.log()}")

    def login(self, user: str) -> dict[str, Any]:
        """{"user", "password", "ca"} for `user` (only "ca" without auth)."""
        if self.auth is None:
            return {"ca": str(self.ca)}
        return {"user": user, "password": self.auth[user], "ca": str(self.ca)}

    def client(self, client_id: str = "", user: str | None = None, **kw: Any) -> Any:
        """A paho client (API version 2, not yet connected) for this broker: TLS against the
        rig's CA, and `user`'s login when given. Connect it to (self.host, self.port)."""
        import paho.mqtt.client as mqtt

        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, **kw)
        client_tls(c, self.ca)
        if user is not None:
            c.username_pw_set(user, self.auth[user] if self.auth else None)
        return c

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_process(self.proc, sig)
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        if self._auth_dir is not None:
            shutil.rmtree(self._auth_dir, ignore_errors=True)

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
