"""Configuration: the shipped files validate, bad files fail with file, entry and key named, and
the compiled form carries what the controller needs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gateway import checkconfig, config
from gateway.tooling import compiler


@pytest.fixture
def cfgdir(tmp_path: Path) -> Path:
    shutil.copytree(config.CONFIG_DIR / "devices", tmp_path / "devices")
    shutil.copytree(config.CONFIG_DIR / "sites", tmp_path / "sites")
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_shipped_config_is_valid():
    lines = checkconfig.check_all()
    assert any("dse-gencomm.toml" in line for line in lines)
    sites = config.load_sites()
    assert {"are-kall", "harjedalen-hede", "krokom-follinge"} <= set(sites)


@pytest.mark.parametrize(
    "file, old, new, entry, key",
    [
        ("sites/are-kall.toml", "unit = 10", "unit = 300", "device 'genset'", "unit"),
        (
            "sites/are-kall.toml",
            'profile = "dse-gencomm"',
            'profile = "dse-gencom"',
            "device 'genset'",
            "profile",
        ),
        ("sites/are-kall.toml", "baud = 9600", "baud = 9601", "bus 'rs485'", "baud"),
        (
            "sites/are-kall.toml",
            "tank_litres = 400",
            'tank_litres = "full"',
            "[genset]",
            "tank_litres",
        ),
        ("sites/are-kall.toml", "f_min = 47.5", "f_min = 53.0", "[grid]", "f_min"),
        (
            "sites/are-kall.toml",
            "debounce_s = 3",
            "debounce_s = 3\ndebounse = 2",
            "[grid]",
            "debounse",
        ),
        ("sites/are-kall.toml", "unit = 20", "unit = 10", "device 'tank'", "unit"),
        (
            "devices/dse-gencomm.toml",
            'type = "u32"',
            'type = "u64"',
            "point 'gen_voltage_l1'",
            "type",
        ),
        (
            "devices/dse-gencomm.toml",
            "address = 1060",
            "address = 1059",
            "point 'mains_voltage_l1'",
            "address",
        ),
        (
            "devices/dse-gencomm.toml",
            "range = [0, 100]",
            "range = [100, 0]",
            "point 'fuel_level'",
            "range",
        ),
        # the test-run schedule (docs/commands.md, "Provkörning")
        ("sites/are-kall.toml", 'weekday = "tue"', 'weekday = "tis"', "[exercise]", "weekday"),
        ("sites/are-kall.toml", 'time = "10:00"', 'time = "25:00"', "[exercise]", "time"),
        ("sites/are-kall.toml", 'time = "10:00"', 'time = "10.00"', "[exercise]", "time"),
        ("sites/are-kall.toml", "minutes = 15", "minutes = 90", "[exercise]", "minutes"),
        ("sites/are-kall.toml", 'every = "month"', 'every = "day"', "[exercise]", "every"),
        ("sites/are-kall.toml", "on_load = false", "on_load = false\nload = 1", "[exercise]",
         "load"),
    ],
)
def test_errors_name_file_entry_and_key(
    cfgdir: Path, file: str, old: str, new: str, entry: str, key: str
):
    edit(cfgdir / file, old, new)
    with pytest.raises(config.ConfigError) as err:
        config.load_sites(cfgdir)
    e = err.value
    assert Path(e.path).name == Path(file).name
    assert e.entry == entry
    assert e.key == key
    assert Path(file).name in str(e) and entry in str(e) and f"'{key}'" in str(e)


def test_broken_toml_names_the_file(cfgdir: Path):
    (cfgdir / "sites/are-kall.toml").write_text("[site\nid = 1\n")
    with pytest.raises(config.ConfigError, match=r"are-kall.toml: file: not valid TOML"):
        config.load_sites(cfgdir)


def test_read_blocks_respect_gap_poll_class_and_cover_every_point():
    dse = config.load_profiles()["dse-gencomm"]
    blocks = dse.blocks()
    # fast: gaps above max_gap (8) split blocks; slow (identity, capability) are read apart
    assert blocks == [
        (3, 772, 1, 0),
        (3, 1025, 9, 0),
        (3, 1059, 3, 0),
        (3, 1408, 1, 0),
        (3, 1536, 2, 0),
        (3, 1798, 2, 0),
        (3, 39425, 4, 0),
        (3, 768, 2, 1),
        (3, 4096, 3, 1),
    ]
    for p in dse.points:
        slow = 1 if p.poll == "slow" else 0
        assert any(
            fc == p.function and s <= p.address and p.address + p.count <= s + n and cls == slow
            for fc, s, n, cls in blocks
        ), p.name


def test_comap_reads_never_span_unmapped_registers():
    comap = config.load_profiles()["comap-intelilite4"]
    mapped = {a for p in comap.points for a in range(p.address, p.address + p.count)}
    for _fc, start, count, _slow in comap.blocks():
        assert set(range(start, start + count)) <= mapped, (start, count)
    ident = next(b for b in comap.blocks() if b[1] == 1307)
    assert ident[2] == 16  # the identification is read whole, as the controller demands


@pytest.mark.parametrize(
    "file, old, new, entry, key",
    [
        (
            "devices/dse-gencomm.toml",
            "bits = [8, 4]",
            "bits = [10, 4]",
            "point 'alarm_low_oil_pressure'",
            "address",
        ),
        (
            "devices/dse-gencomm.toml",
            "bits = [15, 1]",
            "bits = [15, 2]",
            "point 'can_remote_start'",
            "bits",
        ),
        (
            "devices/dse-gencomm.toml",
            "manufacturer = 1\n",
            "manufactorer = 1\n",
            "[identity]",
            "manufactorer",
        ),
        (
            "devices/dse-gencomm.toml",
            'sim = "auto"',
            'sim = "automatic"',
            "point 'control_mode'",
            "sim",
        ),
        (
            "devices/comap-intelilite4.toml",
            "length = 16",
            "length = 0",
            "point 'controller_name'",
            "length",
        ),
        (
            "devices/dse-gencomm.toml",
            'poll = "slow"',
            'poll = "sometimes"',
            "point 'manufacturer'",
            "poll",
        ),
        # a coil (ComAp's remote start/stop) has no complement and only the states 1 and 0
        ("devices/comap-intelilite4.toml", "function = 5\n", "function = 5\ncomplement = true\n",
         "[control]", "complement"),
        ("devices/comap-intelilite4.toml", "start = 1\n", "start = 2\n", "[control]", "start"),
        ("devices/comap-intelilite4.toml", "function = 5\n", "function = 6\n", "[control]",
         "function"),
    ],
)
def test_profile_extensions_are_validated(cfgdir: Path, file, old, new, entry, key):
    edit(cfgdir / file, old, new)
    with pytest.raises(config.ConfigError) as err:
        config.load_profiles(cfgdir)
    assert (err.value.entry, err.value.key) == (entry, key), str(err.value)


def test_compiled_site_is_small_and_wired():
    site = config.load_sites()["are-kall"]
    compiled = compiler.compile_site(site, bus_ports={"rs485": "/dev/pts/9"}, mqtt={"port": 1999})
    text = compiler.to_json(compiled)
    assert len(text.encode()) < 8192  # parsed from a stream at boot, but kept in a small heap
    assert compiled["buses"][0]["port"] == "/dev/pts/9"
    assert compiled["mqtt"]["port"] == 1999
    gen = next(d for d in compiled["devices"] if d["name"] == "genset")
    fuel = next(p for p in gen["points"] if p[0] == "fuel_level")
    assert fuel == [
        "fuel_level",
        1,
        2,
        compiler.TYPE_CODES["u16"],
        None,
        0,
        100,
        [0xFFF8, 0xFFFF],
        None,
        None,
    ]
    alarm = next(p for p in gen["points"] if p[0] == "alarm_fail_to_start")
    assert alarm[9] == [8, 4] and alarm[8][3] == "shutdown"
    assert gen["ident"][0] == ["manufacturer", [1]] and 32840 in gen["ident"][1][1]
    assert gen["tmin"] == 1000
    state = next(p for p in gen["points"] if p[0] == "engine_state")
    assert state[8][3] == "running" and state[8][1] == "starting"
    meter = next(d for d in compiled["devices"] if d["name"] == "grid")
    v1 = next(p for p in meter["points"] if p[0] == "voltage_l1")
    assert v1[3] == compiler.TYPE_CODES["f32"] and v1[7] is None  # SDM630 has no sentinel band
    # The wiring is not part of the config hash; the content is.
    again = compiler.compile_site(site, bus_ports={"rs485": "/dev/pts/1"})
    assert again["hash"] == compiled["hash"]


def test_site_id_gateway_is_reserved(cfgdir: Path):
    src = cfgdir / "sites/are-kall.toml"
    dst = cfgdir / "sites/gateway.toml"
    dst.write_text(src.read_text().replace('id = "are-kall"', 'id = "gateway"'))
    src.unlink()
    with pytest.raises(config.ConfigError, match="reserved") as err:
        config.load_sites(cfgdir)
    assert err.value.key == "id"


# -- [board]: the controller's pins -------------------------------------------------------------

FOLLINGE = "sites/krokom-follinge.toml"


def test_board_section_compiles_into_the_controller_config():
    site = config.load_sites()["krokom-follinge"]
    out = compiler.compile_site(site)
    b = out["board"]
    assert b["kind"] == "esp32"
    assert b["uart"]["uart1"] == {"id": 1, "tx": 4, "rx": 36, "de": 2, "de_active_low": False,
                                  "parity": "none", "stop": 1}
    assert b["buttons"] == {"ack": 16, "shop": 17, "next": 32, "debounce_ms": 30}
    assert b["display"]["cs"] == 15 and b["display"]["madctl"] == 0x28
    assert b["network"]["kind"] == "lan" and b["network"]["mdc"] == 23
    # The pins are wiring: the simulator's compile leaves them out, and the hash is the same.
    sim = compiler.compile_site(site, bus_ports={"rs485": "/dev/pts/9"})
    assert "board" not in sim
    assert sim["hash"] == out["hash"]


@pytest.mark.parametrize(
    "old, new, entry, key, words",
    [
        ("kind = \"esp32\" ", "kind = \"esp8266\" ", "[board]", "kind", "one of esp32, rp2"),
        ("de = 2 ", "de = 4 ", "[board.uart.uart1]", "de", "already used by [board.uart.uart1] tx"),
        ("rx = 36", "rx = 9", "[board.uart.uart1]", "rx", "SPI flash"),
        ("tx = 4", "tx = 35", "[board.uart.uart1]", "tx", "input-only"),
        ("next = 32", "next = 34", "[board.buttons]", "next", "pull-up"),
        ("id = 1 ", "id = 0 ", "[board.uart.uart1]", "id", "one of 1, 2"),
        ("sck = 14", "sck = 21", "[board.display]", "sck", "Ethernet RMII TX_EN"),
        ("mdc = 23", "mdc = 23\nssid = \"x\"", "[board.network]", "ssid", "only for kind"),
        ("ack = 16", "ack = 16\nreset = 3", "[board.buttons]", "reset", "unknown key"),
        ("[board.uart.uart1]", "[board.uart.uart2]", "bus 'rs485'", "port",
         "no [board.uart.uart1]"),
        ("parity = \"none\"", "parity = \"mark\"", "[board.uart.uart1]", "parity", "one of"),
    ],
)
def test_board_errors_name_file_entry_and_key(
    cfgdir: Path, old: str, new: str, entry: str, key: str, words: str
):
    edit(cfgdir / FOLLINGE, old, new)
    with pytest.raises(config.ConfigError) as err:
        config.load_sites(cfgdir)
    e = err.value
    assert Path(e.path).name == "krokom-follinge.toml"
    assert (e.entry, e.key) == (entry, key)
    assert words in str(e)


def test_rp2_has_no_wired_ethernet_and_needs_its_own_pins(cfgdir: Path):
    edit(cfgdir / FOLLINGE, 'kind = "esp32"', 'kind = "rp2"')
    with pytest.raises(config.ConfigError) as err:
        config.load_sites(cfgdir)
    assert (err.value.entry, err.value.key) == ("[board.network]", "kind")
    assert "Wi-Fi only" in str(err.value)


def test_rp2_with_wifi_and_a_mono_panel(cfgdir: Path):
    path = cfgdir / FOLLINGE
    text = path.read_text()
    text = text[: text.index("[board]")] + """[board]
