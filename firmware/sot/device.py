# A device on a bus as the rest of the firmware sees it: its decoded values, whether it answers,
# whether it is the device its profile describes, and which of its sensors read invalid. Only
# the bus owner writes it; the site logic reads it.


class Device:
    def __init__(self, cfg):
        self.name = cfg["name"]
        self.kind = cfg["kind"]
        self.unit = cfg["unit"]
        self.blocks = cfg["blocks"]
        self.points = cfg["points"]
        self.ident = cfg.get("ident") or ()
        self.tmin = cfg.get("tmin")
        self.values = {}
        self.why = "no_data"  # why values are missing: no_data, offline or mismatch
        self.online = None  # None until the first poll decides
        self.verified = False  # identity matched the profile (True at once if it names none)
        self.mismatch = None  # (point, value read) when the identity did not match
        self.faults = set()  # names of points that read invalid (sentinel, out of range)
        self.block_errors = {}  # block index -> Modbus exception code, reported once
        self.misses = 0
        self.last_ok = None  # ticks_ms at the start of the last complete good poll
        self.read_ms = None  # ticks_ms when the newest values were asked for (their age)
        self.last_try = None
        self.last_error = None

    def get(self, name):
        """The point's current value, or None (offline, never read, or invalid reading)."""
        return self.values.get(name)

    def status(self):
        """online | offline | mismatch | unknown (not polled yet)."""
        if self.online:
            return "online"
        if self.online is None:
            return "unknown"
        return "mismatch" if self.why == "mismatch" else "offline"

    def check_identity(self):
        """Compare the identity points with the profile. Returns True when they match."""
        for name, expect in self.ident:
            got = self.values.get(name)
            if isinstance(expect, str):
                ok = isinstance(got, str) and got.startswith(expect)
            else:
                ok = got in expect
            if not ok:
                self.mismatch = (name, got)
                return False
        self.mismatch = None
        return True

    def _set_offline(self, why="offline"):
        self.online = False
        self.verified = False
        self.why = why
        self.faults = set()
        for k in self.values:
            self.values[k] = None
