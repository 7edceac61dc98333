"""Serial links for the rig: two pseudo-terminal pairs joined by a byte bridge.

    controller ── device_path ═ pty A ═ master A ─┐        ┌─ master B ═ pty B ═ plant_path ── plant
                   (slave A)                      └ bridge ┘                    (slave B)
                                          on_bytes hook, pacing

Both the controller and the plant simulator open a path: pymodbus' serial server opens its port
through pyserial, which needs a device name (a pty master has none). So every link is two pty
pairs, made with `os.openpty()` (no socat needed), whose masters a pair of threads copy between.
The bridge is also the place where the wire is modelled:

- pacing: a pty moves bytes instantly whatever the baud rate. With `baud` set, every byte is
  delivered 10 bit times (start + 8 data + stop) after the previous one, so a 2-register read at
  9600 baud takes about 17.7 ms on the wire (8-byte request + 9-byte response), as on RS-485;
- fault injection: `on_bytes(direction, data) -> data` sees every chunk and returns what is
  delivered (b"" drops it). Directions are `TO_PLANT` and `TO_CONTROLLER`.

The link keeps its own descriptor on both slaves open for its whole life. On Linux, reading a
pty master whose slave nobody holds fails with EIO, and the tty's settings (raw mode) are reset
when its last opener closes; holding the slaves lets either side close and reopen its port.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import threading
import time
import tty
from collections.abc import Callable

log = logging.getLogger(__name__)

TO_PLANT = "to_plant"
TO_CONTROLLER = "to_controller"

OnBytes = Callable[[str, bytes], bytes]


def _pass_through(direction: str, data: bytes) -> bytes:
    return data


class PtyLink:
    """A serial link between a controller and the plant simulator; see the module docstring.

    `device_path` is the controller's end (give it to the firmware or a Modbus client),
    `plant_path` the simulator's. Use as a context manager or call `close()`.
    """

    def __init__(self, baud: int | None = None, *, bits_per_byte: int = 10,
                 on_bytes: OnBytes | None = None, name: str = "link") -> None:
        self.name = name
        self.baud = baud
        # Seconds one byte occupies the line; 0 delivers at once.
        self.byte_time = bits_per_byte / baud if baud else 0.0
        self.on_bytes: OnBytes = on_bytes or _pass_through
        self.bytes_to_plant = 0
        self.bytes_to_controller = 0
        self._fds: list[int] = []
        self._closed = False
        self._stop = threading.Event()
        try:
            ctl_master, ctl_slave = self._pty()
            plant_master, plant_slave = self._pty()
            self._wake_r, self._wake_w = os.pipe()
            self._fds += [self._wake_r, self._wake_w]
        except BaseException:
            self._close_fds()
            raise
        self.device_path = os.ttyname(ctl_slave)
        self.plant_path = os.ttyname(plant_slave)
        self._threads = [
            threading.Thread(target=self._pump, args=(ctl_master, plant_master, TO_PLANT),
                             name=f"{name}-{TO_PLANT}", daemon=True),
            threading.Thread(target=self._pump, args=(plant_master, ctl_master, TO_CONTROLLER),
                             name=f"{name}-{TO_CONTROLLER}", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _pty(self) -> tuple[int, int]:
        master, slave = os.openpty()
        self._fds += [master, slave]
        # Raw: no echo, no line discipline, no CR/LF translation, no signals from bytes.
        tty.setraw(slave)
        os.set_blocking(master, False)
        return master, slave

    def _pump(self, src: int, dst: int, direction: str) -> None:
        poller = select.poll()
        poller.register(src, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        wire_free = 0.0  # monotonic time at which the last byte sent has fully arrived
        while not self._stop.is_set():
            ready = dict(poller.poll())
            if self._wake_r in ready or self._stop.is_set():
                return
            try:
                data = os.read(src, 4096)
            except BlockingIOError:
                continue
            except OSError as e:
                if e.errno != errno.EIO:
                    raise
                # Nobody holds the far slave (only during close): wait instead of spinning.
                self._stop.wait(0.01)
                continue
            try:
                data = self.on_bytes(direction, data)
            except Exception:
                log.exception("%s: on_bytes hook failed; passing %d bytes through", self.name,
                              len(data))
            if not data:
                continue
            if direction == TO_PLANT:
                self.bytes_to_plant += len(data)
            else:
                self.bytes_to_controller += len(data)
            if not self.byte_time:
                if not self._write_all(dst, data):
                    return
                continue
            # Deliver each byte when its last bit would have arrived. Deadlines are absolute,
            # so the scheduler's lateness on one byte is not added to the next.
            start = max(time.monotonic(), wire_free)
            for i in range(len(data)):
                due = start + (i + 1) * self.byte_time
                delay = due - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
                if not self._write_all(dst, data[i:i + 1]):
                    return
            wire_free = start + len(data) * self.byte_time

    def _write_all(self, fd: int, data: bytes) -> bool:
        """Write everything, waiting while the far side's input queue is full. False on close."""
        view = memoryview(data)
        while view:
            try:
                n = os.write(fd, view)
                view = view[n:]
            except BlockingIOError:
                poller = select.poll()
                poller.register(fd, select.POLLOUT)
                poller.register(self._wake_r, select.POLLIN)
                if self._wake_r in dict(poller.poll()):
                    return False
        return True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        os.write(self._wake_w, b"x")
        for t in self._threads:
            t.join(timeout=5)
        self._close_fds()

    def _close_fds(self) -> None:
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds.clear()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> PtyLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        pace = f"{self.baud} baud" if self.baud else "unpaced"
        return f"<PtyLink {self.name} {self.device_path} <-> {self.plant_path} {pace}>"
