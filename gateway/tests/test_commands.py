"""The gateway's command signer (gateway/commands.py) and the key provisioning: the signing
rule of docs/mqtt.md, "Commands", checked against a fixed vector the firmware's own unit test
(firmware/tests/unit/test_command.py) verifies under MicroPython."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from pg_cluster import Backend, backend_fixture, pg_cluster_fixture  # noqa: F401

from gateway import cli, commands

KEY = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
NOW = 1795444065


def test_sign_produces_the_vector_the_firmware_verifies() -> None:
    body = commands.sign("are-kall", "gen_test", KEY, 7, {"minutes": 15, "load": False},
                         now=NOW, ttl_s=120, cid="c1")
    assert body["sig"] == "3c2ad4f0c86fee6da879ef28da148bf5c4e2182f85f6d9daa4f768b165be5906"
    assert body["expires"] == NOW + 120 and body["counter"] == 7
    assert commands.canonical("are-kall", "gen_test", "c1", NOW, NOW + 120, 7,
                              {"minutes": 15, "load": False}) == \
        b"v1\nare-kall\ngen_test\nc1\n1795444065\n1795444185\n7\nload=false;minutes=15"


def test_verify_refuses_a_changed_argument_site_or_key() -> None:
    body = commands.sign("are-kall", "gen_test", KEY, 1, {"minutes": 15}, now=NOW)
    assert commands.verify("are-kall", "gen_test", KEY, body)
    assert not commands.verify("are-kall", "gen_test", KEY, {**body, "args": {"minutes": 16}})
    assert not commands.verify("by-n", "gen_test", KEY, body)
    assert not commands.verify("are-kall", "gen_start", KEY, body)
    assert not commands.verify("are-kall", "gen_test", "ff" * 32, body)


def test_sign_refuses_what_the_controller_would_refuse() -> None:
    with pytest.raises(ValueError):
        commands.sign("are-kall", "gen_test", KEY, 1, {"minutes": 1.5})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        commands.sign("are-kall", "gen_test", KEY, 1, {"Minutes": 1})
    with pytest.raises(ValueError):
        commands.sign("are-kall", "rebirth", KEY, 1, ttl_s=301)  # longer than 5 minutes


def test_keys_kept_0600_and_reused(tmp_path: Path) -> None:
    store = tmp_path / "var" / "mqtt" / "cmd-keys.json"
    a = commands.cmd_keys(["are-kall", "by-n"], store)
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    assert all(len(bytes.fromhex(k)) == 32 for k in a.values()) and a["are-kall"] != a["by-n"]
    b = commands.cmd_keys(["are-kall", "by-n", "new-site"], store)
    assert b["are-kall"] == a["are-kall"] and "new-site" in b


def test_mqtt_auth_provisions_keys_and_compile_puts_the_sites_in(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]
                                                                 ) -> None:
    secrets = tmp_path / "var" / "mqtt" / "passwords.json"
    pki = tmp_path / "pki"
    assert cli.main(["pki", "init", "--out", str(pki)]) == 0
    assert cli.main(["mqtt-auth", "--out", str(tmp_path / "broker"),
                     "--secrets", str(secrets), "--pki", str(pki)]) == 0
    keys = json.loads((secrets.parent / "cmd-keys.json").read_text())
    site = sorted(keys)[0]
    out = tmp_path / "config.json"
    assert cli.main(["config", "compile", site, "--credentials", str(secrets),
                     "--out", str(out)]) == 0
    compiled = json.loads(out.read_text())
    assert compiled["mqtt"]["cmd_key"] == keys[site]
    assert compiled["mqtt"]["cmd_key"] != compiled["mqtt"]["password"]


def test_the_controllers_results_pass_the_contract_and_nonsense_does_not() -> None:
    from gw_samples import event

    from gateway.ingest import load_fast_checks, load_validators

    v = load_validators()["event"]
    fast = load_fast_checks()["event"]
    good = [{"id": "c1", "name": "gen_start", "result": "refused", "why": "mode:manual"},
            {"id": "c1", "name": "rebirth", "result": "done"},
            {"id": None, "name": None, "result": "refused", "why": "malformed"}]
    for data in good:
        doc = event("cmd_result", data=data)
        assert not list(v.iter_errors(doc)), data
        fast(doc)
    bad = [{"id": "c1", "name": "rebirth", "result": "ok"},
           {"id": "C1!", "name": "rebirth", "result": "done"},
           {"id": "c1", "result": "done"},
           {"id": "c1", "name": "rebirth", "result": "refused", "why": "x" * 33}]
    for data in bad:
        assert list(v.iter_errors(event("cmd_result", data=data))), data


def test_a_result_is_filed_once_with_one_audit_entry(backend: Backend) -> None:
    from gw_samples import SITES, Clock, event, raw

    from gateway.ingest import Ingest, Result
    db = backend.open()
    try:
        db.upsert_sites(SITES)
        ing = Ingest(db, Clock())
        doc = event("cmd_result", data={"id": "c1", "name": "gen_start", "result": "refused",
                                        "why": "mode:manual"})
        topic = "sot/v1/are-kall/event"
        assert ing.handle(topic, raw(doc)) == Result("stored", "are-kall", "event")
        assert ing.handle(topic, raw({**doc, "hist": True})).outcome == "duplicate"
        audit = [a for a in db.audit_log() if a["action"] == "cmd_result"]
        assert [(a["actor"], a["target"], a["detail"]) for a in audit] == \
            [("are-kall", "are-kall/gen_start/c1", "refused mode:manual")]
    finally:
        db.close()


def test_counter_only_grows_and_a_command_without_result_is_unknown_after_expiry(
        backend: Backend) -> None:
    from gw_samples import SITES

    db = backend.open()
    try:
        db.upsert_sites(SITES)
        a = db.next_cmd_counter("are-kall", NOW)
        b = db.next_cmd_counter("are-kall", NOW - 3600)  # clock stepped back: still above
        assert b == a + 1 and a >= NOW * 1000
        sent: list[tuple[str, str]] = []
        body = commands.send(db, lambda t, p: sent.append((t, p)), "are-kall", "gen_start", KEY,
                             "samordnare", now=NOW)
        assert sent[0][0] == "sot/v1/are-kall/cmd/gen_start"
        assert commands.verify("are-kall", "gen_start", KEY, json.loads(sent[0][1]))
        rec = db.commands("are-kall")[0]
        assert rec["id"] == body["id"] and rec["counter"] > b
        assert commands.status(rec, NOW + 10) == ("sent", None)
        assert commands.status(rec, body["expires"] + 1) == ("unknown", None)
        assert commands.LABELS["unknown"] == "okänt / unknown"
        rec["results"] = [{"result": "accepted"}]
        assert commands.status(rec, body["expires"] + 1) == ("unknown", None)  # never "done"
        rec["results"] = [{"result": "accepted"}, {"result": "failed", "why": "stopped_locally"}]
        assert commands.status(rec, body["expires"] + 1) == ("failed", "stopped_locally")
        assert [a["action"] for a in db.audit_log()] == ["cmd_sent"]
    finally:
        db.close()
