"""Crisis messages: the gateway's validation mirrors the controller's, what
it publishes, updates and withdrawals, the per-site acknowledgement, and that the text is never
HTML on any page."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from gw_samples import Clock
from pg_cluster import Backend, backend_fixture, pg_cluster_fixture  # noqa: F401
from test_auth import FakeBroker, app_at, client
from web_login import login

from gateway import crisis

NOW = 1_795_444_065.0
OK = {"sv": "Vattnet är otjänligt.", "severity": "severe", "from": "Åre kommun"}


@pytest.mark.parametrize("field,value,why", [
    ("sv", "x" * 10_000, "För lång"),                  # 10 kB
    ("sv", "å" * 281, "för lång: 281 tecken"),          # one character over, counted as characters
    ("sv", "", "saknas"),                               # empty
    ("sv", " \t\x00\x1b ", "tom"),                      # only control characters and spaces
    ("sv", b"\xff\xfe not utf-8", "UTF-8"),             # invalid UTF-8
    ("sv", "bad \udcff surrogate", "UTF-8"),            # what invalid UTF-8 decodes to, escaped
    ("en", "y" * 281, "för lång"),
    ("from", "z" * 41, "för lång"),
    ("severity", "panic", "allvarlighetsgrad"),
    ("expires_min", "-5", "Giltighetstid"),
])
def test_abuse_is_refused_with_a_reason(field, value, why):
    with pytest.raises(crisis.CrisisError) as err:
        crisis.validate({**OK, field: value}, NOW)
    assert why.lower() in err.value.sv.lower() and err.value.field == field
    assert err.value.en  # and in English


def test_control_characters_become_spaces_and_html_stays_text():
    m = crisis.validate({**OK, "sv": "Rad ett\x1b[2J\x00\nrad\u2028två\x85 <script>x</script>",
                         "en": "  ", "expires_min": "90"}, NOW)
    assert m.sv == "Rad ett [2J rad två <script>x</script>"  # as the panel's clean() makes it
    assert m.en is None  # blank English is left out, not sent empty
    assert m.expires == int(NOW) + 5400
    p = json.loads(m.encoded())
    assert p == {"id": m.id, "sv": m.sv, "severity": "severe", "from": "Åre kommun",
                 "ts": int(NOW), "expires": int(NOW) + 5400}
    assert crisis.ID_RE.fullmatch(m.id) and len(m.id) <= 32
    # the packet that reaches the controller, on the longest site id, stays within MAX_PACKET
    big = crisis.validate({**OK, "sv": "😀" * 200, "en": "é" * 280}, NOW)
    assert crisis.packet_size("x" * 64, big.id, big.encoded()) <= crisis.MAX_PACKET
    with pytest.raises(crisis.CrisisError):
        crisis.validate({**OK, "sv": "😀" * 280, "en": "😀" * 280}, NOW)
    # an update always moves ts on, or the controller would take it for the retained repeat
    assert crisis.validate(OK, NOW, msg_id="k1", previous_ts=int(NOW)).ts == int(NOW) + 1


def test_send_update_ack_withdraw_through_the_api(tmp_path: Path, backend: Backend):
    clock = Clock()
    clock.t = NOW

    async def main() -> None:
        async with app_at(tmp_path, clock, store=backend.open) as (base, db, broker), \
                client() as s:
            assert isinstance(broker, FakeBroker)
            csrf = await login(s, base, "kim")
            h = {"X-CSRF-Token": csrf}
            body = {"sv": "Koka vattnet <b>nu</b>", "en": "Boil water", "severity": "warning",
                    "from": "Åre kommun", "municipalities": ["Åre"]}
            async with s.post(base + "/api/crisis", json=body, headers=h) as r:
                out = await r.json()
                assert r.status == 200, out
            mid = out["id"]
            sites = sorted(t.split("/")[2] for t, _, _ in broker.sent)
            assert sites == out["sites"] and "are-kall" in sites
            assert all(t.endswith(f"/crisis/{mid}") and retain for t, _, retain in broker.sent)
            # refused input never reaches the broker
            n = len(broker.sent)
            async with s.post(base + "/api/crisis", json={**body, "sv": "x" * 10_000},
                              headers=h) as r:
                assert r.status == 400 and "280" in (await r.json())["sv"]
            async with s.post(base + "/api/crisis", json={**body, "municipalities": ["Nowhere"]},
                              headers=h) as r:
                assert r.status == 400
            assert len(broker.sent) == n
            # the compose form: refused with the reason, the text kept (escaped) for fixing
            async with s.post(base + "/crisis", data={
                    "csrf": csrf, "site": "are-kall", "severity": "info", "from": "Åre kommun",
                    "sv": "<script>alert(1)</script>" + "x" * 300}) as r:
                page = await r.text()
                assert r.status == 400
            assert "för lång: 325 tecken, högst 280" in page
            assert "<script>alert" not in page and "&lt;script&gt;alert(1)" in page
            assert len(broker.sent) == n

            # the staff at Kall press OK
            db.add_crisis_ack("are-kall", {"id": mid, "boot": 1, "seq": 5, "ts": int(NOW) + 3},
                              NOW + 3)
            async with s.get(f"{base}/api/crisis/{mid}") as r:
                d = {x["site"]: x for x in (await r.json())["delivery"]}
            assert d["are-kall"]["acked"] == NOW + 3
            assert db.snapshots("are-kall")[0].crisis_unacked == ()
            # an update is new text for the same id: it needs a new acknowledgement
            clock.t = NOW + 60
            async with s.post(f"{base}/api/crisis/{mid}", json={**body, "sv": "Nu är det klart"},
                              headers=h) as r:
                assert r.status == 200
                assert (await r.json())["payload"]["ts"] == int(NOW) + 60
            async with s.get(f"{base}/api/crisis/{mid}") as r:
                d = {x["site"]: x for x in (await r.json())["delivery"]}
            assert d["are-kall"]["acked"] is None
            # ... and the alert rule crisis_ack_missing waits for it again, as the page does
            assert [c for c, _ in db.snapshots("are-kall")[0].crisis_unacked] == [mid]
            # the pages show the text escaped, never as markup
            async with s.get(f"{base}/crisis/{mid}") as r:
                page = await r.text()
            assert "<b>nu" not in page
            async with s.post(f"{base}/api/crisis/{mid}/withdraw", headers=h) as r:
                assert r.status == 200
            assert broker.sent[-1][1] == b"" and broker.sent[-1][2] is True
            async with s.get(f"{base}/api/signage/are-kall") as r:
                assert (await r.json())["messages"] == []
            async with s.get(f"{base}/crisis") as r:
                assert "Koka vattnet &lt;b&gt;nu&lt;/b&gt;" not in await r.text()  # updated

    asyncio.run(asyncio.wait_for(main(), 30))


def _fill(site: str, mid: str, limit: int) -> dict[str, str]:
    """Form fields whose packet on `site`'s topic is exactly `limit` bytes."""
    base = crisis.validate({**OK, "sv": "x", "en": "x"}, NOW, msg_id=mid, sites=[site])
    pad = limit - crisis.packet_size(site, mid, base.encoded())
    out = {}
    for key in ("sv", "en"):  # four-byte characters, then single bytes, 280 characters each
        n = min(pad // 4, 276)
        text = "x" + "😀" * n + "x" * min(pad - 4 * n, 3)
        pad -= len(text.encode()) - 1
        out[key] = text
    assert pad == 0
    return {**OK, **out}


def test_size_limit_is_the_controllers_packet_on_each_sites_topic():
    # One quantity on both sides: the PUBLISH's Remaining Length (topic + packet id + payload)
    # <= MAX_PACKET, the controller's receive buffer (firmware/sot/mqtt/client.py).
    fw = (Path(__file__).resolve().parents[2] / "firmware/sot/mqtt/client.py").read_text()
    assert f"MAX_PACKET = const({crisis.MAX_PACKET})" in fw
    fields = _fill("are-kall", "k1", crisis.MAX_PACKET)
    m = crisis.validate(fields, NOW, msg_id="k1", sites=["are-kall"])
    assert crisis.packet_size("are-kall", "k1", m.encoded()) == crisis.MAX_PACKET
    # the same text does not fit a site with a longer id, nor one byte more on this one
    with pytest.raises(crisis.CrisisError, match="2049|too large"):
        crisis.validate(fields, NOW, msg_id="k1", sites=["are-kall", "are-kallx"])
    with pytest.raises(crisis.CrisisError):
        crisis.validate({**fields, "sv": fields["sv"] + "x"}, NOW, msg_id="k1", sites=["are-kall"])


def test_decomposed_characters_are_sent_composed():
    m = crisis.validate({**OK, "sv": "Sta\u0308ng va\u0308gen", "from": "A\u030are"}, NOW)
    assert m.sv == "Stäng vägen" and m.source == "Åre"
    # 280 decomposed letters are 280 characters, as on the panel
    assert crisis.validate({**OK, "sv": "a\u0308" * 280}, NOW).sv == "ä" * 280


def test_a_full_site_is_refused_before_sending_and_a_controllers_refusal_is_shown(
        tmp_path: Path, backend: Backend):
    clock = Clock()
    clock.t = NOW

    async def main() -> None:
        async with app_at(tmp_path, clock, store=backend.open) as (base, db, broker), \
                client() as s:
            assert isinstance(broker, FakeBroker)
            csrf = await login(s, base, "kim")
            h = {"X-CSRF-Token": csrf}
            body = {"sv": "Koka vattnet", "severity": "warning", "from": "Åre kommun",
                    "sites": ["are-kall"]}
            ids = []
            for i in range(crisis.MAX_MESSAGES):
                clock.t = NOW + i
                async with s.post(base + "/api/crisis", json=body, headers=h) as r:
                    assert r.status == 200
                    ids.append((await r.json())["id"])
            n = len(broker.sent)
            async with s.post(base + "/api/crisis", json=body, headers=h) as r:
                out = await r.json()
                assert r.status == 409 and out["sites"] == ["are-kall"], out
            assert len(broker.sent) == n  # never published: the panel could not hold it
            # the controller refused one anyway (out of memory): its event is filed like any
            # other, and the dashboard says so instead of "sent"
            m = db.crisis_message(ids[0])
            assert m is not None
            db.add_event("are-kall", {"boot": 1, "seq": 0, "ts": int(NOW) + 9, "hist": False,
                                      "type": "crisis_refused",
                                      "data": {"id": ids[0], "msg_ts": m["ts"], "why": "memory"}},
                         "", NOW + 9)
            async with s.get(f"{base}/api/crisis/{ids[0]}") as r:
                d = {x["site"]: x for x in (await r.json())["delivery"]}
            assert d["are-kall"]["refused"] == "memory" and d["are-kall"]["acked"] is None
            async with s.get(f"{base}/crisis/{ids[0]}") as r:
                page = await r.text()
            assert "Vägrat av styrenheten" in page and "minnet räckte inte" in page
            async with s.get(f"{base}/crisis") as r:
                assert "1 vägrat" in await r.text()
            # a refusal of an older version does not count for an update
            clock.t = NOW + 100
            async with s.post(f"{base}/api/crisis/{ids[0]}", json={**body, "sv": "Ny text"},
                              headers=h) as r:
                assert r.status == 200
            async with s.get(f"{base}/api/crisis/{ids[0]}") as r:
                d = {x["site"]: x for x in (await r.json())["delivery"]}
            assert d["are-kall"]["refused"] is None

    asyncio.run(asyncio.wait_for(main(), 30))
