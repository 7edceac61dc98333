# What the ESP32 and RP2040 HALs share (hal/esp32.py, hal/rp2.py import from here): the RS-485
# port with its driver-enable pin, flash files on the board's littlefs, the watchdog, the reset
# cause, the buttons, the network bring-up and the clock kept from NTP in the RTC. The pins come
# from the compiled site config's "board" section (docs/hardware.md), handed over by
# `configure()` right after the config is read.
#
# Every piece of logic that can be wrong without hardware (DE timing, debounce, reset-cause
# names, NTP parsing, pin lookup) is a small function or class that takes its clock and its
# peripherals as arguments, so firmware/tests/ runs it on the unix port against fake `machine`
# and `network` modules. None of it has run on a real board yet (docs/hardware.md says what is
# untested).
import asyncio
import gc
import os
import struct
import time

import machine

_flash_root = ""  # littlefs is mounted at "/"; Flash().path("x") is "/x"
RESERVED = 0  # a board maps its code from flash: no heap bytes to leave out of heap_used()
HARD_RESET_KEEPS_FLASH = True  # littlefs on the board's flash chip
_board = {}  # the "board" section of config.json (configure())
_chip = {}  # what the chip module adds: "name" and "lan" (a factory, or None)
_nic = None  # the network interface (configure())
_synced = None  # ticks_ms of the last NTP sync that set the RTC

NTP_EVERY_MS = 6 * 3600 * 1000  # the RTC drifts; resync on a (re)connect this long after the last
NTP_TIMEOUT_MS = 2000
_NTP_DELTA = 2208988800  # seconds from 1900-01-01 (NTP era 0) to 1970-01-01
_MIN_EPOCH = 1704067200  # 2024-01-01: an NTP answer before this is not believed
# time.time() counts from 2000 on ports built with that epoch; the firmware speaks 1970 seconds.
_EPOCH_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0

# machine.reset_cause() values -> the firmware's reset-cause names (docs/mqtt.md, birth "reset").
# A constant that a port lacks is left out (getattr): rp2 knows only PWRON_RESET and WDT_RESET.
_CAUSES = (("PWRON_RESET", "power_on"), ("WDT_RESET", "wdt"), ("HARD_RESET", "hard"),
           ("SOFT_RESET", "soft"), ("DEEPSLEEP_RESET", "deepsleep"))


def set_chip(name, lan=None):
    """Called once by hal/esp32.py or hal/rp2.py at import."""
    _chip["name"] = name
    _chip["lan"] = lan


def init(argv):
    """Board start-up: nothing to mount (MicroPython's boot mounts littlefs at "/")."""
    gc.collect()


def configure(cfg):
    """The site config has been read: keep its board section and start the network (the
    connection itself completes in the background; open_connection() waits for it)."""
    global _board, _nic
    _board = cfg.get("board") or {}
    _nic = None
    net = _board.get("network")
    if net:
        try:
            _nic = start_network(net)
        except Exception as e:  # noqa: BLE001 -- no network is a state, not a reason to stop
            print("E network:", repr(e))


def board_cfg():
    return _board


# -- clock -----------------------------------------------------------------------------------

def epoch():
    return time.time() + _EPOCH_OFFSET


def ntp_parse(data):
    """Unix seconds from an NTP (RFC 5905) server reply, or None when the reply is not one to
    trust: too short, not from a server (mode 4), unsynchronised (stratum 0 or >= 16) or a time
    before 2024."""
    if data is None or len(data) < 48:
        return None
    if data[0] & 7 != 4 or not 1 <= data[1] <= 15:
        return None
    secs = struct.unpack(">I", data[40:44])[0]
    if secs < 0x80000000:
        # Top bit clear: era 1 (from 2036-02-07, when the 32-bit seconds wrap), as RFC 4330 reads
        # it.
        secs += 1 << 32
    t = secs - _NTP_DELTA
    if t < _MIN_EPOCH:
        return None
    return t


