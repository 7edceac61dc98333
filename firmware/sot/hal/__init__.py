# The hardware abstraction layer: the only package that touches hardware. One module per board;
# this picks the one for the platform we run on. Everything outside hal/ receives what it needs
# (UARTs, network, flash, clock, watchdog) from here.
import sys

if sys.platform == "esp32":
    from sot.hal.esp32 import *  # noqa: F403
elif sys.platform == "rp2":
    from sot.hal.rp2 import *  # noqa: F403
else:
    from sot.hal.unix import *  # noqa: F403
