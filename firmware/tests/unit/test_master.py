# Modbus RTU bus master (sot.modbus.master) against a scripted slave (fakes.FakeUart).
# Frame CRCs were computed with pymodbus 3.16.1 on the host (see test_rtu.py).
import asyncio
import time

from fakes import FakeUart, bytewise
from sot.modbus.master import Master
from sot.modbus.rtu import (
    ModbusCRCError,
    ModbusException,
    ModbusFrameError,
    ModbusTimeout,
)

H = bytes.fromhex

REQ = H("0A0304010002" "9580")  # unit 10, fc 03, registers 1025-1026
GOOD = H("0A0304" "00E6010F" "E090")  # 230, 271
SECOND = H("0A0304" "00E70110" "F098")  # 231, 272
OTHER_UNIT = H("0B0304" "00E6010F" "F050")  # unit 11's reply, same shape
EXC = H("0A8302B133")  # exception 02, illegal data address
ONE_REG = H("0A0302002A9C5A")  # a good reply to a one-register read


async def expect(exc, aw):
    try:
        await aw
    except exc as e:
        return e
    raise AssertionError("%s not raised" % exc.__name__)


def tx_times(uart):
    return [t for t, kind, _ in uart.log if kind == "tx"]


def rx_times(uart):
    return [t for t, kind, _ in uart.log if kind == "rx"]


def test_t35_from_baud():
    u = FakeUart()
    assert Master(u, 9600).t35_us == 4011  # 3.5 * 11 bits / 9600
    assert Master(u, 19200).t35_us == 2006
    assert Master(u, 38400).t35_us == 1750  # fixed above 19200
    assert Master(u, 115200).t35_us == 1750


async def test_good_reply():
    u = FakeUart([[(5, GOOD)]])
    m = Master(u, 9600, timeout_ms=200)
    data = await m.read_registers(10, 3, 1025, 2)
    assert bytes(data) == H("00E6010F")
    assert u.sent == [REQ]
    assert m.stats["requests"] == 1 and m.stats["ok"] == 1
    assert m.stats["timeouts"] == m.stats["crc"] == m.stats["frame"] == 0


async def test_good_reply_byte_by_byte():
    u = FakeUart([bytewise(5, GOOD, gap_ms=2)], chunk=1)
    m = Master(u, 9600, timeout_ms=200)
    assert bytes(await m.read_registers(10, 3, 1025, 2)) == H("00E6010F")


async def test_input_registers_request():
    reply = H("140404" "43668000" "2B1E")  # unit 20, fc 04, f32 230.5
    u = FakeUart([[(2, reply)]])
    m = Master(u, 115200, timeout_ms=200)
    assert bytes(await m.read_registers(20, 4, 0, 2)) == H("43668000")
    assert u.sent == [H("140400000002730E")]


async def test_data_is_a_view_valid_until_next_call():
    u = FakeUart([[(2, GOOD)], [(2, SECOND)]])
    m = Master(u, 9600, timeout_ms=200)
    first = await m.read_registers(10, 3, 1025, 2)
    saved = bytes(first)
    second = await m.read_registers(10, 3, 1025, 2)
    assert saved == H("00E6010F") and bytes(second) == H("00E70110")


async def test_timeout():
    u = FakeUart([None])
    m = Master(u, 9600, timeout_ms=60)
    t0 = time.ticks_ms()
    e = await expect(ModbusTimeout, m.read_registers(10, 3, 1025, 2))
    took = time.ticks_diff(time.ticks_ms(), t0)
    assert 60 <= took < 160, took
    assert "no reply" in str(e)
    assert m.stats["timeouts"] == 1 and m.stats["ok"] == 0


async def test_timeout_on_incomplete_reply():
    u = FakeUart([[(5, GOOD[:5])]])
    m = Master(u, 9600, timeout_ms=60)
    e = await expect(ModbusTimeout, m.read_registers(10, 3, 1025, 2))
    assert "incomplete reply (5 bytes)" in str(e)


async def test_waiting_does_not_block_the_event_loop():
    ticks = [0]

    async def ticker():
        while True:
            ticks[0] += 1
            await asyncio.sleep_ms(5)

    task = asyncio.create_task(ticker())
    m = Master(FakeUart([None]), 9600, timeout_ms=100)
    await expect(ModbusTimeout, m.read_registers(10, 3, 1025, 2))
    task.cancel()
    assert ticks[0] >= 10, ticks[0]


async def test_garbage_before_good_frame():
    noise = H("00FF0AFE0A")  # line noise, including a stray byte equal to the unit id
    u = FakeUart([[(5, noise + GOOD)]])
    m = Master(u, 9600, timeout_ms=200)
    assert bytes(await m.read_registers(10, 3, 1025, 2)) == H("00E6010F")
    assert m.stats["discarded"] == len(noise)


async def test_garbage_before_good_frame_byte_by_byte():
    u = FakeUart([bytewise(5, H("800A0A") + GOOD)], chunk=1)
    m = Master(u, 9600, timeout_ms=200)
    assert bytes(await m.read_registers(10, 3, 1025, 2)) == H("00E6010F")