def rtc_tuple(t):
    """machine.RTC().datetime() tuple for unix seconds t: (year, month, day, weekday, hours,
    minutes, seconds, subseconds), in the port's own epoch."""
    tm = time.gmtime(t - _EPOCH_OFFSET)  # (year, month, mday, hour, minute, second, weekday, ...)
    return (tm[0], tm[1], tm[2], tm[6], tm[3], tm[4], tm[5], 0)


async def ntp_sync(host, sock_mod=None, rtc=None, timeout_ms=NTP_TIMEOUT_MS):
    """Ask `host` for the time over UDP without blocking the loop, and set the RTC. Returns the
    unix seconds set, or None (no answer in time, or an answer not to trust)."""
    if sock_mod is None:
        import socket as sock_mod
    addr = sock_mod.getaddrinfo(host, 123)[0][-1]
    s = sock_mod.socket(sock_mod.AF_INET, sock_mod.SOCK_DGRAM)
    data = None
    try:
        s.setblocking(False)
        q = bytearray(48)
        q[0] = 0x1B  # LI 0, version 3, mode 3 (client)
        s.sendto(q, addr)
        deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
        while data is None:
            try:
                data = s.recv(48)
            except OSError:  # EAGAIN: nothing yet
                if time.ticks_diff(deadline, time.ticks_ms()) <= 0:
                    return None
                await asyncio.sleep_ms(20)
    finally:
        s.close()
    t = ntp_parse(data)
    if t is not None:
        global _synced
        (rtc or machine.RTC()).datetime(rtc_tuple(t))
        _synced = time.ticks_ms()
    return t


# -- network ---------------------------------------------------------------------------------

def start_network(net, network_mod=None):
    """Bring up the interface the site config names: Wi-Fi (every board with a radio) or wired
    Ethernet (ESP32 with an RMII PHY). Returns the interface; connecting goes on in the
    background."""
    if network_mod is None:
        import network as network_mod
    kind = net.get("kind", "wifi")
    if kind == "lan":
        lan = _chip.get("lan")
        if lan is None:
            raise ValueError("no wired Ethernet on " + str(_chip.get("name")))
        nic = lan(net, network_mod)
        nic.active(True)
        return nic
    nic = network_mod.WLAN(network_mod.STA_IF)
    nic.active(True)
    nic.connect(net["ssid"], net.get("password") or "")
    return nic


NET_WAIT_MS = 10000  # open_connection() waits this long for the link before it gives up


async def open_connection(host, port, ca=None):
    """TCP connection for the MQTT session: waits (without blocking) for the network, sets the
    clock from NTP when it has not been set for NTP_EVERY_MS (certificate validity needs the
    time), then connects; with `ca` (DER) over TLS verified against that CA, as hal/unix.py."""
    nic = _nic
    if nic is not None:
        deadline = time.ticks_add(time.ticks_ms(), NET_WAIT_MS)
        while not nic.isconnected():
            if time.ticks_diff(deadline, time.ticks_ms()) <= 0:
                raise OSError("network not connected")
            await asyncio.sleep_ms(100)
        last = _synced
        if last is None or time.ticks_diff(time.ticks_ms(), last) > NTP_EVERY_MS:
            try:
                t = await ntp_sync(_board.get("ntp") or "pool.ntp.org")
                print("I ntp:", "clock set" if t else "no trusted answer", t)
            except OSError as e:
                print("W ntp:", repr(e))
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


# -- RS-485 ----------------------------------------------------------------------------------

def char_bits(parity, stop):
    """Bits on the wire per character: start, 8 data, parity if any, stop."""
    return 1 + 8 + (1 if parity else 0) + stop


def frame_us(nbytes, baud, bits):
    """Microseconds for nbytes to leave the UART, rounded up."""
    return (nbytes * bits * 1000000 + baud - 1) // baud


_PARITY = {"none": None, "even": 0, "odd": 1}  # machine.UART's parity argument


