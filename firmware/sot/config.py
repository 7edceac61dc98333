# The controller's configuration: the compiled site JSON that `sot config compile` (host side,
# gateway/tooling/compiler.py) writes to flash as config.json. The host has already validated it;
# this only checks that the pieces the firmware depends on are there, so a truncated or foreign file
# fails at boot with a clear message instead of deep inside a task.
import json

FILE = "config.json"


class ConfigError(Exception):
    pass


_REQUIRED = ("site", "mqtt", "buses", "devices", "grid", "genset", "hash")


def load(flash):
    try:
        f = flash.open(FILE)
    except OSError:
        raise ConfigError(FILE + ": missing on flash")
    try:
        cfg = json.load(f)
    except ValueError:
        raise ConfigError(FILE + ": not valid JSON")
    finally:
        f.close()
    for key in _REQUIRED:
        if key not in cfg:
            raise ConfigError(FILE + ": key '" + key + "' missing")
    buses = [b["name"] for b in cfg["buses"]]
    shared = {}
    for dev in cfg["devices"]:
        if dev.get("bus") not in buses:
            raise ConfigError(FILE + ": device '" + str(dev.get("name"))
                              + "': key 'bus' names no bus")
        dev["blocks"] = tuple(tuple(b) for b in dev["blocks"])
        dev["points"] = tuple(_point(p, shared) for p in dev["points"])
    return cfg


def _point(p, shared):
    # json gives lists with spare capacity and a fresh copy of every repeated sentinel band and
    # enum table; exact-size tuples, shared where equal, keep the point tables small in RAM.
    if len(p) != 10:
        raise ConfigError(FILE + ": point " + str(p[:1]) + " has " + str(len(p))
                          + " fields, not 10")
    inv = _shared(p[7], shared)
    enum = _shared(p[8], shared)
    extra = _shared(p[9], shared)
    return (p[0], p[1], p[2], p[3], p[4], p[5], p[6], inv, enum, extra)


def _shared(v, shared):
    if isinstance(v, list):
        v = tuple(v)
        v = shared.setdefault(v, v)
    return v
