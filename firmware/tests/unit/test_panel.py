# The shop panel under MicroPython: what a clerk would see for each state of the site, that odd
# input never blanks the panel, and what a frame costs in heap.
import framebuf
import gc

from panel_fakes import NullDisplay, ProbeDisplay
from sot import font
from sot.panel import AMBER, BLACK, BLUE, GREEN, GREY, RED, Panel

NOW = 1782909000  # 2026-07-01 14:30 in Sweden (CEST)
HEADER = ((1, 1), (318, 58))
BELOW_HEADER = (4, 64)  # the genset warning bar, when there is one
BANNER = (1, 172)


def snap(mode="normal", **kw):
    s = {
        "mode": mode,
        "grid": {"state": "ok", "v": 231.0, "f": 50.0},
        "genset": {"state": "stopped", "mode": "auto", "ready": True, "run_hours": 1234.5,
                   "battery_v": 24.1, "alarms": []},
        "fuel": {"pct": 62.0, "litres": 248.0, "hours_left": 62.0, "refuel_by": None,
                 "confidence": "high"},
        "tanks": {"diesel": 8200, "petrol": 5400},
        "pumps": {"available": 2, "total": 2},
        "devices": {"grid": "online", "genset": "online", "tank": "online", "pumps": "online"},
        "capability": {"power": "grid", "hours_left": 62.0,
                       "fuel_for_sale": {"diesel": 8000, "petrol": 5200}},
    }
    for k, v in kw.items():
        if isinstance(v, dict) and isinstance(s.get(k), dict):
            s[k].update(v)
        else:
            s[k] = v
    return s


def view(sn=None, **kw):
    v = {"now": NOW, "page": 0, "link": "ok", "safe_mode": False, "shop_open": True,
         "snap": sn, "crisis": None, "crisis_count": 0}
    v.update(kw)
    return v


def crisis(severity="severe", acked=None, sv="Koka dricksvattnet.", en="Boil the water."):
    return {"id": "k1", "sv": sv, "en": en, "severity": severity, "from": "Kommunen",
            "ts": NOW - 600, "acked": acked}


def show(v, points=HEADER, lang="sv", mono=False):
    d = ProbeDisplay(128, 64, 64, True, points) if mono else ProbeDisplay(points=points)
    p = Panel(d, lang)
    ok = p.render(v)
    return d, p, ok


def inside(p, v):
    """Every text op of the frame lies wholly on the screen."""
    for op in p.layout(v):
        if op[0] == 1:
            _, x, y, s, sc, c = op
            assert x >= 0 and x + font.width(s, sc) <= p.w, (x, s, sc)
            assert y >= 0 and y + 8 * sc <= p.h, (y, s)


def test_header_colour_and_words_per_mode():
    cases = (("normal", GREEN, "NÄTSTRÖM", "Allt fungerar"),
             ("grid_lost", RED, "STRÖMAVBROTT", "Väntar på elverket"),
             ("on_backup", AMBER, "RESERVKRAFT", "Elverket går"),
             ("backup_failed", RED, "ELVERKET", "Ring tekniker"),  # two lines
             ("degraded", AMBER, "STÖRNING", "Kontrollera utrustningen"),
             (None, GREY, "STARTAR", "Läser av utrustningen"))
    for mode, colour, word, sub in cases:
        d, p, ok = show(view(snap(mode)))
        assert ok, p.error
        assert d.pixels[HEADER[0]] == colour and d.pixels[HEADER[1]] == colour, (mode, d.pixels)
        assert d.texts[0] == word and sub in d.texts, (mode, d.texts)


def test_no_snapshot_yet_shows_starting_not_a_blank_screen():
    d, p, ok = show(view(None, link="down"))
    assert ok and d.pixels[HEADER[0]] == GREY
    assert d.texts[:2] == ["STARTAR", "Läser av utrustningen"], d.texts
    assert "Kommunen: ingen kontakt" in d.texts
    assert d.lit(0, 60) >= 55 and d.lit(212, 240) >= 25


def test_backup_failed_word_fits_on_two_lines():
    v = view(snap("backup_failed"))
    d, p, ok = show(v)
    assert d.texts[:2] == ["ELVERKET", "STARTAR INTE"], d.texts
    inside(p, v)
    p.lang = "en"
    p.render(v)
    assert d.texts[0] == "BACKUP FAILED"


