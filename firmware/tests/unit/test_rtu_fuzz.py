# Bad frames against the RTU parser and the bus master, under MicroPython: 10 000 pseudo-random
# replies (seeded, so a failure repeats) to rtu.parse_read/parse_write and 10 000 through a Master
# on a FakeUart, plus a few hand-made ones (garbled, late, wrong echo) that exercise the retry.
#
# The promises checked: only ModbusError subclasses come out; a frame that is not a good reply to
# the request (one flipped bit, truncated, wrong unit, function, byte count or echo) is never
# accepted; a good one always is, with its own data; memory stays bounded.
#
# Reply kinds, one drawn per frame, each built for a random request (see _request):
#   RANDOM  0..260 random bytes             CUT     a good reply cut short
#   GOOD    a good reply                    UNIT    wrong unit      } a correct CRC,
#   EXC     an exception reply, code 0..255 FUNC    wrong function  } so only the
#   FLIP    a good reply, one bit flipped   COUNT   wrong byte count (read) or echo (write)
#   TAIL    a good reply + 1..4 junk bytes  PREFIX  1..8 junk bytes + a good reply (master only)
# A TAIL reply is refused by the parser (too long) but taken by the master, which never reads
# past a frame; a PREFIX one may be taken by the master (resync) but only with its own data.
# CRCs come from rtu.crc16, whose known vectors are checked in test_rtu.py.
import gc
import random
import time
from array import array

from sot.modbus import rtu
from sot.modbus.rtu import (
    ModbusError,
    ModbusException,
    ModbusFrameError,
    ModbusTimeout,
)

from fakes import (GOOD, H, ONE_REG, READ, SECOND, bus, counts_add_up, expect,  # noqa: I001
                   fast_replies, tx_times)

_RANDOM, _GOOD, _EXC, _FLIP, _CUT, _UNIT, _FUNC, _COUNT, _TAIL, _PREFIX = range(10)
N = 10000
getrandbits = random.getrandbits


def rnd(n):
    return getrandbits(16) % n


def fill(buf, i, n):
    for j in range(i, i + n):
        buf[j] = getrandbits(8)
    return i + n


def seal(buf, n):
    crc = rtu.crc16(buf, n)
    buf[n] = crc & 0xFF
    buf[n + 1] = crc >> 8
    return n + 2


def _request():
    # unit, fc, address, count or value; the byte count a read reply carries (-1 for a write).
    # Counts are mostly small (fast), sometimes up to the limit.
    unit = 1 + rnd(247)
    fc = (1, 2, 3, 4, 5, 6, 15, 16)[rnd(8)]
    a = rnd(0x10000)
    big = rnd(4) == 0
    if fc <= 2:
        b = 1 + rnd(2000 if big else 64)
        return unit, fc, a, b, (b + 7) >> 3
    if fc <= 4:
        b = 1 + rnd(125 if big else 8)
        return unit, fc, a, b, 2 * b
    if fc == 5:
        b = (0, 0xFF00)[rnd(2)]
    elif fc == 6:
        b = rnd(0x10000)
    else:
        b = 1 + rnd((1968 if big else 64) if fc == 15 else (123 if big else 8))
    return unit, fc, a, b, -1


