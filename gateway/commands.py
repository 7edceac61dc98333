"""Signed commands to a site: the envelope and the signing rule (docs/mqtt.md, "Commands").

The controller (firmware/sot/command.py) checks exactly what is built here:

    canonical = "v1\\n<site>\\n<name>\\n<id>\\n<issued>\\n<expires>\\n<counter>\\n<args>"  (UTF-8)
    sig       = lowercase hex of HMAC-SHA256(key, canonical)

`<args>` is `key=value` per argument, sorted by key, joined by `;` (empty for none); keys are
[a-z0-9_-] up to 16 characters, values integers 0 ... 2^31-1 in decimal or booleans written
`true`/`false`. The key is the site's command key (32 random bytes, hex), not its MQTT password:
`sot mqtt-auth` keeps the keys in `var/mqtt/cmd-keys.json` (0600, outside git) beside the
passwords, and `sot config compile --credentials` puts the site's into its config.json
(`mqtt.cmd_key`; like the password it is wiring, not part of the config hash).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .texts import Text, catalogue

if TYPE_CHECKING:
    from gateway.store import CommandStore

NAMES = ("rebirth", "gen_start", "gen_stop", "gen_test")
MAX_WINDOW_S = 300  # expires - issued, at most (the controller refuses more)
DEFAULT_TTL_S = 120
_IDENT = re.compile(r"[a-z0-9_-]{1,32}")
_KEY = re.compile(r"[a-z0-9_-]{1,16}")

Args = Mapping[str, "int | bool"]


def cmd_keys(site_ids: Iterable[str], store: Path | None = None) -> dict[str, str]:
    """A command key (64 hex digits) per site: those in `store` kept, new ones generated, the
    result written back to `store` with mode 0600 (write new, then rename)."""
    known: dict[str, str] = {}
    if store is not None and store.exists():
        known = json.loads(store.read_text())
    out = {s: known.get(s) or secrets.token_hex(32) for s in sorted(site_ids)}
    if store is not None and out != known:
        store.parent.mkdir(parents=True, exist_ok=True)
        tmp = store.with_suffix(".new")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(out, f, indent=1, sort_keys=True)
        os.replace(tmp, store)
    return out


def canonical_args(args: Args) -> str:
    parts = []
    for k in sorted(args):
        v = args[k]
        if not _KEY.fullmatch(k):
            raise ValueError(f"argument name {k!r}")
        if isinstance(v, bool):
            parts.append(f"{k}={'true' if v else 'false'}")
        elif isinstance(v, int) and 0 <= v <= 0x7FFFFFFF:
            parts.append(f"{k}={v}")
        else:
            raise ValueError(f"argument {k!r}: an integer 0 ... 2^31-1 or a boolean")
    if len(parts) > 8:
        raise ValueError("at most 8 arguments")
    return ";".join(parts)


def canonical(site: str, name: str, cid: str, issued: int, expires: int, counter: int,
              args: Args) -> bytes:
    return (f"v1\n{site}\n{name}\n{cid}\n{issued}\n{expires}\n{counter}\n"
            f"{canonical_args(args)}").encode()


def sign(site: str, name: str, key_hex: str, counter: int, args: Args | None = None, *,
         now: int | None = None, ttl_s: int = DEFAULT_TTL_S, cid: str | None = None) -> dict:
    """The payload for `sot/v1/<site>/cmd/<name>`."""
    if not _IDENT.fullmatch(name) or len(name) > 16:
        raise ValueError(f"command name {name!r}")
    if not 0 < ttl_s <= MAX_WINDOW_S:
        raise ValueError(f"ttl {ttl_s}: 1 ... {MAX_WINDOW_S} s")
    issued = int(time.time()) if now is None else now
    cid = cid or "c" + time.strftime("%Y%m%d-%H%M%S", time.gmtime(issued)) + "-" + \
        secrets.token_hex(2)
    if not _IDENT.fullmatch(cid):
        raise ValueError(f"command id {cid!r}")
    a = dict(args or {})
    body = {"v": 1, "id": cid, "issued": issued, "expires": issued + ttl_s, "counter": counter,
            "args": a}
    mac = hmac.new(bytes.fromhex(key_hex),
                   canonical(site, name, cid, issued, issued + ttl_s, counter, a),
                   hashlib.sha256)
    body["sig"] = mac.hexdigest()
    return body


def verify(site: str, name: str, key_hex: str, body: Mapping) -> bool:
    """The controller's signature check, for tests and tools (constant time)."""
    try:
        want = hmac.new(bytes.fromhex(key_hex),
                        canonical(site, name, body["id"], body["issued"], body["expires"],
                                  body["counter"], body.get("args", {})), hashlib.sha256)
    except (KeyError, ValueError, TypeError):
        return False
    return hmac.compare_digest(want.hexdigest(), str(body.get("sig", "")))


