# The bus owner's identity rule under MicroPython: a device that is not what its profile says
# is 'mismatch', shows no values and never gets a write; once verified, writes go through.
import time

from fakes import FakeUart
from sot.bus import BusOwner, NotVerified
from sot.device import Device
from sot.modbus import rtu

UNIT = 10
BUS = {"name": "rs485", "poll_ms": 1000, "baud": 115200, "timeout_ms": 100}


def framed(*body):
    b = bytearray(body)
    c = rtu.crc16(b)
    b.append(c & 0xFF)
    b.append(c >> 8)
    return bytes(b)


def read_reply(value):
    return framed(UNIT, 3, 2, value >> 8, value & 0xFF)


def genset():
    return Device({"name": "genset", "kind": "genset", "unit": UNIT,
                   "blocks": ((3, 768, 1, 1),),
                   "points": (("manufacturer", 0, 0, 0, None, None, None, None, None, None),),
                   "ident": (("manufacturer", (1,)),)})


async def test_wrong_device_is_never_written_and_a_right_one_is():
    dev = genset()
    u = FakeUart([[(2, read_reply(7))]])  # manufacturer 7: not a DSE
    owner = BusOwner(BUS, [dev], u, log=lambda *a: None)
    await owner.poll_device(dev, time.ticks_ms(), True)
    assert dev.status() == "mismatch" and dev.mismatch == ("manufacturer", 7)
    assert dev.get("manufacturer") is None  # no value of a wrong device is used
    try:
        await owner.write_registers(dev, 100, [1])
        raise AssertionError("write to a mismatched device went through")
    except NotVerified:
        pass
    assert len(u.sent) == 1  # only the identity read reached the wire

    # The right controller is fitted; at the re-probe it is verified and may be written to.
    u.replies += [[(2, read_reply(1))], [(2, framed(UNIT, 16, 0, 100, 0, 1))]]
    await owner.poll_device(dev, time.ticks_add(dev.last_try, 10000), True)
    assert dev.status() == "online" and dev.verified and dev.get("manufacturer") == 1
    await owner.write_registers(dev, 100, [1])
    assert u.sent[-1][:2] == bytes([UNIT, 16])


async def test_a_device_not_yet_polled_gets_no_write():
    dev = genset()
    u = FakeUart([])
    owner = BusOwner(BUS, [dev], u, log=lambda *a: None)
    try:
        await owner.write_registers(dev, 100, [1])
        raise AssertionError("write before the identity was checked")
    except NotVerified:
        pass
    assert u.sent == []
