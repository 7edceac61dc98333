"""sot mqtt-auth: Mosquitto's password_file format, the ACL rules, passwords kept outside git."""

from __future__ import annotations

import base64
import json
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from gateway import mqttauth
from gateway.cli import main

# Written by Mosquitto 2.0.11's `mosquitto_passwd -c -b FILE u secret`.
MOSQUITTO_LINE = ("u:$7$101$CLFg8XAW1UV8BwUP$xRvTvReCGVwSfX6oV2h2xvai4+UH80dMlpVWjygHw2+UkyV1Dwd3"
                  "L0Kisr8X27qdhfl1tTOwZbwwWTiC+mg+iw==")


def test_hash_is_the_one_mosquitto_passwd_writes():
    salt = base64.b64decode(MOSQUITTO_LINE.split("$")[3])
    assert "u:" + mqttauth.password_hash("secret", salt=salt) == MOSQUITTO_LINE


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="no mosquitto_passwd")
def test_mosquitto_passwd_accepts_the_format(tmp_path: Path):
    # mosquitto_passwd -U rejects a file it cannot parse; -b adds a user to ours.
    f = tmp_path / "pw"
    f.write_text(f"a:{mqttauth.password_hash('x')}\n")
    subprocess.run(["mosquitto_passwd", "-b", str(f), "b", "y"], check=True, timeout=10)
    lines = f.read_text().splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["a", "b"]
    assert all(ln.split(":")[1].startswith("$7$101$") for ln in lines)


def test_acl_keeps_each_site_under_its_own_root():
    acl = mqttauth.acl_text()
    assert "pattern write sot/v1/%u/event" in acl and "pattern read sot/v1/%u/ack" in acl
    assert "pattern write sot/v1/%u/#" not in acl  # not its own downlink topics either
    assert "pattern read sot/v1/gateway/status" in acl
    assert "user sot-gateway\ntopic read sot/v1/#" in acl


def test_cli_writes_files_and_keeps_passwords(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    secrets = tmp_path / "var" / "passwords.json"
    out = tmp_path / "mqtt"
    pki = tmp_path / "pki"
    args = ["mqtt-auth", "--out", str(out), "--secrets", str(secrets), "--pki", str(pki)]
    assert main(args) == 2  # no certificate yet: the broker listens with TLS only
    assert main(["pki", "init", "--out", str(pki)]) == 0
    assert main(args) == 0
    conf = (out / "mosquitto.conf").read_text()
    assert "listener 8883" in conf and f"certfile {pki.resolve() / 'broker.crt'}" in conf
    assert "tls_version tlsv1.2" in conf
    first = json.loads(secrets.read_text())
    assert "are-kall" in first and mqttauth.GATEWAY_USER in first
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    users = [ln.split(":")[0] for ln in (out / "password_file").read_text().splitlines()]
    assert sorted(users) == sorted(first)
    assert main(args) == 0
    assert json.loads(secrets.read_text()) == first  # rerunning keeps the passwords
    assert main(["config", "compile", "are-kall", "--credentials", str(secrets),
                 "--ca", str(pki / "ca.crt")]) == 0
    compiled = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert compiled["mqtt"]["user"] == "are-kall"
    assert compiled["mqtt"]["password"] == first["are-kall"]
    assert base64.b64decode(compiled["mqtt"]["ca"]).startswith(b"\x30\x82")  # the CA, DER


def test_reserved_site_ids_are_refused():
    with pytest.raises(ValueError, match="reserved"):
        mqttauth.passwords(["gateway"])
    with pytest.raises(ValueError, match="reserved"):
        mqttauth.passwords(["sot-gateway-2"])


def test_conf_ties_each_account_to_its_client_id_on_the_listener(tmp_path: Path):
    conf = mqttauth.conf_text(tmp_path / "pw", tmp_path / "acl", port=1884, host="127.0.0.1",
                              extra=["log_dest stderr"]).splitlines()
    assert "allow_anonymous false" in conf
    # a listener option: it must come after the listener line it belongs to
    assert conf.index("use_username_as_clientid true") > conf.index("listener 1884 127.0.0.1")
    assert conf.index("log_dest stderr") < conf.index("listener 1884 127.0.0.1")
    assert f"message_size_limit {mqttauth.MESSAGE_SIZE_LIMIT}" in conf


def test_each_gateway_worker_gets_an_account_with_the_gateways_rules(tmp_path: Path):
    creds = mqttauth.passwords(["are-kall"], gateway_workers=3)
    assert sorted(creds) == ["are-kall", "sot-gateway", "sot-gateway-2", "sot-gateway-3"]
    mqttauth.write_files(tmp_path, creds)
    acl = (tmp_path / "acl_file").read_text()
    for u in ("sot-gateway", "sot-gateway-2", "sot-gateway-3"):
        assert f"user {u}\ntopic read sot/v1/#" in acl
    assert "user are-kall" not in acl
    assert "use_username_as_clientid true" in (tmp_path / "mosquitto.conf").read_text()


def test_message_size_limit_admits_every_legal_message_with_margin():
    from gateway import crisis, ingest

    # the largest legal message: a crisis message, whose whole PUBLISH the gateway keeps within
    # crisis.MAX_PACKET on every site's topic (so its payload is smaller still), or a
    # controller's payload of at most ingest.MAX_PAYLOAD
    legal = max(crisis.MAX_PACKET, ingest.MAX_PAYLOAD)
    assert legal * 1.5 <= mqttauth.MESSAGE_SIZE_LIMIT
    # and the packet limit leaves room for the topic and headers of such a message
    assert mqttauth.MESSAGE_SIZE_LIMIT + 512 <= mqttauth.MAX_PACKET_SIZE
