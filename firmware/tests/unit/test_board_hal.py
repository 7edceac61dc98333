# The ESP32/RP2040 HAL (hal/board.py, hal/board_display.py, hal/esp32.py, hal/rp2.py) on the
# unix port, against the fake `machine` and `network` of firmware/tests/board_fakes/ (the
# conftest puts them first on MICROPYPATH for test_board_* modules only). Each test asserts
# what the hardware would have seen: bytes on the UART, the DE pin's transitions in order,
# commands and pixels on SPI/I2C, the watchdog's timeout and feeds.
import asyncio
import struct
import time

import machine
import network
from sot.hal import board
from sot.hal import esp32 as hal_esp32  # registers the ESP32's wired Ethernet

UART_CFG = {"id": 1, "tx": 17, "rx": 16, "de": 4}
FRAME = b"\x01\x03\x00\x00\x00\x0a\xc5\xcd"  # read 10 holding registers from unit 1


def fresh(**board_cfg):
    machine.LOG.clear()
    board.set_chip("esp32", hal_esp32._lan)
    cfg = {"uart": {"uart1": dict(UART_CFG)}}
    cfg.update(board_cfg)
    board.configure({"board": cfg})
    return cfg


def transitions(pin):
    return [e[2] for e in machine.LOG if e[0] == "pin" and e[1] == pin]


# -- RS-485 ----------------------------------------------------------------------------------

def test_frame_time_comes_from_baud_and_frame_length():
    assert board.char_bits(False, 1) == 10  # 8N1
    assert board.char_bits(True, 1) == 11  # 8E1, Modbus's default framing
    assert board.char_bits(False, 2) == 11  # 8N2
    assert board.frame_us(8, 9600, 10) == 8334  # 80 bits at 9600 baud, rounded up
    assert board.frame_us(1, 19200, 11) == 573


def test_uart_and_de_pin_come_from_the_board_config():
    fresh(uart={"uart1": {"id": 2, "tx": 26, "rx": 25, "de": 27, "parity": "even"}})
    u = board.Uart("uart1", 19200)
    made = machine.UART.made[-1]
    assert made.id == 2
    assert made.args["tx"] == 26 and made.args["rx"] == 25
    assert made.args["baudrate"] == 19200 and made.args["parity"] == 0 and made.args["stop"] == 1
    assert u.bits == 11
    assert transitions(27) == [0]  # the transceiver listens from the start
    try:
        board.Uart("uart9", 9600)
    except ValueError as e:
        assert "uart9" in str(e)
    else:
        raise AssertionError("a port the config does not name must be refused")


class TickClock:
    """time for board.py with a microsecond counter that moves 1 us per read: the DE spin's
    bound then depends on the number of polls, not on how busy this machine is."""

    def __init__(self):
        self.us = 0
        self.ticks_add = time.ticks_add
        self.ticks_diff = time.ticks_diff
        self.ticks_ms = time.ticks_ms

    def ticks_us(self):
        self.us += 1
        return self.us


async def send(u, frame):
    real = board.time
    board.time = TickClock()
    try:
        await u.write(frame)
    finally:
        board.time = real


async def test_de_drops_only_after_the_uart_reports_the_last_bit_sent():
    fresh()
    u = board.Uart("uart1", 9600)
    fake = machine.UART.made[-1]
    fake.busy_polls = 3  # the shift register is still busy for three polls
    machine.LOG.clear()

    async def other():
        machine.LOG.append(("other task ran",))

    asyncio.create_task(other())
    await send(u, FRAME)
    # DE high, the frame, then the loop is free (the task sleeps through the frame's time on
    # the wire), then tx-done, and only then DE low.
    assert machine.LOG == [("pin", 4, 1), ("uart.write", FRAME), ("other task ran",),
                           ("uart.txdone",), ("pin", 4, 0)], machine.LOG
    assert fake.txdone_calls == 4
    assert u.late == 0


