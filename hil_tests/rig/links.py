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
- frames: the bytes are carried as Modbus RTU frames, kept apart as the line's silences would
  keep them. A pump that was late (a loaded machine) may read two frames at once and pass them
  on together, where on a real line the controller sent the second only after giving up on
  the first. The pymodbus server holds one request at a time: a second one that arrives before
  it has dealt with the first replaces it, and neither may be answered. So a chunk is split
  into its frames (`rtu_frames`), and a request goes to the plant only once the plant has dealt
  with the one before. A `Plant` says so itself (`plant_done`, also for a request it leaves
  unanswered, as a silent device); for any other peer an answer from it counts, or
  PLANT_ANSWER_WAIT_S after the request. A controller never sends that fast on its own: it
  waits for the answer or its timeout;
- fault injection: `on_bytes(direction, frame) -> data` sees every frame and returns what is
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

from pymodbus.framer.rtu import FramerRTU
from pymodbus.pdu import DecodePDU

log = logging.getLogger(__name__)

TO_PLANT = "to_plant"
TO_CONTROLLER = "to_controller"
# How long a request waits for the plant to deal with the one before it; then it goes anyway.
# A peer that does not report (`plant_done`) may stay silent, so it gets less than any
# controller timeout the tests use: a controller that waited out its own timeout is never held.
PLANT_ANSWER_WAIT_S = 0.1
PLANT_DONE_WAIT_S = 2.0
PARTIAL_REQUEST_S = 0.5  # a request's pieces all arrive within this (8 bytes: 9 ms at 9600 baud)

OnBytes = Callable[[str, bytes], bytes]


def crc(frame: bytes) -> bytes:
    """CRC-16/MODBUS as sent (low byte first), computed by pymodbus, not by the firmware."""
    return FramerRTU.compute_CRC(frame).to_bytes(2, "big")


# pymodbus' own tables of request and reply lengths, by function code (the server decodes
# requests, a client replies).
_DECODERS = {TO_PLANT: DecodePDU(is_server=True), TO_CONTROLLER: DecodePDU(is_server=False)}


def _frame_size(data: bytes, direction: str) -> int | None:
    """Length of the RTU frame at the start of `data` by its own header, or None if unknown."""
    if len(data) < 3:
        return None
    pdu = _DECODERS[direction].lookupPduClass(data)
    try:
        return (pdu.calculateRtuFrameSize(data) or None) if pdu is not None else None
    except (IndexError, ValueError):  # not enough of the header yet
        return None


def rtu_frames(direction: str, data: bytes) -> list[bytes]:
    """The frames in a chunk, split by their lengths (function code, byte count) where each
    ends in a good CRC; what is not such a frame stays with the bytes after it."""
    out = []
    while data:
        n = _frame_size(data, direction)
        if n is None or n >= len(data) or crc(data[:n - 2]) != data[n - 2:n]:
            out.append(data)
            break
        out.append(data[:n])
        data = data[n:]
    return out


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
        # Requests sent to the plant, and those it has dealt with (see the module docstring).
        self._plant_sent = 0
        self._plant_done = 0
        self._plant_reports = False
        self._plant_due = 0.0  # when the last request's wait ends
        self._partial = b""  # the start of a request written in pieces, so far
        self._partial_at = 0.0
        self._plant_turn = threading.Condition()
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
            if direction == TO_CONTROLLER and not self._plant_reports:
                self._plant_dealt_with(everything=True)
            for frame in rtu_frames(direction, data):
                free = self._carry(frame, dst, direction, wire_free)
                if free is None:
                    return
                wire_free = free

    def _carry(self, frame: bytes, dst: int, direction: str, wire_free: float) -> float | None:
        """Deliver one frame; returns when the line is free again, None once closed."""
        try:
            data = self.on_bytes(direction, frame)
        except Exception:
            log.exception("%s: on_bytes hook failed; passing %d bytes through", self.name,
                          len(frame))
            data = frame
        if not data:
            return wire_free
        if direction == TO_PLANT:
            self.bytes_to_plant += len(data)
            if self._starts_request(data):
                self._wait_for_plant(len(data), wire_free)
        else:
            self.bytes_to_controller += len(data)
        if not self.byte_time:
            return wire_free if self._write_all(dst, data) else None
        # Deliver each byte when its last bit would have arrived. Deadlines are absolute, so
        # the scheduler's lateness on one byte is not added to the next.
        start = max(time.monotonic(), wire_free)
        for i in range(len(data)):
            due = start + (i + 1) * self.byte_time
            delay = due - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return None
            if not self._write_all(dst, data[i:i + 1]):
                return None
        return start + len(data) * self.byte_time

    def _starts_request(self, data: bytes) -> bool:
        """Whether `data` begins a request: what went to the plant before it made whole frames.
        A controller may write a request in pieces (the qemu board's UART does, a few bytes at
        a time); only its first piece waits for the plant. Bytes that are no request count as
        one; a piece that stays incomplete for PARTIAL_REQUEST_S is forgotten."""
        now = time.monotonic()
        if now - self._partial_at > PARTIAL_REQUEST_S:
            self._partial = b""
        starts = not self._partial
        rest = self._partial + data
        while rest:
            n = _frame_size(rest, TO_PLANT)
            if n is None and len(rest) >= 7:
                n = len(rest)  # not a request this link knows: it ends with this piece
            if n is None or n > len(rest):
                break
            rest = rest[n:]
        self._partial, self._partial_at = rest, now
        return starts

    def plant_reports(self, on: bool = True) -> None:
        """Whether the peer on the plant's end calls `plant_done` for every request it deals
        with (a `Plant` while it serves)."""
        self._plant_reports = on

    def plant_done(self) -> None:
        """The plant has dealt with a request: answered it, or left it unanswered."""
        self._plant_dealt_with()

    def _plant_dealt_with(self, everything: bool = False) -> None:
        with self._plant_turn:
            self._plant_done = self._plant_sent if everything else self._plant_done + 1
            self._plant_turn.notify_all()

    def _wait_for_plant(self, size: int, wire_free: float) -> None:
        """Hold a request until the plant has dealt with the ones before it (see the module
        docstring); past the wait they count as dealt with."""
        bound = PLANT_DONE_WAIT_S if self._plant_reports else PLANT_ANSWER_WAIT_S
        with self._plant_turn:
            if self._plant_done < self._plant_sent:
                self._plant_turn.wait_for(
                    lambda: self._plant_done >= self._plant_sent or self._stop.is_set(),
                    max(0.0, self._plant_due - time.monotonic()))
                if self._plant_done < self._plant_sent and not self._stop.is_set():
                    log.warning("%s: the plant has not dealt with a request after %.1f s",
                                self.name, bound)
            self._plant_done = self._plant_sent
            self._plant_sent += 1
            self._plant_due = max(time.monotonic(), wire_free) + size * self.byte_time + bound

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