kind = "rp2"

[board.uart.uart1]
id = 0
tx = 0
rx = 1
de = 2

[board.display]
i2c = 1
sda = 6
scl = 7

[board.buttons]
ack = 10
shop = 11
next = 12

[board.network]
ssid = "Butiken"
password = "hemligt-losen"
"""
    path.write_text(text.replace('display = "color320"', 'display = "mono128"'))
    b = compiler.compile_site(config.load_sites(cfgdir)["krokom-follinge"])["board"]
    assert b["display"] == {"i2c": 1, "scl": 7, "sda": 6, "addr": 0x3C, "freq": 400000}
    assert b["network"] == {"kind": "wifi", "ssid": "Butiken", "password": "hemligt-losen"}
    assert b["uart"]["uart1"]["id"] == 0


def test_alarm_words_say_not_fitted_for_unimplemented_alarms():
    # GenComm code 15 (unimplemented) means the alarm is not fitted: it must decode to a label
    # that raises nothing, and a word of four such alarms (0xFFFF) is not the "n/a" band.
    for pid, prof in config.load_profiles().items():
        for p in prof.points:
            if p.name.startswith("alarm_") and prof.id == "dse-gencomm":
                assert p.enum is not None and p.enum.get(15) == "not_fitted", (pid, p.name)
                assert p.invalid == (), (pid, p.name)
