"""sot pki init: the municipality's CA and the broker's certificate (gateway/pki.py)."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.cli import main


def test_pki_init_issues_a_broker_certificate_signed_by_a_kept_ca(tmp_path: Path):
    out = tmp_path / "pki"
    assert main(["pki", "init", "--out", str(out), "--host", "mqtt.kommun.se",
                 "--ip", "192.0.2.10"]) == 0
    ca = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    broker = x509.load_pem_x509_certificate((out / "broker.crt").read_bytes())
    broker.verify_directly_issued_by(ca)
    san = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"mqtt.kommun.se", "localhost"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("192.0.2.10"), ipaddress.ip_address("127.0.0.1")}
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for key in ("ca.key", "broker.key"):  # private keys: owner only (or group mosquitto)
        assert stat.S_IMODE((out / key).stat().st_mode) & 0o007 == 0
    assert stat.S_IMODE((out / "ca.key").stat().st_mode) == 0o600
    # Again: the CA the controllers trust is kept; the broker gets a new certificate from it.
    assert main(["pki", "init", "--out", str(out)]) == 0
    assert x509.load_pem_x509_certificate((out / "ca.crt").read_bytes()) == ca
    again = x509.load_pem_x509_certificate((out / "broker.crt").read_bytes())
    assert again != broker
    again.verify_directly_issued_by(ca)


def test_var_is_ignored_by_git():
    ignored = (Path(__file__).resolve().parents[2] / ".gitignore").read_text().split()
    assert "var/" in ignored  # `sot pki init` keeps its keys under var/pki by default


def test_a_ca_whose_key_is_kept_offline_is_never_replaced(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]):
    # deploy.md: the CA's key goes to offline storage after the first run. A renewal without it
    # must not make a new CA (no controller in the field would trust the broker): it stops and
    # says how to give the key; with --ca-key the kept CA signs the new broker certificate.
    out = tmp_path / "pki"
    assert main(["pki", "init", "--out", str(out)]) == 0
    ca_bytes = (out / "ca.crt").read_bytes()
    broker_bytes = (out / "broker.crt").read_bytes()
    offline = tmp_path / "usb" / "ca.key"
    offline.parent.mkdir()
    (out / "ca.key").rename(offline)
    capsys.readouterr()

    assert main(["pki", "init", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--ca-key" in err and str(out / "ca.crt") in err
    assert (out / "ca.crt").read_bytes() == ca_bytes  # nothing touched
    assert (out / "broker.crt").read_bytes() == broker_bytes
    assert not (out / "ca.key").exists()

    assert main(["pki", "init", "--out", str(out), "--ca-key", str(offline)]) == 0
    ca = x509.load_pem_x509_certificate(ca_bytes)
    assert (out / "ca.crt").read_bytes() == ca_bytes
    renewed = x509.load_pem_x509_certificate((out / "broker.crt").read_bytes())
    assert renewed.public_bytes(serialization.Encoding.PEM) != broker_bytes
    renewed.verify_directly_issued_by(ca)
    assert not (out / "ca.key").exists()  # the key stays where it is kept

    # Another CA's key: refused, it would sign a certificate nobody trusts.
    other = tmp_path / "other"
    assert main(["pki", "init", "--out", str(other)]) == 0
    capsys.readouterr()
    assert main(["pki", "init", "--out", str(out), "--ca-key", str(other / "ca.key")]) == 2
    assert "is not the key of" in capsys.readouterr().err
    assert (out / "broker.crt").read_bytes() == renewed.public_bytes(serialization.Encoding.PEM)
