# The status panel beside the till: what a shop clerk reads during a grid outage.
#
# Pure rendering: a view (dict, built by the app every second) goes in, strips of pixels go out
# through the display object (hal/unix_display.py describes its interface). One strip buffer is
# allocated at construction and reused: a frame is laid out as a small display list (rect and
# text ops), then each strip is cleared, the ops that touch it are replayed shifted by the
# strip's top row, and the strip is handed to the display.
#
# Colour 320x240 has three pages (overview, crisis message, details); a mono 128x64 display gets
# one compact page. Swedish by default, English with lang="en". Whatever the view holds, render()
# shows something: missing values read "okänt", and an unexpected error falls back to a plain
# "INGEN DATA / No data" screen.
import framebuf
from micropython import const

from sot import font, localtime

# Every user-facing string, "key|svenska|English" per line, generated from config/texts.toml
# (`sot texts panel`, docs/texts.md): one constant string that stays in flash when frozen.
from sot.paneltexts import STRINGS as _STRINGS

# Palette indices (4 bits per pixel). PALETTE below gives their colours; the panel hands it to
# the display at construction.
BLACK = const(0)
WHITE = const(1)
GREEN = const(2)
AMBER = const(3)
RED = const(4)
BLUE = const(5)
GREY = const(6)
DARK = const(7)
LIGHT = const(8)
LGREEN = const(9)
LAMBER = const(10)
LRED = const(11)

PALETTE = [
    (0, 0, 0), (255, 255, 255), (0, 128, 56), (255, 176, 0), (196, 24, 24), (24, 80, 184),
    (96, 96, 96), (40, 44, 52), (176, 180, 188), (96, 224, 128), (255, 200, 72), (255, 104, 96),
    (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0),
]

_OP_RECT = const(0)
_OP_TEXT = const(1)
_MAXTEXT = const(1200)  # characters of a crisis message looked at; a page shows fewer

# Colour layout, in pixels (320x240).
_HDR_H = const(60)
_WARN_H = const(20)
_BANNER_Y = const(170)
_FOOT_Y = const(212)


_MODES = ("normal", "grid_lost", "on_backup", "backup_failed", "degraded")
_DEVICES = ("grid", "genset", "tank", "pumps")


def _bar_colour(mode):
    if mode == "normal":
        return GREEN
    if mode in ("grid_lost", "backup_failed"):
        return RED
    if mode in ("on_backup", "degraded"):
        return AMBER
    return GREY


def _sev_colour(sev):
    return RED if sev == "severe" else AMBER if sev == "warning" else BLUE


def _ink(bg):
    # Black on amber, white on every other bar: both above 4.5:1 contrast.
    return BLACK if bg == AMBER else WHITE


def _get(d, key):
    return d.get(key) if isinstance(d, dict) else None