def test_english_at_run_time():
    d, p, ok = show(view(snap("on_backup")))
    assert d.texts[0] == "RESERVKRAFT"
    p.lang = "en"
    p.render(view(snap("on_backup")))
    assert d.texts[:2] == ["BACKUP POWER", "Generator running"], d.texts
    assert "Council: connected" in d.texts and "Fuel: 62 h" in d.texts
    p.lang = "sv"
    p.render(view(snap("grid_lost")))
    assert d.texts[0] == "STRÖMAVBROTT"


def test_generator_left_in_manual_is_an_amber_warning():
    v = view(snap("grid_lost", genset={"mode": "manual", "ready": False}))
    d, p, ok = show(v, HEADER + (BELOW_HEADER,))
    assert "Elverket i MANUELL – vrid till AUTO" in d.texts, d.texts
    assert d.pixels[BELOW_HEADER] == AMBER
    d, p, ok = show(view(snap("grid_lost")), HEADER + (BELOW_HEADER,))
    assert d.pixels[BELOW_HEADER] == BLACK
    assert not [t for t in d.texts if "AUTO" in t]
    d, p, ok = show(view(snap("grid_lost", genset={"ready": False,
                                                   "alarms": [["low_oil_pressure", "shutdown"]]})))
    assert "Elverket har larm – ring tekniker" in d.texts, d.texts


def test_degraded_names_the_silent_device():
    d, p, ok = show(view(snap("degraded", devices={"genset": "offline"})))
    assert d.texts[1] == "Elverket svarar inte", d.texts
    d, p, ok = show(view(snap("degraded", devices={"tank": "mismatch", "pumps": "offline"})))
    assert d.texts[1] == "Tankmätaren fel enhet (+1)", d.texts


def test_fuel_pumps_tanks_and_shop_lines():
    refuel = NOW + 2 * 3600
    s = snap("on_backup", fuel={"pct": 38.0, "litres": 152.0, "hours_left": 31.0,
                                "refuel_by": refuel})
    d, p, ok = show(view(s))
    for t in ("Bränsle: 31 h", "38 % · 152 L · tanka före 16:30", "Pumpar 2 av 2",
              "Diesel 8 200 L · Bensin 5 400 L", "Butiken ÖPPEN"):
        assert t in d.texts, (t, d.texts)
    s = snap("grid_lost", fuel={"pct": None, "litres": None, "hours_left": None},
             capability={"power": "none", "hours_left": None}, pumps={"available": 0})
    d, p, ok = show(view(s, shop_open=False))
    for t in ("Bränsle: okänt", "Pumpar ur drift", "Butiken STÄNGD"):
        assert t in d.texts, (t, d.texts)
    assert not [t for t in d.texts if "%" in t], d.texts


def test_footer_link_clock_page_and_safe_mode():
    d, p, ok = show(view(snap(), safe_mode=True))
    for t in ("Kommunen: ansluten", "14:30", "1/3", "SÄKERT LÄGE", "NÄSTA = byt sida"):
        assert t in d.texts, (t, d.texts)
    d, p, ok = show(view(snap(), link="down", page=2))
    assert "Kommunen: ingen kontakt" in d.texts and "3/3" in d.texts
    assert "SÄKERT LÄGE" not in d.texts


def test_crisis_banner_colour_ack_and_count():
    for sev, colour in (("severe", RED), ("warning", AMBER), ("info", BLUE)):
        d, p, ok = show(view(snap(), crisis=crisis(sev), crisis_count=1), (BANNER,))
        assert d.pixels[BANNER] == colour, (sev, d.pixels)
        assert "Koka dricksvattnet." in d.texts and "OK = kvittera" in d.texts, d.texts
    d, p, ok = show(view(snap(), crisis=crisis(acked=NOW - 1500), crisis_count=3), (BANNER,))
    assert "Kvitterat 14:05" in d.texts and "+2 till" in d.texts, d.texts
    assert "OK = kvittera" not in d.texts
    d, p, ok = show(view(snap()), (BANNER,))
    assert d.pixels[BANNER] == BLACK


def test_message_page_language_order_and_no_message():
    v = view(snap(), page=1, crisis=crisis(), crisis_count=1)
    d, p, ok = show(v)
    assert d.texts.index("Koka dricksvattnet.") < d.texts.index("Boil the water."), d.texts
    assert "Från: Kommunen · 14:20" in d.texts and "2/3" in d.texts, d.texts
    p.lang = "en"
    p.render(v)
    assert d.texts.index("Boil the water.") < d.texts.index("Koka dricksvattnet."), d.texts
    d, p, ok = show(view(snap(), page=1))
    assert "Inget meddelande" in d.texts and d.pixels[HEADER[0]] == GREY


