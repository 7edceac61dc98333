"""The gateway's command signer (gateway/commands.py) and the key provisioning: the signing
rule of docs/mqtt.md, "Commands", checked against a fixed vector the firmware's own unit test
(firmware/tests/unit/test_command.py) verifies under MicroPython."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

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
    assert cli.main(["mqtt-auth", "--out", str(tmp_path / "broker"),
                     "--secrets", str(secrets)]) == 0
    keys = json.loads((secrets.parent / "cmd-keys.json").read_text())
    site = sorted(keys)[0]
    out = tmp_path / "config.json"
    assert cli.main(["config", "compile", site, "--credentials", str(secrets),
                     "--out", str(out)]) == 0
    compiled = json.loads(out.read_text())
    assert compiled["mqtt"]["cmd_key"] == keys[site]
    assert compiled["mqtt"]["cmd_key"] != compiled["mqtt"]["password"]
