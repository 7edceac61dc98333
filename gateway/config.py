"""Device profiles and sites: `config/devices/*.toml` and `config/sites/*.toml` as validated data.

`config/` is the single source of register maps and site layout. This module reads the
human-written TOML and validates it (`gateway/validate.py`: errors name the file, the entry and
the key), packs each device's points into read blocks, and checks each site's devices against
the points the firmware's site logic reads (`SITE_POINTS`). The running gateway loads the sites
from here; the host tooling compiles them into the controller's config.json
(`gateway/tooling/compiler.py`), and the plant simulator is built from the same `Profile`
objects, so a register map is never written twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# ConfigError, REPO_ROOT and CONFIG_DIR are also imported from here by callers.
from .validate import CONFIG_DIR, ConfigError, Key, Reader, load_toml, rel
from .validate import REPO_ROOT as REPO_ROOT

TYPES = {"u16": 1, "s16": 1, "u32": 2, "s32": 2, "f32": 2, "str": 0}  # str: `length` registers
POLL_CLASSES = ("fast", "slow")
FUNCTIONS = {1: "coils", 2: "discrete inputs", 3: "holding registers", 4: "input registers"}
DEVICE_KINDS = ("genset", "grid_meter", "tank_gauge", "pump")
RESERVED_SITE_IDS = ("gateway",)
# DSE GenComm "n/a" band: the top eight codes of each type's range (unimplemented, over/under
# range, transducer fault, bad data, ...). Raw values in the band are never numbers.
DSE_SENTINELS = {
    "u16": [[0xFFF8, 0xFFFF]],
    "s16": [[0x7FF8, 0x7FFF]],
    "u32": [[0xFFFFFFF8, 0xFFFFFFFF]],
    "s32": [[0x7FFFFFF8, 0x7FFFFFFF]],
    "f32": [],
    "str": [],
}


# --- device profiles -------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    name: str
    function: int
    address: int
    type: str
    scale: float = 1.0
    unit: str = ""
    range: tuple[float, float] | None = None
    invalid: tuple[tuple[int, int], ...] = ()
    enum: dict[int, str] | None = None
    word_order: str = "big"
    source: str = ""
    sim: Any = None
    bits: tuple[int, int] | None = None  # (lowest bit, width) of a field inside the register(s)
    poll: str = "fast"
    length: int = 0  # registers of a str point

    @property
    def count(self) -> int:
        return self.length if self.type == "str" else TYPES[self.type]


@dataclass(frozen=True)
class Profile:
    id: str
    kind: str
    title: str
    source: str
    default_unit: int
    max_gap: int
    max_block: int
    points: tuple[Point, ...]
    path: Path = field(compare=False)
    identity: dict[str, Any] = field(default_factory=dict)
    min_timeout_ms: int | None = None
    # [control]: the controller's remote-control registers (docs/commands.md): `register` gets
    # the function's key and, with `complement`, register + 1 gets 0xFFFF - key in one write;
    # `start`/`stop`/`auto` are the keys. With `function` 5 `register` is a coil and start/stop
    # its state (1/0). None: the device takes no commands.
    control: dict[str, int] | None = None

    def point(self, name: str) -> Point:
        for p in self.points:
            if p.name == name:
                return p
        raise KeyError(name)

    def blocks(self) -> list[tuple[int, int, int, int]]:
        """Pack the points into as few reads as the profile's gap and size limits allow.

        Points of one function code and poll class are sorted by address; the next point joins
        the current block when the registers skipped to reach it are at most `max_gap` and the
        block stays within `max_block` registers. Returns [(function, start, count, slow)] with
        slow = 1 for the "slow" poll class.
        """
        blocks: list[tuple[int, int, int, int]] = []
        groups = sorted({(p.function, POLL_CLASSES.index(p.poll)) for p in self.points})
        for fc, slow in groups:
            cur: list[int] | None = None
            members = [
                p for p in self.points if p.function == fc and POLL_CLASSES.index(p.poll) == slow
            ]
            for p in sorted(members, key=lambda p: p.address):
                end = p.address + p.count
                if (
                    cur is not None
                    and p.address - (cur[1] + cur[2]) <= self.max_gap
                    and end - cur[1] <= self.max_block
                ):
                    cur[2] = max(cur[2], end - cur[1])
                else:
                    if cur is not None:
                        blocks.append((cur[0], cur[1], cur[2], slow))
                    cur = [fc, p.address, p.count]
            if cur is not None:
                blocks.append((cur[0], cur[1], cur[2], slow))
        return blocks


def load_profile(path: Path) -> Profile:
    data = load_toml(path)
    top = Reader(path, "file", data, {"profile", "point", "identity", "control"})
    head = Reader(
        path,
        "[profile]",
        top.get("profile", dict),
        {
            "id",
            "kind",
            "title",
            "source",
            "default_unit",
            "function",
            "word_order",
            "max_gap",
            "max_block",
            "sentinel",
            "min_timeout_ms",
        },
    )
    pid = head.get("id", str)
    if pid != path.stem:
        raise head.fail("id", f"must match the file name '{path.stem}', got {pid!r}")
    kind = head.get("kind", str, choices=DEVICE_KINDS)
    function = head.get("function", int, 3, choices=tuple(FUNCTIONS))
    word_order = head.get("word_order", str, "big", choices=("big", "little"))
    sentinel = head.get("sentinel", str, "none", choices=("none", "dse"))
    raw_points = top.get("point", list)
    if not raw_points:
        raise top.fail("point", "a profile needs at least one [[point]]")
    points: list[Point] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_points):
        entry = f"point #{i + 1}"
        if isinstance(raw, dict) and isinstance(raw.get("name"), str):
            entry = f"point '{raw['name']}'"
        r = Reader(
            path,
            entry,
            raw,
            {
                "name",
                "address",
                "type",
                "function",
                "scale",
                "unit",
                "range",
                "invalid",
                "enum",
                "source",
                "sim",
                "word_order",
                "bits",
                "poll",
                "length",
                "sentinel",
            },
        )
        name = r.get("name", str)
        if not name.isidentifier():
            raise r.fail("name", "must be a lower-case identifier such as fuel_level")
        if name in seen:
            raise r.fail("name", f"duplicate point name (also point #{seen[name] + 1})")
        seen[name] = i
        ptype = r.get("type", str, choices=tuple(TYPES))
        rng = r.get("range", list, None)
        if rng is not None:
            if (
                len(rng) != 2
                or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in rng)
                or rng[0] >= rng[1]
            ):
                raise r.fail("range", "must be [min, max] with min < max")
            rng = (float(rng[0]), float(rng[1]))
        point_sentinel = r.get("sentinel", str, sentinel, choices=("none", "dse"))
        invalid: list[tuple[int, int]] = (
            [(lo, hi) for lo, hi in DSE_SENTINELS[ptype]] if point_sentinel == "dse" else []
        )
        for pair in r.get("invalid", list, []):
            if not (
                isinstance(pair, list)
                and len(pair) == 2
                and all(isinstance(x, int) for x in pair)
                and pair[0] <= pair[1]
            ):
                raise r.fail("invalid", "must be a list of [low, high] raw ranges")
            invalid.append((pair[0], pair[1]))
        enum = None
        raw_enum = r.get("enum", dict, None)
        if raw_enum is not None:
            enum = {}
            for k, v in raw_enum.items():
                if not k.isdigit() or not isinstance(v, str):
                    raise r.fail(
                        "enum", f'entries must be <raw integer> = "label", got {k} = {v!r}'
                    )
                if int(k) > 255:
                    raise r.fail(
                        "enum",
                        f"raw codes must be 0..255 (the controller keeps a table "
                        f"indexed by code), got {k}",
                    )
                enum[int(k)] = v
        scale = r.get("scale", float, 1.0)
        if scale == 0:
            raise r.fail("scale", "must not be 0")
        length = 0
        if ptype == "str":
            length = r.get("length", int, lo=1, hi=64)
        elif "length" in r.table:
            raise r.fail("length", "only a str point has a length")
        bits = r.get("bits", list, None)
        if bits is not None:
            width_max = 16 * TYPES.get(ptype, 0)
            if (
                ptype not in ("u16", "u32")
                or len(bits) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in bits)
                or bits[1] < 1
                or bits[0] < 0
                or bits[0] + bits[1] > width_max
            ):
                raise r.fail("bits", f"must be [lowest bit, width] inside a u16/u32, got {bits!r}")
            bits = (bits[0], bits[1])
        sim = r.get("sim", (int, float, str), None)
        if isinstance(sim, str) and ptype != "str" and (enum is None or sim not in enum.values()):
            raise r.fail("sim", f"label {sim!r} is not in the point's enum")
        points.append(
            Point(
                name=name,
                function=r.get("function", int, function, choices=(3, 4)),
                address=r.get("address", int, lo=0, hi=0xFFFF),
                type=ptype,
                scale=scale,
                unit=r.get("unit", str, ""),
                range=rng,
                invalid=tuple(invalid),
                enum=enum,
                word_order=r.get("word_order", str, word_order, choices=("big", "little")),
                source=r.get("source", str, ""),
                sim=sim,
                bits=bits,
                poll=r.get("poll", str, "fast", choices=POLL_CLASSES),
                length=length,
            )
        )
    # Two points may not claim the same register, unless both are bit fields of it whose bits
    # do not overlap (an alarm word carries several alarms).
    claimed: dict[tuple[int, int], list[Point]] = {}
    for p in points:
        for a in range(p.address, p.address + p.count):
            for other in claimed.get((p.function, a), []):
                if p.bits is None or other.bits is None or _overlap(p, other):
                    raise ConfigError(
                        path,
                        f"point '{p.name}'",
                        "address",
                        f"register {a} is also used by point '{other.name}'",
                    )
            claimed.setdefault((p.function, a), []).append(p)
    identity: dict[str, Any] = {}
    by_name = {p.name: p for p in points}
    for key, expect in top.get("identity", dict, {}).items():
        ir = Reader(path, "[identity]", {key: expect}, {key})
        if key not in by_name:
            raise ir.fail(key, "names no point of this profile")
        is_int = isinstance(expect, int) and not isinstance(expect, bool)
        is_list = (
            isinstance(expect, list)
            and bool(expect)
            and all(isinstance(x, int) and not isinstance(x, bool) for x in expect)
        )
        is_prefix = isinstance(expect, str) and by_name[key].type == "str"
        if not (is_int or is_list or is_prefix):
            raise ir.fail(key, "must be a raw integer, a list of them, or (str point) a prefix")
        identity[key] = expect
    control = None
    if "control" in top.table:
        cr = Reader(path, "[control]", top.get("control", dict),
                    {"register", "complement", "start", "stop", "auto", "source", "function"})
        control = {"register": cr.get("register", int, lo=0, hi=65534),
                   "complement": int(cr.get("complement", bool, False))}
        # function 16 (default): a key written to a register; 5: a coil whose state is the
        # request (ComAp: on = run, off = stop), start/stop 1/0
        function = cr.get("function", int, 16, choices=(5, 16))
        for k in ("start", "stop", "auto"):
            if k in cr.table:
                control[k] = cr.get(k, int, lo=0, hi=65535 if function == 16 else 1)
        if function == 5:
            if control["complement"]:
                raise cr.fail("complement", "a coil (function 5) has no complement")
            control["function"] = 5
        cr.get("source", str)
    return Profile(
        id=pid,
        kind=kind,
        title=head.get("title", str),
        source=head.get("source", str),
        default_unit=head.get("default_unit", int, 1, lo=1, hi=247),
        max_gap=head.get("max_gap", int, 8, lo=0, hi=120),
        max_block=head.get("max_block", int, 60, lo=1, hi=125),
        points=tuple(points),
        path=path,
        identity=identity,
        min_timeout_ms=head.get("min_timeout_ms", int, None, lo=10, hi=10000),
        control=control,
    )


def _overlap(a: Point, b: Point) -> bool:
    """Whether two bit fields that share a register use a common bit."""
    assert a.bits is not None and b.bits is not None
    base = min(a.address, b.address)
    a_lo = (a.address - base) * 16 + a.bits[0]
    b_lo = (b.address - base) * 16 + b.bits[0]
    return a_lo < b_lo + b.bits[1] and b_lo < a_lo + a.bits[1]


def load_profiles(config_dir: Path = CONFIG_DIR) -> dict[str, Profile]:
    profiles = {}
    for path in sorted((config_dir / "devices").glob("*.toml")):
        p = load_profile(path)
        profiles[p.id] = p
    return profiles


# --- sites -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Device:
    name: str
    profile: Profile
    bus: str
    unit: int


@dataclass(frozen=True)
class Bus:
    name: str
    port: str
    baud: int
    timeout_ms: int
    poll_ms: int
    slow_poll_ms: int = 10000  # points of the "slow" poll class (identity, counters, capability)


@dataclass(frozen=True)
class Site:
    id: str
    name: str
    municipality: str
    lat: float
    lon: float
    mqtt: dict[str, Any]
    buses: tuple[Bus, ...]
    devices: tuple[Device, ...]
    grid: dict[str, Any]
    genset: dict[str, Any]
    path: Path = field(compare=False)
    station: dict[str, Any] = field(default_factory=dict)
    panel: dict[str, Any] = field(default_factory=dict)
    board: dict[str, Any] | None = None  # [board]: the controller's pins (docs/hardware.md)
    # The SCB codes official alerts name places by (docs/feeds.md): county "23" (Jämtland),
    # municipality "2321" (Åre). None = not configured: only polygons and circles can match.
    county: str | None = None
    municipality_code: str | None = None
    exercise: dict[str, Any] | None = None  # [exercise]: the test-run schedule (load_exercise)

    def device(self, name: str) -> Device:
        for d in self.devices:
            if d.name == name:
                return d
        raise KeyError(name)


def _slug_ok(s: str) -> bool:
    return bool(s) and all(c.islower() or c.isdigit() or c == "-" for c in s) and s[0].isalpha()


# --- the points the site logic reads -----------------------------------------------------------


@dataclass(frozen=True)
class RolePoints:
    """The points firmware/sot/site.py (and sot/command.py) read, by name, from the device of one
    role (a profile's `kind`). A point the logic reads but the profile names differently would
    silently read as unknown, so each site's devices are checked against this when it loads;
    gateway/tests/test_config_schema.py parses site.py so that this list cannot fall behind.

    required: without it the logic cannot do its job (the genset's state, mode and fuel);
    optional: read when present, unknown otherwise; prefixes/suffixes: families read by pattern
    (alarm_*; tank <product>_litres; pump<n>_state with pump<n>_product), of which `family`
    needs at least one; labels: enum labels the logic compares a point's value with."""

    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()
    family: str | None = None
    labels: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def names(self) -> set[str]:
        return set(self.required) | set(self.optional)

    def matches(self, name: str) -> bool:
        return (name in self.names() or name.startswith(self.prefixes)
                or name.endswith(self.suffixes))


SITE_POINTS: dict[str, RolePoints] = {
    "genset": RolePoints(
        required=("engine_state", "control_mode", "fuel_level"),
        optional=("fuel_rate", "gen_power_kw", "mains_voltage_l1", "mains_frequency",
                  "can_remote_start", "battery_voltage", "run_hours"),
        prefixes=("alarm_",),
        labels={"engine_state": ("running",), "control_mode": ("auto",)},
    ),
    "grid_meter": RolePoints(required=("voltage_l1", "frequency"),
                             optional=("voltage_l2", "voltage_l3")),
    "tank_gauge": RolePoints(suffixes=("_litres",), family="_litres"),
    "pump": RolePoints(suffixes=("_state", "_product"), family="_state"),
}


def check_site_points(profile: Profile) -> str | None:
    """Why the site logic could not use `profile` in its role, or None."""
    want = SITE_POINTS.get(profile.kind)
    if want is None:
        return None
    have = {p.name: p for p in profile.points}
    for name in want.required:
        if name not in have:
            return (f"profile '{profile.id}' ({rel(profile.path)}) has no point '{name}', "
                    f"which the site logic reads from a {profile.kind} (firmware/sot/site.py)")
    for name, labels in want.labels.items():
        point = have.get(name)
        if point is None:
            continue
        missing = [lb for lb in labels if point.enum is None or lb not in point.enum.values()]
        if missing:
            return (f"profile '{profile.id}' ({rel(profile.path)}): point '{name}' needs an enum "
                    f"with the label(s) {', '.join(map(repr, missing))}: the site logic "
                    "compares its value with them")
    if want.family is not None and not any(n.endswith(want.family) for n in have):
        return (f"profile '{profile.id}' ({rel(profile.path)}) has no '*{want.family}' point: "
                f"the site logic reads a {profile.kind}'s values by that name")
    return None


# The tables of a site file that are plain keys (declared here; the rest is read in load_site).
SITE_MQTT = (
    Key("host", str, "127.0.0.1"),
    Key("port", int, 8883, lo=1, hi=65535),
    Key("keepalive_s", int, 30, lo=5, hi=600),
    Key("heartbeat_s", int, 30, lo=5, hi=3600),
    Key("user", str, None),
    Key("password", str, None),
    # The event journal's flash budget (docs/mqtt.md, "Overflow policy").
    Key("journal_bytes", int, 65536, lo=8192, hi=16 * 1024 * 1024),
)
SITE_GRID = (
    Key("nominal_v", float, 230.0, lo=100, hi=500),
    Key("tolerance_pct", float, 10.0, lo=1, hi=30),
    Key("f_min", float, 47.5, lo=40, hi=70),
    Key("f_max", float, 52.0, lo=40, hi=70),
    Key("debounce_s", float, 3.0, lo=0, hi=600),
)
SITE_STATION = (Key("reserve_litres", float, 0.0, lo=0, hi=1000000),)
SITE_PANEL = (
    Key("display", str, "color320", choices=("color320", "mono128")),
    Key("language", str, "sv", choices=("sv", "en")),
)


def load_site(path: Path, profiles: dict[str, Profile]) -> Site:
    data = load_toml(path)
    top = Reader(
        path,
        "file",
        data,
        {"site", "mqtt", "bus", "device", "grid", "genset", "station", "panel", "board",
         "exercise"},
    )
    s = Reader(path, "[site]", top.get("site", dict),
               {"id", "name", "municipality", "lat", "lon", "county", "municipality_code"})
    sid = s.get("id", str)
    if not _slug_ok(sid) or "/" in sid:
        raise s.fail("id", "must be a slug of a-z, 0-9 and '-' such as are-kall")
    if sid != path.stem:
        raise s.fail("id", f"must match the file name '{path.stem}', got {sid!r}")
    if sid in RESERVED_SITE_IDS:
        raise s.fail("id", f"'{sid}' is reserved: sot/v1/{sid}/... is the gateway's own topic")
    mqtt = Reader(path, "[mqtt]", top.get("mqtt", dict, {}), SITE_MQTT).read(SITE_MQTT)
    buses: list[Bus] = []
    for i, raw in enumerate(top.get("bus", list)):
        r = Reader(
            path,
            f"bus #{i + 1}",
            raw,
            {"name", "port", "baud", "timeout_ms", "poll_ms", "slow_poll_ms"},
        )
        name = r.get("name", str)
        r.entry = f"bus '{name}'"
        if any(b.name == name for b in buses):
            raise r.fail("name", "duplicate bus name")
        buses.append(
            Bus(
                name=name,
                port=r.get("port", str),
                baud=r.get(
                    "baud", int, 9600, choices=(1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
                ),
                timeout_ms=r.get("timeout_ms", int, 1000, lo=50, hi=10000),
                poll_ms=r.get("poll_ms", int, 1000, lo=100, hi=60000),
                slow_poll_ms=r.get("slow_poll_ms", int, 10000, lo=1000, hi=600000),
            )
        )
    devices: list[Device] = []
    for i, raw in enumerate(top.get("device", list)):
        r = Reader(path, f"device #{i + 1}", raw, {"name", "profile", "bus", "unit"})
        name = r.get("name", str)
        r.entry = f"device '{name}'"
        if any(d.name == name for d in devices):
            raise r.fail("name", "duplicate device name")
        pid = r.get("profile", str)
        if pid not in profiles:
            raise r.fail(
                "profile",
                f"no profile '{pid}' in config/devices/ (have: {', '.join(sorted(profiles))})",
            )
        bus = r.get("bus", str)
        if not any(b.name == bus for b in buses):
            raise r.fail("bus", f"no [[bus]] named '{bus}'")
        unit = r.get("unit", int, profiles[pid].default_unit, lo=1, hi=247)
        for d in devices:
            if d.bus == bus and d.unit == unit:
                raise r.fail(
                    "unit", f"unit id {unit} on bus '{bus}' is already used by device '{d.name}'"
                )
        why = check_site_points(profiles[pid])
        if why:
            raise r.fail("profile", why)
        devices.append(Device(name=name, profile=profiles[pid], bus=bus, unit=unit))
    kinds = [d.profile.kind for d in devices]
    for needed in ("genset",):
        if needed not in kinds:
            raise top.fail("device", f"a site needs a {needed} device")
    g = Reader(path, "[grid]", top.get("grid", dict, {}), SITE_GRID)
    grid = g.read(SITE_GRID)
    if grid["f_min"] >= grid["f_max"]:
        raise g.fail("f_min", "must be below f_max")
    gs = Reader(
        path,
        "[genset]",
        top.get("genset", dict),
        {
            "rated_kw",
            "tank_litres",
            "burn_lph",
            "start_timeout_s",
            "max_runtime_h",
            "burn_curve",
            "fuel_trusted_pct",
            "fuel_jump_pct",
        },
    )
    genset = {
        "rated_kw": gs.get("rated_kw", float, lo=1, hi=5000),
        "tank_litres": gs.get("tank_litres", float, lo=10, hi=100000),
        "burn_lph": gs.get("burn_lph", float, lo=0.1, hi=1000),
        "start_timeout_s": gs.get("start_timeout_s", float, 30.0, lo=5, hi=600),
        "max_runtime_h": gs.get("max_runtime_h", float, 72.0, lo=1, hi=10000),
        "burn_curve": _burn_curve(gs),
        "fuel_trusted_pct": _pct_band(gs, "fuel_trusted_pct", [5.0, 95.0]),
        "fuel_jump_pct": gs.get("fuel_jump_pct", float, 10.0, lo=1, hi=100),
    }
    station = Reader(path, "[station]", top.get("station", dict, {}), SITE_STATION).read(
        SITE_STATION
    )
    panel = Reader(path, "[panel]", top.get("panel", dict, {}), SITE_PANEL).read(SITE_PANEL)
    county, municipality_code = _site_codes(s)
    return Site(
        id=sid,
        name=s.get("name", str),
        municipality=s.get("municipality", str),
        lat=s.get("lat", float, lo=-90, hi=90),
        lon=s.get("lon", float, lo=-180, hi=180),
        mqtt=mqtt,
        buses=tuple(buses),
        devices=tuple(devices),
        grid=grid,
        genset=genset,
        path=path,
        station=station,
        panel=panel,
        board=_board(path, top, buses, panel),
        county=county,
        municipality_code=municipality_code,
        exercise=load_exercise(path, top.get("exercise", dict, None)),
    )


# --- [exercise]: the generator's test-run schedule (issue 14; docs/commands.md) ----------------
EXERCISE_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def load_exercise(path: Path, table: dict[str, Any] | None) -> dict[str, Any] | None:
    """The site's [exercise] as the controller reads it (sot/exercise.py), or None without one:
    every "week" | "month" (the first such weekday of the month), weekday "mon".."sun" -> 0..6,
    time "HH:MM" Europe/Stockholm -> `at` minutes after local midnight, minutes 1..60, on_load
    (the transfer switch allows a run on load)."""
    if table is None:
        return None
    r = Reader(path, "[exercise]", table, {"every", "weekday", "time", "minutes", "on_load"})
    every = r.get("every", str, "month", choices=("week", "month"))
    weekday = r.get("weekday", str, choices=EXERCISE_WEEKDAYS)
    hhmm = r.get("time", str)
    hh, sep, mm = hhmm.partition(":")
    if not (sep and len(hh) == 2 and len(mm) == 2 and hh.isdigit() and mm.isdigit()
            and int(hh) < 24 and int(mm) < 60):
        raise r.fail("time", f"must be local time HH:MM such as \"10:00\", got {hhmm!r}")
    return {"every": every, "weekday": EXERCISE_WEEKDAYS.index(weekday),
            "at": int(hh) * 60 + int(mm), "minutes": r.get("minutes", int, 15, lo=1, hi=60),
            "on_load": r.get("on_load", bool, False)}


# The boards the firmware has a HAL for (firmware/sot/hal/esp32.py, rp2.py) and what each allows.
# ESP32: GPIO 6-11 belong to the SPI flash, 34-39 are inputs without pull-ups, UART0 is the
# console that mpremote talks to, wired Ethernet takes the RMII pins. RP2040: GPIO 0-29.
_BOARDS: dict[str, dict[str, Any]] = {
    "esp32": {
        "max_pin": 39,
        "reserved": {
            6: "the SPI flash",
            7: "the SPI flash",
            8: "the SPI flash",
            9: "the SPI flash",
            10: "the SPI flash",
            11: "the SPI flash",
            1: "UART0 (the console)",
            3: "UART0 (the console)",
        },
        "input_only": range(34, 40),
        "uarts": (1, 2),
        "spis": (1, 2),
        "i2cs": (0, 1),
        "spi_max_hz": 80_000_000,
        "lan": True,
    },
    "rp2": {
        "max_pin": 29,
        "reserved": {},
        "input_only": range(0),
        "uarts": (0, 1),
        "spis": (0, 1),
        "i2cs": (0, 1),
        "spi_max_hz": 62_500_000,
        "lan": False,
    },
}
# The ESP32's internal Ethernet MAC uses these pins for RMII, whatever the PHY.
_RMII = {0: "REF_CLK", 19: "TXD0", 21: "TX_EN", 22: "TXD1", 25: "RXD0", 26: "RXD1", 27: "CRS_DV"}
_PHYS = ("LAN8720", "IP101", "RTL8201", "DP83848", "KSZ8081")


def _board(path: Path, top: Reader, buses: list[Bus], panel: dict[str, Any]) -> dict | None:
    """The optional [board] section: which board, and every pin the HAL drives. Absent, the
    site runs only in the simulator (the unix port needs no pins)."""
    raw = top.get("board", dict, None)
    if raw is None:
        return None
    b = Reader(path, "[board]", raw, {"kind", "ntp", "uart", "display", "buttons", "network"})
    kind = b.get("kind", str, choices=tuple(_BOARDS))
    spec = _BOARDS[kind]
    used: dict[int, str] = {}

    def pin(
        r: Reader, key: str, *, output: bool, optional: bool = False, pull_up: bool = False
    ) -> int | None:
        v = r.get(key, int, None if optional else ..., lo=0, hi=spec["max_pin"])
        if v is None:
            return None
        if v in spec["reserved"]:
            raise r.fail(key, f"GPIO {v} is taken by {spec['reserved'][v]} on {kind}")
        if (output or pull_up) and v in spec["input_only"]:
            why = "an output" if output else "an internal pull-up"
            raise r.fail(key, f"GPIO {v} is input-only on {kind} and cannot be {why}")
        if v in used:
            raise r.fail(key, f"GPIO {v} is already used by {used[v]}")
        used[v] = f"{r.entry} {key}"
        return v

    # network first: wired Ethernet claims the RMII pins before anything else can
    n = Reader(
        path,
        "[board.network]",
        b.get("network", dict),
        {"kind", "ssid", "password", "phy", "phy_addr", "mdc", "mdio", "power"},
    )
    nkind = n.get("kind", str, "wifi", choices=("wifi", "lan"))
    if nkind == "lan":
        if not spec["lan"]:
            raise n.fail("kind", f"wired Ethernet needs an ESP32; {kind} has Wi-Fi only")
        for k in ("ssid", "password"):
            if k in n.table:
                raise n.fail(k, 'only for kind = "wifi"')
        for gpio, sig in _RMII.items():
            used[gpio] = f"Ethernet RMII {sig}"
        network = {
            "kind": "lan",
            "phy": n.get("phy", str, "LAN8720", choices=_PHYS),
            "phy_addr": n.get("phy_addr", int, 0, lo=0, hi=31),
            "mdc": pin(n, "mdc", output=True),
            "mdio": pin(n, "mdio", output=True),
            "power": pin(n, "power", output=True, optional=True),
        }
    else:
        for k in ("phy", "phy_addr", "mdc", "mdio", "power"):
            if k in n.table:
                raise n.fail(k, 'only for kind = "lan"')
        ssid = n.get("ssid", str)
        if not 1 <= len(ssid.encode()) <= 32:
            raise n.fail("ssid", "must be 1 to 32 bytes")
        password = n.get("password", str, "")
        if password and not 8 <= len(password) <= 63:
            raise n.fail("password", "a WPA2 passphrase has 8 to 63 characters")
        network = {"kind": "wifi", "ssid": ssid, "password": password}

    uarts: dict[str, dict[str, Any]] = {}
    for port, u in b.get("uart", dict).items():
        r = Reader(
            path,
            f"[board.uart.{port}]",
            u,
            {"id", "tx", "rx", "de", "de_active_low", "parity", "stop"},
        )
        uid = r.get("id", int, choices=spec["uarts"])
        for other, o in uarts.items():
            if o["id"] == uid:
                raise r.fail("id", f"UART {uid} is already [board.uart.{other}]")
        uarts[port] = {
            "id": uid,
            "tx": pin(r, "tx", output=True),
            "rx": pin(r, "rx", output=False),
            "de": pin(r, "de", output=True),
            "de_active_low": r.get("de_active_low", bool, False),
            "parity": r.get("parity", str, "none", choices=("none", "even", "odd")),
            "stop": r.get("stop", int, 1, choices=(1, 2)),
        }
    for bus in buses:
        if bus.port not in uarts:
            raise ConfigError(
                path, f"bus '{bus.name}'", "port", f"no [board.uart.{bus.port}] gives its pins"
            )
    for port in uarts:
        if not any(bus.port == port for bus in buses):
            raise ConfigError(path, f"[board.uart.{port}]", None, f'no [[bus]] has port = "{port}"')

    if panel.get("display") == "mono128":
        d = Reader(
            path, "[board.display]", b.get("display", dict), {"i2c", "scl", "sda", "addr", "freq"}
        )
        display = {
            "i2c": d.get("i2c", int, 0, choices=spec["i2cs"]),
            "scl": pin(d, "scl", output=True),
            "sda": pin(d, "sda", output=True),
            "addr": d.get("addr", int, 0x3C, choices=(0x3C, 0x3D)),
            "freq": d.get("freq", int, 400_000, lo=100_000, hi=1_000_000),
        }
    else:
        d = Reader(
            path,
            "[board.display]",
            b.get("display", dict),
            {"spi", "sck", "mosi", "cs", "dc", "rst", "backlight", "baud", "madctl"},
        )
        display = {
            "spi": d.get("spi", int, spec["spis"][0], choices=spec["spis"]),
            "sck": pin(d, "sck", output=True),
            "mosi": pin(d, "mosi", output=True),
            "cs": pin(d, "cs", output=True),
            "dc": pin(d, "dc", output=True),
            "rst": pin(d, "rst", output=True, optional=True),
            "backlight": pin(d, "backlight", output=True, optional=True),
            "baud": d.get("baud", int, 20_000_000, lo=1_000_000, hi=spec["spi_max_hz"]),
            "madctl": d.get("madctl", int, 0x28, lo=0, hi=255),
        }
    bt = Reader(
        path, "[board.buttons]", b.get("buttons", dict), {"ack", "shop", "next", "debounce_ms"}
    )
    buttons = {k: pin(bt, k, output=False, pull_up=True) for k in ("ack", "shop", "next")}
    buttons["debounce_ms"] = bt.get("debounce_ms", int, 30, lo=5, hi=200)
    return {
        "kind": kind,
        "ntp": b.get("ntp", str, "pool.ntp.org"),
        "uart": uarts,
        "display": display,
        "buttons": buttons,
        "network": network,
    }


# --- [site] county and municipality_code (official alerts, gateway/feeds/) -----------------
# Read with gateway/validate.py's Reader; the codes depend on each other, so checked here.


def _site_codes(s: Reader) -> tuple[str | None, str | None]:
    """`county` ("23", two digits) and `municipality_code` ("2321", four digits, the first two
    its county's), both strings so that a leading zero stays (Stockholm's 0180). A municipality
    code alone implies its county."""
    county = s.get("county", str, None)
    muni = s.get("municipality_code", str, None)
    if county is not None and not (len(county) == 2 and county.isascii() and county.isdigit()
                                   and county != "00"):
        raise s.fail("county", f'must be the two-digit county code such as "23", got {county!r}')
    if muni is not None:
        if not (len(muni) == 4 and muni.isascii() and muni.isdigit()):
            raise s.fail("municipality_code",
                         f'must be the four-digit municipality code such as "2321", got {muni!r}')
        if county is None:
            county = muni[:2]
        elif muni[:2] != county:
            raise s.fail("municipality_code",
                         f"{muni} is not in county {county} (its first two digits are the county)")
    return county, muni


def _burn_curve(gs: Reader) -> list[list[float]] | None:
    """[[load %, L/h], ...] ascending in load: the genset's consumption curve (its data sheet)."""
    raw = gs.get("burn_curve", list, None)
    if raw is None:
        return None
    out: list[list[float]] = []
    for i, pair in enumerate(raw):
        ok = isinstance(pair, list) and len(pair) == 2
        ok = ok and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in pair)
        if not ok:
            raise gs.fail("burn_curve", f"entry {i + 1} must be [load %, litres per hour]")
        load, lph = float(pair[0]), float(pair[1])
        if not 0 <= load <= 150 or not 0 < lph <= 1000:
            raise gs.fail("burn_curve", f"entry {i + 1}: load 0-150 %, 0-1000 L/h, got {pair}")
        if out and load <= out[-1][0]:
            raise gs.fail("burn_curve", f"entry {i + 1}: load must rise from entry to entry")
        out.append([compact_number(load), compact_number(lph)])
    if len(out) < 2:
        raise gs.fail("burn_curve", "needs at least two points")
    return out


def _pct_band(r: Reader, key: str, default: list[float]) -> list[float]:
    raw = r.get(key, list, default)
    ok = len(raw) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in raw)
    if not ok or not 0 <= raw[0] < raw[1] <= 100:
        raise r.fail(key, f"must be [low %, high %] with 0 <= low < high <= 100, got {raw!r}")
    return [compact_number(raw[0]), compact_number(raw[1])]


def load_sites(
    config_dir: Path = CONFIG_DIR, profiles: dict[str, Profile] | None = None
) -> dict[str, Site]:
    profiles = load_profiles(config_dir) if profiles is None else profiles
    return {
        s.id: s
        for s in (load_site(p, profiles) for p in sorted((config_dir / "sites").glob("*.toml")))
    }


def compact_number(x: float) -> int | float:
    """Whole numbers as ints: on the controller an int is free, a float is a heap object."""
    return int(x) if float(x).is_integer() else x