def test_long_message_is_wrapped_within_the_screen():
    word = "Vattenförsörjningsavbrottsinformation" * 3  # one word wider than the screen
    text = ("Lång text om läget i byn. " * 60) + word
    for page in (0, 1):
        v = view(snap(), page=page, crisis=crisis(sv=text, en=word + " tail"), crisis_count=2)
        d, p, ok = show(v)
        assert ok, p.error
        inside(p, v)
        assert max(len(t) for t in d.texts) <= 40
    d, p, ok = show(view(snap(), page=1, crisis=crisis(sv=word, en=None)))
    parts = [t for t in d.texts if t.startswith("Vatten") or t.startswith("rs") or "ning" in t]
    assert "".join(d.texts).count("Vattenf") == 3, d.texts
    assert len(parts) >= 3


def test_details_page_devices_measurements_and_alarms():
    alarms = [["low_oil_pressure", "shutdown"], ["fail_to_start", "shutdown"],
              ["battery_low_voltage", "warning"], ["a4", "warning"], ["a5", "warning"],
              ["a6", "warning"], ["a7", "warning"], ["mystery_alarm", "trip"]]
    s = snap("backup_failed", devices={"tank": "offline", "pumps": "mismatch"},
             genset={"state": "fault", "mode": "manual", "alarms": alarms},
             fuel={"confidence": "low"})
    v = view(s, page=2, safe_mode=True)
    d, p, ok = show(v)
    for t in ("DETALJER", "Tankmätare", "svarar inte", "fel enhet", "231 V · 50,0 Hz",
              "fel · MANUELL", "24,1 V", "1 235 h", "osäker", "Lågt oljetryck", "avstängning",
              "Låg batterispänning", "8 (6 visas)", "JA"):
        assert t in d.texts, (t, d.texts)
    assert "mystery alarm" not in d.texts  # the 8th alarm is counted, not listed
    inside(p, v)


def test_details_page_shows_the_last_test_run():
    s = snap()
    d, p, ok = show(view(s, page=2, exercise=(NOW - 3 * 86400, "pass")))
    assert ok and "Provkörning" in d.texts and "28/6 godkänd" in d.texts, d.texts
    d, p, ok = show(view(s, page=2, exercise=(NOW, "fail")))
    assert "1/7 UNDERKÄND" in d.texts, d.texts
    d, p, ok = show(view(s, page=2, exercise=(NOW, "fail")), lang="en")
    assert "Test run" in d.texts and "1/7 FAILED" in d.texts, d.texts
    d, p, ok = show(view(s, page=2, exercise=()))  # runs test runs, none yet
    assert "ingen ännu" in d.texts, d.texts
    d, p, ok = show(view(s, page=2, exercise=("soon", None)))
    assert ok and "ingen ännu" in d.texts
    d, p, ok = show(view(s, page=2))  # no schedule and no command key: no such line
    assert "Provkörning" not in d.texts


def test_odd_input_never_blanks_the_panel():
    nan = float("nan")
    odd = [
        None, 42, "view", [], {}, {"snap": "x"}, {"snap": None, "page": "two"},
        view(snap(None, grid=None, genset=None, fuel=None, tanks=None, pumps=None,
                  devices=None, capability=None)),
        view({"mode": "nonsense", "grid": 5, "genset": {"alarms": [None, 5, ["x"], [1, 2]],
                                                        "ready": False, "mode": 7},
              "fuel": {"hours_left": nan, "pct": 1e30, "litres": -5, "refuel_by": "soon"},
              "tanks": {"diesel": 1e20, "petrol": None, "hvo": 3},
              "pumps": {"available": True, "total": "2"}, "devices": [1, 2],
              "capability": {"hours_left": float("inf"), "power": None}},
             crisis={"sv": 5, "severity": None, "acked": "x", "ts": -1}, crisis_count=1e9,
             page=7, now=-1, link=None, safe_mode="yes", shop_open=None),
        view(snap(fuel={"hours_left": 1e9, "litres": 123456789012}), page=2,
             crisis={"sv": "", "en": "", "acked": 1e30}, crisis_count=-3),
        view(snap(), page=1, crisis={"sv": "\n\n\t\r" * 40, "en": None}),
    ]
    for i, v in enumerate(odd):
        for page in (0, 1, 2):
            if isinstance(v, dict):
                v["page"] = page
            d, p, ok = show(v)
            assert d.frames == 1 and d.texts, (i, page)
            assert d.lit(0, 30) >= 25, (i, page, p.error)  # a header is always there
            inside(p, v)
        if i >= 7:
            assert ok, (i, p.error)  # odd values are shown as unknown, not as a crash