async def test_de_is_dropped_even_when_txdone_never_comes():
    fresh()
    u = board.Uart("uart1", 115200)
    machine.UART.made[-1].busy_polls = 1 << 30
    machine.LOG.clear()
    await send(u, FRAME)
    assert transitions(4) == [1, 0]
    assert u.late == 1


async def test_an_active_low_driver_enable_is_inverted():
    fresh(uart={"uart1": dict(UART_CFG, de_active_low=True)})
    u = board.Uart("uart1", 9600)
    await u.write(FRAME)
    assert transitions(4) == [1, 0, 1]  # idle high, low while sending, high again


def test_discard_input_empties_the_receive_buffer():
    fresh()
    u = board.Uart("uart1", 9600)
    fake = machine.UART.made[-1]
    fake.rx = bytearray(b"\x55" * 150)
    assert u.discard_input() == 150
    assert fake.any() == 0
    assert u.discard_input() == 0
    u.close()
    assert machine.LOG[-1] == ("uart.deinit",)


# -- watchdog, reset cause, flash --------------------------------------------------------------

def test_watchdog_starts_with_the_timeout_and_feeds():
    fresh()
    w = board.Watchdog(8000)
    wdt = machine.WDT.made[-1]
    assert wdt.timeout == 8000 and wdt.feeds == 1
    w.feed()
    w.feed()
    assert wdt.feeds == 3 and w.feeds == 3


def test_reset_causes_map_to_the_firmware_names():
    for code, name in ((machine.PWRON_RESET, "power_on"), (machine.WDT_RESET, "wdt"),
                       (machine.HARD_RESET, "hard"), (machine.SOFT_RESET, "soft"),
                       (machine.DEEPSLEEP_RESET, "deepsleep"), (77, "unknown")):
        machine.CAUSE[0] = code
        assert board.reset_cause() == name, (code, name)
    machine.CAUSE[0] = machine.PWRON_RESET

    class Rp2Machine:  # the rp2 port defines only these two
        PWRON_RESET = 1
        WDT_RESET = 3

    assert board.cause_name(3, Rp2Machine) == "wdt"
    assert board.cause_name(5, Rp2Machine) == "unknown"


def test_flash_files_live_at_the_littlefs_root():
    assert board.Flash().path("config.json") == "/config.json"


# -- buttons -----------------------------------------------------------------------------------

def test_debounce_counts_a_bouncing_press_once_and_a_bouncing_release_never():
    d = board.Debounce(30, 0)
    for active, t in ((True, 100), (False, 101), (True, 103),  # press with bounce
                      (False, 300), (True, 301), (False, 303),  # release with bounce
                      (True, 400)):  # a second press
        d.edge(active, t)
    assert d.take() == 2
    assert d.take() == 0


def test_debounce_survives_the_tick_counter_wrapping():
    start = time.ticks_add(0, -10)  # 10 ms before the counter wraps
    d = board.Debounce(30, start)
    d.edge(True, time.ticks_add(start, 50))
    assert d.take() == 1


def test_buttons_on_the_configured_pins():
    fresh(buttons={"ack": 32, "shop": 33, "next": 25, "debounce_ms": 20})
    b = board.Buttons()
    for n in (32, 33, 25):
        p = machine.Pin.made[n]
        assert p.pull == machine.Pin.PULL_UP and p.handler is not None
        assert p.trigger == machine.Pin.IRQ_FALLING | machine.Pin.IRQ_RISING
    time.sleep_ms(25)  # idle for longer than the debounce time
    shop = machine.Pin.made[33]
    shop.drive(0)
    shop.drive(1)
    shop.drive(0)  # contact bounce
    shop.drive(1)
    assert b.poll() == ["shop"]
    assert b.poll() == []


# -- network and clock -------------------------------------------------------------------------

def test_wifi_is_started_from_the_config():
    fresh(network={"kind": "wifi", "ssid": "butiken", "password": "hemligt"})
    nic = network.made[-1]
    assert isinstance(nic, network.WLAN)
    assert nic.calls == [("active", True), ("connect", "butiken", "hemligt")]


