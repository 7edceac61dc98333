"""The dashboard's templates (gateway/web/templates): each page template extends the one base
layout, escapes whatever a view model carries (a site's name, a crisis message, a user name),
and every text key a template or the web code names is in the catalogue in both languages."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from jinja2 import nodes

from gateway import texts
from gateway.feeds.view import AlertRow, FeedRow, FeedsPage
from gateway.model import AlertRecord, SiteSummary
from gateway.texts import Text
from gateway.web import pages, render, views

TEMPLATES = render.TEMPLATES
WEB = Path(render.__file__).resolve().parent
HOSTILE = "<script>alert(1)</script>\"'&x"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
H = HOSTILE


def page_templates() -> list[str]:
    """Every template a handler renders; `_*.html` are macro libraries they import."""
    return sorted(p.name for p in TEMPLATES.glob("*.html")
                  if not p.name.startswith("_") and p.name != "base.html")


def hostile_summary() -> SiteSummary:
    return SiteSummary(id=H, name=H, municipality=H, lat=63.0, lon=13.0, status="online", fw=H,
                       heartbeat_s=30, mode=H, grid_state=H, genset_state=H, fuel_pct=50,
                       hours_left=5.5, devices={H: "offline", "x" + H: "mismatch"},
                       updated_ts=1.0e9, age_s=4000.0, stale=True)


def hostile_contexts() -> dict[str, dict[str, Any]]:
    """A context for every page template, with a hostile string in every field a user, a site or
    the configuration can fill."""
    site = hostile_summary()
    state = {"capability": {"fuel_for_sale": {H: 1200}}}
    delivery = [{"site": H, "crisis_id": H, "sent": 1.0e9, "acked": None, "refused": H,
                 "refused_at": 1.0e9}]
    msg = {"id": H, "severity": H, "sv": H, "en": H, "from": H, "ts": 1.0e9, "created_by": H,
           "expires": 1.0e9 + 60, "withdrawn": None}
    form_values = {"sv": H, "en": H, "from": H, "expires_min": H, "severity": H, "site": [H]}
    alert = AlertRecord(1, H, H, H, H, H, H, "firing", 1.0e9, sv=H, en=H, acked_by=H)
    run = {"ts": 1.0e9, "started": 1.0e9, "trigger": H, "result": "fail", "why": H,
           "start_s": 8.5, "stable_s": None, "v_min": 228.0, "v_max": 231.0, "f_min": 49.9,
           "f_max": 50.1, "load_kw": None, "fuel_used_l": 0.4, "alarms": [H]}
    cmd = {"id": H, "name": "gen_test", "args": {"minutes": 5, "load": False},
           "issued": 1.0e9, "expires": 1.0e9 + 120, "counter": 1, "actor": H, "results": []}
    base = {"title": Text(H, H), "nav": views.nav("/", H, H, H, admin=True), "refresh": 5,
            "csrf": H}
    return {
        "overview.html": {**base, "rows": [views.site_row(site, state)],
                          "map": views.site_map([site]), "unacked": 2, "generated": H, "tz": H},
        "site.html": {**base, "site_id": H, "rows": [views.site_row(site, state)],
                      "chart": views.history_chart([{"ts": 1.0e9, "fuel_pct": 50,
                                                     "hours_left": 5},
                                                    {"ts": 1.0e9 + 60, "fuel_pct": 40,
                                                     "hours_left": 4}]),
                      "delivery": views.delivery_rows(delivery, {H: H}, {H: msg}),
                      "alerts": [{"severity": H, "text": Text(H, H), "status": H}],
                      "events": views.event_items([{"ts": 1.0e9, "type": H, "data": {H: H},
                                                    "hist": True}]),
                      "exercise": views.exercise_view({
                          "schedule_sv": H, "schedule_en": H, "next": 1.0e9, "overdue": True,
                          "last": run, "history": [run, {**run, "result": "pass"}]}),
                      "remote": views.remote_view(
                          coordinator=True, why_not=None, minutes=15, on_load=True,
                          recs=[{**cmd, "results": [{"result": "refused", "why": "mode:" + H}]},
                                {**cmd, "name": H, "args": {}}], now=1.0e9)},
        "command_confirm.html": {**base, "site_id": H, "site_name": H, "name": H,
                                 "action": views.command_action("gen_test",
                                                                {"minutes": 5, "load": False}),
                                 "args": {H: H}},
        "alerts.html": {**base, "rows": views.alert_rows([alert], can_ack=True)
                        + views.alert_rows([alert], can_ack=False)},
        "crisis.html": {**base, "form": views.compose_form(
            [site], msg=None, error=Text(H, H), values=form_values, max_text=280, max_from=64),
            "rows": views.message_rows([msg], {H: delivery}, 1.0e9)},
        "crisis_detail.html": {**base, "m": views.message_detail({**msg, "withdrawn": 1.0e9}),
                               "delivery": views.delivery_rows(delivery, {H: H}, None),
                               "form": views.compose_form([site], msg=msg, error=Text(H, H),
                                                          values=None, max_text=280,
                                                          max_from=64)},
        "audit.html": {**base, "rows": views.audit_rows([{"ts": 1.0e9, "actor": H, "action": H,
                                                          "target": H, "detail": H}])},
        "login.html": {**base, "next_url": H, "token": H, "error": H},
        "message.html": {**base, "message": Text(H, H)},
        "signage.html": {**base, "site_id": H, "name": H, "municipality": H, "initial": H,
                         "script_texts": H},
        "signage_missing.html": {**base},
        "feeds.html": {**base, "can_approve": True, "error": Text(H, H),
                       "fmt": lambda ts: H if ts is not None else "-",
                       "view": FeedsPage(
                           alerts=[AlertRow(key=H, real=real, status=H, msg_type=H, level=H,
                                            headline=Text(H, H), origin=H, feed=H, sent=1.0e9,
                                            expires=1.0e9 + 60, areas=H, sites=(H,),
                                            shown=(H,), awaiting=(H,), note_room=40, web=H)
                                   for real in (True, False)],
                           feeds=[FeedRow(name=H, url=H, ok=False, stale=True, failures=3,
                                          last_error=H, last_success=1.0e9, counts={H: 2})])},
    }


def test_every_page_template_has_a_hostile_context() -> None:
    assert sorted(hostile_contexts()) == page_templates()


@pytest.mark.parametrize("name", page_templates())
def test_template_escapes_what_the_view_model_carries(name: str) -> None:
    env = render.environment()
    assert env.autoescape is True  # for every template, whatever its name
    out = env.get_template(name).render(**hostile_contexts()[name])
    assert "<script>" not in out and '"\'&x' not in out, name
    if name != "signage_missing.html":  # shows nothing but the fixed "unknown site"
        assert ESCAPED in out, name


@pytest.mark.parametrize("name", page_templates())
def test_every_page_extends_the_base_layout(name: str) -> None:
    env = render.environment()
    ast = env.parse(env.loader.get_source(env, name)[0])  # type: ignore[union-attr]
    parents = [n.template.value for n in ast.find_all(nodes.Extends)
               if isinstance(n.template, nodes.Const)]
    assert parents == ["base.html"], name


def test_no_template_marks_a_value_safe() -> None:
    env = render.environment()
    for p in TEMPLATES.glob("*.html"):
        ast = env.parse(p.read_text(encoding="utf-8"))
        filters = {f.name for f in ast.find_all(nodes.Filter)}
        assert "safe" not in filters, p.name
        assert not list(ast.find_all(nodes.MarkSafe)), p.name
        assert "autoescape false" not in p.read_text(encoding="utf-8"), p.name


def test_partials_only_define_macros() -> None:
    env = render.environment()
    for p in TEMPLATES.glob("_*.html"):
        ast = env.parse(p.read_text(encoding="utf-8"))
        assert list(ast.find_all(nodes.Macro)), p.name
        assert not list(ast.find_all(nodes.Extends)), p.name


SECTIONS = ("page.", "mode.", "grid.", "genset.", "signage.", "product.")


def _template_keys() -> set[str]:
    """Every string constant in the templates that names a catalogue text."""
    env = render.environment()
    keys = set()
    for p in TEMPLATES.glob("*.html"):
        ast = env.parse(p.read_text(encoding="utf-8"))
        keys |= {n.value for n in ast.find_all(nodes.Const)
                 if isinstance(n.value, str) and n.value.startswith(SECTIONS)}
    return keys


def _code_keys() -> tuple[set[str], set[str]]:
    """The keys the web code names literally (text("page.…"), catalogue lookups), and the
    sections it reads whole (.section("page.unit"))."""
    keys, sections = set(), set()
    named = re.compile('"((?:' + "|".join(re.escape(s) for s in SECTIONS) + ')[a-z0-9_.]+)"')
    for p in WEB.glob("*.py"):
        code = p.read_text(encoding="utf-8")
        sections |= set(re.findall(r'section\("([a-z0-9_.]+)"\)', code))
        keys |= set(named.findall(code))
    return {k for k in keys - sections if not k.endswith((".", ".html"))}, sections


def test_every_text_key_in_templates_and_web_code_is_in_the_catalogue() -> None:
    cat = texts.catalogue()
    code_keys, sections = _code_keys()
    keys = _template_keys() | code_keys
    for section in sections:
        assert cat.section(section), section
    assert len(_template_keys()) > 50  # the scan sees the templates' keys
    missing = sorted(k for k in keys if k not in cat)
    assert missing == []
    for k in keys:
        assert cat[k].sv.strip() and cat[k].en.strip(), k


def test_every_text_the_signage_script_uses_is_handed_to_it() -> None:
    script = (WEB.parent / "static" / "signage.js").read_text(encoding="utf-8")
    handed = pages.signage_texts()
    used = set(re.findall(r'tx\("([a-z_.]+)"', script))
    assert {"no_data_yet", "updated", "stale", "server_down", "important"} <= used
    assert sorted(k for k in used if not k.endswith(".") and k not in handed) == []
    for prefix in (k for k in used if k.endswith(".")):  # tx("power." + v.power)
        assert any(h.startswith(prefix) for h in handed), prefix
    assert "power.grid" in handed and "diesel" in handed["product"]
    # and the script itself holds no Swedish of its own
    assert not re.search(r"[åäöÅÄÖ]", script)


def test_bilingual_macro_gives_swedish_first_then_english() -> None:
    env = render.environment()
    t = env.from_string('{{ bi("page.nav.overview") }}|{{ bi("page.overview.unacked", n=3) }}|'
                        '{{ bi(value) }}|{{ bi(single) }}')
    out = t.render(value=Text("<a>", "<b>"), single=render.pair("raw"))
    assert out == ('Översikt <span class="en">/ Overview</span>|'
                   '3 okvitterade larm <span class="en">/ 3 unacknowledged alerts</span>|'
                   '&lt;a&gt; <span class="en">/ &lt;b&gt;</span>|raw')
