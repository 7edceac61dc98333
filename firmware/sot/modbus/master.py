# Modbus RTU bus master: one instance owns one RS-485 bus and runs one transaction at a time.
# Frame layouts and recovery rules are in rtu.py; this module adds the timing.
#
# API (each call returns an awaitable; ValueError, before anything is sent, for a request that
# cannot be encoded; otherwise ModbusTimeout, ModbusCRCError, ModbusFrameError or
# ModbusException, all ModbusError):
#   read_registers(unit, fc 3|4, start, count)  -> memoryview of 2 * count bytes, big-endian
#   read_bits(unit, fc 1|2, start, count)       -> memoryview of ceil(count / 8) bytes, LSB first
#                                                  (rtu.bit(data, i) is bit i)
#   write_coil(unit, address, on)               write_register(unit, address, value)
#   write_coils(unit, start, bits)              write_registers(unit, start, values)
# All take min_timeout_ms=None (see "Timeout"). A returned view points into the master's one
# frame buffer and is valid until the next call.
#
# A transaction, the same for every function code:
#   1. silence: wait until t3.5 has passed since our last frame, then drop whatever is in the
#      receive buffer; if anything was there, the line was not quiet: wait t3.5 again and repeat
#      (bounded by timeout_ms). A late reply from an earlier request ends up here, never in step 3.
#   2. send the request.
#   3. receive under one deadline: read the 3-byte header, dropping leading bytes that are not
#      [unit, fc or fc|0x80] (resync); the function code (and for reads the byte count) gives the
#      length; read the rest; rtu.parse_read / parse_write check it.
# The event loop keeps running throughout: every wait is an await, the deadline is
# asyncio.wait_for_ms.
#
# Retry: a transaction that fails with ModbusCRCError or ModbusFrameError (a reply came, garbled)
# is tried once more (`retries`, default 1), after the t3.5 silence of step 1, which also drops
# the remains of the failed reply. A timeout is not retried at once: its reply may still be on
# its way, and a quick retry -- the same unit, function and length -- would take that late reply
# for its own and leave its own reply to answer the *next* request to the unit, another block
# perhaps (see "Late replies"). The unit is held instead, and the bus owner's next poll of it,
# after the hold, is the retry. An exception response is never retried: the slave answered, and
# asking again for an illegal address is a retry storm. A write (05/06/15/16) is retried only
# after a timeout or a CRC error; a write reply with a good CRC but a wrong echo is a frame error
# and is not repeated. Risk of a retried write: the slave may have carried out the first one and
# only its reply was lost, so the write happens twice. Writing the same value to the same
# coils/registers twice leaves the same state (05/06/15/16 are idempotent), but a register that
# *acts* on being written (a command or "key" register, a counter reset) acts twice. The bus
# owner writing such a register sets `master.retries = 0` for that call (it is the only user of
# the master, so nothing else runs in between) and handles a failure itself, e.g. by reading
# back the state before trying again.
#
# Timeout: `timeout_ms` (the bus configuration, 1 s by default) is the default and the ceiling.
# Per unit, the master keeps an exponentially weighted average (weight 1/4) of the latency of
# good replies (request sent -> last byte); timeout_for(unit) = min(timeout_ms,
# max(min_timeout_ms, 4 * average)), and timeout_ms while a unit has no measurement. A
# timeout forgets the unit's average, so the next request (the retry included) gets the full
# timeout_ms again: a slow patch never makes the master give up sooner. Each request's deadline is
# timeout_for(unit) plus the time its own request and reply bytes take on the wire at the bus's
# baud rate (so a long block after many short ones is not cut off), capped at timeout_ms.
# min_timeout_ms (100 ms by default) is per master and may be raised per call: Victron found DSE
# controllers need >= 1 s (docs/devices.md), so a device profile or a site can
# pass min_timeout_ms=1000 for them. Only good replies and exception responses are measured; a
# CRC or frame error may be someone else's late reply, whose timing says nothing.
#
# Late replies: RTU has no transaction id, so a reply that comes after its request timed out is
# taken for the next request to the same unit if that has the same function and length (another
# unit's reply is skipped by the resync, see rtu.py). So after a timeout, the next request to
# that unit does not go out before 2 * timeout_ms after the timed-out one; whatever arrives
# meanwhile is dropped as stale. A reply later than that is treated as lost, not late. Other
# units are not held up: the bus owner asks `ready_at(unit)` and polls the other devices
# meanwhile (a stray reply of the held unit is skipped by their resync).
#
# Stats: "requests" counts frames sent (a retry is a second request); each ends in exactly one
# of "ok", "timeouts", "crc", "frame", "exceptions" (and "exc" counts them per code, 1..0x0B; 0
# for any other); "retries" counts second attempts; "discarded" counts stale bytes dropped.
#
# Memory: one 255-byte frame buffer holds the request and then the reply (a retry rebuilds the
# request from the caller's arguments). The code here allocates only the memoryview slices
# handed to write and readinto and the returned view (exceptions only on failure). asyncio itself
# allocates per call: measured on the unix port against the plant simulator at 9600 baud, ~3.4 KB
# of short-lived garbage per read (wait_for_ms ~1 KB, each stream wait ~200 B, the HAL's write
# and discard ~300 B). Reads sleep through the rest of a frame instead of waking per byte, which
# halved that (see _read).
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
_READ_COILS = const(1)  # function codes 1..4 read, the others write
_READ_DISCRETE = const(2)
_READ_HOLDING = const(3)
_READ_INPUT = const(4)
_WRITE_COIL = const(5)
_WRITE_REGISTER = const(6)
_WRITE_COILS = const(15)
_WRITE_REGISTERS = const(16)
_FRAME_LEN = const(255)  # the longest request or reply (rtu.py)
_DATA = const(3)  # rtu.DATA_OFFSET


