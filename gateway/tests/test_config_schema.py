"""One schema mechanism for every configuration file: a bad value in a site, a device profile,
the alert rules, the contacts or gateway.toml is refused with the file, the entry and the key
named; a profile lacking a point the site logic reads is refused; and the list of those points
(`gateway.config.SITE_POINTS`) is checked against what firmware/sot/site.py really reads."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

from gateway import checkconfig, cli, config, settings
from gateway.service import DEFAULTS, with_defaults
from gateway.validate import ConfigError

FIRMWARE = config.REPO_ROOT / "firmware" / "sot"


@pytest.fixture
def cfgdir(tmp_path: Path) -> Path:
    for name in ("devices", "sites"):
        shutil.copytree(config.CONFIG_DIR / name, tmp_path / name)
    for name in ("alerts.toml", "contacts.toml", "gateway.toml"):
        shutil.copyfile(config.CONFIG_DIR / name, tmp_path / name)
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_the_copied_configuration_checks_clean(cfgdir: Path):
    lines = checkconfig.check_all(cfgdir)
    for name in ("dse-gencomm.toml", "are-kall.toml", "alerts.toml", "contacts.toml",
                 "gateway.toml"):
        assert any(name in line and line.startswith("ok") for line in lines), name


@pytest.mark.parametrize(
    "file, old, new, entry, key",
    [
        # a site
        ("sites/are-kall.toml", "heartbeat_s = 30", "heartbeat_s = 2", "[mqtt]", "heartbeat_s"),
        ("sites/are-kall.toml", 'language = "sv"', 'language = "fi"', "[panel]", "language"),
        # a device profile
        ("devices/dse-gencomm.toml", 'name = "fuel_level"\naddress = 1027',
         'name = "fuel_level"\naddress = -1', "point 'fuel_level'", "address"),
        ("devices/eastron-sdm630.toml", 'kind = "grid_meter"', 'kind = "meter"', "[profile]",
         "kind"),
        # the alert rules
        ("alerts.toml", "window_s = 120", "window_s = -5", "[grouping]", "window_s"),
        ("alerts.toml", 'severity = "warning"      # info', 'severity = "loud"      # info',
         "[defaults]", "severity"),
        # the contacts
        ("contacts.toml", 'file = "notifications.jsonl"', 'file = "n.jsonl"\nphone = "112"',
         "municipality '*' contact #1", "phone"),
        ("contacts.toml", 'roles = ["coordinator", "technician"]', 'roles = ["mayor"]',
         "municipality '*' contact 'Lokal logg'", "roles"),
        # gateway.toml
        ("gateway.toml", "port = 8080", 'port = "8080"', "[http]", "port"),
        ("gateway.toml", "session_h = 12", "session_h = -1", "[web]", "session_h"),
        ("gateway.toml", "secure_cookie = true", 'secure_cookie = "yes"', "[web]",
         "secure_cookie"),
        ("gateway.toml", 'client_id = "sot-gateway"', 'client_id = "sot-gateway"\ntls = 1',
         "[mqtt]", "tls"),
        ("gateway.toml", "idle_s = 60", "idle_s = 0", "[web]", "idle_s"),
    ],
)
def test_a_bad_value_names_file_entry_and_key(cfgdir: Path, file, old, new, entry, key):
    edit(cfgdir / file, old, new)
    with pytest.raises(ConfigError) as err:
        checkconfig.check_all(cfgdir)
    e = err.value
    assert Path(e.path).resolve() == (cfgdir / file).resolve()
    assert (e.entry, e.key) == (entry, key)
    # ... and the one line a technician reads says all three
    assert f"{file.split('/')[-1]}: {entry}: key '{key}': " in str(e)


def test_a_broken_gateway_toml_stops_sot_gateway_naming_the_key(cfgdir: Path, capsys):
    path = cfgdir / "gateway.toml"
    edit(path, "max_conns = 1000", "max_conns = 0")
    assert cli.main(["gateway", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "gateway.toml: [web]: key 'max_conns': must be between 1 and" in err


def test_settings_from_python_are_checked_the_same_way():
    with pytest.raises(ConfigError) as err:
        with_defaults({"mqtt": {"keepalive_s": "30"}})
    assert (err.value.entry, err.value.key) == ("[mqtt]", "keepalive_s")
    with pytest.raises(ConfigError) as err:
        with_defaults({"web": {"trusted_proxies": ["127.0.0.1", 7]}})
    assert err.value.key == "trusted_proxies" and "item 2" in str(err.value)
    # what a missing key gets is what DEFAULTS says, and a validated config validates again
    cfg = with_defaults({})
    assert cfg == DEFAULTS and with_defaults(cfg) == cfg
    assert settings.DEFAULTS is DEFAULTS


def test_a_profile_lacking_a_point_the_site_logic_reads_is_refused(cfgdir: Path):
    edit(cfgdir / "devices/dse-gencomm.toml", 'name = "engine_state"', 'name = "engine_status"')
    with pytest.raises(ConfigError) as err:
        config.load_sites(cfgdir)
    e = err.value
    assert Path(e.path).parent.name == "sites"
    assert (e.entry, e.key) == ("device 'genset'", "profile")
    assert "no point 'engine_state'" in e.message and "dse-gencomm" in e.message


def test_a_mode_point_without_the_label_the_logic_compares_with_is_refused(cfgdir: Path):
    path = cfgdir / "devices/dse-gencomm.toml"
    path.write_text(path.read_text().replace('"auto"', '"automatic"'))
    with pytest.raises(ConfigError) as err:
        config.load_sites(cfgdir)
    assert err.value.key == "profile"
    assert "'control_mode'" in err.value.message and "'auto'" in err.value.message


def test_a_tank_gauge_needs_a_litres_point(cfgdir: Path):
    path = cfgdir / "devices/station-tank-gauge.toml"
    path.write_text(path.read_text().replace("_litres", "_volume"))
    with pytest.raises(ConfigError) as err:
        config.load_sites(cfgdir)
    assert err.value.key == "profile" and "'*_litres'" in err.value.message


# --- SITE_POINTS cannot drift from the site logic ---------------------------------------------


def _site_logic_reads() -> tuple[dict[str, set[str]], set[str]]:
    """({role: point names read by name}, name fragments matched by pattern) in site.py.

    The devices are `self.<attr> = self._first("<role>")`; a function reads a point with
    `<device>.get("name")`, where <device> is `self.<attr>` or a local bound to it, and names
    may come from a tuple the call iterates over. Fragments are the literals of
    startswith/endswith calls and of names built by concatenation inside a `.get(...)`."""
    tree = ast.parse((FIRMWARE / "site.py").read_text())
    attr_role: dict[str, str] = {}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Attribute)
                and node.value.func.attr == "_first"):
            arg = node.value.args[0]
            assert isinstance(arg, ast.Constant) and isinstance(arg.value, str)
            for t in node.targets:
                assert isinstance(t, ast.Attribute)
                attr_role[t.attr] = arg.value
    assert set(attr_role.values()) == set(config.DEVICE_KINDS)
    reads: dict[str, set[str]] = {role: set() for role in attr_role.values()}
    fragments: set[str] = set()

    def role_of(expr: ast.expr, local: dict[str, str]) -> str | None:
        if isinstance(expr, ast.Name):
            return local.get(expr.id)
        if (isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name)
                and expr.value.id == "self"):
            return attr_role.get(expr.attr)
        return None

    for func in ast.walk(tree):
        if not isinstance(func, ast.FunctionDef):
            continue
        local: dict[str, str] = {}
        loops: dict[str, set[str]] = {}
        for node in ast.walk(func):
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                t = node.targets[0]
                role = role_of(node.value, {})
                if isinstance(t, ast.Name) and role is not None:
                    local[t.id] = role
            if isinstance(node, ast.comprehension | ast.For):
                if isinstance(node.target, ast.Name) and isinstance(node.iter, ast.Tuple):
                    loops[node.target.id] = {e.value for e in node.iter.elts
                                             if isinstance(e, ast.Constant)
                                             and isinstance(e.value, str)}
        for node in ast.walk(func):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr in ("startswith", "endswith") and node.args:
                    a = node.args[0]
                    if isinstance(a, ast.Constant) and isinstance(a.value, str):
                        fragments.add(a.value)
                if node.func.attr == "get" and node.args:
                    role = role_of(node.func.value, local)
                    a = node.args[0]
                    if role is None:
                        continue
                    if isinstance(a, ast.Constant) and isinstance(a.value, str):
                        reads[role].add(a.value)
                    elif isinstance(a, ast.Name) and a.id in loops:
                        reads[role] |= loops[a.id]
                    elif isinstance(a, ast.BinOp) and isinstance(a.op, ast.Add):
                        for side in (a.left, a.right):  # name[:-6] + "_product"
                            if isinstance(side, ast.Constant) and isinstance(side.value, str):
                                fragments.add(side.value)
    return reads, fragments


def test_every_point_the_site_logic_reads_is_declared():
    reads, fragments = _site_logic_reads()
    # the parser finds what it must (a site.py rewritten beyond it fails here, not silently)
    assert {"engine_state", "control_mode", "fuel_level"} <= reads["genset"]
    assert {"voltage_l1", "voltage_l2", "voltage_l3", "frequency"} <= reads["grid_meter"]
    for role, names in reads.items():
        undeclared = names - config.SITE_POINTS[role].names()
        assert not undeclared, (
            f"firmware/sot/site.py reads {sorted(undeclared)} from a {role}: declare them in "
            "gateway/config.py SITE_POINTS")
    patterns = {x for rp in config.SITE_POINTS.values() for x in rp.prefixes + rp.suffixes}
    assert {"alarm_", "_litres", "_state", "_product"} <= fragments
    undeclared_patterns = fragments - patterns
    assert not undeclared_patterns, (
        f"firmware/sot/site.py matches point names by {sorted(undeclared_patterns)}: declare "
        "them in gateway/config.py SITE_POINTS")


def test_every_declared_point_is_read_by_the_firmware():
    """The other way round: a name in SITE_POINTS that no firmware code reads would refuse
    profiles for nothing."""
    text = (FIRMWARE / "site.py").read_text() + (FIRMWARE / "command.py").read_text()
    for role, rp in config.SITE_POINTS.items():
        for name in sorted(rp.names()) + list(rp.prefixes + rp.suffixes):
            assert f'"{name}"' in text, f"{role}: {name} is read nowhere in firmware/sot/"
