# A device on a bus as the rest of the firmware sees it: its decoded values and whether it is
# answering. Only the bus owner writes it; the site logic reads it.


class Device:
    def __init__(self, cfg):
        self.name = cfg["name"]
        self.kind = cfg["kind"]
        self.unit = cfg["unit"]
        self.blocks = cfg["blocks"]
        self.points = cfg["points"]
        self.values = {}
        self.why = "no_data"  # why values are missing: no_data (not read yet) or offline
        self.online = None  # None until the first poll decides
        self.misses = 0
        self.last_ok = None  # ticks_ms of the last complete good read
        self.last_try = None
        self.last_error = None

    def get(self, name):
        """The point's current value, or None (offline, never read, or invalid reading)."""
        return self.values.get(name)

    def _set_offline(self):
        self.online = False
        self.why = "offline"
        for k in self.values:
            self.values[k] = None
