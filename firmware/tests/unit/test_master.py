# Modbus RTU bus master (sot.modbus.master) against a scripted slave (fakes.FakeUart).
# Frame CRCs were computed with pymodbus 3.16.1 on the host (see test_rtu.py). Tests about one
# transaction's handling pass retries=0; the retry has its own tests below, and test_rtu_fuzz.py
# has those where the retry meets garbled, late or wrongly echoed replies.
#
# Heap: this module is compiled on the 64 KiB heap, and its parse tree is the largest thing in it
# (~2 KB per test function on the unix port): at 25 tests it compiles with ~2 KB to spare. Canned
# frames and helpers live in fakes.py; add new master tests to test_rtu_fuzz.py or a new module.
import asyncio
import time

# The firmware first: its .mpy code needs contiguous blocks, which the heap still has right after
# this module's compilation; fakes.py (compiled from source) makes do with the smaller holes.
from sot.modbus import rtu
from sot.modbus.master import Master
from sot.modbus.rtu import (
    ModbusCRCError,
    ModbusException,
    ModbusFrameError,
    ModbusTimeout,
)

from fakes import (EXC, EXC_FRAMES, FC_CASES, GOOD, H, ONE_REG, OTHER_UNIT, READ, REQ, SECOND,  # noqa: I001
                   FakeUart, bus, bytewise, counts_add_up, expect, fails, fast_replies, rx_times,
                   tx_times)


def test_t35_from_baud():
    u = FakeUart()
    assert Master(u, 9600).t35_us == 4011  # 3.5 * 11 bits / 9600
    assert Master(u, 19200).t35_us == 2006
    assert Master(u, 38400).t35_us == 1750  # fixed above 19200
    assert Master(u, 115200).t35_us == 1750


async def test_good_reply():
    u, m = bus([(5, GOOD)])
    assert bytes(await m.read_registers(*READ)) == H("00E6010F") and u.sent == [REQ]
    s = m.stats
    assert s["requests"] == s["ok"] == 1 and s["timeouts"] == s["crc"] == s["frame"] == 0


async def test_good_reply_byte_by_byte():
    u, m = bus(bytewise(5, GOOD, gap_ms=2), chunk=1)
    assert bytes(await m.read_registers(*READ)) == H("00E6010F")


async def test_input_registers_request():
    reply = H("140404" "43668000" "2B1E")  # unit 20, fc 04, f32 230.5
    u, m = bus([(2, reply)], baud=115200)
    assert bytes(await m.read_registers(20, 4, 0, 2)) == H("43668000")
    assert u.sent == [H("140400000002730E")]


async def test_data_is_a_view_valid_until_next_call():
    u, m = bus([(2, GOOD)], [(2, SECOND)])
    first = await m.read_registers(*READ)
    saved = bytes(first)
    second = await m.read_registers(*READ)
    assert saved == H("00E6010F") and bytes(second) == H("00E70110")


async def test_timeout():
    u, m = bus(None, timeout_ms=60, retries=0)
    t0 = time.ticks_ms()
    e = await expect(ModbusTimeout, m.read_registers(*READ))
    took = time.ticks_diff(time.ticks_ms(), t0)
    assert 60 <= took < 160, took
    assert "no reply" in str(e)
    assert m.stats["timeouts"] == 1 and m.stats["ok"] == 0


async def test_timeout_on_incomplete_reply():
    u, m = bus([(5, GOOD[:5])], timeout_ms=60, retries=0)
    e = await expect(ModbusTimeout, m.read_registers(*READ))
    assert "incomplete reply (5 bytes)" in str(e)


async def test_waiting_does_not_block_the_event_loop():
    ticks = [0]

    async def ticker():
        while True:
            ticks[0] += 1
            await asyncio.sleep_ms(5)

    task = asyncio.create_task(ticker())
    _, m = bus(None, timeout_ms=100)
    await expect(ModbusTimeout, m.read_registers(*READ))
    task.cancel()
    assert ticks[0] >= 10, ticks[0]


async def test_garbage_before_good_frame():
    noise = H("00FF0AFE0A")  # line noise, including a stray byte equal to the unit id
    u, m = bus([(5, noise + GOOD)])
    assert bytes(await m.read_registers(*READ)) == H("00E6010F")
    assert m.stats["discarded"] == len(noise)


async def test_garbage_before_good_frame_byte_by_byte():
    u, m = bus(bytewise(5, H("800A0A") + GOOD), chunk=1)
    assert bytes(await m.read_registers(*READ)) == H("00E6010F")


async def test_frame_from_other_unit_is_not_accepted():
    u, m = bus([(5, OTHER_UNIT)], timeout_ms=60)
    await expect(ModbusTimeout, m.read_registers(*READ))
    assert m.stats["ok"] == 0


async def test_frame_from_other_unit_then_ours():
    # E.g. unit 11 answering late to the poll before ours: skipped, our reply still taken.
    u, m = bus([(5, OTHER_UNIT), (5, GOOD)])
    assert bytes(await m.read_registers(*READ)) == H("00E6010F")