async def test_frame_from_other_unit_is_not_accepted():
    u = FakeUart([[(5, OTHER_UNIT)]])
    m = Master(u, 9600, timeout_ms=60)
    await expect(ModbusTimeout, m.read_registers(10, 3, 1025, 2))
    assert m.stats["ok"] == 0


async def test_frame_from_other_unit_then_ours():
    # E.g. unit 11 answering late to the poll before ours: skipped, our reply still taken.
    u = FakeUart([[(5, OTHER_UNIT), (5, GOOD)]])
    m = Master(u, 9600, timeout_ms=200)
    assert bytes(await m.read_registers(10, 3, 1025, 2)) == H("00E6010F")


async def test_exception_response():
    u = FakeUart([[(5, EXC)]])
    m = Master(u, 9600, timeout_ms=200)
    e = await expect(ModbusException, m.read_registers(10, 3, 1025, 2))
    assert e.code == 2 and e.name == "illegal data address"
    assert m.stats["exceptions"] == 1 and m.stats["ok"] == 0


async def test_crc_error():
    bad = bytearray(GOOD)
    bad[5] ^= 0x10
    u = FakeUart([[(5, bytes(bad))]])
    m = Master(u, 9600, timeout_ms=200)
    await expect(ModbusCRCError, m.read_registers(10, 3, 1025, 2))
    assert m.stats["crc"] == 1


async def test_wrong_byte_count_is_frame_error_without_waiting():
    u = FakeUart([[(5, ONE_REG)]])
    m = Master(u, 9600, timeout_ms=500)
    t0 = time.ticks_ms()
    await expect(ModbusFrameError, m.read_registers(10, 3, 1025, 2))
    assert time.ticks_diff(time.ticks_ms(), t0) < 100
    assert m.stats["frame"] == 1


async def test_late_reply_waiting_in_buffer_is_dropped():
    # Request 1 times out; its reply arrives while the poller is between requests. Request 2
    # must get its own answer, not the stale one.
    u = FakeUart([[(80, GOOD)], [(10, SECOND)]])
    m = Master(u, 9600, timeout_ms=50)
    await expect(ModbusTimeout, m.read_registers(10, 3, 1025, 2))
    await asyncio.sleep_ms(50)
    assert len(u.rx) == len(GOOD)  # the late reply is waiting
    assert bytes(await m.read_registers(10, 3, 1025, 2)) == H("00E70110")
    assert u.discarded == len(GOOD)


async def test_late_reply_still_arriving_is_waited_out():
    # Request 1's reply starts just before its deadline and trickles on (3 ms per byte) while
    # request 2 begins: the master must wait for t3.5 of silence, drop the tail, then send.
    u = FakeUart([bytewise(45, GOOD, gap_ms=3), [(10, SECOND)]])
    m = Master(u, 9600, timeout_ms=50)
    await expect(ModbusTimeout, m.read_registers(10, 3, 1025, 2))
    assert bytes(await m.read_registers(10, 3, 1025, 2)) == H("00E70110")
    late = [t for t, kind, data in u.log if kind == "rx" and data != SECOND]
    assert len(late) == len(GOOD)
    assert time.ticks_diff(tx_times(u)[1], late[-1]) >= 4  # t3.5 at 9600 baud
    assert m.stats["discarded"] > 0


async def test_late_reply_of_other_block_after_send_is_rejected():
    # A late one-register reply lands after request 2 (two registers) was sent: its byte count
    # gives it away. It must fail request 2, never be returned as its data.
    u = FakeUart([[(70, ONE_REG)], [(40, GOOD)]])
    m = Master(u, 9600, timeout_ms=50)
    await expect(ModbusTimeout, m.read_registers(10, 3, 1025, 1))
    await expect(ModbusFrameError, m.read_registers(10, 3, 1025, 2))


async def test_silence_between_frames():
    u = FakeUart([[(2, GOOD)], [(2, SECOND)]])
    m = Master(u, 9600, timeout_ms=200)
    await m.read_registers(10, 3, 1025, 2)
    await m.read_registers(10, 3, 1025, 2)
    assert time.ticks_diff(tx_times(u)[1], rx_times(u)[0]) >= 4  # t3.5 at 9600 baud


async def test_counters_over_mixed_results():
    bad = bytearray(GOOD)
    bad[-1] ^= 0xFF
    u = FakeUart([[(2, GOOD)], None, [(2, EXC)], [(2, bytes(bad))], [(2, ONE_REG)],
                  [(2, SECOND)]])
    m = Master(u, 19200, timeout_ms=40)
    results = []
    for _ in range(6):
        try:
            await m.read_registers(10, 3, 1025, 2)
            results.append("ok")
        except Exception as e:
            results.append(type(e).__name__)
    assert results == ["ok", "ModbusTimeout", "ModbusException", "ModbusCRCError",
                       "ModbusFrameError", "ok"], results
    s = m.stats
    assert (s["requests"], s["ok"], s["timeouts"], s["exceptions"], s["crc"], s["frame"]) == \
        (6, 2, 1, 1, 1, 1), s