# What the dashboard and `sot cmd` show for a command (docs/commands.md): the final result if
# one arrived; "sent" while it may still come; "unknown" once the command expired without one.
# Never "done" without the controller saying so. The words are the catalogue's
# (config/texts.toml: `command.state.*`, `command.name.*`, `command.why.*`).
STATES = ("done", "failed", "refused", "accepted", "sent", "unknown")


def state_text(state: str) -> Text:
    """A state's words in both languages (an unknown state: its own name)."""
    t = catalogue().get(f"command.state.{state}")
    return t if t is not None else Text(state, state)


def label(state: str) -> str:
    """"okänt / unknown": a state as `sot cmd` and the demo print it."""
    t = state_text(state)
    return f"{t.sv} / {t.en}"


def name_text(name: str) -> Text:
    """A command's name for people ("Provkörning" / "Test run"); an unknown one: itself."""
    t = catalogue().get(f"command.name.{name}")
    return t if t is not None else Text(name, name)


def why_text(why: str) -> Text | None:
    """What a refusal's or failure's reason code means (`mode:manual` -> the text for `mode`),
    None for a code the catalogue does not explain (the code alone is shown then)."""
    return catalogue().get(f"command.why.{why.split(':')[0]}")


class _Labels(Mapping[str, str]):
    """`LABELS[state]`: `label(state)` for each of STATES."""

    def __getitem__(self, state: str) -> str:
        if state not in STATES:
            raise KeyError(state)
        return label(state)

    def __iter__(self) -> Iterator[str]:
        return iter(STATES)

    def __len__(self) -> int:
        return len(STATES)


LABELS: Mapping[str, str] = _Labels()


def status(rec: Mapping, now: float) -> tuple[str, str | None]:
    """(state, why) of a stored command (`Store.commands()` row): done, failed, refused,
    accepted (not final yet), sent, or unknown (no final result by its expiry)."""
    results = rec.get("results") or []
    final = [r for r in results if r.get("result") in ("done", "failed", "refused")]
    if final:
        return final[0]["result"], final[0].get("why")
    if now <= rec["expires"]:
        return ("accepted" if results else "sent"), None
    return "unknown", None


def send(store: CommandStore, publish: Callable[[str, str], object], site: str, name: str,
         key_hex: str, actor: str, args: Args | None = None, *, now: float | None = None) -> dict:
    """Sign a command with the site's next counter, record it (with its audit entry), then
    `publish(topic, payload)`; returns the signed body. A store and a publish callable of the
    gateway's kind (gateway.store.CommandStore, paho's publish)."""
    t = time.time() if now is None else now
    counter = store.next_cmd_counter(site, t)
    body = sign(site, name, key_hex, counter, args, now=int(t))
    store.add_command(site, name, body, actor)
    publish(f"sot/v1/{site}/cmd/{name}", json.dumps(body, separators=(",", ":")))
    return body


class CommandSender:
    """The dashboard's sender: the sites' command keys and the gateway's own MQTT session
    (`publish(topic, payload)`, raising OSError when the broker did not take it; None: no
    broker, nothing can be sent). The keys come from `sot mqtt-auth`'s cmd-keys.json."""

    def __init__(self, store: CommandStore, publish: Callable[[str, str], object] | None,
                 keys: Mapping[str, str], clock: Callable[[], float] = time.time,
                 connected: Callable[[], bool] = lambda: True) -> None:
        self.store = store
        self.publish = publish
        self.keys = dict(keys)
        self.clock = clock
        self._connected = connected

    def key(self, site: str) -> str | None:
        return self.keys.get(site)

    def connected(self) -> bool:
        return self.publish is not None and self._connected()

    def send(self, site: str, name: str, actor: str, args: Args | None = None) -> dict:
        key = self.keys.get(site)
        if key is None or self.publish is None:
            raise ValueError(f"no command key for {site!r} or no broker")
        return send(self.store, self.publish, site, name, key, actor, args, now=self.clock())


def load_keys(path: Path) -> dict[str, str]:
    """The command keys file (`sot mqtt-auth`), {} when there is none: no site can then be
    commanded from the dashboard, and its page says why."""
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
