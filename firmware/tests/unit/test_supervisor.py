# The supervisor under MicroPython: watchdog feeds only while every task checks in; the reset
# streak and safe mode at the next boot (fault scenario P3).
import asyncio
import json
import time

from fakes import MemFlash
from sot.supervisor import SAFE_AFTER, Supervisor, boot_health


class FakeWdt:
    def __init__(self):
        self.feeds = 0

    def feed(self):
        self.feeds += 1


async def forever(sup, name, stop):
    while not stop[0]:
        sup.alive(name)
        await asyncio.sleep_ms(5)


async def stuck():
    await asyncio.Event().wait()  # awaits something that never happens: a soft hang


async def crashes():
    await asyncio.sleep_ms(1)
    raise ValueError("bug")


def silence(sup, name):
    # as if the task had not checked in for longer than its allowance
    t = sup.tasks[name]
    t[0] = time.ticks_add(time.ticks_ms(), -t[1] - 1)


async def test_feeds_while_every_task_checks_in_and_stops_for_a_hung_one():
    wdt = FakeWdt()
    fl = MemFlash()
    out = []
    sup = Supervisor(wdt, fl, log=lambda *a: out.append(a))
    stop = [False]
    sup.start("site", lambda: forever(sup, "site", stop), 1000)
    sup.start("telemetry", stuck, 1000)
    await asyncio.sleep_ms(20)
    assert sup.step(time.ticks_ms()) is None and wdt.feeds == 1
    silence(sup, "telemetry")
    assert sup.step(time.ticks_ms()) == "telemetry"
    assert sup.step(time.ticks_ms()) == "telemetry"
    assert wdt.feeds == 1  # no more feeds: the watchdog will reset the board
    assert fl.read("hung") == b"telemetry"
    assert len(out) == 1  # said once
    stop[0] = True


async def test_a_task_that_dies_counts_as_hung():
    wdt = FakeWdt()
    sup = Supervisor(wdt, MemFlash(), log=lambda *a: None)
    sup.start("panel", crashes, 60000)
    await asyncio.sleep_ms(20)
    assert sup.step(time.ticks_ms()) == "panel" and wdt.feeds == 0


async def test_safe_mode_restarts_a_stuck_task_instead_of_resetting():
    wdt = FakeWdt()
    sup = Supervisor(wdt, MemFlash(), safe=True, resets=3, log=lambda *a: None)
    sup.start("telemetry", stuck, 1000)
    first = sup.tasks["telemetry"][3]
    silence(sup, "telemetry")
    assert sup.step(time.ticks_ms()) == "telemetry"
    assert wdt.feeds == 1 and sup.restarts == 1
    assert sup.tasks["telemetry"][3] is not first
    await asyncio.sleep_ms(5)
    assert sup.step(time.ticks_ms()) is None and wdt.feeds == 2


def test_boot_health_counts_watchdog_resets_in_a_row():
    fl = MemFlash()
    h = boot_health(fl, "power_on")
    assert h == {"resets": 0, "hung": None, "safe": False, "skip": ()}
    fl.write("hung", "telemetry")
    h = boot_health(fl, "wdt")
    assert h["resets"] == 1 and h["hung"] == "telemetry" and not h["safe"]
    assert fl.read("hung") == b""  # consumed: the next reset names its own culprit
    for _ in range(2, SAFE_AFTER + 1):
        h = boot_health(fl, "wdt")
    assert h["resets"] == SAFE_AFTER and h["safe"] is True
    assert h["skip"] == ("telemetry",)  # culprit unknown: leave the network session out
    assert boot_health(fl, "power_on")["resets"] == 0  # a technician's power cycle ends it


def test_a_hung_core_task_is_never_left_out():
    fl = MemFlash()
    fl.write("health", json.dumps({"resets": SAFE_AFTER - 1}))
    fl.write("hung", "bus:rs485")
    h = boot_health(fl, "wdt")
    assert h["safe"] is True and h["hung"] == "bus:rs485" and h["skip"] == ()


def test_a_healthy_stretch_clears_the_streak():
    fl = MemFlash()
    sup = Supervisor(FakeWdt(), fl, resets=2, log=lambda *a: None)
    for _ in range(600):
        sup.step(time.ticks_ms())
    assert sup.resets == 0 and json.loads(fl.read("health"))["resets"] == 0
