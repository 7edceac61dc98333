# ESP32 HAL (MicroPython's esp32 port): everything but wired Ethernet is shared with the RP2040
# and lives in hal/board.py. Pins come from the site config's [board] section
# (docs/hardware.md). Not yet run on a real board.
#   UART    -> machine.UART 1 or 2 (UART0 is the REPL that mpremote uses), DE on a GPIO
#   flash   -> the littlefs partition mounted at "/"
#   network -> Wi-Fi (network.WLAN) or wired Ethernet (network.LAN with an RMII PHY)
#   clock   -> the RTC, set from NTP
#   watchdog-> machine.WDT
#   display -> ILI9341 over SPI or SSD1306 over I2C (hal/board_display.py)
#   buttons -> three GPIO inputs with pull-ups
import machine

from sot.hal import board
from sot.hal.board import (  # noqa: F401 -- the HAL's names (hal/__init__.py)
    RESERVED,
    Buttons,
    HARD_RESET_KEEPS_FLASH,
    Flash,
    Uart,
    Watchdog,
    configure,
    display,
    epoch,
    heap_used,
    init,
    open_connection,
    reset_cause,
)

NAME = "esp32"


def _lan(net, network):
    """network.LAN for the [board.network] kind = "lan": the PHY chip by name (LAN8720, IP101,
    RTL8201, DP83848, KSZ8081), its address, the MDC/MDIO pins and the PHY's power pin. These
    are the esp32 port's own keyword arguments (its quick reference); the stubs describe only
    the other ports' LAN(id, ...), so pyright does not check this call."""
    power = net.get("power")
    return network.LAN(mdc=machine.Pin(net["mdc"]), mdio=machine.Pin(net["mdio"]),
                       power=None if power is None else machine.Pin(power),
                       phy_type=getattr(network, "PHY_" + net.get("phy", "LAN8720")),
                       phy_addr=net.get("phy_addr", 0))


board.set_chip(NAME, _lan)