class Master:
    def __init__(self, uart, baud, timeout_ms=1000, min_timeout_ms=100, retries=1):
        self.uart = uart
        self.baud = baud
        self.timeout_ms = timeout_ms
        self.min_timeout_ms = min_timeout_ms
        self.retries = retries
        if baud > 19200:
            self.t35_us = _T35_FAST_US
        else:
            self.t35_us = (_T35_BIT_US + baud - 1) // baud  # 9600 baud: 4011 us
        self._t35_ms = (self.t35_us + 999) // 1000
        self._char_us = 11000000 // baud
        self._buf = bytearray(_FRAME_LEN)
        self._bufv = memoryview(self._buf)
        self._n = 0  # bytes of the current reply held in _buf (for the timeout message)
        self._lat = {}  # unit -> average reply latency in us, None after a timeout
        self._idle_since = time.ticks_us()  # end of our last transaction
        self._hold = {}  # unit -> ticks_us before which it is not asked again ("Late replies")
        self.attempts = 0  # requests sent by the last call (2 when it was retried)
        self.stats = {"requests": 0, "ok": 0, "retries": 0, "timeouts": 0, "crc": 0, "frame": 0,
                      "exceptions": 0, "exc": {}, "discarded": 0}

    # The public calls are plain functions returning the transaction coroutine: one generator
    # per request instead of two.
    def read_registers(self, unit, fc, start, count, min_timeout_ms=None):
        if fc != _READ_HOLDING and fc != _READ_INPUT:
            raise ValueError("function must be 3 or 4")
        return self._call(unit, fc, start, count, None, min_timeout_ms)

    def read_bits(self, unit, fc, start, count, min_timeout_ms=None):
        if fc != _READ_COILS and fc != _READ_DISCRETE:
            raise ValueError("function must be 1 or 2")
        return self._call(unit, fc, start, count, None, min_timeout_ms)

    def write_coil(self, unit, address, on, min_timeout_ms=None):
        value = 0xFF00 if on else 0  # §6.5
        return self._call(unit, _WRITE_COIL, address, value, None, min_timeout_ms)

    def write_register(self, unit, address, value, min_timeout_ms=None):
        return self._call(unit, _WRITE_REGISTER, address, value, None, min_timeout_ms)

    def write_coils(self, unit, start, bits, min_timeout_ms=None):
        return self._call(unit, _WRITE_COILS, start, len(bits), bits, min_timeout_ms)

    def write_registers(self, unit, start, values, min_timeout_ms=None):
        return self._call(unit, _WRITE_REGISTERS, start, len(values), values, min_timeout_ms)

    def ready_at(self, unit):
        """ticks_us from which `unit` may be asked again, or None if it may be asked now."""
        return self._hold.get(unit)

    def timeout_for(self, unit, min_timeout_ms=None):
        """The reply time allowed to `unit` now, in ms (see "Timeout" above)."""
        avg = self._lat.get(unit)
        if avg is None:
            return self.timeout_ms
        if min_timeout_ms is None:
            min_timeout_ms = self.min_timeout_ms
        return min(self.timeout_ms, max(min_timeout_ms, (4 * avg + 999) // 1000))

    async def _call(self, unit, fc, start, count, data, min_ms):
        # count is the quantity (reads, 15, 16) or the value written (05, 06): the reply echoes
        # the one or the other in the same place. data: the bits or values of 15/16.
        buf = self._buf
        stats = self.stats
        lat = self._lat
        read = fc <= _READ_INPUT
        total = rtu.reply_length(fc, count)
        tries = self.retries
        self.attempts = 0
        while True:
            hold = self._hold.pop(unit, None)
            if hold is not None:  # see "Late replies" above
                left = time.ticks_diff(hold, time.ticks_us())
                if 0 < left <= 2000 * self.timeout_ms:  # more: ticks_us wrapped (_wait_silence)
                    await self._sleep_us(left)
            if read:
                n = rtu.build_read(buf, unit, fc, start, count)
            elif fc == _WRITE_REGISTERS:
                n = rtu.build_write_registers(buf, unit, start, data)
            elif fc == _WRITE_COILS:
                n = rtu.build_write_coils(buf, unit, start, data)
            else:
                n = rtu.build_write(buf, unit, fc, start, count)
            wait = min(self.timeout_ms,
                       self.timeout_for(unit, min_ms) + (n + total) * self._char_us // 1000 + 1)
            stats["requests"] += 1
            self.attempts += 1
            self._n = 0
            sent = None
            try:
                await self._wait_silence()
                await self.uart.write(self._bufv[:n])
                sent = time.ticks_us()
                try:
                    n = await asyncio.wait_for_ms(self._receive(unit, fc, total), wait)
                except asyncio.TimeoutError:
                    why = "incomplete reply (%d bytes)" % self._n if self._n else "no reply"
                    raise ModbusTimeout("unit %d fc %d %d+%d: %s in %d ms"
                                        % (unit, fc, start, count, why, wait)) from None
                took = time.ticks_diff(time.ticks_us(), sent)
                # The unit's new average latency (weight 1/4), kept only if the reply is good
                # or an exception response.
                mean = lat.get(unit)
                mean = took if mean is None else mean + ((took - mean) >> 2)
                if read:
                    size = rtu.parse_read(buf, n, unit, fc, count)
                else:
                    rtu.parse_write(buf, n, unit, fc, start, count)
                lat[unit] = mean
                stats["ok"] += 1
                if read:
                    return self._bufv[_DATA:_DATA + size]
                return None
            except ModbusException as e:
                stats["exceptions"] += 1
                # Per code; codes above 0B (none defined) share key 0, so a confused slave
                # cannot grow the dict past 12 keys.
                code = e.code if e.code <= 0x0B else 0
                exc = stats["exc"]
                exc[code] = exc.get(code, 0) + 1
                lat[unit] = mean
                raise
            except ModbusTimeout:
                stats["timeouts"] += 1
                lat[unit] = None
                if sent is not None:  # its reply may yet come: hold this unit
                    self._hold[unit] = time.ticks_add(sent, 2000 * self.timeout_ms)
                raise
            except ModbusCRCError:
                stats["crc"] += 1
                if tries <= 0:
                    raise
            except ModbusFrameError:
                stats["frame"] += 1
                if tries <= 0 or not read:
                    raise
            finally:
                self._idle_since = time.ticks_us()
            tries -= 1
            stats["retries"] += 1

    async def _wait_silence(self):
        left = self.t35_us - time.ticks_diff(time.ticks_us(), self._idle_since)
        # More than t35_us: idle so long (> 9 min) that ticks_us wrapped (every 2^30 us on a
        # board); the line has been quiet anyway.
        if 0 < left <= self.t35_us:
            await self._sleep_us(left)
        deadline = time.ticks_add(time.ticks_ms(), self.timeout_ms)
        while True:
            dropped = self.uart.discard_input()
            if not dropped:
                return
            self.stats["discarded"] += dropped
            if time.ticks_diff(deadline, time.ticks_ms()) <= 0:
                raise ModbusTimeout("bus never quiet for t3.5 in %d ms" % self.timeout_ms)
            await asyncio.sleep_ms(self._t35_ms)

    async def _receive(self, unit, fc, total):
        # total: the length of the normal reply.
        rx = self._buf
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
        if rx[1] != fc:
            total = 5  # exception response
        elif fc <= _READ_INPUT and rx[2] != total - 5:
            raise ModbusFrameError("unit %d: byte count %d, expected %d" % (unit, rx[2], total - 5))
        while n < total:
            n += await self._read(n, total)
            self._n = n
        return n

    async def _read(self, n, end):
        # Never past `end`: bytes after the frame stay in the UART and are dropped as stale.
        got = await self.uart.reader.readinto(self._bufv[n:end])
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
            await self._sleep_us(short * self._char_us)
        return got

    async def _sleep_us(self, us):
        # asyncio sleeps in whole milliseconds; rounding every t3.5 and every rest-of-frame up to
        # the next millisecond cost ~1.5 ms per transaction (docs/benchmarks.md). Sleep the whole
        # milliseconds, then yield to the loop until the microsecond deadline: other tasks run
        # meanwhile, the loop is never blocked.
        deadline = time.ticks_add(time.ticks_us(), us)
        if us >= 1000:
            await asyncio.sleep_ms(us // 1000)
        while time.ticks_diff(deadline, time.ticks_us()) > 0:
            await asyncio.sleep_ms(0)
