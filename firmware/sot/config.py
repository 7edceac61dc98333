# The controller's configuration: the compiled site JSON that `sot firmware config` (host side,
# gateway/config.py) writes to flash as config.json. The host has already validated it; this
# only checks that the pieces the firmware depends on are there, so a truncated or foreign file
# fails at boot with a clear message instead of deep inside a task.
import json

FILE = "config.json"


class ConfigError(Exception):
    pass


_REQUIRED = ("site", "mqtt", "buses", "devices", "grid", "genset", "hash")


def load(flash):
    raw = flash.read(FILE)
    if raw is None:
        raise ConfigError(FILE + ": missing on flash")
    try:
        cfg = json.loads(raw)
    except ValueError:
        raise ConfigError(FILE + ": not valid JSON")
    for key in _REQUIRED:
        if key not in cfg:
            raise ConfigError(FILE + ": key '" + key + "' missing")
    buses = [b["name"] for b in cfg["buses"]]
    for dev in cfg["devices"]:
        if dev.get("bus") not in buses:
            raise ConfigError(FILE + ": device '" + str(dev.get("name")) + "': key 'bus' names no bus")
    return cfg