def _num(v):
    """A finite number, or None for anything else (bool, str, NaN, inf, None)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    if v != v or v > 1e15 or v < -1e15:
        return None
    return v


def _str(v):
    return v if isinstance(v, str) else None


def _int(v):
    return int(v + 0.5) if v >= 0 else -int(0.5 - v)


def _grouped(v, cap=9999999):
    """An integer the Swedish way, thousands apart: 8 200. Above cap: >9 999 999."""
    n = _int(v)
    pre = ""
    if n > cap:
        n = cap
        pre = ">"
    s = str(abs(n))
    out = s[-3:]
    s = s[:-3]
    while s:
        out = s[-3:] + " " + out
        s = s[:-3]
    return pre + ("-" if n < 0 else "") + out


def wrap(s, n, limit):
    """At most `limit` lines of at most n characters; words longer than a line are broken.
    When text is left over, the last line ends in an ellipsis."""
    out = []
    cut = len(s) > _MAXTEXT
    if cut:
        s = s[:_MAXTEXT]
    # One string per line, not one per word added to it, and no copy of a long word's rest per
    # line: a long message makes tens of KiB of garbage otherwise, more than a busy 64 KiB heap
    # has free.
    for para in (s.split("\n") if "\n" in s else (s,)):
        cur = []  # the words of the line being filled
        ln = 0  # its length with the spaces
        for word in para.split():
            k = 0
            size = len(word)
            while size - k > n:
                room = n - ln - 1 if cur else n
                if room < 4:
                    out.append(" ".join(cur))
                    cur = []
                    room = n
                cur.append(word[k:k + room])
                out.append(" ".join(cur))
                cur = []
                ln = 0
                k += room
            if k:
                word = word[k:]
            if not word:
                continue
            w = len(word)
            if not cur:
                cur.append(word)
                ln = w
            elif ln + 1 + w <= n:
                cur.append(word)
                ln += 1 + w
            else:
                out.append(" ".join(cur))
                cur = [word]
                ln = w
            if len(out) > limit:
                break
        if cur or not para.strip():
            out.append(" ".join(cur))
        if len(out) > limit:
            break
    while out and not out[-1]:
        out.pop()
    over = cut
    if len(out) > limit:
        over = True
        del out[limit:]
    if over and out:
        last = out[-1]
        out[-1] = (last if len(last) < n else last[:n - 1]) + "…"
    return out


class Panel:
    def __init__(self, display, lang="sv"):
        self.display = display
        self.lang = lang
        self.mono = bool(display.mono)
        w = display.width
        h = display.strip_h
        self.w = w
        self.h = display.height
        if self.mono:
            self.buf = bytearray((w + 7) // 8 * h)
        else:
            self.buf = bytearray(w * h // 2)
            display.palette = PALETTE
        self.fb = framebuf.FrameBuffer(self.buf, w, h, display.format)
        self.ops = []
        self.error = None  # repr of the last exception that forced the fallback screen
        self._li = 0

    # -- strings --------------------------------------------------------------------------

    def t(self, key, default=None):
        """The text for key in the panel's language (Swedish when English is missing); default
        (or the key itself) when the table has no such key. Searched in place: no key string
        is built, only the answer is sliced out."""
        tab = _STRINGS
        n = len(key)
        i = tab.find(key)
        while i > 0 and not (tab[i - 1] == "\n" and tab[i + n] == "|"):
            i = tab.find(key, i + 1)
        if i <= 0:
            return key if default is None else default
        i += n + 1
        j = tab.find("|", i)
        if self._li:
            k = tab.find("\n", j)
            if k > j + 1:
                return tab[j + 1:k]
        return tab[i:j]

    # -- display list ---------------------------------------------------------------------

    def _rect(self, x, y, w, h, c):
        self.ops.append((_OP_RECT, x, y, w, h, c))

    def _text(self, x, y, s, c, scale=1):
        """Add a text op, cut with an ellipsis where it would leave the screen."""
        room = (self.w - x) // (8 * scale)
        if room <= 0:
            return
        if len(s) > room:
            s = s[:room - 1] + "…"
        self.ops.append((_OP_TEXT, x, y, s, scale, c))

    def _center(self, y, s, c, scale=1):
        x = (self.w - font.width(s, scale)) // 2
        self._text(x if x > 0 else 0, y, s, c, scale)

    def _right(self, y, s, c, scale=1, margin=4):
        x = self.w - margin - font.width(s, scale)
        self._text(x if x > 0 else 0, y, s, c, scale)

    # -- frame ----------------------------------------------------------------------------

    def layout(self, view):
        """The display list of one frame (a list of tuples, replaced by the next call)."""
        self.ops.clear()
        self._li = 1 if self.lang == "en" else 0
        try:
            if not isinstance(view, dict):
                raise ValueError("view")
            if self.mono:
                self._mono(view)
            else:
                page = view.get("page")
                if page == 1:
                    self._page_message(view)
                elif page == 2:
                    self._page_details(view)
                else:
                    self._page_overview(view)
                self._footer(view, page if page in (1, 2) else 0)
        except Exception as e:  # noqa: BLE001 -- the panel must never go blank
            self.error = repr(e)
            self.ops.clear()
            self._nodata(view)
        return self.ops

    def render(self, view):
        """Draw one frame on the display. Returns False when the fallback screen had to be
        shown (self.error says why)."""
        self.error = None
        ops = self.layout(view)
        ok = self.error is None
        d = self.display
        fb = self.fb
        sh = d.strip_h
        bg = BLACK
        d.begin_frame()
        for y0 in range(0, self.h, sh):
            y1 = y0 + sh
            fb.fill(bg)
            for op in ops:
                if op[0] == _OP_RECT:
                    _, x, y, w, h, c = op
                    if y < y1 and y + h > y0:
                        fb.fill_rect(x, y - y0, w, h, c)
                else:
                    _, x, y, s, sc, c = op
                    if y < y1 and y + 8 * sc > y0:
                        font.text(fb, s, x, y - y0, c, sc)
            d.write_strip(y0, self.buf)
        d.end_frame([op[3] for op in ops if op[0] == _OP_TEXT])
        ops.clear()
        return ok

    # -- pieces shared by the pages -------------------------------------------------------

    def _nodata(self, view):
        if self.mono:
            self._rect(0, 0, self.w, 9, 1)
            self._center(1, self.t("nodata"), 0)
            self._center(16, "No data" if self._li == 0 else "Ingen data", 1)
            return
        self._rect(0, 0, self.w, _HDR_H, GREY)
        self._center(8, "INGEN DATA", WHITE, 3)
        self._center(38, "No data", WHITE, 2)
        self._center(100, "Om det består: ring tekniker", WHITE)
        self._center(116, "If it persists: call the technician", LIGHT)
        clock = localtime.hhmm(_get(view, "now"))
        if clock != "--:--":
            self._center(150, clock, LIGHT, 2)

    def _mode(self, snap):
        mode = _get(snap, "mode")
        return mode if mode in _MODES else None

    def _device_trouble(self, snap):
        """(device name, status) of the first device that is not online, and how many are not."""
        devs = _get(snap, "devices")
        first = None
        n = 0
        if isinstance(devs, dict):
            for name in self._device_order(devs):
                st = devs.get(name)
                if st in ("offline", "mismatch"):
                    n += 1
                    if first is None:
                        first = (name, st)
        return first, n

    def _device_order(self, devs):
        names = [n for n in _DEVICES if n in devs]
        rest = sorted(n for n in devs if n not in _DEVICES and isinstance(n, str))
        return names + rest

    def _sub_line(self, mode, snap):
        if mode is None:
            return self.t("starting.sub")
        if mode == "degraded":
            first, n = self._device_trouble(snap)
            if first is None:
                return self.t("degraded.sub")
            name, st = first
            who = self.t("the." + name, name)
            s = who + " " + self.t("st." + st)
            return s + " (+%d)" % (n - 1) if n > 1 else s
        return self.t(mode + ".sub")

    def _not_ready(self, snap):
        """The genset warning: None, or (colour line, mono line)."""
        gen = _get(snap, "genset")
        ready = _get(gen, "ready")
        mode = _get(gen, "mode")
        if ready is not False:
            return None
        if isinstance(mode, str) and mode != "auto":
            key = "mode." + mode
            word = self.t(key, mode.upper())
            return (self.t("gen_in") + " " + word + " – " + self.t("turn_auto"),
                    self.t("turn_auto.mono"))
        alarms = _get(gen, "alarms")
        if isinstance(alarms, list) and alarms:
            return self.t("not_ready.alarm"), self.t("not_ready.mono")
        return self.t("not_ready"), self.t("not_ready.mono")

    def _fuel_hours(self, snap):
        h = _num(_get(_get(snap, "fuel"), "hours_left"))
        if h is None:
            h = _num(_get(_get(snap, "capability"), "hours_left"))
        return h

    def _hours_text(self, h):
        if h is None:
            return self.t("unknown")
        if h < 1:
            return "<1 h" if h >= 0 else self.t("unknown")
        if h > 999:
            return ">999 h"
        return "%d h" % _int(h)

    def _pumps(self, snap, mono=False):
        """(text, colour) of the pumps line, or None when nothing is known."""
        pumps = _get(snap, "pumps")
        power = _get(_get(snap, "capability"), "power")
        avail = _num(_get(pumps, "available"))
        total = _num(_get(pumps, "total"))
        if power == "none" or (avail is not None and avail <= 0):
            return self.t("pumps_down"), LRED
        if avail is None:
            return None
        a = _int(avail)
        s = self.t("pumps") + " "
        if total is None:
            s += str(a)
        elif mono:
            s += "%d/%d" % (a, _int(total))
        else:
            s += "%d %s %d" % (a, self.t("of"), _int(total))
        return s, (LAMBER if total is not None and a < total else WHITE)

    def _shop(self, view, snap, suffix=""):
        v = view.get("shop_open")
        if not isinstance(v, bool):
            v = _get(_get(snap, "capability"), "shop_open")
        if not isinstance(v, bool):
            return None
        return (self.t("shop_open" + suffix), LGREEN) if v else \
            (self.t("shop_closed" + suffix), LIGHT)

    def _crisis(self, view):
        c = view.get("crisis")
        return c if isinstance(c, dict) else None

    def _crisis_texts(self, c):
        """(text in the panel's language, text in the other one or None)."""
        sv = _str(c.get("sv"))
        en = _str(c.get("en"))
        if self._li == 1:
            first, second = en or sv, sv if en else None
        else:
            first, second = sv or en, en if sv else None
        if not first or not first.strip():
            first = self.t("empty_message")
        if second is not None and not second.strip():
            second = None
        return first, second

    def _ack_text(self, c, now):
        acked = c.get("acked")
        if _num(acked) is not None and acked > 0:
            return self.t("acked") + " " + localtime.stamp(acked, now), True
        return self.t("ack_hint"), False

    def _more(self, view):
        n = _num(view.get("crisis_count"))
        if n is not None and n > 1:
            return "+%d %s" % (min(_int(n) - 1, 99), self.t("more"))
        return None

    def _footer(self, view, page):
        self._rect(0, _FOOT_Y, self.w, self.h - _FOOT_Y, DARK)
        if view.get("link") == "ok":
            self._text(4, _FOOT_Y + 4, self.t("link_ok"), LGREEN)
        else:
            self._text(4, _FOOT_Y + 4, self.t("link_down"), LRED)
        self._right(_FOOT_Y + 4, localtime.hhmm(view.get("now")), WHITE)
        y = _FOOT_Y + 17
        self._text(4, y, "%d/3" % (page + 1), LIGHT)
        if view.get("safe_mode") is True:
            self._rect(44, y - 2, 8 * 11 + 6, 11, AMBER)
            self._text(47, y, self.t("safe_mode"), BLACK)
        self._right(y, self.t("hint"), LIGHT)

    def _header(self, mode, snap):
        bg = _bar_colour(mode)
        ink = _ink(bg)
        self._rect(0, 0, self.w, _HDR_H, bg)
        word = self.t(mode if mode is not None else "starting")
        sub = self._sub_line(mode, snap)
        maxw = self.w - 8
        if font.width(word, 3) <= maxw:
            self._center(6, word, ink, 3)
            y = 36
        elif font.width(word, 2) <= maxw:
            self._center(10, word, ink, 2)
            y = 34
        else:
            # Two lines at scale 2, split where the longer line is shortest.
            cut = len(word) // 2
            for i in range(len(word)):
                for j in (cut - i, cut + i):
                    if 0 < j < len(word) and word[j] == " ":
                        cut = -j
                        break
                if cut < 0:
                    break
            if cut < 0:
                self._center(3, word[:-cut], ink, 2)
                self._center(21, word[1 - cut:], ink, 2)
            else:
                self._center(10, word, ink, 2)
            y = 40
        if y < 40 and font.width(sub, 2) <= maxw:
            self._center(y, sub, ink, 2)
        else:
            self._center(y + 4, sub, ink, 1)

    # -- page 0: overview -----------------------------------------------------------------

    def _page_overview(self, view):
        snap = view.get("snap")
        if not isinstance(snap, dict):
            snap = None
        mode = self._mode(snap)
        self._header(mode, snap)
        top = _HDR_H + 6
        warn = self._not_ready(snap)
        if warn is not None:
            self._rect(0, _HDR_H, self.w, _WARN_H, AMBER)
            self._center(_HDR_H + 6, warn[0], BLACK)
            top = _HDR_H + _WARN_H + 4
        c = self._crisis(view)
        bottom = (_BANNER_Y if c is not None else _FOOT_Y) - 4
        if c is not None:
            self._banner(view, c)
        if snap is None:
            return
        # Body lines, most important first: (text, colour, scale).
        items = []
        hours = self._fuel_hours(snap)
        col = WHITE
        if hours is not None:
            col = LRED if hours < 24 else LAMBER if hours < 72 else WHITE
        items.append((self.t("fuel") + ": " + self._hours_text(hours), col, 2))
        fuel = _get(snap, "fuel")
        parts = []
        pct = _num(_get(fuel, "pct"))
        if pct is not None:
            parts.append("%d %%" % _int(max(0, min(pct, 999))))
        litres = _num(_get(fuel, "litres"))
        if litres is not None:
            parts.append(_grouped(litres) + " L")
        by = _num(_get(fuel, "refuel_by"))
        if by is not None and by > 0:
            parts.append(self.t("refuel_by") + " " + localtime.stamp(int(by), view.get("now")))
        if parts:
            items.append((" · ".join(parts), LIGHT, 1))
        p = self._pumps(snap)
        if p is not None:
            items.append((p[0], p[1], 2))
        tanks = _get(snap, "tanks")
        if isinstance(tanks, dict) and tanks:
            parts = []
            for name in ("diesel", "petrol"):
                if name in tanks:
                    v = _num(tanks[name])
                    parts.append(self.t(name) + " " + (self.t("unknown") if v is None
                                                        else _grouped(v) + " L"))
            if parts:
                items.append((" · ".join(parts), LIGHT, 1))
        s = self._shop(view, snap)
        if s is not None:
            items.append((s[0], s[1], 2))
        # Spread the lines over the room there is; drop the least important that do not fit.
        need = 0
        n = 0
        for it in items:
            if need + 8 * it[2] > bottom - top:
                break
            need += 8 * it[2] + 4
            n += 1
        gap = 4 + (bottom - top - need) // (n + 1) if n else 0
        gap = min(gap, 14)
        y = top + (gap - 4 if gap > 4 else 0)
        for i in range(n):
            text, col, sc = items[i]
            self._text(8, y, text, col, sc)
            y += 8 * sc + gap

    def _banner(self, view, c):
        bg = _sev_colour(c.get("severity"))
        ink = _ink(bg)
        y = _BANNER_Y
        self._rect(0, y, self.w, _FOOT_Y - y, bg)
        first, _ = self._crisis_texts(c)
        for line in wrap(first, (self.w - 8) // 8, 2):
            self._text(4, y + 3, line, ink)
            y += 11
        ack, done = self._ack_text(c, view.get("now"))
        y = _FOOT_Y - 11
        if done:
            self._text(4, y, ack, ink)
        else:
            # The one thing to press stands out: inverted on the banner.
            self._rect(2, y - 2, font.width(ack) + 4, 11, ink)
            self._text(4, y, ack, bg)
        more = self._more(view)
        if more:
            self._right(y, more, ink)

    # -- page 1: the crisis message -------------------------------------------------------

    def _page_message(self, view):
        c = self._crisis(view)
        now = view.get("now")
        bg = _sev_colour(c.get("severity")) if c is not None else GREY
        ink = _ink(bg)
        self._rect(0, 0, self.w, 30, bg)
        self._text(8, 7, self.t("message"), ink, 2)
        if c is None:
            self._center(110, self.t("no_message"), LIGHT, 2)
            return
        sev = c.get("severity")
        if sev in ("severe", "warning", "info"):
            self._right(11, self.t(sev), ink, 1, 8)
        frm = _str(c.get("from"))
        when = localtime.stamp(c.get("ts"), now) if _num(c.get("ts")) is not None else None
        line = self.t("from") + ": " + (frm or "?")
        if when and when != "--:--":
            line += " · " + when
        self._text(8, 36, line, LIGHT)
        first, second = self._crisis_texts(c)
        limit = _FOOT_Y - 20
        y = 52
        lines = wrap(first, (self.w - 16) // 16, 6)
        if len(lines) <= 5 and not lines[-1].endswith("…"):
            for ln in lines:
                self._text(8, y, ln, WHITE, 2)
                y += 19
        else:
            lines = None  # garbage before the second wrap, not held through it
            for ln in wrap(first, (self.w - 8) // 8, (limit - y) // 10):
                self._text(4, y, ln, WHITE)
                y += 10
        if second is not None and y + 14 < limit:
            y += 6
            for ln in wrap(second, (self.w - 8) // 8, (limit - y) // 10):
                self._text(4, y, ln, LIGHT)
                y += 10
        ack, done = self._ack_text(c, now)
        y = _FOOT_Y - 14
        if done:
            self._text(8, y, ack, LGREEN)
        else:
            self._rect(4, y - 2, font.width(ack) + 8, 11, LAMBER)
            self._text(8, y, ack, BLACK)
        more = self._more(view)
        if more:
            self._right(y, more, LIGHT, 1, 8)

    # -- page 2: details for whoever is on the phone with the technician -------------------

    def _row(self, y, label, value, col=WHITE):
        if y > _FOOT_Y - 10:
            return y
        self._text(8, y, label, LIGHT)
        self._text(136, y, value, col)
        return y + 10

    def _dec(self, v, unit):
        s = "%.1f" % v
        return (s.replace(".", ",") if self._li == 0 else s) + " " + unit

    def _page_details(self, view):
        snap = view.get("snap")
        if not isinstance(snap, dict):
            snap = None
        mode = self._mode(snap)
        bg = _bar_colour(mode)
        ink = _ink(bg)
        self._rect(0, 0, self.w, 30, bg)
        self._text(8, 7, self.t("details"), ink, 2)
        self._right(11, self.t(mode if mode is not None else "starting"), ink, 1, 8)
        y = 36
        devs = _get(snap, "devices")
        if isinstance(devs, dict):
            for name in self._device_order(devs)[:6]:
                st = devs.get(name)
                key = "st." + st if isinstance(st, str) else "st.unknown"
                label = self.t("dev." + name, name)
                y = self._row(y, label, self.t(key, str(st)),
                              LGREEN if st == "online" else LRED)
        grid = _get(snap, "grid")
        v = _num(_get(grid, "v"))
        f = _num(_get(grid, "f"))
        if v is None and f is None:
            val = self.t("no_reading")
        else:
            val = " · ".join(s for s in (
                None if v is None else "%d V" % _int(max(-99999, min(v, 99999))),
                None if f is None else self._dec(max(-999, min(f, 999)), "Hz")) if s)
        y = self._row(y, self.t("grid"), val)
        gen = _get(snap, "genset")
        st = _get(gen, "state")
        gmode = _get(gen, "mode")
        val = self.t("gen." + st if isinstance(st, str) else "gen.unknown", self.t("unknown"))
        if isinstance(gmode, str):
            key = "mode." + gmode
            val += " · " + self.t(key, gmode)
        y = self._row(y, self.t("gen_state"), val,
                      LRED if st == "fault" else LAMBER if gmode not in (None, "auto") else WHITE)
        b = _num(_get(gen, "battery_v"))
        y = self._row(y, self.t("battery"), self.t("unknown") if b is None else
                      self._dec(max(-999, min(b, 999)), "V"))
        rh = _num(_get(gen, "run_hours"))
        y = self._row(y, self.t("run_hours"), self.t("unknown") if rh is None else
                      _grouped(rh) + " h")
        conf = _get(_get(snap, "fuel"), "confidence")
        key = "conf." + conf if isinstance(conf, str) else ""
        y = self._row(y, self.t("confidence"), self.t(key, self.t("unknown")) if key else
                      self.t("unknown"), LAMBER if conf == "low" else WHITE)
        safe = view.get("safe_mode") is True
        y = self._row(y, self.t("safe_mode.label"), self.t("yes") if safe else self.t("no"),
                      LAMBER if safe else WHITE)
        ex = view.get("exercise")
        if isinstance(ex, (tuple, list)):  # a controller that runs test runs: the last one
            y = self._exercise(y, ex)
        alarms = _get(gen, "alarms")
        if alarms is None and _num(_get(gen, "alarms_unknown")):
            y = self._row(y, self.t("alarms"), self.t("unknown"), LAMBER)
        if isinstance(alarms, list):
            total = len(alarms) + _int(max(0, _num(_get(gen, "alarms_more")) or 0))
            val = self.t("unknown") if not total and _num(_get(gen, "alarms_unknown")) else \
                self.t("none") if not total else str(total) if total <= 6 else \
                "%d (6 %s)" % (total, self.t("shown"))
            y = self._row(y, self.t("alarms"), val, WHITE)
            for a in alarms[:6]:
                if y > _FOOT_Y - 10:
                    break
                name = a[0] if isinstance(a, (list, tuple)) and a else a
                sev = a[1] if isinstance(a, (list, tuple)) and len(a) > 1 else None
                name = name if isinstance(name, str) else "?"
                key = "al." + name
                label = self.t(key, "")
                self._text(16, y, label or name.replace("_", " "), WHITE)
                if isinstance(sev, str):
                    word = self.t("sev." + sev, sev)
                    self._right(y, word, LAMBER if sev == "warning" else LRED, 1, 8)
                y += 10

    def _exercise(self, y, ex):
        # "12/11 godkänd": the local day of the last test run and its result (sot/exercise.py).
        ts = _int(ex[0]) if len(ex) == 2 and _num(ex[0]) is not None else None
        if ts is None or ts < 0 or ts >= 1 << 40:
            return self._row(y, self.t("exercise"), self.t("ex.none"), LAMBER)
        ok = ex[1] == "pass"
        d = localtime.local(ts)
        return self._row(y, self.t("exercise"), "%d/%d %s" % (d[2], d[1],
                         self.t("ex.pass" if ok else "ex.fail")), LGREEN if ok else LRED)

    # -- mono 128x64: one compact page, 16 characters by 8 lines --------------------------

    def _mono(self, view):
        snap = view.get("snap")
        if not isinstance(snap, dict):
            snap = None
        mode = self._mode(snap)
        warn = self._not_ready(snap)
        act = mode in ("grid_lost", "backup_failed") or warn is not None
        key = mode if mode is not None else "starting"
        word = self.t(key + ".mono", "") or self.t(key)
        lines = []  # (text, inverted)
        lines.append((word, act))
        if warn is not None:
            lines.append((warn[1], True))
        elif mode == "backup_failed":
            lines.append((self.t("backup_failed.sub"), True))
        else:
            lines.append((self._sub_line(mode, snap), False))
        if snap is not None:
            lines.append((self.t("fuel") + " " + self._hours_text(self._fuel_hours(snap)),
                          False))
            p = self._pumps(snap, True)
            if p is not None:
                lines.append((p[0], False))
            s = self._shop(view, snap, ".mono")
            if s is not None:
                lines.append((s[0], False))
        lines.append((self.t("link_ok.mono") if view.get("link") == "ok" else
                      self.t("link_down.mono"), False))
        c = self._crisis(view)
        if c is not None:
            first, _ = self._crisis_texts(c)
            lines = lines[:6]
            lines.append((wrap(first, 16, 1)[0] if first.strip() else "?", False))
            ack, done = self._ack_text(c, view.get("now"))
            if not done:
                ack = self.t("ack_hint.mono").replace(" = ", "=")
            lines.append((ack, not done))
        else:
            lines = lines[:7]
            clock = localtime.hhmm(view.get("now"))
            tail = self.t("safe_mode") if view.get("safe_mode") is True else ""
            lines.append((tail + " " * max(1, 16 - len(tail) - 5) + clock, False))
        y = 0
        for text, inv in lines:
            if inv:
                self._rect(0, y, self.w, 8, 1)
            if y == 0:
                self._center(y, text, 0 if inv else 1)
            else:
                self._text(0, y, text, 0 if inv else 1)
            y += 8
