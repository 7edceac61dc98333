# Crisis messages from the municipality, kept for the panel.
#
# The gateway publishes each message retained on sot/v1/<site>/crisis/<id>:
#   {"id", "sv", "en"?, "severity": "info"|"warning"|"severe", "from", "ts", "expires"?}
# and withdraws it with an empty payload. Staff acknowledge the one on the panel; the ack goes
# back on .../crisis/<id>/ack. docs/mqtt.md, "Crisis messages: sizes and refusals".
#
# Sized for the worst the gateway accepts: at most MAX_MESSAGES held per site (the gateway
# refuses a fifth) and each at most the contract's packet limit (2048 bytes of PUBLISH, so the
# texts of one message are under 2 KiB of UTF-8). Four of those would be 8 KiB of strings on a
# 64 KiB heap, so the texts are not kept in RAM: each message's texts live in their own file
# on flash (`cmsg.<id>`: a line with the character counts, then the Swedish text, the English
# one and the sender), streamed there from the MQTT client's receive buffer through a 128-byte
# buffer (sot/crisistext.py: no str of a whole text is built) and renamed over the old one. RAM
# holds a small index (id, severity, ts, expires, acknowledged), also on flash (`crisis.idx`,
# write-then-rename). The panel reads the texts of the one message it shows (`texts()`).
#
# Text is untrusted (docs/mqtt.md): a payload that is not UTF-8 JSON, lacks
# Swedish text, or has more than MAX_TEXT characters in a language after cleaning is refused and
# the last valid message stays; control characters become spaces, runs of spaces collapse, and a
# combining mark is composed with the letter before it (a + U+0308 = ä) or dropped, so the
# panel's font never sees one. Every refusal - including "full" and running out of memory or
# flash - is counted, and reported through `on_refuse(id, ts, why)` (the session journals a
# `crisis_refused` event that the dashboard shows; at most REPORTS a minute, each (id, why)
# once). A withdrawal frees memory and always succeeds. The panel draws text, never markup.
import gc
import json
import sys

MAX_MESSAGES = 4  # gateway/crisis.py MAX_MESSAGES: the most a site holds at once
MAX_TEXT = 280  # characters per language, about what fits on the panel's message page
MAX_FROM = 40
MAX_ID = 32
REPORTS = 4  # refusals reported (logged, journalled for the gateway) per minute
SEVERITY = ("info", "warning", "severe")
INDEX = "crisis.idx"
PREFIX = "cmsg."  # + id: one message's texts
NO_MEMORY_SV = "Meddelande från kommunen – kan inte visas just nu (minnet)"
NO_MEMORY_EN = "Message from the municipality – cannot be shown now (memory)"


def clean(text, limit):
    """The text as the panel gets it (sot/crisistext.py); None if unusable."""
    import sot.crisistext as ct

    try:
        return ct.clean(text, limit)
    finally:
        ct = None
        _forget("sot.crisistext")


def _forget(name):
    # Drop a module imported for one job, so that its functions leave the heap with it.
    sys.modules.pop(name, None)
    pkg, _, attr = name.rpartition(".")
    parent = sys.modules.get(pkg)
    if parent is not None and attr in parent.__dict__:
        delattr(parent, attr)


def _id_ok(mid):
    if not mid or len(mid) > MAX_ID:
        return False
    for ch in mid:
        if not ("a" <= ch <= "z" or "0" <= ch <= "9" or ch in "-_"):
            return False
    return True


