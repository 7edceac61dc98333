# The hardware abstraction layer: the only package that touches hardware. One module per board
# with the same names (init, configure, epoch, Uart, open_connection, Flash, Watchdog,
# reset_cause, Buttons, display, heap_used, NAME, RESERVED, HARD_RESET_KEEPS_FLASH); everything
# outside hal/ receives what it needs from here. firmware/tests/test_hal_conformance.py checks
# that the modules agree.
#   unix  -> hal/unix.py: the simulator, the tests and the demo (MicroPython's unix port)
#   qemu  -> hal/qemu.py: the 32-bit build CI runs in qemu-system-arm (docs/firmware-build.md)
#   esp32 -> hal/esp32.py, rp2 -> hal/rp2.py: the boards, sharing hal/board.py
import sys

if sys.platform in ("linux", "darwin"):
    from sot.hal.unix import *  # noqa: F403
elif sys.platform == "qemu":
    from sot.hal.qemu import *  # noqa: F403
elif sys.platform == "esp32":
    from sot.hal.esp32 import *  # noqa: F403
elif sys.platform == "rp2":
    from sot.hal.rp2 import *  # noqa: F403
else:
    raise ImportError("no HAL for platform '%s' yet: add firmware/sot/hal/%s.py"
                      % (sys.platform, sys.platform))
