# Test doubles for the firmware unit tests (MicroPython).
import asyncio
import time


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