def test_fallback_screen_says_no_data_in_both_languages():
    d, p, ok = show("not a view")
    assert not ok and p.error
    assert d.texts[:2] == ["INGEN DATA", "No data"], d.texts
    assert d.pixels[HEADER[0]] == GREY


def test_strips_top_to_bottom_one_frame_each_render():
    d, p, ok = show(view(snap()))
    assert d.strips == list(range(0, 240, 16)) and d.frames == 1
    p.render(view(snap()))
    assert d.frames == 2


def test_swedish_letters_are_drawn_not_question_marks():
    buf = bytearray(8)
    fb = framebuf.FrameBuffer(buf, 8, 8, framebuf.MONO_HLSB)

    def glyph(ch):
        fb.fill(0)
        font.text(fb, ch, 0, 0, 1)
        return bytes(buf)

    q = glyph("?")
    assert glyph("\u4e2d") == q  # a character the panel cannot draw
    for ch in font.EXTRA:
        g = glyph(ch)
        assert g != q and g != bytes(8), ch
        if ch in "ÅÄÖåäöé":
            assert g[7] == 0 and not [b for b in g if b & 1], ch  # spacing row and column kept
    for a, b in (("Å", "A"), ("Ä", "A"), ("Ö", "O"), ("å", "a"), ("ä", "a"), ("ö", "o"),
                 ("é", "e"), ("Å", "Ä"), ("å", "ä")):
        assert glyph(a) != glyph(b), (a, b)
    assert glyph("\u2019") == glyph("'")  # typographic apostrophe drawn as '
    # a combining mark that was not composed upstream is blank, not a "?" after its letter
    assert glyph("\u0308") == bytes(8) and glyph("\u036f") == bytes(8)


def test_scaled_text_is_the_glyph_scaled():
    small = bytearray(8)
    big = bytearray(24 * 3)
    fs = framebuf.FrameBuffer(small, 8, 8, framebuf.MONO_HLSB)
    fbig = framebuf.FrameBuffer(big, 24, 24, framebuf.MONO_HLSB)
    for ch in ("Ö", "R"):
        fs.fill(0)
        fbig.fill(0)
        font.text(fs, ch, 0, 0, 1)
        font.text(fbig, ch, 0, 0, 1, 3)
        for y in range(24):
            for x in range(24):
                assert fbig.pixel(x, y) == fs.pixel(x // 3, y // 3), (ch, x, y)


def test_mono_panel_compact_lines():
    s = snap("backup_failed", genset={"mode": "manual", "ready": False},
             pumps={"available": 0, "total": 2})
    v = view(s, crisis=crisis(sv="Vatten delas ut vid brandstationen"), crisis_count=2)
    d, p, ok = show(v, ((0, 0), (127, 63), (0, 36)), mono=True)
    assert ok, p.error
    assert d.texts[:2] == ["EJ RESERVKRAFT", "Vrid till AUTO"], d.texts
    for t in ("Bränsle 62 h", "Pumpar ur drift", "Kommun: ansluten", "Vatten delas ut…",
              "OK=kvittera"):
        assert t in d.texts, (t, d.texts)
    assert max(len(t) for t in d.texts) <= 16
    assert d.pixels[(0, 0)] == 1 and d.pixels[(127, 63)] == 1  # inverted: act now
    d, p, ok = show(view(snap()), ((0, 0), (0, 36)), mono=True)
    assert d.texts[0] == "NÄTSTRÖM" and "14:30" in d.texts[-1], d.texts
    assert d.pixels[(0, 0)] == 0
    inside(p, view(snap()))


def test_heap_construction_and_one_frame():
    v = view(snap("on_backup"), crisis=crisis(), crisis_count=2)
    d = NullDisplay()
    gc.collect()
    a = gc.mem_alloc()
    p = Panel(d)
    gc.collect()
    b = gc.mem_alloc()
    p.render(v)  # the first frame grows the op list to its working size
    gc.collect()
    c = gc.mem_alloc()
    gc.disable()
    try:
        p.render(v)
        e = gc.mem_alloc()
    finally:
        gc.enable()
    gc.collect()
    f = gc.mem_alloc()
    print("HEAP panel", b - a, "retained after frame", c - b, "garbage per frame", e - c,
          "retained after second", f - c)
    assert d.strips == 30
    assert b - a < 4096, b - a  # one 2560-byte strip and a few small objects
    assert c - b < 1024, c - b
    assert f - c <= 0, f - c
    assert e - c < 16384, e - c