async def test_exception_response():
    u, m = bus([(5, EXC)])
    e = await expect(ModbusException, m.read_registers(*READ))
    assert e.code == 2 and e.name == "illegal data address"
    assert m.stats["exceptions"] == 1 and m.stats["ok"] == 0


async def test_crc_error():
    bad = bytearray(GOOD)
    bad[5] ^= 0x10
    u, m = bus([(5, bytes(bad))], retries=0)
    await expect(ModbusCRCError, m.read_registers(*READ))
    assert m.stats["crc"] == 1


async def test_wrong_byte_count_is_frame_error_without_waiting():
    u, m = bus([(5, ONE_REG)], timeout_ms=500, retries=0)
    t0 = time.ticks_ms()
    await expect(ModbusFrameError, m.read_registers(*READ))
    assert time.ticks_diff(time.ticks_ms(), t0) < 100
    assert m.stats["frame"] == 1


async def test_late_reply_waiting_in_buffer_is_dropped():
    # Request 1 times out; its reply arrives while the poller is between requests. Request 2
    # must get its own answer, not the stale one.
    u, m = bus([(80, GOOD)], [(10, SECOND)], timeout_ms=50, retries=0)
    await expect(ModbusTimeout, m.read_registers(*READ))
    await asyncio.sleep_ms(50)
    assert len(u.rx) == len(GOOD)  # the late reply is waiting
    assert bytes(await m.read_registers(*READ)) == H("00E70110")
    assert u.discarded == len(GOOD)


async def test_late_reply_still_arriving_is_waited_out():
    # Request 1's reply starts just before its deadline and trickles on (3 ms per byte) while
    # request 2 begins: the master must wait for t3.5 of silence, drop the tail, then send.
    u, m = bus(bytewise(45, GOOD, gap_ms=3), [(10, SECOND)], timeout_ms=50, retries=0)
    await expect(ModbusTimeout, m.read_registers(*READ))
    assert bytes(await m.read_registers(*READ)) == H("00E70110")
    late = [t for t, kind, data in u.log if kind == "rx" and data != SECOND]
    assert len(late) == len(GOOD)
    assert time.ticks_diff(tx_times(u)[1], late[-1]) >= 4  # t3.5 at 9600 baud
    assert m.stats["discarded"] > 0


async def test_late_reply_of_other_block_is_dropped_not_returned():
    # A late one-register reply would land after request 2 (two registers, same unit) was sent.
    # Request 2 waits out the late window instead, drops the stray frame and gets its own reply.
    u, m = bus([(70, ONE_REG)], [(40, GOOD)], timeout_ms=50, retries=0)
    await expect(ModbusTimeout, m.read_registers(10, 3, 1025, 1))
    assert m.ready_at(10) is not None  # the unit is held for twice the deadline
    assert bytes(await m.read_registers(*READ)) == H("00E6010F")
    assert u.discarded == len(ONE_REG) and m.ready_at(10) is None


async def test_silence_between_frames():
    u, m = bus([(2, GOOD)], [(2, SECOND)])
    await m.read_registers(*READ)
    await m.read_registers(*READ)
    assert time.ticks_diff(tx_times(u)[1], rx_times(u)[0]) >= 4  # t3.5 at 9600 baud


async def test_counters_over_mixed_results():
    bad = bytearray(GOOD)
    bad[-1] ^= 0xFF
    u, m = bus([(2, GOOD)], None, [(2, EXC)], [(2, bytes(bad))], [(2, ONE_REG)], [(2, SECOND)],
               baud=19200, timeout_ms=40, retries=0)
    results = []
    for _ in range(6):
        try:
            await m.read_registers(*READ)
            results.append("ok")
        except Exception as e:
            results.append(type(e).__name__)
    assert results == ["ok", "ModbusTimeout", "ModbusException", "ModbusCRCError",
                       "ModbusFrameError", "ok"], results
    s = m.stats
    assert (s["requests"], s["ok"], s["timeouts"], s["exceptions"], s["crc"], s["frame"]) == \
        (6, 2, 1, 1, 1, 1), s


# -- function codes 01, 02, 05, 06, 15, 16 ---------------------------------------------------------

async def test_new_function_codes_on_the_wire():
    for name, args, req, reply, want in FC_CASES:
        for chunk in (255, 1):
            u, m = bus(bytewise(2, H(reply)), baud=115200, chunk=chunk)
            got = await getattr(m, name)(*args)
            assert u.sent == [H(req)] and m.stats["ok"] == 1, name
            assert (got and bytes(got)) == (want and H(want)), name
    # the read calls check the function code, the builders the rest (test_rtu.py)
    await fails(ValueError, m.read_registers, 10, 1, 0, 1)
    await fails(ValueError, m.read_bits, 10, 3, 0, 1)
    await fails(ValueError, m.write_register, 10, 1, 0x10000)
    assert len(u.sent) == 1


# -- retry: once after a timeout, CRC or frame error, never after an exception response ----------

