# A stand-in for a board's `machine` module, for the board HAL tests only
# (firmware/tests/unit/test_board_*.py): the conftest puts this folder before the firmware on
# MICROPYPATH for those modules, where it shadows the unix port's own `machine`. Same names and
# call signatures as the esp32/rp2 ports' classes; every call is recorded in LOG, in order, so a
# test can assert what the HAL did to the hardware.
LOG = []

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5
CAUSE = [PWRON_RESET]  # what reset_cause() answers


def reset_cause():
    return CAUSE[0]


class Pin:
    IN = 1
    OUT = 3
    PULL_UP = 1
    IRQ_FALLING = 4
    IRQ_RISING = 8
    made = {}  # number -> the last Pin made for it

    def __init__(self, num, mode=-1, pull=-1, value=None):
        self.num = num
        self.mode = mode
        self.pull = pull
        self.level = 1 if pull == Pin.PULL_UP else 0
        self.handler = None
        self.trigger = 0
        Pin.made[num] = self

    def value(self, v=None):
        if v is None:
            return self.level
        self.level = 1 if v else 0
        LOG.append(("pin", self.num, self.level))

    def irq(self, handler=None, trigger=0):
        self.handler = handler
        self.trigger = trigger

    def drive(self, level):
        """The outside world sets the input's level; the IRQ fires on a change."""
        if level != self.level:
            self.level = level
            if self.handler is not None:
                self.handler(self)


class UART:
    made = []

    def __init__(self, id, baudrate=9600, bits=8, parity=None, stop=1, tx=None, rx=None,
                 timeout=0, timeout_char=0, rxbuf=256):
        self.id = id
        self.args = {"baudrate": baudrate, "bits": bits, "parity": parity, "stop": stop,
                     "tx": tx.num, "rx": rx.num, "timeout": timeout, "rxbuf": rxbuf}
        self.rx = bytearray()
        self.busy_polls = 0  # txdone() answers False this many times after a write
        self.txdone_calls = 0
        UART.made.append(self)

    def write(self, buf):
        LOG.append(("uart.write", bytes(buf)))
        self._busy = self.busy_polls
        return len(buf)

    def txdone(self):
        self.txdone_calls += 1
        if self._busy > 0:
            self._busy -= 1
            return False
        LOG.append(("uart.txdone",))
        return True

    def any(self):
        return len(self.rx)

    def readinto(self, buf):
        n = min(len(buf), len(self.rx))
        if not n:
            return None
        buf[:n] = self.rx[:n]
        self.rx = self.rx[n:]
        return n

    def deinit(self):
        LOG.append(("uart.deinit",))


class WDT:
    made = []

    def __init__(self, id=0, timeout=5000):
        self.timeout = timeout
        self.feeds = 0
        WDT.made.append(self)

    def feed(self):
        self.feeds += 1


class RTC:
    set_to = []

    def datetime(self, t=None):
        if t is not None:
            RTC.set_to.append(t)


class SPI:
    keep = [True]  # False: log only the length of each write (a whole frame is 150 KB)

    def __init__(self, id, baudrate=1000000, sck=None, mosi=None, miso=None):
        self.id = id
        self.baudrate = baudrate
        self.pins = (sck.num, mosi.num)

    def write(self, buf):
        LOG.append(("spi", bytes(buf) if SPI.keep[0] or len(buf) <= 8 else len(buf)))


class I2C:
    def __init__(self, id, scl=None, sda=None, freq=400000):
        self.id = id
        self.pins = (scl.num, sda.num)
        self.freq = freq
        self.out = []  # (addr, bytes) per transfer

    def writeto(self, addr, buf):
        self.out.append((addr, bytes(buf)))

    def writevto(self, addr, bufs):
        self.out.append((addr, b"".join(bytes(b) for b in bufs)))
