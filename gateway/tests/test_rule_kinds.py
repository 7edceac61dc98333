"""The registry of alert rule kinds: every kind has its words, every configured rule is a kind,
and an alerts file naming a kind or a setting that does not exist is refused precisely."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from gateway.alerts import config as alert_config
from gateway.alerts.kinds import INCIDENT_RULE, Kind, registry
from gateway.alerts.rules import KINDS
from gateway.config import CONFIG_DIR, ConfigError
from gateway.texts import catalogue


def test_every_kind_has_a_title_and_what_to_do_in_both_languages() -> None:
    cat = catalogue()
    for name in [*KINDS, INCIDENT_RULE]:
        for part in ("title", "do"):
            text = cat[f"alert.{name}.{part}"]
            assert text.sv.strip() and text.en.strip(), f"alert.{name}.{part}"


def test_every_rule_of_the_shipped_alerts_file_is_a_registered_kind() -> None:
    with open(CONFIG_DIR / "alerts.toml", "rb") as f:
        data = tomllib.load(f)
    assert set(data["rule"]) <= set(KINDS)
    assert set(data["grouping"]["rules"]) <= set(KINDS)
    rules, _ = alert_config.load_rules(CONFIG_DIR / "alerts.toml")
    assert list(rules) == list(KINDS)
    # a kind's own settings come from its declaration, defaults filled in
    assert rules["site_silent"].params == {"heartbeats": 3}
    assert [t.hours for t in rules["fuel_low"].params["thresholds"]] == [24, 12, 6]


def alerts_file(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "alerts.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_an_unknown_kind_is_refused_naming_file_entry_and_key(tmp_path: Path) -> None:
    p = alerts_file(tmp_path, "[rule.fuel_lo]\nhold_s = 10\n")
    with pytest.raises(ConfigError) as exc:
        alert_config.load_rules(p)
    e = exc.value
    assert e.path == str(p) and e.entry == "[rule]" and e.key == "fuel_lo"
    assert "fuel_lo" in str(e) and "fuel_low" in str(e)  # says what is known


@pytest.mark.parametrize("body,entry,key,says", [
    ("[rule.site_silent]\nheartbeats = 0\n", "[rule.site_silent]", "heartbeats", "between 1"),
    ("[rule.site_silent]\nheartbeats = 2.5\n", "[rule.site_silent]", "heartbeats", "integer"),
    ("[rule.gen_max_runtime]\nmax_runtime_h = \"long\"\n", "[rule.gen_max_runtime]",
     "max_runtime_h", "number"),
    ("[rule.remote_start_not_ready]\nmodes = [\"manual\", \"sleepy\"]\n",
     "[rule.remote_start_not_ready]", "modes", "item 2"),
    ("[rule.fuel_low]\nthresholds = []\n", "[rule.fuel_low]", "thresholds", "at least one"),
    ("[rule.fuel_low]\nthresholds = [{ hours = 6 }, { hours = 12 }]\n", "[rule.fuel_low]",
     "thresholds", "must fall"),
    ("[rule.fuel_low]\nthresholds = [{ hours = 6, severity = \"dire\" }]\n",
     "[rule.fuel_low] thresholds #1", "severity", "one of"),
    ("[rule.fuel_low]\nthresholds = [{ severity = \"warning\" }]\n",
     "[rule.fuel_low] thresholds #1", "hours", "missing"),
    # a setting of another kind is no setting of this one
    ("[rule.grid_lost]\nheartbeats = 3\n", "[rule.grid_lost]", "heartbeats", "unknown key"),
])
def test_a_bad_setting_is_refused_naming_file_entry_and_key(tmp_path: Path, body: str, entry: str,
                                                             key: str, says: str) -> None:
    p = alerts_file(tmp_path, body)
    with pytest.raises(ConfigError) as exc:
        alert_config.load_rules(p)
    e = exc.value
    assert (e.path, e.entry, e.key) == (str(p), entry, key)
    assert says in e.message


def test_a_threshold_without_severity_takes_the_rules(tmp_path: Path) -> None:
    p = alerts_file(tmp_path, "[rule.fuel_low]\nseverity = \"critical\"\n"
                              "thresholds = [{ hours = 8 }]\n")
    rules, _ = alert_config.load_rules(p)
    assert [(t.hours, t.severity) for t in rules["fuel_low"].params["thresholds"]] == \
        [(8.0, "critical")]


def test_a_kind_is_registered_once() -> None:
    k = KINDS["grid_lost"]
    with pytest.raises(ValueError):
        registry(k, Kind("grid_lost", k.evaluate))
    with pytest.raises(ValueError):
        registry(Kind(INCIDENT_RULE, k.evaluate))


def test_every_text_key_the_alert_code_names_is_in_the_catalogue() -> None:
    """A misspelt key would surface only when its rule fires; catch it here."""
    import re

    cat = catalogue()
    src = Path(alert_config.__file__).parent
    keys = set()
    for name in ("rules.py", "engine.py", "cap.py", "texts.py"):
        keys |= set(re.findall(r"[\"']((?:alert|notice|severity|cap)\.[a-z_.]+[a-z_])[\"']",
                               (src / name).read_text(encoding="utf-8")))
    assert len(keys) > 20
    missing = sorted(k for k in keys if k not in cat)
    assert not missing, missing
    for mode in ("on_backup", "grid_lost", "backup_failed"):  # grid_lost's backup sentence
        assert f"alert.grid_lost.backup.{mode}" in cat
    for st in ("offline", "mismatch"):
        assert f"alert.device_offline.{st}.text" in cat
