# A faster clock for the unix port (the HIL rig only): with SOT_TIME_SCALE=k in the environment,
# hal/unix.py calls install(k) before anything imports `time` or `asyncio`, and the firmware's
# monotonic clock runs k times faster than the host's:
#   time.ticks_ms / ticks_us  -> k x the real time elapsed since install()
#   asyncio sleeps and waits  -> the event loop reads the scaled ticks and blocks for 1/k of each
#                                 scaled delay, so sleep_ms(8000) takes 8 s on the firmware's
#                                 clock and 8/k s on the host's
#   the watchdog              -> hal/unix.py writes its timeout in host milliseconds (timeout/k)
#                                 into `wdt`, so the rig's watchdog bites after 8 s firmware time
# Unchanged: time.time() and hal.epoch() (the site logic's clock, the timestamps of events and
# commands, which the gateway compares with its own clock) and everything outside the process
# (the plant simulator, the broker's keepalive check). docs/testing.md, "A faster clock", says
# which scenarios may use it. A board never imports this module.
import sys

import time as _time

SCALE = 1


class _Time:
    """Stands in for the `time` module: the host's functions, ticks scaled."""


def install(scale):
    global SCALE
    if scale == 1 or "asyncio" in sys.modules:
        return  # too late for asyncio (it has bound ticks_ms already): stay on the host clock
    SCALE = scale
    t = _Time()
    for name in dir(_time):
        if not name.startswith("__"):
            setattr(t, name, getattr(_time, name))
    period = _time.ticks_add(0, -1) + 1
    ms0 = _time.ticks_ms()
    us0 = _time.ticks_us()

    def ticks_ms():
        return (ms0 + int(_time.ticks_diff(_time.ticks_ms(), ms0) * scale)) % period

    def ticks_us():
        return (us0 + int(_time.ticks_diff(_time.ticks_us(), us0) * scale)) % period

    t.ticks_ms = ticks_ms
    t.ticks_us = ticks_us
    sys.modules["time"] = t  # `import time` and `from time import ticks_ms` get the scaled one

    import asyncio.core as core  # binds ticks from the scaled `time` above

    wait = core.IOQueue.wait_io_event

    def wait_io_event(self, dt):
        # dt: scaled ms until the next task is due (-1: none, wait for I/O only)
        if dt > 0:
            dt = max(1, int(dt / scale))
        return wait(self, dt)

    core.IOQueue.wait_io_event = wait_io_event
