# qemu HAL: the firmware frozen into upstream MicroPython's ports/qemu, running in
# qemu-system-arm's MPS2-AN385 (Cortex-M3, a 64 KiB heap, single-precision floats). It is the
# 32-bit build that CI runs (docs/firmware-build.md); what the board lacks is stood in for by
# its serial lines, each of which qemu connects to something on the host:
#   UART0   -> the console (REPL, raw REPL; the firmware's log lines)
#   UART1   -> the RS-485 bus: qemu opens the HIL rig's pty link to the pymodbus plant
#   UART2   -> the MQTT byte stream: there is no TCP/IP stack on this board, so qemu itself
#              connects this line to the broker (`-serial tcp:...,reconnect=1`); a new session
#              is a new CONNECT on the line once qemu has reconnected
#   UART3   -> the buttons: the rig writes a name per line ("ack", "shop", "next")
#   flash   -> littlefs on a RAM region outside the heap (the SSRAM2 bank at 0x20000000), the
#              file system a board has on its flash partition; it lasts until qemu stops
#   clock   -> ticks since boot plus the epoch the rig gives at start-up (no RTC)
#   watchdog-> machine.WDT is missing on this port: feeds are counted, nothing bites
#   display -> none: frames are rendered strip by strip and dropped (the row buffer a SPI
#              display driver needs, one RGB565 row, is held so that the heap counts it)
# The CMSDK UARTs are driven through machine.mem32 by polling (the port has no machine.UART).
import asyncio
import gc
import machine
import os
import time
import uctypes
import vfs

NAME = "qemu"
RESERVED = 0
# The flash is RAM and machine.reset() ends qemu: `sot firmware deploy` soft-resets instead.
HARD_RESET_KEEPS_FLASH = False

_UARTS = (0x40004000, 0x40005000, 0x40006000, 0x40007000)
_DATA = 0
_STATE = 4  # bit 0 TX full, bit 1 RX full
_CTRL = 8  # bit 0 TX enable, bit 1 RX enable
_BAUDDIV = 16

_FLASH_AT = 0x20000000
_FLASH_BLOCK = 4096
_FLASH_BLOCKS = 64  # 256 KiB
_MOUNT = "/flash"

_epoch0 = 0
_ticks0 = 0
_flash_root = _MOUNT


class _RamBlocks:
    """A block device on a RAM region outside the heap (the board's flash partition here)."""

    def __init__(self, addr, block, count):
        self.mem = uctypes.bytearray_at(addr, block * count)
        self.block = block
        self.count = count

    def readblocks(self, n, buf, off=0):
        a = n * self.block + off
        buf[:] = self.mem[a:a + len(buf)]

    def writeblocks(self, n, buf, off=None):
        if off is None:
            off = 0
        a = n * self.block + off
        self.mem[a:a + len(buf)] = buf

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return self.count
        if op == 5:  # block size
            return self.block
        if op == 6:  # erase
            return 0
        return None


def init(argv):
    """Board start-up: mount littlefs at /flash (formatting it the first time) and take the
    epoch from argv[1] when the rig gives one."""
    global _epoch0, _ticks0
    if len(argv) > 1:
        _epoch0 = int(argv[1])
        _ticks0 = time.ticks_ms()
    mount_flash()


def configure(cfg):
    """The site config has been read. The qemu board's lines are fixed by the rig's qemu command
    line (UART1 bus, UART2 MQTT, UART3 buttons), so there are no pins to set up."""


def mount_flash(fresh=False):
    """Mount the flash file system at /flash; `fresh` formats it first."""
    try:
        vfs.umount(_MOUNT)
    except OSError:
        pass
    bdev = _RamBlocks(_FLASH_AT, _FLASH_BLOCK, _FLASH_BLOCKS)
    if not fresh:
        try:
            vfs.mount(vfs.VfsLfs2(bdev), _MOUNT)
            return
        except OSError:
            pass
    vfs.VfsLfs2.mkfs(bdev)
    vfs.mount(vfs.VfsLfs2(bdev), _MOUNT)


def epoch():
    return _epoch0 + time.ticks_diff(time.ticks_ms(), _ticks0) // 1000


class _Line:
    """One CMSDK UART, polled. read_byte() is -1 when nothing is waiting."""

    def __init__(self, index):
        self.base = _UARTS[index]
        machine.mem32[self.base + _BAUDDIV] = 16
        machine.mem32[self.base + _CTRL] = 3

    def read_byte(self):
        if machine.mem32[self.base + _STATE] & 2:
            return machine.mem32[self.base + _DATA] & 0xFF
        return -1

    def readinto(self, buf):
        n = 0
        end = len(buf)
        while n < end:
            b = self.read_byte()
            if b < 0:
                break
            buf[n] = b
            n += 1
        return n

    def write(self, buf):
        base = self.base
        mem = machine.mem32
        for b in buf:
            while mem[base + _STATE] & 1:
                pass
            mem[base + _DATA] = b
        return len(buf)


