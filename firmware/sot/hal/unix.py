# Unix HAL: the whole firmware runs on a PC under the MicroPython unix port.
#   UART    -> a pty (or a real tty) in raw mode; the HIL rig puts a pymodbus plant on the other end
#   flash   -> a folder
#   network -> the host's TCP stack
#   clock   -> the host clock (UTC epoch seconds)
#   watchdog-> a software stand-in (records feeds; the unix port cannot reset itself)
import asyncio
import gc
import os
import termios
import time

NAME = "unix"

# termios index of the c_cc array and the VMIN/VTIME slots on Linux (the unix port's termios
# module has no VMIN/VTIME names).
_CC = 6
_VMIN = 6
_VTIME = 5
_BAUD = {9600: termios.B9600, 57600: termios.B57600, 115200: termios.B115200}

_flash_root = "flash"
# Heap bytes that are not RAM on a board: the ROMFS image unix_boot.py had to read into the heap.
RESERVED = 0


def init(argv):
    """Board start-up. On unix, argv[1] is the folder that stands in for flash."""
    global _flash_root
    if len(argv) > 1:
        _flash_root = argv[1]
    try:
        os.mkdir(_flash_root)
    except OSError:
        pass


def epoch():
    return int(time.time())


class Uart:
    """An RS-485 port. `reader` is an asyncio stream; `write()` sends one whole frame.

    termios has no B19200: a pty ignores the rate anyway, and the HIL rig paces the bytes itself.
    """

    def __init__(self, port, baud):
        self.port = port
        self.baud = baud
        self._f = open(port, "r+b")
        fd = self._f.fileno()
        termios.setraw(fd)
        attr = termios.tcgetattr(fd)
        attr[_CC][_VMIN] = 0
        attr[_CC][_VTIME] = 0
        if baud in _BAUD:
            attr[4] = attr[5] = _BAUD[baud]
        termios.tcsetattr(fd, termios.TCSANOW, attr)
        self.reader = asyncio.StreamReader(self._f)
        self._writer = asyncio.StreamWriter(self._f, {})

    async def write(self, buf):
        self._writer.write(buf)
        await self._writer.drain()

    def discard_input(self):
        """Drop whatever is waiting in the receive buffer (VMIN=0: read returns at once)."""
        n = 0
        while True:
            chunk = self._f.read(64)
            if not chunk:
                return n
            n += len(chunk)

    def close(self):
        self._f.close()


async def open_connection(host, port):
    """TCP connection for the MQTT session: (reader, writer) asyncio streams."""
    return await asyncio.open_connection(host, port)


class Flash:
    """Files on the controller's flash. Writes go to a new file that is then renamed over the old
    one, so a power cut leaves either the old or the new content, never a torn file."""

    def __init__(self, root=None):
        self.root = root or _flash_root

    def path(self, name):
        return self.root + "/" + name

    def read(self, name):
        try:
            with open(self.path(name), "rb") as f:
                return f.read()
        except OSError:
            return None

    def open(self, name):
        """A file to read as a stream (json.load parses it without holding the whole text)."""
        return open(self.path(name), "rb")

    def write(self, name, data):
        tmp = self.path(name + ".new")
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, self.path(name))


class Watchdog:
    def __init__(self, timeout_ms):
        self.timeout_ms = timeout_ms
        self.fed = time.ticks_ms()

    def feed(self):
        self.fed = time.ticks_ms()


def reset_cause():
    """Why the controller started. The unix port only ever starts from power-on; the HIL rig can
    write `reset_cause` into the flash folder to stand in for a watchdog or soft reset."""
    cause = Flash().read("reset_cause")
    if cause:
        return cause.decode().strip()
    return "power_on"


def heap_used():
    """Bytes of heap in use that a board would also spend RAM on (the ROMFS image excluded)."""
    return gc.mem_alloc() - RESERVED