def test_esp32_wired_ethernet_from_the_config():
    fresh(network={"kind": "lan", "phy": "IP101", "phy_addr": 1, "mdc": 23, "mdio": 18,
                   "power": 5})
    nic = network.made[-1]
    assert nic.args == {"mdc": 23, "mdio": 18, "power": 5, "phy_type": network.PHY_IP101,
                        "phy_addr": 1}
    assert nic.calls == [("active", True)]


def test_rp2_has_no_wired_ethernet():
    board.set_chip("rp2", None)
    try:
        board.start_network({"kind": "lan", "mdc": 1, "mdio": 2}, network)
    except ValueError as e:
        assert "rp2" in str(e)
    else:
        raise AssertionError("rp2 must refuse wired Ethernet")


async def test_open_connection_gives_up_while_the_network_is_down():
    fresh(network={"kind": "wifi", "ssid": "butiken"})
    board.NET_WAIT_MS = 30
    try:
        await board.open_connection("127.0.0.1", 1)
    except OSError as e:
        assert "network" in str(e)
    else:
        raise AssertionError("no connection without a network")
    finally:
        board.NET_WAIT_MS = 10000


def ntp_reply(unix, mode=4, stratum=2):
    r = bytearray(48)
    r[0] = 0x20 | mode  # version 4
    r[1] = stratum
    struct.pack_into(">I", r, 40, (unix + 2208988800) & 0xFFFFFFFF)
    return r


NEW_YEAR_2026 = 1767225600  # Thursday 2026-01-01 00:00 UTC


def test_ntp_replies_are_checked_before_they_are_believed():
    assert board.ntp_parse(ntp_reply(NEW_YEAR_2026)) == NEW_YEAR_2026
    assert board.ntp_parse(ntp_reply(NEW_YEAR_2026, mode=3)) is None  # not a server
    assert board.ntp_parse(ntp_reply(NEW_YEAR_2026, stratum=0)) is None  # kiss-o'-death
    assert board.ntp_parse(ntp_reply(NEW_YEAR_2026, stratum=16)) is None  # unsynchronised
    assert board.ntp_parse(ntp_reply(1000000000)) is None  # 2001: a server with a flat battery
    assert board.ntp_parse(b"\x24\x02") is None
    # After 2036-02-07 the 32-bit NTP seconds wrap (era 1).
    assert board.ntp_parse(ntp_reply(2100000000)) == 2100000000


def test_the_rtc_tuple_of_a_time():
    assert board.rtc_tuple(NEW_YEAR_2026) == (2026, 1, 1, 3, 0, 0, 0, 0)  # weekday 3 = Thursday


async def test_ntp_sync_waits_for_the_reply_without_blocking_and_sets_the_rtc():
    class Sock:
        def __init__(self):
            self.sent = []
            self.polls = 0
            self.closed = False

        def setblocking(self, flag):
            assert flag is False

        def sendto(self, data, addr):
            self.sent.append((bytes(data), addr))

        def recv(self, n):
            self.polls += 1
            if self.polls < 3:
                raise OSError(11)  # EAGAIN
            return ntp_reply(NEW_YEAR_2026)

        def close(self):
            self.closed = True

    class SockMod:
        AF_INET = 2
        SOCK_DGRAM = 2
        made = []

        @staticmethod
        def getaddrinfo(host, port):
            return [(2, 2, 0, "", (host, port))]

        @staticmethod
        def socket(af, kind):
            s = Sock()
            SockMod.made.append(s)
            return s

    machine.RTC.set_to.clear()
    assert await board.ntp_sync("ntp.example", SockMod) == NEW_YEAR_2026
    s = SockMod.made[0]
    assert s.sent[0][0][0] == 0x1B and s.sent[0][1] == ("ntp.example", 123)
    assert s.closed
    assert machine.RTC.set_to == [(2026, 1, 1, 3, 0, 0, 0, 0)]
