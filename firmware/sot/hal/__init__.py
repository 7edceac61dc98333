# The hardware abstraction layer: the only package that touches hardware. One module per board
# with the same names (init, epoch, Uart, open_connection, Flash, Watchdog, reset_cause,
# heap_used); everything outside hal/ receives what it needs from here. unix.py is the unix
# port's (the simulator, the tests and the demo); qemu.py is the 32-bit build CI runs in
# qemu-system-arm (docs/firmware-build.md).
import sys

if sys.platform in ("linux", "darwin"):
    from sot.hal.unix import *  # noqa: F403
elif sys.platform == "qemu":
    from sot.hal.qemu import *  # noqa: F403
else:
    raise ImportError("no HAL for platform '%s' yet: add firmware/sot/hal/%s.py" % (sys.platform, sys.platform))
