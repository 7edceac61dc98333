"""sot pki init: the municipality's CA and the broker's certificate (gateway/pki.py)."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

from cryptography import x509

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