class _Reader:
    """The asyncio side of a line: readinto() waits until at least one byte is there."""

    def __init__(self, line, idle_ms):
        self.line = line
        self.idle_ms = idle_ms

    async def readinto(self, buf):
        while True:
            n = self.line.readinto(buf)
            if n:
                return n
            await asyncio.sleep_ms(self.idle_ms)


class Uart:
    """The RS-485 port on UART1. `reader` has readinto(); write() sends one whole frame."""

    def __init__(self, port, baud):
        self.port = port
        self.baud = baud
        self._line = _Line(1)
        self.reader = _Reader(self._line, 1)

    async def write(self, buf):
        self._line.write(buf)

    def discard_input(self):
        n = 0
        while self._line.read_byte() >= 0:
            n += 1
        return n

    def close(self):
        pass


class _Writer:
    def __init__(self, line):
        self.line = line
        self._buf = None

    def write(self, buf):
        self.line.write(buf)

    async def drain(self):
        pass

    def close(self):
        pass

    async def wait_closed(self):
        pass


async def open_connection(host, port, ca=None):
    """The MQTT session's (reader, writer) on UART2, which qemu connects to the broker. Bytes
    left over from a previous session are dropped first.

    TLS: this board has no network and no `tls` module. UART2 plays a modem that terminates TLS
    itself (as cellular modems with TLS offload do): the rig's stand-in for it
    (hil_tests/rig/tcpproxy.py, TlsModem) holds the same CA and verifies the broker's
    certificate; the CA is the modem's, so the board's config carries none and `ca` is None
    here. The bytes on the UART are plaintext MQTT."""
    line = _Line(2)
    while line.read_byte() >= 0:
        pass
    return _Reader(line, 5), _Writer(line)


class Flash:
    """Files on the board's littlefs. Writes go to a new file that is then renamed over the old
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

    def open(self, name, mode="rb"):
        """A file as a stream: "rb" to read, "ab" to append. The caller closes it."""
        return open(self.path(name), mode)

    def names(self, prefix):
        out = [e[0] for e in os.ilistdir(self.root) if e[0].startswith(prefix)]
        out.sort()
        return out

    def remove(self, name):
        try:
            os.remove(self.path(name))
        except OSError:
            pass

    def rename(self, old, new):
        """Replace `new` with `old` in one step (after streaming a file through open()); the
        caller has closed `old` (littlefs: an open handle's bytes are not all on flash)."""
        os.rename(self.path(old), self.path(new))

    def write(self, name, data):
        if isinstance(data, str):
            data = data.encode()
        tmp = self.path(name + ".new")
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, self.path(name))


class Watchdog:
    """No watchdog peripheral on this port: the feeds are counted only."""

    def __init__(self, timeout_ms):
        self.timeout_ms = timeout_ms
        self.feeds = 0

    def feed(self):
        self.feeds += 1


def reset_cause():
    return "power_on"


class Buttons:
    """The panel's three buttons, as names sent line by line on UART3."""

    NAMES = ("ack", "shop", "next")

    def __init__(self):
        self._line = _Line(3)
        self._buf = bytearray(8)
        self._n = 0

    def poll(self):
        out = []
        line = self._line
        while True:
            b = line.read_byte()
            if b < 0:
                return out
            if b == 10:
                name = bytes(self._buf[:self._n]).decode()
                self._n = 0
                if name in self.NAMES:
                    out.append(name)
            elif self._n < len(self._buf):
                self._buf[self._n] = b
                self._n += 1


class _Display:
    """No panel on this board: strips are counted and dropped."""

    palette = None

    def __init__(self, width, height, mono):
        import framebuf

        self.width = width
        self.height = height
        self.mono = mono
        self.strip_h = 64 if mono else 16
        self.format = framebuf.MONO_HLSB if mono else framebuf.GS4_HMSB
        self.frames = 0
        self.strips = 0
        self._row = bytearray(width * 2)

    def begin_frame(self):
        pass

    def write_strip(self, y, buf):
        self.strips += 1

    def end_frame(self, texts=()):
        self.frames += 1


def display(panel_cfg):
    if panel_cfg.get("display") == "mono128":
        return _Display(128, 64, True)
    return _Display(320, 240, False)


def heap_used():
    return gc.mem_alloc() - RESERVED