def _reply(buf, kind, unit, fc, a, b, size):
    # Writes a reply of `kind` to the request into buf; returns its length and where a read's
    # data starts in it.
    if kind == _RANDOM:
        return fill(buf, 0, rnd(261)), 3
    i = fill(buf, 0, 1 + rnd(8)) if kind == _PREFIX else 0
    buf[i] = unit
    buf[i + 1] = fc
    if kind == _EXC:
        buf[i + 1] = fc | 0x80
        buf[i + 2] = getrandbits(8)
        return seal(buf, i + 3), 3
    if size >= 0:
        if kind == _COUNT:
            size = (size + 1 + rnd(250)) % 251
        buf[i + 2] = size
        n = fill(buf, i + 3, size)
    else:
        x = a
        y = b
        if kind == _COUNT:  # a wrong echo: address, value or both
            x = (x, rnd(0x10000))[rnd(2)]
            y = (y ^ (1 + rnd(0xFFFF))) if x == a else (y, rnd(0x10000))[rnd(2)]
        buf[i + 2] = x >> 8
        buf[i + 3] = x & 0xFF
        buf[i + 4] = y >> 8
        buf[i + 5] = y & 0xFF
        n = i + 6
    if kind == _UNIT:
        buf[i] = unit ^ (1 + rnd(255))
    elif kind == _FUNC:
        f = fc
        while f == fc or f == fc | 0x80:
            f = getrandbits(8)
        buf[i + 1] = f
    n = seal(buf, n)
    if kind == _FLIP:
        bit = rnd(8 * n)
        buf[bit >> 3] ^= 1 << (bit & 7)
    elif kind == _CUT:
        n = rnd(n)
    elif kind == _TAIL:
        n = fill(buf, n, 1 + rnd(4))
    return n, i + 3


def test_parser_fuzz():
    random.seed(2026)
    buf = bytearray(300)
    seen = bytearray(9)
    gc.collect()
    before = gc.mem_alloc()
    for _ in range(N):
        unit, fc, a, b, size = _request()
        kind = rnd(9)  # not PREFIX: the parser is handed whole frames
        seen[kind] = 1
        n = _reply(buf, kind, unit, fc, a, b, size)[0]
        try:
            if size >= 0:
                assert rtu.parse_read(buf, n, unit, fc, b) == size
            else:
                rtu.parse_write(buf, n, unit, fc, a, b)
        except ModbusException as e:
            assert kind == _EXC or kind == _RANDOM and rtu.crc16(buf, n) == 0, kind
            assert e.code == buf[2]
            continue
        except ModbusError:
            assert kind != _GOOD and kind != _EXC, kind
            continue
        # accepted: it must be good (or random bytes that happen to make a good frame)
        assert kind == _GOOD or kind == _RANDOM and rtu.crc16(buf, n) == 0, kind
    assert seen == b"\x01" * 9, seen
    gc.collect()
    assert gc.mem_alloc() - before < 2048, gc.mem_alloc() - before


async def test_master_fuzz():
    # Two scripted replies per call (the retry's too); only the bytes matter here, so the bus is
    # made fast: t3.5 off (timing has its own tests in test_master.py), 2 ms timeout.
    random.seed(77)
    u, m = bus(baud=1000000, timeout_ms=2)
    m.t35_us = 0
    m._t35_ms = 0
    buf = bytearray(300)
    bits = bytearray(1968)  # written as coils: any non-zero byte is on
    values = array("H", bytes(246))
    frames = 0
    gc.collect()
    start = gc.mem_alloc()
    warm = 0
    while frames < N:
        if not warm and frames >= 1000:
            gc.collect()  # the dicts and lists that grow once have grown
            warm = gc.mem_alloc()
        unit, fc, a, b, size = _request()
        unit = 1 + unit % 4  # a bus has a few units: the latency dict stays small
        kinds = []
        data = []
        u.replies = []
        for _ in range(2):
            kind = rnd(10)
            n, i = _reply(buf, kind, unit, fc, a, b, size)
            u.replies.append([(0, bytes(buf[:n]))])
            kinds.append(kind)
            data.append(bytes(buf[i:i + size]) if size > 0 else None)
        u.sent.clear()
        u.log.clear()
        if fc <= 2:
            aw = m.read_bits(unit, fc, a, b)
        elif fc <= 4:
            aw = m.read_registers(unit, fc, a, b)
        elif fc == 15:
            aw = m.write_coils(unit, a, memoryview(fill(bits, 0, b) and bits)[:b])
        elif fc == 16:
            for i in range(b):
                values[i] = getrandbits(16)
            aw = m.write_registers(unit, a, memoryview(values)[:b])
        else:
            aw = m.write_register(unit, a, b) if fc == 6 else m.write_coil(unit, a, b)
        try:
            got = await aw
        except ValueError:
            assert a + b > 0x10000 and fc != 5 and fc != 6 and not u.sent
            continue
        except ModbusException:
            assert kinds[len(u.sent) - 1] == _EXC, kinds
            continue
        except ModbusError:
            # the last attempt's reply was bad; a good one behind junk (PREFIX) may be lost too
            assert kinds[len(u.sent) - 1] not in (_GOOD, _TAIL, _EXC), kinds
            continue
        finally:
            frames += len(u.sent)
        last = len(u.sent) - 1
        assert kinds[last] in (_GOOD, _TAIL, _PREFIX), kinds
        if size > 0:
            assert bytes(got) == data[last], (kinds, bytes(got), data[last])
    counts_add_up(m)
    s = m.stats
    assert s["ok"] > N // 5 and s["exceptions"] > 100 and s["crc"] > 100 and s["frame"] > 100, s
    assert s["timeouts"] > 100 and s["retries"] > 1000 and len(s["exc"]) <= 12, s
    gc.collect()
    now = gc.mem_alloc()
    assert now - warm < 2048 and now - start < 5120, (start, warm, now)