class Uart:
    """An RS-485 port: a machine.UART whose transceiver's driver-enable pin (DE, tied to /RE) is
    raised for a frame and dropped only after the frame's last stop bit has left the UART, so
    the frame is neither cut short nor the slave's reply (which may start 3.5 characters later)
    talked over. `reader` is an asyncio stream; `write()` sends one whole frame.

    DE timing: the frame's time on the wire is computed from baud and frame length; the task
    sleeps (whole milliseconds) for all of it but SPIN_US, then polls the UART's tx-done flag
    (the shift register is empty) in a short bounded spin: what is left of the frame plus two
    characters and 1 ms at most. A port without txdone() spins to the computed end plus one
    character instead."""

    SPIN_US = 2000

    def __init__(self, port, baud):
        self.port = port
        self.baud = baud
        u = (_board.get("uart") or {}).get(port)
        if u is None:
            raise ValueError("no [board.uart." + str(port) + "] in the site config")
        parity = u.get("parity", "none")
        stop = u.get("stop", 1)
        self.bits = char_bits(_PARITY.get(parity) is not None, stop)
        self._on = 0 if u.get("de_active_low") else 1
        uart = machine.UART(u["id"], baudrate=baud, bits=8, parity=_PARITY.get(parity),
                            stop=stop, tx=machine.Pin(u["tx"]), rx=machine.Pin(u["rx"]),
                            timeout=0, timeout_char=0, rxbuf=512)
        de = machine.Pin(u["de"], machine.Pin.OUT)
        self._uart = uart
        self._de = de
        de.value(1 - self._on)  # listening
        self._scratch = bytearray(64)
        self._has_txdone = hasattr(uart, "txdone")
        self.late = 0  # frames whose tx-done did not come within the bound (DE dropped anyway)
        self.reader = asyncio.StreamReader(uart)

    async def write(self, buf):
        de = self._de
        de.value(self._on)
        t0 = time.ticks_us()
        self._uart.write(buf)
        wire = frame_us(len(buf), self.baud, self.bits)
        char = frame_us(1, self.baud, self.bits)
        nap = wire - self.SPIN_US
        if nap >= 1000:
            await asyncio.sleep_ms(nap // 1000)
        if self._has_txdone:
            # Bounded from here, not from t0: after a late wake-up the frame is long gone and
            # txdone() says so at once; a stuck flag costs at most what is left plus 2 characters
            # and 1 ms.
            now = time.ticks_us()
            left = wire - time.ticks_diff(now, t0)
            end = time.ticks_add(now, (left if left > 0 else 0) + 2 * char + 1000)
            while not self._uart.txdone():
                if time.ticks_diff(end, time.ticks_us()) <= 0:
                    self.late += 1
                    break
        else:
            end = time.ticks_add(t0, wire + char)
            while time.ticks_diff(end, time.ticks_us()) > 0:
                pass
        de.value(1 - self._on)

    def discard_input(self):
        """Drop whatever is waiting in the receive buffer."""
        n = 0
        u = self._uart
        while u.any():
            got = u.readinto(self._scratch)
            if not got:
                break
            n += got
        return n

    def close(self):
        self._de.value(1 - self._on)
        self._uart.deinit()


# -- flash -----------------------------------------------------------------------------------

class Flash:
    """Files on the board's littlefs. Writes go to a new file that is renamed over the old one
    (atomic on littlefs), so a power cut leaves the old or the new content. Every file is closed
    by the code that opened it: a handle left to the garbage collector can corrupt littlefs."""

    def __init__(self, root=None):
        self.root = _flash_root if root is None else root

    def path(self, name):
        return self.root + "/" + name

    def read(self, name):
        try:
            with open(self.path(name), "rb") as f:
                return f.read()
        except OSError:
            return None

    def open(self, name, mode="rb"):
        """A file as a stream ("rb" or "ab"); the caller closes it."""
        return open(self.path(name), mode)

    def names(self, prefix):
        out = [e[0] for e in os.ilistdir(self.root or "/") if e[0].startswith(prefix)]
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


# -- watchdog and reset cause ----------------------------------------------------------------

class Watchdog:
    """machine.WDT: once started it cannot be stopped; the board resets `timeout_ms` after the
    last feed (the RP2040's limit is 8388 ms)."""

    def __init__(self, timeout_ms):
        self.timeout_ms = timeout_ms
        self.feeds = 0
        self._wdt = machine.WDT(timeout=timeout_ms)
        self.feed()

    def feed(self):
        self.feeds += 1
        self._wdt.feed()


def cause_name(code, mod=None):
    """The firmware's name for a machine.reset_cause() value."""
    mod = mod or machine
    for const_name, name in _CAUSES:
        v = getattr(mod, const_name, None)
        if v is not None and v == code:
            return name
    return "unknown"


def reset_cause():
    return cause_name(machine.reset_cause())


# -- buttons ---------------------------------------------------------------------------------

class Debounce:
    """One push button from its edges. A press counts when the input becomes active after it had
    been inactive for at least `ms`: contact bounce on pressing (active, inactive, active within
    a few ms) counts once, and bounce on release (inactive, active, inactive) not at all."""

    def __init__(self, ms, now):
        self.ms = ms
        self.idle_since = now  # ticks_ms since when the input has been inactive; None = active
        self.presses = 0

    def edge(self, active, now):
        if active:
            since = self.idle_since
            if since is not None and time.ticks_diff(now, since) >= self.ms:
                self.presses += 1
            self.idle_since = None
        elif self.idle_since is None:
            self.idle_since = now

    def take(self):
        n = self.presses
        self.presses = 0
        return n


class Buttons:
    """The panel's three buttons (ack, shop, next) on GPIO inputs with pull-ups, pressed = low.
    Edges arrive by pin interrupt (a soft IRQ: scheduled, may allocate); `poll()` returns the
    presses since the last call, in a fixed order."""

    NAMES = ("ack", "shop", "next")

    def __init__(self):
        cfg = _board.get("buttons") or {}
        self._deb = {}
        self._pins = {}
        ms = cfg.get("debounce_ms", 30)
        now = time.ticks_ms()
        for name in self.NAMES:
            if name not in cfg:
                continue
            pin = machine.Pin(cfg[name], machine.Pin.IN, machine.Pin.PULL_UP)
            d = Debounce(ms, now)
            if pin.value() == 0:
                d.idle_since = None  # held at boot: not a press until released first
            self._deb[name] = d
            self._pins[name] = pin
            pin.irq(self._handler(pin, d), machine.Pin.IRQ_FALLING | machine.Pin.IRQ_RISING)

    def _handler(self, pin, d):
        def h(_p):
            # The level now, not the edge's direction: a spike already over reads inactive.
            d.edge(pin.value() == 0, time.ticks_ms())

        return h

    def poll(self):
        out = []
        for name in self.NAMES:
            d = self._deb.get(name)
            if d is not None:
                for _ in range(d.take()):
                    out.append(name)
        return out


# -- display ---------------------------------------------------------------------------------

def display(panel_cfg):
    """The panel's display driver for the site's `[panel] display`, on the pins of
    `[board.display]` (hal/board_display.py)."""
    from sot.hal import board_display

    d = _board.get("display") or {}
    if panel_cfg.get("display") == "mono128":
        i2c = machine.I2C(d.get("i2c", 0), scl=machine.Pin(d["scl"]), sda=machine.Pin(d["sda"]),
                          freq=d.get("freq", 400000))
        return board_display.Ssd1306(i2c, d.get("addr", 0x3C))
    spi = machine.SPI(d.get("spi", 1), baudrate=d.get("baud", 20000000), sck=machine.Pin(d["sck"]),
                      mosi=machine.Pin(d["mosi"]))
    rst = d.get("rst")
    bl = d.get("backlight")
    return board_display.Ili9341(
        spi, machine.Pin(d["cs"], machine.Pin.OUT), machine.Pin(d["dc"], machine.Pin.OUT),
        None if rst is None else machine.Pin(rst, machine.Pin.OUT),
        None if bl is None else machine.Pin(bl, machine.Pin.OUT),
        d.get("madctl", board_display.MADCTL_LANDSCAPE))


def heap_used():
    return gc.mem_alloc() - RESERVED