async def test_retry_once_after_a_garbled_reply():
    bad = bytearray(GOOD)
    bad[-1] ^= 0xFF
    u, m = bus([(2, bytes(bad))], [(2, GOOD)], baud=115200)
    assert bytes(await m.read_registers(*READ)) == H("00E6010F") and u.sent == [REQ, REQ]
    s = m.stats
    assert (s["crc"], s["retries"], s["ok"], m.attempts) == (1, 1, 1, 2), s
    # never twice
    u, m = bus([(2, bytes(bad))], [(2, bytes(bad))], [(2, GOOD)], baud=115200)
    await expect(ModbusCRCError, m.read_registers(*READ))
    assert len(u.sent) == 2 and m.stats["crc"] == 2 and m.stats["retries"] == 1


async def test_no_immediate_retry_after_a_timeout():
    # Its reply may still come: a quick retry would take it for its own. The unit is held for
    # 2 x timeout instead; the bus owner's next poll is the retry.
    for warm in (0, 6):  # full timeout, and a shortened (adaptive) one
        u, m = bus(baud=115200, timeout_ms=60, min_timeout_ms=10)
        await fast_replies(m, u, warm)
        u.replies += [None, [(5, GOOD)]]
        await expect(ModbusTimeout, m.read_registers(*READ))
        assert len(u.sent) == warm + 1 and m.stats["retries"] == 0 and m.attempts == 1
        assert m.ready_at(10) is not None


async def test_no_retry_on_exception_response():
    # Exactly one request on the wire per exception response, whatever the code; each code is
    # named and counted. The last is a write answered with exception 02.
    u, m = bus(*[[(1, H(f))] for _, f in EXC_FRAMES], baud=115200)
    for code, _ in EXC_FRAMES:
        e = await expect(ModbusException, m.read_registers(*READ))
        assert e.code == code and e.name == rtu.EXCEPTION_NAMES[code], code
    u.replies = [[(1, H("0A8502B293"))], [(1, GOOD)]]
    assert (await expect(ModbusException, m.write_coil(10, 3, 1))).code == 2
    assert m.stats["requests"] == len(u.sent) == 8 and m.stats["retries"] == 0
    assert m.stats["exc"] == {1: 1, 2: 2, 3: 1, 4: 1, 6: 1, 0x0A: 1, 0x0B: 1}, m.stats["exc"]
    counts_add_up(m)


# -- adaptive timeout ----------------------------------------------------------------------------

async def test_timeout_adapts_to_latency():
    u, m = bus(baud=115200, timeout_ms=500, min_timeout_ms=10, retries=0)
    assert m.timeout_for(10) == 500  # nothing measured yet
    await fast_replies(m, u, 8)
    t = m.timeout_for(10)
    # 4 x 5-15 ms; a wait of 5 ms on the millisecond tick may end up to 1 ms early (qemu board)
    assert 16 <= t <= 60, t
    assert m.timeout_for(11) == 500  # per unit
    assert m.timeout_for(10, 150) == 150 and m.timeout_for(10, 2000) == 500
    u.replies.append([(60, GOOD)])  # slower than 4 x latency, within a per-call minimum
    await m.read_registers(*READ, min_timeout_ms=150)
    # A silent unit now times out after the shrunk deadline, then gets the full one again.
    u.replies.append(None)
    t0 = time.ticks_ms()
    await expect(ModbusTimeout, m.read_registers(*READ))
    assert time.ticks_diff(time.ticks_ms(), t0) < 150
    assert m.timeout_for(10) == 500 and m.stats["timeouts"] == 1
    assert bus()[1].min_timeout_ms == 100


async def test_adaptive_timeout_never_cuts_off_a_real_reply():
    # A slower reply after fast ones: the shortened deadline gives up, the late reply is dropped
    # while the unit is held, and the next request gets the full timeout (and its own reply).
    u, m = bus(baud=115200, timeout_ms=500, min_timeout_ms=10)
    await fast_replies(m, u, 6)
    u.replies += [[(80, GOOD)], [(80, GOOD)]]
    await expect(ModbusTimeout, m.read_registers(*READ))
    assert m.timeout_for(10) == 500
    assert bytes(await m.read_registers(*READ)) == H("00E6010F")
    assert m.stats["timeouts"] == 1 and u.discarded == len(GOOD)
    assert m.timeout_for(10) >= 4 * 40  # learnt afresh from the slow reply
    # 4 x the latency of 2-register reads is far less than a 125-register reply takes on the wire
    # at 9600 baud (~290 ms): each deadline adds the request's and reply's own bytes.
    u, m = bus(timeout_ms=1000, min_timeout_ms=10)
    await fast_replies(m, u, 6)
    assert m.timeout_for(10) < 80
    u.replies.append([(200, bytes([10, 3, 250]) + bytes(range(250)) + H("8183"))])
    assert bytes(await m.read_registers(10, 3, 0, 125)) == bytes(range(250))
    assert m.stats["timeouts"] == 0