# -- hand-made bad replies that the master's retry recovers from ---------------------------------

async def test_retry_after_crc_or_frame_error():
    bad = bytearray(GOOD)
    bad[4] ^= 1
    for first, outcome in ((bad, "crc"), (ONE_REG, "frame")):
        u, m = bus([(2, first)], [(2, GOOD)], timeout_ms=40)
        assert bytes(await m.read_registers(*READ)) == H("00E6010F")
        assert len(u.sent) == 2 and m.stats[outcome] == 1 and m.stats["retries"] == 1
        counts_add_up(m)


async def test_write_retries():
    # Retried after a CRC error (the garbled echo overwrote the frame buffer: the retry rebuilds
    # the request); not after a timeout (the unit is held) nor a good-CRC reply with a wrong echo.
    req = H("0A06001012348403")
    u, m = bus([(2, req[:-1] + b"\x99")], [(2, req)], baud=115200, timeout_ms=50)
    assert await m.write_register(10, 0x10, 0x1234) is None
    assert u.sent == [req, req] and m.stats["retries"] == 1
    u, m = bus(None, [(2, req)], baud=115200, timeout_ms=50)
    await expect(ModbusTimeout, m.write_register(10, 0x10, 0x1234))
    assert u.sent == [req] and m.stats["retries"] == 0
    u, m = bus([(2, H("0A060010123545C3"))], [(2, req)], baud=115200)
    await expect(ModbusFrameError, m.write_register(10, 0x10, 0x1234))
    assert u.sent == [req] and m.stats["frame"] == 1 and m.stats["retries"] == 0


async def test_late_reply_of_other_block_is_dropped_before_the_next_request():
    # A one-register reply arrives after its request gave up (full timeout: no quick retry). The
    # next request to that unit (a two-register block) waits out the late window (twice the
    # deadline after the last send), so the stale frame is dropped, never taken for its data.
    u, m = bus([(70, ONE_REG)], [(40, GOOD)], timeout_ms=50)
    await expect(ModbusTimeout, m.read_registers(10, 3, 1025, 1))
    assert m.attempts == 1
    assert bytes(await m.read_registers(*READ)) == H("00E6010F")
    assert m.stats["frame"] == 0 and u.discarded == len(ONE_REG)


async def test_no_request_while_a_late_reply_may_come():
    # The unit slows down: the request gives up at the shortened deadline and its reply comes
    # late, with the same unit, function and length as the next request. The next request waits
    # until 2 x timeout after the first went out, so the late reply is dropped as stale.
    u, m = bus(baud=115200, timeout_ms=300, min_timeout_ms=10)
    await fast_replies(m, u, 6)
    u.replies += [[(50, SECOND)], [(40, GOOD)]]
    await expect(ModbusTimeout, m.read_registers(*READ))
    assert bytes(await m.read_registers(*READ)) == H("00E6010F")
    t = tx_times(u)
    assert time.ticks_diff(t[-1], t[-2]) >= 600, t
    assert u.discarded == len(SECOND)
