# Test doubles for the firmware unit tests (MicroPython).
import asyncio
import os
import time

from sot.modbus.master import Master


class FakeReader:
    """The `reader` of a FakeUart: readinto/read wait (without blocking the loop) for bytes."""

    def __init__(self, uart):
        self._uart = uart

    async def _wait(self):
        u = self._uart
        while not u.rx:
            u.ready.clear()
            await u.ready.wait()

    async def readinto(self, buf):
        await self._wait()
        u = self._uart
        n = min(len(buf), len(u.rx), u.chunk)
        buf[:n] = u.rx[:n]
        u.rx = u.rx[n:]
        return n

    async def read(self, n):
        await self._wait()
        u = self._uart
        n = min(n, len(u.rx), u.chunk)
        out = bytes(u.rx[:n])
        u.rx = u.rx[n:]
        return out


class FakeUart:
    """A scripted RS-485 slave side, with the interface of hal.unix.Uart.

    `replies` holds one script per request written: None (silence) or a list of
    (delay_ms, bytes) steps, each delay counted from the previous step (the first from the
    write). A script keeps playing after the master has given up on it, which is how a late reply
    is made. `chunk` caps the bytes one read returns, to exercise incremental parsing.
    `sent` records every frame written; `log` records (ticks_ms, "tx"|"rx", bytes).
    """

    def __init__(self, replies=(), chunk=255):
        self.reader = FakeReader(self)
        self.replies = list(replies)
        self.chunk = chunk
        self.rx = bytearray()
        self.ready = asyncio.Event()
        self.sent = []
        self.log = []
        self.discarded = 0

    async def write(self, buf):
        frame = bytes(buf)
        self.sent.append(frame)
        self.log.append((time.ticks_ms(), "tx", frame))
        script = self.replies.pop(0) if self.replies else None
        if script:
            asyncio.create_task(self._play(script))
        await asyncio.sleep_ms(0)

    def discard_input(self):
        n = len(self.rx)
        self.rx = bytearray()
        self.discarded += n
        return n

    def inject(self, data):
        self.log.append((time.ticks_ms(), "rx", bytes(data)))
        self.rx += data
        self.ready.set()

    async def _play(self, script):
        for delay_ms, data in script:
            await asyncio.sleep_ms(delay_ms)
            self.inject(data)


def bytewise(delay_ms, frame, gap_ms=1):
    """A script step list that sends `frame` one byte at a time, gap_ms apart."""
    steps = [(delay_ms, frame[:1])]
    for i in range(1, len(frame)):
        steps.append((gap_ms, frame[i:i + 1]))
    return steps


# -- canned frames and helpers shared by test_master and test_rtu_fuzz (kept out of the test
# modules, which are compiled on the 64 KiB heap: a module's parse tree is its biggest moment).
# CRCs computed with pymodbus 3.16.1 on the host (see test_rtu.py).
H = bytes.fromhex
READ = (10, 3, 1025, 2)  # read_registers arguments that REQ encodes
REQ = H("0A0304010002" "9580")  # unit 10, fc 03, registers 1025-1026
GOOD = H("0A0304" "00E6010F" "E090")  # 230, 271
SECOND = H("0A0304" "00E70110" "F098")  # 231, 272
OTHER_UNIT = H("0B0304" "00E6010F" "F050")  # unit 11's reply, same shape
EXC = H("0A8302B133")  # exception 02, illegal data address
ONE_REG = H("0A0302002A9C5A")  # a good reply to a one-register read
# (Master method, arguments, request, reply, data returned) for 01, 02, 05, 06, 15, 16; the
# frames of unit 17 are the spec's examples, checked in test_rtu.py
FC_CASES = (
    ("read_bits", (17, 1, 0x13, 19), "1101001300138E92", "110103CD6B054012", "CD6B05"),
    ("read_bits", (17, 2, 0xC4, 22), "110200C40016BAA9", "110203ACDB352018", "ACDB35"),
    ("write_coil", (17, 0xAC, True), "110500ACFF004E8B", "110500ACFF004E8B", None),
    ("write_coil", (17, 0xAC, 0), "110500AC00000F7B", "110500AC00000F7B", None),
    ("write_register", (17, 1, 3), "1106000100039A9B", "1106000100039A9B", None),
    ("write_coils", (17, 0x13, [1, 0, 1, 1, 0, 0, 1, 1, 1, 0]), "110F0013000A02CD01BF0B",
     "110F0013000A2699", None),
    ("write_registers", (17, 1, [10, 0x102]), "11100001000204000A0102C6F0", "1110000100021298",
     None),
)
# exception responses of unit 10 to fc 03, by exception code
EXC_FRAMES = ((1, "0A8301F132"), (2, "0A8302B133"), (3, "0A830370F3"), (4, "0A83043131"),
              (6, "0A8306B0F0"), (0x0A, "0A830AB0F5"), (0x0B, "0A830B7135"))


def bus(*scripts, baud=9600, chunk=255, timeout_ms=200, **kw):
    # A FakeUart answering with `scripts` (see FakeUart) and a Master on it.
    u = FakeUart(scripts, chunk)
    return u, Master(u, baud, timeout_ms, **kw)


async def expect(exc, aw):
    try:
        await aw
    except exc as e:
        return e
    raise AssertionError("%s not raised" % exc.__name__)


async def fails(exc, fn, *args):
    # Like expect, for a call that may raise before it returns an awaitable.
    try:
        await fn(*args)
    except exc as e:
        return e
    raise AssertionError("%s not raised" % exc.__name__)


def tx_times(uart):
    return [t for t, kind, _ in uart.log if kind == "tx"]


def rx_times(uart):
    return [t for t, kind, _ in uart.log if kind == "rx"]


def counts_add_up(m):
    # Every request a Master sends ends in exactly one outcome.
    s = m.stats
    assert s["requests"] == s["ok"] + s["timeouts"] + s["crc"] + s["frame"] + s["exceptions"], s
    assert s["exceptions"] == sum(s["exc"].values()), s


async def fast_replies(m, uart, n, delay_ms=5):
    # n good reads of READ, each answered after delay_ms: teaches m the unit's latency.
    uart.replies.extend([[(delay_ms, GOOD)]] * n)
    for _ in range(n):
        await m.read_registers(*READ)


class MemFlash:
    """hal.Flash in a dict: read() gives bytes or None, write() replaces the whole file."""

    def __init__(self):
        self.files = {}

    def read(self, name):
        return self.files.get(name)

    def write(self, name, data):
        self.files[name] = data.encode() if isinstance(data, str) else bytes(data)


_flashes = [0]


def fresh_flash(tag):
    """The HAL's own Flash on an empty folder: under /tmp on the unix port, on the board's
    littlefs (formatted first) on the qemu board, where files behave as they do on a board."""
    from sot import hal

    _flashes[0] += 1
    if hal.NAME == "unix":
        root = "/tmp/sot-%s-%d-%d" % (tag, time.ticks_us(), _flashes[0])
    else:
        hal.mount_flash(fresh=True)
        root = "/flash/%s%d" % (tag, _flashes[0])
    os.mkdir(root)
    return hal.Flash(root)
