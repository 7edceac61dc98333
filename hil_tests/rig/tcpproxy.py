"""A TCP forwarder on 127.0.0.1 that can freeze: both directions stop moving while the sockets
stay open - a half-open link as a dead router or a stuck LTE modem leaves it (fault scenario N5).
Threads, one pair per connection; `close()` ends them all."""

from __future__ import annotations

import select
import socket
import ssl
import threading
from pathlib import Path


class FreezableProxy:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (host, target_port)
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind((host, 0))
        self.srv.listen(16)
        self.port = self.srv.getsockname()[1]
        self.frozen = threading.Event()
        self._stop = threading.Event()
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True, name="proxy").start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            try:
                u = self._upstream()
            except OSError:
                c.close()
                continue
            self._socks += [c, u]
            threading.Thread(target=self._pump, args=(c, u), daemon=True).start()

    def _upstream(self) -> socket.socket:
        return socket.create_connection(self.target, timeout=2)

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peer = {a: b, b: a}
        try:
            while not self._stop.is_set():
                if self.frozen.is_set():
                    self._stop.wait(0.05)
                    continue
                r, _, _ = select.select([a, b], [], [], 0.05)
                for s in r:
                    try:
                        data = s.recv(65536)
                    except (TimeoutError, ssl.SSLWantReadError):
                        # a TLS record that was no data (a TLS 1.3 session ticket)
                        continue
                    if not data:
                        return
                    # A TLS socket may hold decrypted bytes that select() does not report.
                    while isinstance(s, ssl.SSLSocket) and s.pending():
                        data += s.recv(s.pending())
                    peer[s].sendall(data)
        except (OSError, ValueError):  # closed under us by drop_all()
            pass
        finally:
            a.close()
            b.close()

    def drop_all(self) -> None:
        """Close every forwarded connection (what a router reboot does after a freeze)."""
        for s in self._socks:
            try:
                s.close()
            except OSError:
                pass
        self._socks.clear()

    def close(self) -> None:
        self._stop.set()
        self.srv.close()
        self.drop_all()


class TlsModem(FreezableProxy):
    """The qemu board's TLS, done by its stand-in modem: the board (no network, no `tls` module)
    speaks plaintext MQTT on its UART to this listener on 127.0.0.1, which connects to the broker
    with TLS 1.2+ and verifies the broker's certificate against `ca` and `host`, as the board's
    own `tls` would (hal/qemu.py). A broker with another CA's certificate, or a plaintext one,
    is refused here: the board's connection is closed before a byte reaches the broker."""

    def __init__(self, target_port: int, ca: Path | str, host: str = "127.0.0.1") -> None:
        self.ctx = ssl.create_default_context(cafile=str(ca))
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self.hostname = host
        super().__init__(target_port, host)

    def _upstream(self) -> socket.socket:
        raw = socket.create_connection(self.target, timeout=2)
        try:
            u = self.ctx.wrap_socket(raw, server_hostname=self.hostname)
        except (OSError, ssl.SSLError):
            raw.close()
            raise
        # Not blocking for long: select() reports the socket readable for TLS records that carry
        # no data (TLS 1.3 session tickets); a blocking recv() would then wait for the broker's
        # next message while the board's CONNECT sits unforwarded.
        u.settimeout(0.2)
        return u
