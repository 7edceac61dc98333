# Modbus RTU bus master: one instance owns one RS-485 bus and runs one transaction at a time.
# Frame layouts and recovery rules are in rtu.py; this module adds the timing.
#
# A transaction:
#   1. silence: wait until t3.5 has passed since our last frame, then drop whatever is in the
#      receive buffer; if anything was there, the line was not quiet: wait t3.5 again and repeat
#      (bounded by timeout_ms). A late reply from an earlier request ends up here, never in step 3.
#   2. send the 8-byte request.
#   3. receive under one deadline of timeout_ms: read the 3-byte header, dropping leading bytes
#      that are not [unit, fc or fc|0x80] (resync); the header gives the length; read the rest;
#      rtu.parse_read checks it.
# The event loop keeps running throughout: every wait is an await, the deadline is
# asyncio.wait_for_ms. No retry here; the device poller above decides what a failure means.
#
# Memory: the request and response buffers are allocated once; the code here allocates only
# the memoryview slices handed to readinto and the returned view (exceptions only on failure).
# asyncio itself allocates per call: measured on the unix port against the plant simulator at
# 9600 baud, ~3.4 KB of short-lived garbage per read (wait_for_ms ~1 KB, each stream wait
# ~200 B, the HAL's write and discard ~300 B). Reads sleep through the rest of a frame instead
# of waking per byte, which halved that (see _read).
import asyncio
import time

from micropython import const

from sot.modbus import rtu
from sot.modbus.rtu import (
    ModbusCRCError,
    ModbusException,
    ModbusFrameError,
    ModbusTimeout,
)

_HEADER = const(3)
# Serial Line V1.02 §2.5.1.1: one character is 11 bits (start, 8 data, parity or a 2nd stop bit,
# stop); t3.5 = 3.5 characters, but a fixed 1.75 ms above 19200 baud.
_T35_FAST_US = const(1750)
_T35_BIT_US = const(38500000)  # 3.5 characters * 11 bits * 1e6 us; divided by the baud rate


class Master:
    def __init__(self, uart, baud, timeout_ms=1000):
        self.uart = uart
        self.baud = baud
        self.timeout_ms = timeout_ms
        if baud > 19200:
            self.t35_us = _T35_FAST_US
        else:
            self.t35_us = (_T35_BIT_US + baud - 1) // baud  # 9600 baud: 4011 us
        self._t35_ms = (self.t35_us + 999) // 1000
        self._char_us = 11000000 // baud
        self._tx = bytearray(rtu.REQUEST_LEN)
        self._rx = bytearray(rtu.MAX_RESPONSE_LEN)
        self._rxv = memoryview(self._rx)
        self._n = 0  # bytes of the current reply held in _rx (for the timeout message)
        self._idle_since = time.ticks_us()  # end of our last transaction
        self.stats = {"requests": 0, "ok": 0, "timeouts": 0, "crc": 0, "frame": 0,
                      "exceptions": 0, "discarded": 0}

    async def read_registers(self, unit, fc, start, count):
        """Read `count` registers; return their 2 * count bytes, big-endian per register.

        The result is a view into the master's receive buffer, valid until the next call.
        Raises ModbusTimeout, ModbusCRCError, ModbusFrameError or ModbusException (all
        ModbusError); ValueError for a request that cannot be encoded.
        """
        rtu.build_read(self._tx, unit, fc, start, count)
        stats = self.stats
        stats["requests"] += 1
        self._n = 0
        try:
            await self._wait_silence()
            await self.uart.write(self._tx)
            try:
                n = await asyncio.wait_for_ms(self._receive(unit, fc, count), self.timeout_ms)
            except asyncio.TimeoutError:
                raise ModbusTimeout(self._describe(unit, fc, start, count)) from None
            size = rtu.parse_read(self._rx, n, unit, fc, count)
        except ModbusTimeout:
            stats["timeouts"] += 1
            raise
        except ModbusCRCError:
            stats["crc"] += 1
            raise
        except ModbusFrameError:
            stats["frame"] += 1
            raise
        except ModbusException:
            stats["exceptions"] += 1
            raise
        finally:
            self._idle_since = time.ticks_us()
        stats["ok"] += 1
        return self._rxv[rtu.DATA_OFFSET:rtu.DATA_OFFSET + size]

    async def _wait_silence(self):
        left = self.t35_us - time.ticks_diff(time.ticks_us(), self._idle_since)
        if left > 0:
            await asyncio.sleep_ms((left + 999) // 1000)
        deadline = time.ticks_add(time.ticks_ms(), self.timeout_ms)
        while True:
            dropped = self.uart.discard_input()
            if not dropped:
                return
            self.stats["discarded"] += dropped
            if time.ticks_diff(deadline, time.ticks_ms()) <= 0:
                raise ModbusTimeout("bus never quiet for t3.5 in %d ms" % self.timeout_ms)
            await asyncio.sleep_ms(self._t35_ms)

    async def _receive(self, unit, fc, count):
        rx = self._rx
        efc = fc | 0x80
        n = 0
        while n < _HEADER:
            n += await self._read(n, _HEADER)
            # Resync: drop bytes until rx[0:n] can be the start of [unit, fc or fc|0x80, ...].
            # n <= 3 here, so dropping one byte is two moves.
            while n and (rx[0] != unit or (n > 1 and rx[1] != fc and rx[1] != efc)):
                rx[0] = rx[1]
                rx[1] = rx[2]
                n -= 1
                self.stats["discarded"] += 1
            self._n = n
        if rx[1] == fc and rx[2] != 2 * count:
            raise ModbusFrameError("unit %d: byte count %d for %d registers" % (unit, rx[2], count))
        total = rtu.response_length(rx, n)
        while n < total:
            n += await self._read(n, total)
            self._n = n
        return n

    async def _read(self, n, end):
        # Never past `end`: bytes after the frame stay in the UART and are dropped as stale.
        got = await self.uart.reader.readinto(self._rxv[n:end])
        if not got:
            # None (not ready) or 0 (a VMIN=0 tty woke without data): do not spin.
            await asyncio.sleep_ms(1)
            return 0
        short = end - n - got
        if short > 0:
            # The rest is still on the wire. Sleep for its transmission time rather than waking
            # once per byte: each stream wait costs a pass of the loop and ~200 bytes of heap
            # (measured on the unix port at 9600 baud: 7 KB per 13-register read byte by byte).
            # The UART driver holds the bytes meanwhile (its rx buffer, 256 bytes by default on
            # ESP32 and RP2, outgrows the longest reply, 255).
            await asyncio.sleep_ms(short * self._char_us // 1000 + 1)
        return got

    def _describe(self, unit, fc, start, count):
        if self._n:
            why = "incomplete reply (%d bytes)" % self._n
        else:
            why = "no reply"
        return "unit %d fc %d %d+%d: %s in %d ms" % (unit, fc, start, count, why, self.timeout_ms)
