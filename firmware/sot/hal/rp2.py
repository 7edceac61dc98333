# RP2040 HAL (MicroPython's rp2 port; the network needs a Pico W): everything is shared with
# the ESP32 and lives in hal/board.py. Pins come from the site config's [board] section
# (docs/hardware.md). Not yet run on a real board.
#   UART    -> machine.UART 0 or 1, DE on a GPIO
#   flash   -> the littlefs file system mounted at "/"
#   network -> Wi-Fi (network.WLAN, Pico W); no wired Ethernet
#   clock   -> the RTC, set from NTP
#   watchdog-> machine.WDT (at most 8388 ms; the firmware uses 8000)
#   display -> ILI9341 over SPI or SSD1306 over I2C (hal/board_display.py)
#   buttons -> three GPIO inputs with pull-ups
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

NAME = "rp2"

board.set_chip(NAME, None)
