# Unix HAL: the whole firmware runs on a PC under the MicroPython unix port.
#   UART    -> a pty (or a real tty) in raw mode; the HIL rig puts a pymodbus plant on the other end
#   flash   -> a folder
#   network -> the host's TCP stack
#   clock   -> the host clock (UTC epoch seconds); the monotonic clock (ticks, asyncio sleeps)
#              runs SOT_TIME_SCALE times faster when the rig sets it (hal/unix_clock.py)
#   watchdog-> each feed rewrites `wdt` in the flash folder; the HIL rig plays the watchdog
#              peripheral (hil_tests/rig/dut.py): no feed within the timeout and it kills the
#              process and starts it again with the reset cause "wdt"
#   display -> panel.png (+ panel.txt, the texts drawn) in the flash folder (unix_display.py)
#   buttons -> lines appended to `buttons` in the flash folder ("ack", "shop", "next")
import os

# SOT_TIME_SCALE=k (set by the HIL rig for a few scenarios): the firmware's monotonic clock and
# its asyncio sleeps run k times faster (hal/unix_clock.py). Before `asyncio` is imported.
_SCALE = float(os.getenv("SOT_TIME_SCALE") or 1)
if _SCALE != 1:
    from sot.hal import unix_clock

    unix_clock.install(_SCALE)

import asyncio  # noqa: E402 -- after the clock (above)
import gc  # noqa: E402
import termios  # noqa: E402
import time  # noqa: E402

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
# What `sot firmware deploy` asks (gateway/tooling/deploy.py): may machine.reset() reset the board?
HARD_RESET_KEEPS_FLASH = True


def init(argv):
    """Board start-up. On unix, argv[1] is the folder that stands in for flash."""
    global _flash_root
    if len(argv) > 1:
        _flash_root = argv[1]
    try:
        os.mkdir(_flash_root)
    except OSError:
        pass


def configure(cfg):
    """The site config has been read. A board takes its pins and network from cfg["board"]
    (hal/board.py); on unix the buses' ports are already pty paths and the network is the
    host's, so there is nothing to set up."""


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


async def open_connection(host, port, ca=None):
    """TCP connection for the MQTT session: (reader, writer) asyncio streams. With `ca` (the CA
    certificate, DER) the connection is TLS and the broker's certificate must be signed by that
    CA and name `host`; the handshake runs on the first write/read, and a failed one raises
    OSError there (docs/mqtt.md, "TLS")."""
    if ca is None:
        return await asyncio.open_connection(host, port)
    return await asyncio.open_connection(host, port, ssl=_tls_context(ca), server_hostname=host)


_tls = None  # (ca, SSLContext): built once per CA; loading the CA costs heap


def _tls_context(ca):
    """A TLS client context that verifies the server's certificate against `ca` (DER bytes)
    with MicroPython's `tls` module (mbedTLS on every board that has a network)."""
    global _tls
    if _tls is None or _tls[0] is not ca:
        import tls

        ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
        # (the boards' stubs omit verify_mode; the module has it, as MicroPython's docs say)
        ctx.verify_mode = tls.CERT_REQUIRED  # pyright: ignore[reportAttributeAccessIssue]
        ctx.load_verify_locations(ca)  # DER; the keyword form is not accepted
        _tls = (ca, ctx)
    return _tls[1]


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

    def open(self, name, mode="rb"):
        """A file as a stream: "rb" to read (json.load parses it without holding the whole
        text), "ab" to append (the journal's segments; every record carries its own CRC)."""
        return open(self.path(name), mode)

    def names(self, prefix):
        """Names of the files that start with `prefix`, sorted."""
        out = [e[0] for e in os.ilistdir(self.root) if e[0].startswith(prefix)]
        out.sort()
        return out

    def remove(self, name):
        try:
            os.remove(self.path(name))
        except OSError:
            pass

    def rename(self, old, new):
        """Replace `new` with `old` in one step (after streaming a file through open())."""
        os.rename(self.path(old), self.path(new))

    def write(self, name, data):
        if isinstance(data, str):
            data = data.encode()
        tmp = self.path(name + ".new")
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, self.path(name))


class Watchdog:
    """The hardware watchdog. Started once; a board resets `timeout_ms` after the last feed."""

    def __init__(self, timeout_ms):
        self.timeout_ms = timeout_ms
        self._path = Flash().path("wdt")
        self.feeds = 0
        self.feed()

    def feed(self):
        self.feeds += 1
        # "<timeout> <feeds>": the rig reads the timeout from the file and watches it change.
        with open(self._path, "w") as f:
            # the timeout in host milliseconds: the rig's watchdog runs on the host's clock
            f.write("%d %d" % (int(self.timeout_ms / _SCALE), self.feeds))


def reset_cause():
    """Why the controller started: "power_on", or what the HIL rig recorded in `reset_cause`
    before it restarted the process ("wdt" after a missed watchdog feed). Reading clears it, as
    the reset reason register of a board reflects only the latest reset."""
    fl = Flash()
    cause = fl.read("reset_cause")
    if cause:
        fl.write("reset_cause", b"")
        cause = cause.decode().strip()
    return cause or "power_on"


class Buttons:
    """The panel's three buttons. On unix a test or a person appends a name per line to the
    `buttons` file in the flash folder; `poll()` returns the presses since the last call."""

    NAMES = ("ack", "shop", "next")

    def __init__(self):
        self._path = Flash().path("buttons")
        self._pos = 0
        try:
            self._pos = os.stat(self._path)[6]  # presses from before this boot do not count
        except OSError:
            pass

    def poll(self):
        try:
            size = os.stat(self._path)[6]
        except OSError:
            return ()
        if size <= self._pos:
            self._pos = min(self._pos, size)
            return ()
        with open(self._path, "rb") as f:
            f.seek(self._pos)
            data = f.read(min(size - self._pos, 256))
        self._pos += len(data)
        out = []
        for line in data.split(b"\n"):
            name = line.strip().decode()
            if name in self.NAMES:
                out.append(name)
        return out


def display(panel_cfg):
    """The panel's display driver for the site's `[panel] display`."""
    from sot.hal import unix_display

    prefix = Flash().path("panel")
    if panel_cfg.get("display") == "mono128":
        return unix_display.MonoDisplay(prefix, 128, 64)
    return unix_display.ColorDisplay(prefix, 320, 240)


def heap_used():
    """Bytes of heap in use that a board would also spend RAM on (the ROMFS image excluded)."""
    return gc.mem_alloc() - RESERVED
