"""The shop panel's pictures as a viewer gets them: rendered by the firmware under MicroPython
(`sot.panel` + `sot.hal.unix_display`), decoded here by CPython's zlib with every chunk CRC
and the Adler-32 checked (`hil_tests/rig/png.py`).

Asserted is what a clerk would notice: the header's colour for the site's mode, a frame that is
not blank, the words on it (`panel.txt`), and that the file is a valid PNG of the panel's size.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

import pytest

from hil_tests import panel_shots
from hil_tests.rig import png

RED = (196, 24, 24)
GREEN = (0, 128, 56)
AMBER = (255, 176, 0)
GREY = (96, 96, 96)
BLACK = (0, 0, 0)


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, Any]]]:
    out = tmp_path_factory.mktemp("panel")
    jobs = [j for j in panel_shots.views()
            if j["name"] in ("normal", "grid-lost", "on-backup", "backup-failed", "starting",
                             "details", "nodata", "mono-normal", "mono-backup-failed")]
    return out, panel_shots.render_views(jobs, out)


def picture(shots: tuple[Path, dict[str, Any]], name: str) -> png.Image:
    return png.read((shots[0] / f"panel-{name}.png").read_bytes())


def texts(shots: tuple[Path, dict[str, Any]], name: str) -> list[str]:
    return (shots[0] / f"panel-{name}.txt").read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize("name,colour,word", [
    ("normal", GREEN, "NÄTSTRÖM"),
    ("grid-lost", RED, "STRÖMAVBROTT"),
    ("on-backup", AMBER, "RESERVKRAFT"),
    ("backup-failed", RED, "ELVERKET"),
    ("starting", GREY, "STARTAR"),
])
def test_header_colour_and_word_per_mode(shots, name, colour, word):
    img = picture(shots, name)
    assert (img.width, img.height, img.depth, img.colour_type) == (320, 240, 4, 3)
    assert img.chunks == ["IHDR", "PLTE", "IDAT", "IEND"]
    for x, y in ((0, 0), (319, 0), (160, 2), (2, 57)):
        assert img.rgb(x, y) == colour, (name, x, y, img.rgb(x, y))
    assert texts(shots, name)[0] == word
    assert shots[1][name]["ok"] and shots[1][name]["error"] is None


def test_frame_is_not_blank_and_text_is_readable_on_the_bar(shots):
    img = picture(shots, "normal")
    colours = {c for row in img.rows for c in row}
    assert len(colours) >= 5, colours
    header = [img.rgb(x, y) for y in range(60) for x in range(320)]
    white = header.count((255, 255, 255))
    assert 1500 < white < 9000, white  # the big word and the sub-line, white on green
    body = sum(1 for y in range(64, 212) for x in range(320) if img.rgb(x, y) != BLACK)
    assert body > 3000, body


def test_texts_a_clerk_reads(shots):
    t = texts(shots, "backup-failed")
    for want in ("ELVERKET", "STARTAR INTE", "Ring tekniker",
                 "Elverket i MANUELL – vrid till AUTO", "Pumpar ur drift", "OK = kvittera",
                 "+2 till", "Kommunen: ingen kontakt", "14:30", "1/3"):
        assert want in t, (want, t)
    # The warning bar under the header is amber with black text.
    img = picture(shots, "backup-failed")
    assert img.rgb(2, 62) == AMBER
    bar = {img.rgb(x, y) for y in range(60, 80) for x in range(320)}
    assert bar == {AMBER, BLACK}, bar
    t = texts(shots, "on-backup")
    assert "Bränsle: 31 h" in t and "Kvitterat 14:10" in t, t


def test_details_and_fallback_screens(shots):
    t = texts(shots, "details")
    assert t[0] == "DETALJER" and "fel enhet" in t and "Lågt oljetryck" in t, t
    img = picture(shots, "nodata")
    assert img.rgb(0, 0) == GREY
    assert texts(shots, "nodata")[:2] == ["INGEN DATA", "No data"]
    assert not shots[1]["nodata"]["ok"]


def test_mono_panel_is_a_1_bit_png_with_an_inverted_bar_when_the_clerk_must_act(shots):
    img = picture(shots, "mono-backup-failed")
    assert (img.width, img.height, img.depth, img.colour_type) == (128, 64, 1, 0)
    assert img.chunks == ["IHDR", "IDAT", "IEND"]
    assert img.rows[0][0] == 1 and img.rows[8][127] == 1  # lit bar behind the mode word
    assert texts(shots, "mono-backup-failed")[:2] == ["EJ RESERVKRAFT", "Vrid till AUTO"]
    calm = picture(shots, "mono-normal")
    assert calm.rows[0][0] == 0
    assert sum(map(sum, calm.rows)) > 300


def test_png_is_written_with_stored_blocks_and_checks_verified(shots):
    data = (shots[0] / "panel-normal.png").read_bytes()
    idat = [body for kind, body in png.chunks(data) if kind == b"IDAT"][0]
    assert idat[:2] == b"\x78\x01" and idat[2] == 1  # zlib header, one final stored block
    raw = zlib.decompress(idat)
    assert struct.unpack(">I", idat[-4:])[0] == zlib.adler32(raw)
    # A flipped byte in the image data must be caught: by the chunk CRC...
    bad = bytearray(data)
    bad[100] ^= 0x10
    with pytest.raises(png.PngError):
        png.read(bytes(bad))
    # ...and, with the chunk's CRC made to match, by the Adler-32 of the zlib stream.
    pos = data.index(b"IDAT")
    body = bytearray(idat)
    body[1000] ^= 0x10
    forged = data[:pos + 4] + bytes(body) + struct.pack(">I", zlib.crc32(b"IDAT" + body)) + \
        data[pos + 8 + len(idat):]
    with pytest.raises(png.PngError, match="image data"):
        png.read(forged)
    assert png.read(data).width == 320
    assert not (shots[0] / "panel-normal.png.new").exists()
