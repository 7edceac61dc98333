"""The gateway's own settings, `config/gateway.toml`: its schema, defaults and validation.

Every section and key the gateway reads is declared in `SCHEMA` (type, range or choices,
default), so a misspelt key, a port of "8080" or a negative timeout stops `sot gateway` at once
with an error naming the file, the section and the key (`gateway.validate.ConfigError`),
instead of failing later somewhere inside the service. `gateway/service.py` describes what each
setting does; `DEFAULTS` is what a missing key gets.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

from .feeds.policy import load_policy
from .feeds.poller import load_feeds
from .validate import PATH, ConfigError, Key, Reader, load_toml

# What the errors name when the settings come from Python (tests, the demo), not from a file.
SOURCE = "gateway settings"

_WEEK = 7 * 86400

SCHEMA: dict[str, tuple[Key, ...]] = {
    "mqtt": (
        Key("host", str, "127.0.0.1"),
        Key("port", int, 8883, lo=1, hi=65535),
        Key("client_id", str, "sot-gateway"),
        Key("keepalive_s", int, 30, lo=1, hi=3600),
        Key("user", str, None),
        Key("password", str, None),
        Key("ca", PATH, None, doc="the CA certificate from `sot pki init`: TLS"),
        Key("session_expiry_s", int, 0, lo=0, hi=2**32 - 2,
            doc="0: the session never expires (MQTT 3.1.1); else MQTT 5, expiring this long "
                "after the connection is gone (several workers: docs/deploy.md)"),
        Key("cmd_keys", PATH, "var/mqtt/cmd-keys.json",
            doc="the sites' command keys from `sot mqtt-auth` (dashboard commands)"),
    ),
    "http": (
        Key("host", str, "127.0.0.1"),
        Key("port", int, 8080, lo=0, hi=65535, doc="0: any free port"),
    ),
    "store": (
        Key("path", PATH, "var/sot.sqlite3", doc="SQLite, when url is not set"),
        Key("url", str, None, doc="postgresql://...: PostgreSQL instead (docs/deploy.md)"),
    ),
    "sites": (Key("dir", PATH, "config/sites"),),
    "alerts": (
        Key("enabled", bool, True),
        Key("rules", PATH, None),
        Key("contacts", PATH, None),
        Key("tick_s", float, 5.0, lo=0.01, hi=3600),
        Key("files_dir", PATH, "var"),
        Key("base_url", str, None),
        Key("cap_sender", str, "sot-gateway"),
    ),
    "smtp": (
        Key("host", str, "127.0.0.1"),
        Key("port", int, 25, lo=1, hi=65535),
        Key("sender", str, "sot-gateway@localhost"),
        Key("starttls", bool, False),
        Key("user", str, None),
        Key("password", str, None),
    ),
    "web": (
        Key("session_h", float, 12.0, lo=0.001, hi=24 * 365),
        Key("secure_cookie", (bool, str), "auto", choices=(True, False, "auto")),
        Key("trusted_proxies", list, []),
        Key("login_free_pair", int, 5, lo=0, hi=1_000_000),
        Key("login_free_addr", int, 20, lo=0, hi=1_000_000),
        Key("login_free_name", int, 50, lo=0, hi=1_000_000),
        Key("login_window_s", float, 900.0, lo=0.001, hi=_WEEK),
        Key("login_max_delay_s", float, 900.0, lo=0, hi=_WEEK),
        Key("login_name_delay_s", float, 60.0, lo=0, hi=_WEEK),
        Key("header_s", float, 10.0, lo=0.001, hi=_WEEK),
        Key("body_s", float, 20.0, lo=0.001, hi=_WEEK),
        Key("idle_s", float, 60.0, lo=0.001, hi=_WEEK),
        Key("max_conns_per_addr", int, 64, lo=1, hi=1_000_000),
        Key("max_conns", int, 1000, lo=1, hi=1_000_000),
    ),
    "metrics": (
        Key("token_file", PATH, None,
            doc="the bearer token a remote Prometheus presents for /metrics"),
    ),
    "worker": (
        Key("name", str, "main", doc="unique per worker process (docs/deploy.md)"),
        Key("lease_ttl_s", float, 6.0, lo=1.0, hi=600.0,
            doc="the leader lease's lifetime; renewed every third of it"),
    ),
}

# The official-alert sections have their schema in the feeds package (gateway/feeds/:
# `load_feeds`, `load_policy`, docs/feeds.md); they are checked here and kept as written, so the
# service reads them with the same functions. `[[feeds]]` is an array of tables.
FEED_SECTIONS = ("feeds", "feed_policy")

DEFAULTS: dict[str, Any] = {
    section: {k.name: k.default for k in keys} for section, keys in SCHEMA.items()
}
DEFAULTS["feeds"] = []
DEFAULTS["feed_policy"] = {"default": "approve", "municipalities": {}}

_FEED_WHERE = re.compile(r"(\[\[feeds\]\](?: #\d+| '[^']*')?|\[feed_policy\]):? "
                         r"(?:key '([\w.]+)' )?(.*)", re.S)


def _feed_error(path: Path | str, e: ValueError) -> ConfigError:
    """The feeds package's error ("[[feeds]] 'vma': key 'url' must be ...") as a ConfigError
    naming the file, the entry and the key."""
    m = _FEED_WHERE.match(str(e))
    if m is None:
        return ConfigError(path, "[[feeds]]", None, str(e))
    return ConfigError(path, m.group(1), m.group(2), m.group(3))


def _feed_sections(config: dict[str, Any], path: Path | str) -> dict[str, Any]:
    feeds, policy = config.get("feeds"), config.get("feed_policy")
    try:
        load_feeds(feeds)
        load_policy(policy)
    except ValueError as e:
        raise _feed_error(path, e) from None
    return {"feeds": copy.deepcopy(feeds) if feeds is not None else [],
            "feed_policy": copy.deepcopy(policy) if policy is not None
            else copy.deepcopy(DEFAULTS["feed_policy"])}

LOOPBACK = ("127.", "::1", "localhost")
# A worker's name: part of its MQTT client id and the holder in the leader lease.
WORKER_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


def with_defaults(
    config: dict[str, Any], path: Path | str = SOURCE
) -> dict[str, Any]:
    """Every section and key, checked against `SCHEMA`, missing ones from `DEFAULTS`. `path`
    is the file the settings came from, for the errors. Raises ConfigError."""
    if not isinstance(config, dict):
        raise ConfigError(path, "file", None, "must be a table")
    unknown = sorted(set(config) - set(SCHEMA) - set(FEED_SECTIONS))
    if unknown:
        raise ConfigError(path, f"[{unknown[0]}]", None,
                          f"unknown section [{unknown[0]}] (allowed: "
                          f"{', '.join(f'[{s}]' for s in SCHEMA)}, [[feeds]], [feed_policy])")
    out: dict[str, Any] = {}
    for section, keys in SCHEMA.items():
        given = config.get(section)
        r = Reader(path, f"[{section}]", {} if given is None else given, keys)
        out[section] = r.read(keys)
        for name, value in out[section].items():
            if isinstance(value, list):
                out[section][name] = list(value)  # the defaults are never shared
    for i, proxy in enumerate(out["web"]["trusted_proxies"]):
        if not isinstance(proxy, str):
            raise ConfigError(path, "[web]", "trusted_proxies",
                              f"item {i + 1}: must be an address string, got {proxy!r}")
    if not WORKER_NAME.fullmatch(str(out["worker"]["name"])):
        raise ConfigError(path, "[worker]", "name",
                          "must be 1-32 of a-z, 0-9 and -, starting with a letter or digit")
    local = str(out["http"]["host"]).startswith(LOOPBACK)
    if out["web"]["secure_cookie"] is False and not local:
        raise ConfigError(path, "[web]", "secure_cookie",
                          "false needs [http] host on 127.0.0.1 or ::1; put TLS (a reverse "
                          "proxy) in front instead")
    out.update(_feed_sections(config, path))
    return out


def load(path: Path | str) -> dict[str, Any]:
    """Read and check a gateway.toml; errors name the file."""
    return with_defaults(load_toml(path), path)
