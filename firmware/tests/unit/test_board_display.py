# The board panels (hal/board_display.py) on the unix port against the fake `machine` of
# firmware/tests/board_fakes/: what goes over SPI to an ILI9341 and over I2C to an SSD1306 when
# the panel's strip renderer draws, with the pins from the site config's board section.
import framebuf
import machine
from sot.hal import board
from sot.hal.board_display import rgb565_wire
from sot.panel import PALETTE, Panel

COLOUR = {"spi": 2, "sck": 18, "mosi": 23, "cs": 5, "dc": 21, "rst": 15, "backlight": 4}
MONO = {"i2c": 0, "scl": 22, "sda": 19, "addr": 0x3D}


def configure(display):
    machine.LOG.clear()
    machine.SPI.keep[0] = True
    board.configure({"board": {"display": display}})


def spi_commands():
    """(command, data bytes) pairs as the ILI9341 sees them: DC low = command, high = data."""
    dc = cs = 1
    out = []
    for e in machine.LOG:
        if e[0] == "pin" and e[1] == COLOUR["dc"]:
            dc = e[2]
        elif e[0] == "pin" and e[1] == COLOUR["cs"]:
            cs = e[2]
        elif e[0] == "spi":
            assert cs == 0, "SPI write with the chip not selected"
            if dc == 0:
                out.append([e[1][0], b""])
            elif isinstance(e[1], bytes):
                out[-1][1] += e[1]
            else:  # only the length was kept: the data becomes a byte count
                prev = out[-1][1]
                out[-1][1] = (prev if isinstance(prev, int) else len(prev)) + e[1]
    return out


def test_ili9341_starts_up_in_16_bit_landscape_on_the_configured_pins():
    configure(COLOUR)
    d = board.display({"display": "color320"})
    assert (d.width, d.height, d.strip_h, d.format, d.mono) == (320, 240, 16, framebuf.GS4_HMSB,
                                                                 False)
    cmds = spi_commands()
    assert [c for c, _ in cmds] == [0x01, 0x11, 0x3A, 0x36, 0x29]
    assert cmds[2][1] == b"\x55" and cmds[3][1] == b"\x28"
    assert ("pin", COLOUR["backlight"], 1) in machine.LOG
    assert ("pin", COLOUR["rst"], 0) in machine.LOG


def test_ili9341_strip_goes_to_its_rows_in_big_endian_rgb565():
    configure(COLOUR)
    d = board.display({"display": "color320"})
    d.palette = [(0, 0, 0), (255, 0, 0), (0, 255, 0)] + [(255, 255, 255)] * 13
    buf = bytearray(320 * 16 // 2)
    fb = framebuf.FrameBuffer(buf, 320, 16, framebuf.GS4_HMSB)
    fb.fill(1)  # red
    fb.pixel(1, 0, 2)  # green
    fb.pixel(319, 15, 0)  # black
    machine.LOG.clear()
    d.begin_frame()
    d.write_strip(16, buf)
    cmds = spi_commands()
    assert cmds[0] == [0x2A, b"\x00\x00\x01\x3f"]  # columns 0..319
    assert cmds[1] == [0x2B, b"\x00\x10\x00\x1f"]  # rows 16..31
    assert cmds[2][0] == 0x2C
    px = cmds[2][1]
    assert len(px) == 320 * 16 * 2
    assert px[0:2] == b"\xf8\x00"  # red, high byte first
    assert px[2:4] == b"\x07\xe0"  # green
    assert px[4:6] == b"\xf8\x00"
    assert px[-2:] == b"\x00\x00"  # black
    assert rgb565_wire(255, 255, 255) == 0xFFFF


def test_the_panel_renders_a_whole_frame_through_the_ili9341():
    configure(COLOUR)
    d = board.display({"display": "color320"})
    p = Panel(d)
    assert d.palette is PALETTE
    machine.SPI.keep[0] = False  # a frame is 150 KB: count it, do not keep it
    machine.LOG.clear()
    assert p.render({"now": 1767225600, "page": 0, "link": "ok", "snap": None})
    windows = [e for e in spi_commands() if e[0] == 0x2B]
    assert len(windows) == 15  # 240 rows in 16-row strips
    assert sum(e[1] for e in spi_commands() if e[0] == 0x2C) == 320 * 240 * 2
    assert d.frames == 1


def test_ssd1306_gets_the_frame_in_pages_over_i2c():
    configure(MONO)
    d = board.display({"display": "mono128"})
    i2c = d._i2c
    assert i2c.pins == (22, 19)
    assert (d.width, d.height, d.strip_h, d.format, d.mono) == (128, 64, 64, framebuf.MONO_HLSB,
                                                                True)
    assert i2c.out[-1] == (0x3D, b"\x00\xaf")  # display on, last of the start-up commands
    buf = bytearray(128 * 64 // 8)
    fb = framebuf.FrameBuffer(buf, 128, 64, framebuf.MONO_HLSB)
    fb.pixel(0, 0, 1)
    fb.pixel(3, 9, 1)
    fb.pixel(127, 63, 1)
    i2c.out.clear()
    d.begin_frame()
    d.write_strip(0, buf)
    d.end_frame(["x"])
    cmds = [b[1] for a, b in i2c.out[:-1]]
    assert cmds == [0x21, 0, 127, 0x22, 0, 7]  # the whole screen
    addr, data = i2c.out[-1]
    assert addr == 0x3D and data[0] == 0x40 and len(data) == 1 + 1024
    page = data[1:]
    assert page[0] == 0x01  # (0, 0): page 0, column 0, bit 0
    assert page[128 + 3] == 0x02  # (3, 9): page 1, column 3, bit 1
    assert page[1023] == 0x80  # (127, 63): page 7, column 127, bit 7
    assert sum(1 for b in page if b) == 3


def test_the_panel_renders_the_mono_page_through_the_ssd1306():
    configure(MONO)
    d = board.display({"display": "mono128"})
    d._i2c.out.clear()
    assert Panel(d).render({"now": 1767225600, "page": 0, "link": "down", "snap": None})
    addr, data = d._i2c.out[-1]
    assert len(data) == 1025 and any(data[1:])  # something is lit
