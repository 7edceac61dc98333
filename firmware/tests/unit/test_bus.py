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


async def test_the_site_step_runs_right_after_a_poll_that_read_new_values():
    # The site logic judges a reading when it arrives (sot/app.py): the bus owner calls its
    # step after each poll that brought values, with those values already in place, and stamps
    # them with the time they were asked for, which the grid debounce is counted on.
    import asyncio

    dev = Device({"name": "genset", "kind": "genset", "unit": UNIT,
                  "blocks": ((3, 768, 1, 1), (3, 1024, 1, 0)),  # identity (slow), a reading
                  "points": (("manufacturer", 0, 0, 0, None, None, None, None, None, None),
                             ("oil_kpa", 1, 0, 0, None, None, None, None, None, None)),
                  "ident": (("manufacturer", (1,)),)})
    # The first poll reads both blocks, the next only the reading; then silence.
    u = FakeUart([[(2, read_reply(1))], [(2, read_reply(300))], [(2, read_reply(310))]])
    owner = BusOwner(dict(BUS, poll_ms=100), [dev], u, log=lambda *a: None)
    seen = []

    def step():
        seen.append((time.ticks_ms(), dev.read_ms, dev.get("oil_kpa"), dev.status()))

    owner.after_poll = step
    task = asyncio.create_task(owner.run())
    await asyncio.sleep_ms(150)  # two polls, 100 ms apart, both answered
    assert len(seen) == 2, seen
    assert [v for _at, _r, v, _s in seen] == [300, 310]
    for at, read_ms, _value, status in seen:
        assert status == "online"
        assert 0 <= time.ticks_diff(at, read_ms) < 50  # the step came with the reply
    assert time.ticks_diff(seen[1][1], seen[0][1]) >= 90  # each reading has its own time
    # Silence: a poll that reads nothing is no new reading, and calls no step ...
    await asyncio.sleep_ms(150)
    assert len(seen) == 2, seen
    # ... until the device is given up on: its change of availability is one.
    for _ in range(70):
        if len(seen) > 2:
            break
        await asyncio.sleep_ms(100)
    task.cancel()
    assert len(seen) == 3 and seen[-1][3] == "offline", seen


def test_a_failing_site_step_does_not_stop_the_bus_that_called_it():
    # The step runs inside the bus owner's task after a poll. If the site logic fails, the
    # bus keeps polling (its task is not the one at fault) and the failure is logged once; the
    # site loop's own step still raises, so the supervisor names the site task.
    from sot import app

    class BrokenSite:
        def update(self, now, ms):
            raise ValueError("bad reading")

    lines = []
    was = app.log
    app.log = lambda *a: lines.append(" ".join(str(x) for x in a))
    try:
        task = app.SiteTask(BrokenSite(), None, "kall", None, None)
        task.after_poll()
        task.after_poll()
    finally:
        app.log = was
    assert len(lines) == 1 and "bad reading" in lines[0], lines
    try:
        task.step()
        raise AssertionError("the site loop's step hid the failure")
    except ValueError:
        pass
