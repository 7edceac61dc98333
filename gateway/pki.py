"""The municipality's CA and the broker's TLS certificate (docs/mqtt.md, "TLS").

`sot pki init --out DIR [--host NAME]... [--ip ADDR]...` writes:

    DIR/ca.crt       the CA's self-signed certificate (PEM): every controller's compiled config
                     and the gateway get it; it is public
    DIR/ca.key       the CA's private key (0600): only this command reads it. Keep it off the
                     broker host if you can; whoever holds it can impersonate the broker
    DIR/broker.crt   the broker's certificate, signed by the CA, with the given host names and
                     addresses as subject alternative names (always localhost and 127.0.0.1)
    DIR/broker.key   the broker's private key (0640, group `mosquitto` when run as root, so
                     Mosquitto reads it after dropping privileges; 0600 otherwise)

Running it again keeps an existing CA (the controllers in the field trust it) and issues a new
broker certificate. A CA whose key has been taken off the host (as it should be) is used with
`--ca-key PATH`; with ca.crt in DIR and no key to go with it the command refuses rather than
make a new CA, which every controller in the field would reject.

Keys are EC P-256: small certificates (a controller's config carries the CA), cheap handshakes
on the boards' mbedTLS, and fast to generate. `var/` is git-ignored, so the default DIR
`var/pki` keeps the keys out of git.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 20 * 365  # the controllers carry the CA for their whole life in the field
BROKER_DAYS = 2 * 365
DEFAULT_HOSTS = ("localhost",)
DEFAULT_IPS = ("127.0.0.1",)


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(cn: str, org: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(org: str, now: datetime.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(f"{org} SOT CA", org)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _broker(ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, hosts: list[str],
            ips: list[str], now: datetime.datetime
            ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    org = ca.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value
    san: list[x509.GeneralName] = [x509.DNSName(h) for h in hosts]
    san += [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0] if hosts else ips[0], str(org)))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=BROKER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _dedup(items: Iterable[str]) -> list[str]:
    out: list[str] = []
    for i in items:
        if i and i not in out:
            out.append(i)
    return out


class PkiError(ValueError):
    """What the operator must sort out before a certificate can be issued (the message says)."""


def _load_ca(ca_path: Path, key_path: Path) -> tuple[ec.EllipticCurvePrivateKey,
                                                     x509.Certificate]:
    try:
        ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
        ca_key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    except (OSError, ValueError, TypeError) as e:
        raise PkiError(f"cannot read the CA ({ca_path}, key {key_path}): {e}") from None
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{key_path}: not an EC key")
    if ca_key.public_key() != ca.public_key():
        raise PkiError(f"{key_path} is not the key of {ca_path}: a broker certificate signed "
                       "with it would not be trusted by the controllers")
    return ca_key, ca


def init(out: Path, *, hosts: Iterable[str] = (), ips: Iterable[str] = (),
         org: str = "Kommunen", ca_key_path: Path | None = None) -> dict[str, Path]:
    """Create (or keep) the CA in `out` and issue the broker's certificate. Returns the paths
    {"ca", "ca_key", "cert", "key"}. `ca_key_path`: the CA's key where it is kept, when not
    in `out`. Raises PkiError when `out` has a CA certificate but no key for it (or the
    reverse): a new CA would cut off every controller that trusts the old one."""
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    paths = {"ca": out / "ca.crt", "ca_key": ca_key_path or out / "ca.key",
             "cert": out / "broker.crt", "key": out / "broker.key"}
    has_ca, has_key = paths["ca"].exists(), paths["ca_key"].exists()
    if ca_key_path is not None and not has_key:
        raise PkiError(f"--ca-key {ca_key_path}: no such file")
    if has_ca and not has_key:
        raise PkiError(
            f"{paths['ca']} is there but not its key {paths['ca_key']}. The controllers in the "
            "field trust this CA: give its key with --ca-key PATH (where it is kept). Only to "
            f"start over with a new CA, remove {paths['ca']} first; every controller's config "
            "must then be compiled and loaded again.")
    if has_key and not has_ca:
        raise PkiError(f"{paths['ca_key']} is there but not the CA certificate {paths['ca']}: "
                       "put the certificate back (it is public: any controller's config has it)")
    if has_ca:
        ca_key, ca = _load_ca(paths["ca"], paths["ca_key"])
    else:
        ca_key, ca = _ca(org, now)
        _write(paths["ca_key"], _key_pem(ca_key), 0o600)
        _write(paths["ca"], ca.public_bytes(serialization.Encoding.PEM), 0o644)
    key, cert = _broker(ca_key, ca, _dedup([*hosts, *DEFAULT_HOSTS]),
                        _dedup([*ips, *DEFAULT_IPS]), now)
    _write(paths["key"], _key_pem(key), 0o600)
    _write(paths["cert"], cert.public_bytes(serialization.Encoding.PEM), 0o644)
    give_key_to_mosquitto(paths["key"])
    return paths


def give_key_to_mosquitto(path: Path) -> None:
    """Run as root, Mosquitto reads its key after dropping to the `mosquitto` user: group
    `mosquitto`, mode 0640. Otherwise the key stays 0600 for the user who runs Mosquitto."""
    if os.geteuid() != 0:
        return
    try:
        import grp

        os.chown(path, -1, grp.getgrnam("mosquitto").gr_gid)
        os.chmod(path, 0o640)
    except (KeyError, ImportError, OSError):
        pass


def ca_der(ca_path: Path | str) -> bytes:
    """The CA certificate in DER, the form the controller's `tls` module loads (cadata)."""
    cert = x509.load_pem_x509_certificate(Path(ca_path).read_bytes())
    return cert.public_bytes(serialization.Encoding.DER)
