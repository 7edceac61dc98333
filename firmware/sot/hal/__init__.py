# The hardware abstraction layer: the only package that touches hardware. One module per board
# with the same names (init, epoch, Uart, open_connection, Flash, Watchdog, reset_cause,
# heap_used); everything outside hal/ receives what it needs from here. Today only the unix
# port's exists (the simulator, the tests and the demo run on it); esp32.py and rp2.py are
# written when a board is brought up, against this same list of names.
import sys

if sys.platform in ("linux", "darwin"):
    from sot.hal.unix import *  # noqa: F403
else:
    raise ImportError("no HAL for platform '%s' yet: add firmware/sot/hal/%s.py" % (sys.platform, sys.platform))
