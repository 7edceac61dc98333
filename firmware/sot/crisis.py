# Crisis messages from the municipality, kept for the panel.
#
# The gateway publishes each message retained on sot/v1/<site>/crisis/<id>:
#   {"id", "sv", "en"?, "severity": "info"|"warning"|"severe", "from", "ts", "expires"?}
# and withdraws it with an empty payload. Staff acknowledge the one on the panel; the ack goes
# back on .../crisis/<id>/ack. The set is kept on flash (write-then-rename), so after a power
# cut with the network still down the panel shows what the municipality last said.
#
# Text is untrusted (RELIABILITY C5): a payload that is not UTF-8 JSON, lacks Swedish text, or
# is longer than MAX_TEXT characters is refused and the last valid message stays; control
# characters become spaces and runs of spaces collapse. The panel draws text, never markup, so
# HTML in a message is shown as the characters it is.
import json

MAX_MESSAGES = 4
MAX_TEXT = 280  # characters per language, about what fits on the panel's message page
MAX_FROM = 40
MAX_ID = 32
SEVERITY = ("info", "warning", "severe")


def clean(text, limit):
    """The text with control characters as spaces and spaces collapsed; None if unusable.

    Works on the UTF-8 bytes in one buffer: a per-character list of a long text would cost
    more heap than the text itself."""
    if not isinstance(text, str) or len(text) > limit:
        return None
    b = bytearray(text.encode())
    n = len(b)
    i = 0
    while i < n:
        c = b[i]
        if c < 0x20 or c == 0x7F:
            b[i] = 0x20
        elif c == 0xC2 and i + 1 < n and 0x80 <= b[i + 1] <= 0x9F:  # C1 controls U+0080-009F
            b[i] = b[i + 1] = 0x20
            i += 1
        elif c == 0xE2 and i + 2 < n and b[i + 1] == 0x80 and b[i + 2] in (0xA8, 0xA9):
            b[i] = b[i + 1] = b[i + 2] = 0x20  # line and paragraph separators
            i += 2
        i += 1
    s = " ".join(str(b, "utf-8").split())
    return s or None


def _id_ok(mid):
    if not mid or len(mid) > MAX_ID:
        return False
    for ch in mid:
        if not ("a" <= ch <= "z" or "0" <= ch <= "9" or ch in "-_"):
            return False
    return True


class Crisis:
    def __init__(self, flash, log=print):
        self.flash = flash
        self.log = log
        self.msgs = {}  # id -> dict as received, cleaned, plus "acked": epoch or None
        self.rejected = 0
        raw = flash.read("crisis.json")
        if raw:
            try:
                for m in json.loads(raw):
                    self.msgs[m["id"]] = m
            except (ValueError, KeyError, TypeError):
                self.log("W crisis: crisis.json unreadable, starting empty")

    def _save(self):
        self.flash.write("crisis.json", json.dumps(list(self.msgs.values())))

    def _reject(self, mid, why):
        self.rejected += 1
        self.log("W crisis: message", mid, "refused:", why)
        return False

    def receive(self, mid, payload):
        """A message (or its withdrawal) from the gateway. True when the shown set changed."""
        if not _id_ok(mid):
            return self._reject(mid[:MAX_ID], "bad id")
        if not payload:
            if mid in self.msgs:
                del self.msgs[mid]
                self._save()
                return True
            return False
        try:
            m = json.loads(str(payload, "utf-8"))
        except (ValueError, UnicodeError):
            return self._reject(mid, "not UTF-8 JSON")
        if not isinstance(m, dict):
            return self._reject(mid, "not an object")
        sv = clean(m.get("sv"), MAX_TEXT)
        if sv is None:
            return self._reject(mid, "Swedish text missing, empty or over %d characters" % MAX_TEXT)
        en = m.get("en")
        if en is not None:
            en = clean(en, MAX_TEXT)
            if en is None:
                return self._reject(mid, "English text empty or too long")
        sev = m.get("severity")
        if sev not in SEVERITY:
            return self._reject(mid, "severity")
        ts = m.get("ts")
        exp = m.get("expires")
        if not isinstance(ts, int) or (exp is not None and not isinstance(exp, int)):
            return self._reject(mid, "ts/expires")
        src = clean(m.get("from") or "", MAX_FROM) or ""
        old = self.msgs.get(mid)
        if old is not None and old["ts"] == ts:
            return False  # the retained copy again after a reconnect: keep its acknowledgement
        if old is None and len(self.msgs) >= MAX_MESSAGES:
            # Full: the oldest gives way (the gateway keeps the full history).
            oldest = None
            for k, v in self.msgs.items():
                if oldest is None or v["ts"] < self.msgs[oldest]["ts"]:
                    oldest = k
            del self.msgs[oldest]
        self.msgs[mid] = {"id": mid, "sv": sv, "en": en, "severity": sev, "from": src, "ts": ts,
                          "expires": exp, "acked": None}
        self._save()
        return True

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
        self._save()
        return m
