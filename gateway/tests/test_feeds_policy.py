"""The municipality's policy (gateway/feeds/policy.py), the severity/urgency -> level mapping,
and the configuration of feeds, policy and the sites' county and municipality codes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from feeds_fixtures import fixture

from gateway.config import ConfigError, load_profiles, load_site
from gateway.feeds import decide, level, load_feeds, load_policy, parse_cap
from gateway.feeds.model import SEVERITIES, URGENCIES

ACTUAL = parse_cap(fixture("vma-are-actual.xml"))  # Severe, Immediate, Observed


@pytest.mark.parametrize(("severity", "urgency", "auto"), [
    ("Extreme", "Immediate", "publish"), ("Extreme", "Expected", "publish"),
    ("Severe", "Immediate", "publish"), ("Severe", "Expected", "publish"),
    ("Severe", "Future", "await_approval"), ("Extreme", "Past", "await_approval"),
    ("Moderate", "Immediate", "await_approval"), ("Minor", "Immediate", "await_approval"),
    ("Unknown", "Unknown", "await_approval"),
])
def test_decide(severity: str, urgency: str, auto: str) -> None:
    a = replace(ACTUAL, severity=severity, urgency=urgency)
    assert decide(a, "auto") == auto
    assert decide(a, "approve") == "await_approval"
    assert decide(a, "off") == "ignore"


def test_only_actual_is_ever_published() -> None:
    for status in ("Test", "Exercise", "System", "Draft"):
        for policy in ("auto", "approve", "off"):
            assert decide(replace(ACTUAL, status=status), policy) == "ignore"


def test_unlikely_waits_for_a_coordinator() -> None:
    assert decide(replace(ACTUAL, certainty="Unlikely"), "auto") == "await_approval"


def test_cancel_is_not_a_decision() -> None:
    assert decide(parse_cap(fixture("vma-are-cancel.xml")), "auto") == "ignore"


def test_unknown_policy_is_an_error() -> None:
    with pytest.raises(ValueError):
        decide(ACTUAL, "maybe")


def test_level_mapping() -> None:
    table = {(s, u): level(s, u) for s in SEVERITIES for u in URGENCIES}
    assert set(table.values()) == {"info", "warning", "severe"}
    assert table["Extreme", "Immediate"] == table["Severe", "Expected"] == "severe"
    assert table["Severe", "Future"] == table["Moderate", "Immediate"] == "warning"
    assert table["Minor", "Immediate"] == table["Severe", "Past"] == "info"
    assert level("Nonsense", "Immediate") == "info"
    # never milder for a worse severity at the same urgency
    order = {"info": 0, "warning": 1, "severe": 2}
    for u in URGENCIES:
        ranks = [order[table[s, u]] for s in SEVERITIES if s != "Unknown"]
        assert ranks == sorted(ranks, reverse=True), u


def test_policy_config() -> None:
    p = load_policy({"default": "off", "municipalities": {"2321": "auto", "2361": "approve"}})
    assert (p.for_site("2321"), p.for_site("2361"), p.for_site("2309"), p.for_site(None)) == (
        "auto", "approve", "off", "off")
    assert load_policy(None).for_site("2321") == "approve"
    bads: list[object] = [{"default": "sometimes"}, {"municipalities": {"23": "auto"}},
                          {"municipalities": {"2321": "yes"}}, {"other": 1}, []]
    for bad in bads:
        with pytest.raises(ValueError):
            load_policy(bad)


def test_feeds_config() -> None:
    feeds = load_feeds([
        {"name": "vma", "kind": "cap", "url": "https://example.org/cap.atom", "interval_s": 30,
         "area": ["23"]},
        {"name": "ki", "kind": "krisinformation", "url": "https://example.org/v3/news"},
    ])
    assert [(f.name, f.kind, f.interval_s, f.area) for f in feeds] == [
        ("vma", "cap", 30.0, ("23",)), ("ki", "krisinformation", 60.0, ())]
    assert feeds[0].stale_after == 150 and feeds[1].backoff_cap == 960
    assert load_feeds(None) == []
    base: dict[str, object] = {"name": "x", "kind": "cap", "url": "https://example.org/"}
    cases: list[tuple[dict[str, object], str]] = [
        ({"kind": "rss"}, "kind"), ({"url": "ftp://example.org/"}, "url"),
        ({"interval_s": 1}, "interval_s"), ({"area": ["Jämtland"]}, "area"),
        ({"name": "a b"}, "name"), ({"colour": "red"}, "colour"),
        ({"interval_s": True}, "interval_s")]
    for bad, key in cases:
        with pytest.raises(ValueError, match=key):
            load_feeds([{**base, **bad}])
    with pytest.raises(ValueError, match="duplicate"):
        load_feeds([base, base])


def _site_with(tmp_path: Path, lines: str) -> Path:
    src = Path("config/sites/are-kall.toml").read_text(encoding="utf-8")
    start = src.index('county = "23"')
    end = src.index("\n", src.index("municipality_code"))
    path = tmp_path / "are-kall.toml"
    path.write_text(src[:start] + lines + src[end:], encoding="utf-8")
    return path


@pytest.mark.parametrize(("lines", "county", "muni"), [
    ('county = "23"\nmunicipality_code = "2321"', "23", "2321"),
    ('municipality_code = "2321"', "23", "2321"),  # the county follows from the code
    ('county = "23"', "23", None),
    ("", None, None),
])
def test_site_codes(tmp_path: Path, lines: str, county: str | None, muni: str | None) -> None:
    site = load_site(_site_with(tmp_path, lines), load_profiles())
    assert (site.county, site.municipality_code) == (county, muni)


@pytest.mark.parametrize(("lines", "key"), [
    ('county = 23', "county"), ('county = "Jämtland"', "county"), ('county = "00"', "county"),
    ('municipality_code = "232"', "municipality_code"),
    ('county = "12"\nmunicipality_code = "2321"', "municipality_code"),
])
def test_bad_site_codes_name_the_key(tmp_path: Path, lines: str, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_site(_site_with(tmp_path, lines), load_profiles())
    assert e.value.key == key and e.value.entry == "[site]"


def test_codes_do_not_reach_the_controller() -> None:
    """The controller's compiled config (and so its hash) is unchanged by the codes."""
    from gateway.config import load_sites
    from gateway.tooling.compiler import compile_site

    site = load_sites()["are-kall"]
    compiled = compile_site(site)
    assert "county" not in str(compiled) and "2321" not in str(compiled)