class Crisis:
    def __init__(self, flash, log=print, on_refuse=None):
        self.flash = flash
        self.log = log
        self.on_refuse = on_refuse  # (id, ts or None, why): the session reports it
        self.msgs = {}  # id -> {"id", "severity", "ts", "expires", "acked"}: no texts
        self.rejected = 0
        self._told = []  # (id, why) of the refusals reported lately: each is told once
        self._shown = None  # (id, ts, texts dict) of the message the panel last read
        self._ts = None  # ts of the message being received, for a refusal
        self._now = None
        self._window = None  # when the current minute of refusal reports began
        self._reports = 0
        raw = flash.read(INDEX)
        if raw:
            try:
                for mid, sev, ts, exp, acked in json.loads(raw):
                    self.msgs[mid] = {"id": mid, "severity": sev, "ts": ts, "expires": exp,
                                      "acked": acked}
            except (ValueError, TypeError):
                self.log("W crisis: crisis.idx unreadable, starting empty")
        self._tidy()
        self.log("I crisis:", len(self.msgs), "messages kept on flash")

    # --- flash ---------------------------------------------------------------------------------

    def _tidy(self):
        # Text files without an index entry (a power cut between the two writes, a withdrawal
        # cut short) and the old single-file store are removed; the gateway's retained copies
        # bring back what is still out.
        self.flash.remove("crisis.json")
        for name in self.flash.names(PREFIX):
            if name[len(PREFIX):] not in self.msgs:
                self.flash.remove(name)

    def _save_index(self):
        out = []
        for m in self.msgs.values():
            out.append((m["id"], m["severity"], m["ts"], m["expires"], m["acked"]))
        self.flash.write(INDEX, json.dumps(out))  # at most 4 short rows: a few hundred bytes

    def texts(self, m):
        """{"sv", "en", "from"} of message m, read from flash; the panel's one message is kept.
        Read in text mode by character count: each text is one allocation, no bytes copy."""
        sh = self._shown
        if sh is not None and sh[0] == m["id"] and sh[1] == m["ts"]:
            return sh[2]
        self._shown = None
        gc.collect()
        try:
            f = self.flash.open(PREFIX + m["id"], "r")
            try:
                n = f.readline().split()
                sv = f.read(int(n[0]))
                en = f.read(int(n[1])) if int(n[1]) else None
                t = {"sv": sv, "en": en, "from": f.read(int(n[2]))}
            finally:
                f.close()
        except MemoryError:
            self.log("E crisis: no memory to show", m["id"])
            return {"sv": NO_MEMORY_SV, "en": NO_MEMORY_EN, "from": ""}
        except (OSError, ValueError, IndexError, UnicodeError):
            self.log("W crisis: texts of", m["id"], "unreadable")
            return {"sv": None, "en": None, "from": ""}
        self._shown = (m["id"], m["ts"], t)
        return t

    def view(self, m):
        """Message m with its texts, for the panel."""
        if m is None:
            self._shown = None
            return None
        out = dict(m)
        out.update(self.texts(m))
        return out

    # --- the gateway's messages ----------------------------------------------------------------

    def _reject(self, mid, ts, why):
        self.rejected += 1
        key = (mid, why)
        if key in self._told:
            return False  # told once already (the broker's retained copy, a flood of the same)
        self._told.append(key)
        if len(self._told) > 8:
            self._told.pop(0)
        # At most REPORTS refusals a minute reach the journal: a flood costs only itself.
        now = self._now
        if now is not None:
            if self._window is None or now - self._window >= 60:
                self._window = now
                self._reports = 0
            if self._reports >= REPORTS:
                return False
            self._reports += 1
        self.log("W crisis: message", mid, "refused:", why)
        if self.on_refuse is not None and _id_ok(mid):
            self.on_refuse(mid, ts, why)
        return False

    def receive(self, mid, payload, now=None):
        """A message (or its withdrawal) from the gateway. True when the shown set changed."""
        if not _id_ok(mid):
            return self._reject(mid[:MAX_ID], None, "bad_id")
        if not payload:
            return self.withdraw(mid)
        self._ts = None
        self._now = now
        try:
            return self._receive(mid, payload, now)
        except MemoryError:
            payload = None
            gc.collect()
            return self._reject(mid, self._ts, "memory")
        except OSError as e:
            return self._reject(mid, self._ts, "flash:%s" % (e.args[0] if e.args else "?"))

    def _receive(self, mid, p, now):
        import sot.crisistext as ct

        try:
            return self._take(ct, mid, p, now)
        finally:
            ct = None
            _forget("sot.crisistext")

    def _take(self, ct, mid, p, now):
        # The payload is scanned where it lies and each text streamed from it to flash through
        # a 128-byte buffer: no str of a text is ever built (docs/mqtt.md: up to 2 KiB each).
        try:
            f = ct.scan(p)
        except ValueError as e:
            why = "not_object" if e.args and e.args[0] == "not_object" else "not_json"
            return self._reject(mid, None, why)
        ts = f.get(b"ts")
        exp = f.get(b"expires", ("n", None, None))
        if ts is None or ts[0] != "i" or exp[0] not in ("i", "n"):
            return self._reject(mid, None, "ts")
        ts = ts[1]
        self._ts = ts
        exp = exp[1]
        sev = f.get(b"severity")
        sev = str(p[sev[1]:sev[2]], "utf-8") if sev is not None and sev[0] == "s" else None
        if sev not in SEVERITY:
            return self._reject(mid, ts, "severity")
        old = self.msgs.get(mid)
        if old is not None and old["ts"] == ts:
            return False  # the retained copy again after a reconnect: keep its acknowledgement
        if old is None and len(self.msgs) >= MAX_MESSAGES and not self._make_room(now):
            return self._reject(mid, ts, "full")
        sv = f.get(b"sv")
        en = f.get(b"en", ("n", None, None))
        src = f.get(b"from", ("n", None, None))
        if sv is None or sv[0] != "s":
            return self._reject(mid, ts, "sv")
        if en[0] not in ("s", "n"):
            return self._reject(mid, ts, "en")
        name = PREFIX + mid
        out = self.flash.open(name + ".new", "wb")
        why = None
        chars = []
        try:
            out.write(b"000 000 00\n")  # the character counts, filled in below
            c = ct._Out(out)
            for key, part, limit in (("sv", sv, MAX_TEXT), ("en", en, MAX_TEXT),
                                     ("from", src, MAX_FROM)):
                c.start(limit)
                if part[0] == "s":
                    try:
                        ct._text(p, part[1], part[2], c)
                    except ValueError:
                        why = key
                        break
                if key == "sv" and not c.chars:
                    why = "sv"  # nothing left once cleaned
                    break
                chars.append(c.chars)
            c.flush(c.n)
            if why is None:
                out.seek(0)
                out.write(b"%03d %03d %02d" % tuple(chars))
        finally:
            out.close()
        if why is not None:
            self.flash.remove(name + ".new")
            return self._reject(mid, ts, why)
        self.flash.rename(name + ".new", name)
        if self._shown is not None and self._shown[0] == mid:
            self._shown = None
        self.msgs[mid] = {"id": mid, "severity": sev, "ts": ts, "expires": exp, "acked": None}
        self._save_index()
        return True

    def _make_room(self, now):
        """Full: an expired message gives way (its text is on the gateway's history)."""
        if now is None:
            return False
        for k, v in self.msgs.items():
            if v["expires"] is not None and v["expires"] <= now:
                self.withdraw(k)
                return True
        return False

    def withdraw(self, mid):
        """Forget a message. Frees memory and flash; never fails for lack of either."""
        if mid not in self.msgs:
            return False
        del self.msgs[mid]
        if self._shown is not None and self._shown[0] == mid:
            self._shown = None
        for _ in range(2):
            try:
                self._save_index()
                break
            except MemoryError:
                gc.collect()
        self.flash.remove(PREFIX + mid)
        return True

    # --- the panel -----------------------------------------------------------------------------

    def active(self, now):
        """Unexpired messages, the one to show first: not yet acknowledged, most severe, newest."""
        out = []
        for m in self.msgs.values():
            if m["expires"] is None or m["expires"] > now:
                out.append(m)
        out.sort(key=lambda m: (m["acked"] is None, SEVERITY.index(m["severity"]), m["ts"]),
                 reverse=True)
        return out

    def current(self, now):
        a = self.active(now)
        return a[0] if a else None

    def acknowledge(self, now):
        """Staff pressed OK: the shown message, if not yet acknowledged; returns it or None."""
        m = self.current(now)
        if m is None or m["acked"] is not None:
            return None
        m["acked"] = now
        self._save_index()
        return m
