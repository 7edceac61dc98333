"""From MQTT messages to the store: validation, ordering, and the broker connection.

`Ingest.handle(topic, payload)` is the whole decision for one message and touches nothing but
the store and its own counters, so tests drive it without a broker. The checks run cheapest
first and the first failure is the reason a message is refused:

    bad_topic         not sot/v1/<site>/<subtopic> nor sot/v1/<site>/crisis/<id>/ack, or <site>
                      or <id> is not a slug
    unknown_subtopic  <subtopic> is not status, birth, state or event
    unknown_site      <site> is not configured
    too_large         payload over 1024 bytes (docs/mqtt.md)
    not_utf8          payload is not UTF-8
    not_json          not JSON, or JSON with NaN/Infinity, out-of-range numbers or repeated keys
    not_object        JSON, but not an object
    bad_text          a string (a value or a key) holds a character outside the text policy
                      below
    schema            breaks gateway/schema/mqtt-v1.json for its subtopic (a crisis
                      acknowledgement also when its `id` is not the topic's <id>)
    clock_ahead       `ts` more than `MAX_FUTURE_S` ahead of the gateway's clock
    store             the store could not file it (a value it cannot hold, a constraint): only
                      this message is refused (see "Group commit")

Text policy (docs/mqtt.md, "Text from a site"). Every string a site sends, keys included and on
every subtopic, is untrusted. It is normalised to Unicode NFC, and refused (`bad_text`) if it
holds any of: a lone UTF-16 surrogate (U+D800-U+DFFF; the database cannot store it), a C0 or C1
control character or DEL (U+0000-U+001F, U+007F-U+009F: they break XML and terminals), a bidi
control (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069: they reorder what a reader sees),
a non-character (U+FDD0-U+FDEF and U+xFFFE/U+xFFFF of every plane) or U+FEFF. So what reaches
the store, the alert engine and every page is text they can hold. Numbers: an integer outside
+-2^53 (`MAX_INT`) is `not_json` anywhere in a payload, so no integer can overflow the store or a
JavaScript reader; the schema gives every named number its range. Cost: a payload without a
backslash is checked by one scan of its text (nothing at all when it is ASCII); only one with an
escape has each string checked.

Time a site claims. A `ts` more than `MAX_FUTURE_S` ahead of the gateway's clock is refused
(`clock_ahead`): such a message would otherwise stay "newest" and hide every real one after it.
The gateway trusts its own clock (it is NTP-synchronised); a controller whose clock runs ahead is
visible by that reason in the `rejected` log.

A refused message is counted by reason, filed in the store's `rejected` table (at most
`REJECTS_FILED_PER_MIN` a minute, so a flood does not turn into an fsync storm) and logged at most
once a minute per (site, reason), and acknowledged to the broker like a filed one (a refused
event's seq also counts as handled for the site's `ack`). It never reaches the latest
status/birth/state.

Validation has two paths with one meaning. The schema compiled by fastjsonschema decides in
~20 µs that a payload is valid (the common case); only a payload it refuses goes through
jsonschema (Draft 2020-12, ~600 µs), which is the reference: its verdict stands and its
`best_match` names the reason. So a disagreement can only make the gateway accept what
jsonschema accepts; a test fuzzes both against each other.

Crisis acknowledgements (`sot/v1/<site>/crisis/<id>/ack`, subtopic `crisis_ack`) are filed
once per (site, boot, seq) like events.

After a message is filed (`stored`), `on_stored(site, subtopic)` is called if set: the alert
engine marks the site for evaluation. It runs inside `handle`, before the broker is acknowledged,
and must not raise (an exception there is logged, the message stays filed).

Acknowledgement and gaps (docs/mqtt.md, "Session rules"). Every event filed or found again
marks its (site, boot); after the commit `progress()` tells, per marked (site, boot), the highest
seq up to which every event is in the store (`ack`: the controller may drop those from its
journal) and whether a later one is already there (a gap: ask the site for a `rebirth`, which
makes it send its unacknowledged journal again; not while the site's replay is under way: a
live event may go ahead of it, and the hole behind it is being filled). The run starts at seq 0
and passes over a hole only where the site's latest birth says its journal no longer holds those
events
(`journal.oldest`: dropped under its overflow policy, and counted in `dropped`), and over an
event the gateway refused (schema): it is counted and filed in `rejected`, and acknowledging
it keeps it from blocking the site's journal for good.

Ordering. QoS 1 may deliver a message twice and the broker replays retained messages on every
subscribe, so the latest status/birth/state is replaced only by a newer one (`is_newer`). Events
are filed once per (site, boot, seq) by the store. A coordinator can make the gateway forget a
site's latest messages (`sot site reset`, `Store.reset_site`): the next message of each kind is
then taken whatever its order.

`MqttIngest` owns the paho-mqtt client. paho calls back on its own network thread; each
message is handed to the asyncio loop (an inbox, with one `call_soon_threadsafe` per burst
rather than a wake-up per message), where `Ingest.handle` runs, so the store is only used from
the loop's thread. The PUBACK is sent (manual ack) only after the
store has committed the message: with a persistent session a message the gateway did not file
is redelivered by the broker after a crash or reconnect.

Group commit: messages that arrive while the loop is busy are filed together, in one
transaction (at most `BATCH_MAX`), and acknowledged together after its commit. A durable commit
costs an fsync (about a millisecond here); one per message capped the gateway near 1 000
messages a second, one per batch is what lets it keep up with a county's sites. A quiet gateway
still commits each message on its own, at once.

One message can never hold a batch. A batch is first filed without a savepoint per message
(each is a round trip on PostgreSQL); if the store raises on one message, that try is rolled
back and the batch is filed again with each message inside its own savepoint: only that
message's savepoint is rolled back and the message is refused (`store`), counted, filed in
`rejected`, logged once and acknowledged like any refused message; the rest of the batch
commits. At the start of each try the latest status, birth and state of the batch's sites are
read in one query (`Ingest.begin_batch`; on PostgreSQL their rows stay locked until the commit,
so two workers filing messages of one site never replace the latest with the older one).
In that first try the latest messages, the history rows and (on PostgreSQL) the events are
written together at its end, each statement's rows in one pipeline; the events' INSERT answers
which of them were new (`Ingest.filed`), so a copy is still counted as a duplicate.
If the COMMIT itself fails, every message is filed again on its own
transaction, one by one, with the same rule. Only a failure of the database as a whole
(`store.SYSTEMIC`: disk full, I/O error, locked, connection lost; or MemoryError) is not
blamed on a message: those messages stay unacknowledged and the broker delivers them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import ssl
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import fastjsonschema
import paho.mqtt.client as mqtt
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource

from .metrics import commit_histogram
from .store import SYSTEMIC as STORE_SYSTEMIC
from .store import AuditStore, TelemetryStore, Transactions
from .store.telemetry import payload

log = logging.getLogger(__name__)

SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / "mqtt-v1.json"
TOPIC_ROOT = "sot/v1"
SUBTOPICS = ("status", "birth", "state", "event")
CRISIS_ACK = "crisis_ack"
VALIDATED = (*SUBTOPICS, CRISIS_ACK)
GATEWAY_STATUS_TOPIC = f"{TOPIC_ROOT}/gateway/status"
# The leader's plain subscriptions beside the shared ones (MqttIngest): the sites' retained and
# live status, and the crisis acknowledgements, which no journal keeps.
LEADER_TOPICS = [(f"{TOPIC_ROOT}/+/status", 1), (f"{TOPIC_ROOT}/+/crisis/+/ack", 1)]
MAX_PAYLOAD = 1024
BATCH_MAX = 500
SEQS_READ = 2000  # filed seqs of a (site, boot) read at a time, after a commit
LOG_EVERY_S = 60.0
REJECTS_FILED_PER_MIN = 120
RECYCLE_PROBE_S = 1.0  # how often a failed store is looked at before reconnecting (MqttIngest)
STATUS_QUIET_S = 2.0  # after a CONNECT, an `offline` heard is answered only if still the last
REBIRTH_EVERY_S = 5.0  # a gap asks a site for its journal again at most this often
REPLAY_QUIET_S = 10.0  # a hole is not a gap while the site's replay sent within this time
REASONS = ("bad_topic", "unknown_subtopic", "unknown_site", "too_large", "not_utf8", "not_json",
           "not_object", "bad_text", "schema", "clock_ahead", "store")
MAX_INT = 2**53  # integers beyond this are refused anywhere in a payload
MAX_FUTURE_S = 600  # a `ts` further ahead of the gateway's clock is refused (clock_ahead)
# Characters no string from a site may hold (module docstring, "Text policy").
_NONCHARS = "".join(f"{chr(p * 0x10000 + 0xFFFE)}-{chr(p * 0x10000 + 0xFFFF)}"
                    for p in range(1, 17))
_UNSAFE_REST = ("\\x7f-\\x9f\\u061c\\u200e\\u200f\\u202a-\\u202e\\u2066-\\u2069"
                "\\ud800-\\udfff\\ufdd0-\\ufdef\\ufeff\\ufffe\\uffff" + _NONCHARS)
UNSAFE_TEXT = re.compile(f"[\\x00-\\x1f{_UNSAFE_REST}]")
# The same over a whole JSON text, minus the whitespace JSON allows between tokens (tab, LF, CR;
# inside a string a raw control character is not JSON anyway).
_UNSAFE_IN_JSON = re.compile(f"[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f{_UNSAFE_REST}]")
# Exceptions that say the database as a whole failed, not the message: never blamed on it.
SYSTEMIC: tuple[type[BaseException], ...] = (*STORE_SYSTEMIC, MemoryError)
_SLUG = re.compile(r"[a-z][a-z0-9-]{0,63}")
_CRISIS_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")

Clock = Callable[[], float]


def load_validators(path: Path = SCHEMA_PATH) -> dict[str, Draft202012Validator]:
    """One validator per subtopic, each checking against `#/$defs/<subtopic>`."""
    schema = json.loads(path.read_text())
    Draft202012Validator.check_schema(schema)
    registry: Registry[Any] = Registry().with_resource(schema["$id"],
                                                      Resource.from_contents(schema))
    return {sub: Draft202012Validator({"$ref": f"{schema['$id']}#/$defs/{sub}"},
                                      registry=registry) for sub in VALIDATED}


def load_fast_checks(path: Path = SCHEMA_PATH) -> dict[str, Callable[[Any], Any]]:
    """One compiled check per subtopic (raises fastjsonschema.JsonSchemaException if invalid).
    The root is replaced by a `$ref` to the subtopic's definition; `$defs` are kept."""
    schema = json.loads(path.read_text())
    body = {k: v for k, v in schema.items() if k not in ("anyOf", "$schema", "$id")}
    return {sub: fastjsonschema.compile({**body, "$ref": f"#/$defs/{sub}"})
            for sub in VALIDATED}


_FAST: dict[str, Callable[[Any], Any]] | None = None


def _fast_checks() -> dict[str, Callable[[Any], Any]]:
    global _FAST
    if _FAST is None:
        _FAST = load_fast_checks()
    return _FAST


@dataclass(frozen=True)
class Result:
    """What `Ingest.handle` made of one message.

    outcome: `stored` (filed as latest or as a new event), `duplicate` (already had it),
    `outdated` (older than the latest already filed), `ignored` (the gateway's own status), or
    `rejected` with `reason` and `detail`; or `pending`: an event inserted with the group
    commit's others at its end (PostgreSQL), whether new or a duplicate known then and counted
    by `Ingest.filed`.
    """

    outcome: str
    site: str | None = None
    subtopic: str | None = None
    reason: str | None = None
    detail: str = ""

    @property
    def accepted(self) -> bool:
        return self.outcome in ("stored", "duplicate", "outdated", "pending")


class Redo(Exception):
    """A message the store refused while a batch was filed without savepoints: roll the batch
    back and file it again with them (`Ingest.savepoints`)."""


class _Reject(Exception):
    def __init__(self, reason: str, detail: str = "",
                 doc: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason, self.detail = reason, detail
        self.doc = doc  # the parsed payload, when it got that far (a refused event's seq)


def order_key(subtopic: str, msg: dict[str, Any]) -> tuple[int, ...]:
    """Position of a status/birth/state within a controller's life: larger is newer.

    status: (boot, bdseq, online=0 / lost=1) - the Will of session n ends session n, and a Will
    of an older session (smaller bdseq) arriving late does not mark a live controller lost.
    birth and state: (boot, seq).
    """
    if subtopic == "status":
        return (msg["boot"], msg["bdseq"], 1 if msg["state"] == "lost" else 0)
    return (msg["boot"], msg["seq"])


def is_newer(subtopic: str, new: dict[str, Any], old: dict[str, Any] | None) -> bool | None:
    """True if `new` replaces `old`, None if it is the same message, False if older.

    Two messages that both carry a `ts` are ordered by it: a site's claims about its counters
    cannot outrank time. So a controller whose boot counter went back (flash wiped, controller
    replaced) is heard at once, a message that claimed a boot or seq too high is passed by the
    first real one dated later, and a retained or redelivered message from before carries an
    older `ts` and is not taken. Equal times (several messages in one second), and the Will,
    which has no `ts`, are ordered by `order_key`. As no `ts` may be more than `MAX_FUTURE_S`
    ahead of the gateway's clock, no message holds the place of the real ones for longer than
    that (docs/mqtt.md, "Time and order a site claims").
    """
    if old is None:
        return True
    if new.get("hist") and not old.get("hist") and (new.get("ts") or 0) <= (old.get("ts") or 0):
        return False  # a state replayed from a journal never hides the live one
    kn, ko = order_key(subtopic, new), order_key(subtopic, old)
    if kn == ko:
        return None
    ts_new, ts_old = new.get("ts"), old.get("ts")
    if ts_new is not None and ts_old is not None and ts_new != ts_old:
        return bool(ts_new > ts_old)
    return kn > ko


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:20]}")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"repeated key {k!r}")
        out[k] = v
    return out


def _bounded_int(text: str) -> int:
    value = int(text)
    if -MAX_INT <= value <= MAX_INT:
        return value
    raise ValueError(f"integer out of range: {text[:20]}")


def _char_name(ch: str) -> str:
    return f"U+{ord(ch):04X}"


def check_text(value: str, where: str = "") -> str:
    """One string from a site under the text policy: its NFC form, or _Reject("bad_text")."""
    bad = UNSAFE_TEXT.search(value)
    if bad is not None:
        raise _Reject("bad_text", f"{where or '(root)'}: {_char_name(bad.group())} at "
                                  f"character {bad.start()}")
    if value.isascii() or unicodedata.is_normalized("NFC", value):
        return value
    return unicodedata.normalize("NFC", value)


def _clean(value: Any, where: str) -> Any:
    """`value` with every string (keys too) checked and NFC-normalised, recursively."""
    if isinstance(value, str):
        return check_text(value, where)
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            at = f"{where}/{k}" if where else k
            key = check_text(k, f"{where}/(key)" if where else "(key)")
            if key in out:
                raise _Reject("bad_text", f"{safe_text(at)[:100]}: key repeated once normalised")
            out[key] = _clean(v, at)
        return out
    if isinstance(value, list):
        return [_clean(v, f"{where}/{i}") for i, v in enumerate(value)]
    return value


def safe_text(value: str) -> str:
    """`value` as text any log, store or page can hold: unsafe characters as \\uXXXX escapes."""
    if UNSAFE_TEXT.search(value) is None:
        return value
    return UNSAFE_TEXT.sub(lambda m: f"\\u{ord(m.group()):04x}" if ord(m.group()) < 0x10000
                           else f"\\U{ord(m.group()):08x}", value)


def parse_payload(payload: bytes) -> tuple[dict[str, Any], str]:
    """Bytes to (object, text), or _Reject naming why not. The text policy (module docstring)
    is applied here: `text` is the payload as received, or re-serialised when a string had to be
    normalised."""
    if len(payload) > MAX_PAYLOAD:
        raise _Reject("too_large", f"{len(payload)} bytes > {MAX_PAYLOAD}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _Reject("not_utf8", f"byte {e.start}") from None
    try:
        doc = json.loads(text, parse_float=_finite_float, parse_int=_bounded_int,
                         parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as e:
        raise _Reject("not_json", safe_text(str(e)[:200])) from None
    if not isinstance(doc, dict):
        raise _Reject("not_object", type(doc).__name__)
    # Without an escape every character of every string is in the text as itself: one scan of
    # the text decides (the common case). An escape can make any character: check each string.
    if "\\" not in text:
        if text.isascii():
            return doc, text
        if _UNSAFE_IN_JSON.search(text) is None and unicodedata.is_normalized("NFC", text):
            return doc, text
    try:
        clean = _clean(doc, "")
    except _Reject as r:
        r.doc = doc
        raise
    if clean != doc:
        return clean, json.dumps(clean, ensure_ascii=False, separators=(",", ":"))
    return doc, text


def _int_fields(msg: dict[str, Any]) -> None:
    # JSON Schema counts 5.0 as an integer; the store wants ints for identity columns.
    for key in ("boot", "seq", "bdseq", "ts"):
        if isinstance(msg.get(key), float):
            msg[key] = int(msg[key])


class IngestStore(TelemetryStore, AuditStore, Transactions, Protocol):
    """What the ingest files into: telemetry, the audit log (command results), and the staff's
    crisis acknowledgements, in group-commit transactions."""

    def add_crisis_ack(self, site: str, msg: dict[str, Any], received: float) -> bool: ...


class Ingest:
    def __init__(self, store: IngestStore, clock: Clock = time.time, *,
                 validators: dict[str, Draft202012Validator] | None = None) -> None:
        self.store = store
        self.clock = clock
        self.validators = validators or load_validators()
        # The fast path only with the shipped schema: given validators (tests) are the only truth.
        self.fast = _fast_checks() if validators is None else {}
        self.known_sites: frozenset[str] = store.site_ids()
        self.accepted: Counter[str] = Counter()
        self.duplicates: Counter[str] = Counter()
        self.outdated: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.ignored = 0
        self._last_log: dict[tuple[str, str], tuple[float, int]] = {}
        self._filed_window = (0.0, 0)
        self.on_stored: Callable[[str, str], None] | None = None
        self.touched: set[tuple[str, int]] = set()  # (site, boot) with events since progress()
        # When each site last sent a journal replay event (`hist` true): while a replay is
        # under way a hole behind a live event is being filled, not lost (docs/mqtt.md).
        self._replayed: dict[str, float] = {}
        self._held_gaps: set[tuple[str, int]] = set()  # holes not yet asked about
        self._acked: dict[tuple[str, int], int] = {}  # contiguous high-water mark per boot
        self._refused: set[tuple[str, int, int]] = set()  # events refused, counted as handled
        # The latest status/birth/state of the sites of the group commit under way, read in one
        # query at its start (`begin_batch`) and kept up to date as its messages are filed:
        # site -> kind -> the payload, or (text, received) as stored until first needed. None
        # outside a group commit: a message reads its site's row.
        self._latest: dict[str, dict[str, Any]] | None = None
        # False for the first try of a group commit: its messages are filed without a savepoint
        # each (on PostgreSQL that is three round trips fewer per message). A message the store
        # refuses then raises `Redo`, the try is rolled back, and the batch is filed again with
        # a savepoint per message, so that message costs only itself (`MqttIngest._flush`).
        self.savepoints = True
        # Events of the group commit under way whose INSERT waits for its end (`filed`):
        # (site, boot, seq) -> (the event, when received).
        self._pending: dict[tuple[str, int, int], tuple[dict[str, Any], float]] = {}

    def reload_sites(self) -> None:
        self.known_sites = self.store.site_ids()

    def handle(self, topic: str, payload: bytes) -> Result:
        """Validate and file one message. A store failure on this message alone is a refusal
        (reason `store`, its savepoint rolled back). Raises only when the database as a whole
        fails (`SYSTEMIC`): the message was then not filed and must not be acknowledged."""
        if topic == GATEWAY_STATUS_TOPIC:
            self.ignored += 1
            return Result("ignored", subtopic="status")
        site: str | None = None
        subtopic: str | None = None
        msg: dict[str, Any] | None = None
        try:
            site, subtopic, crisis_id = self._parse_topic(topic)
            msg, raw = parse_payload(payload)
            error = None if self._fast_ok(subtopic, msg) else \
                best_match(self.validators[subtopic].iter_errors(msg))
            if error is not None:
                where = "/".join(str(p) for p in error.absolute_path) or "(root)"
                raise _Reject("schema", f"{where}: {error.message}"[:300])
            if crisis_id is not None and msg.get("id") != crisis_id:
                raise _Reject("schema", f"id: {str(msg.get('id'))[:64]!r} is not the topic's "
                                        f"{crisis_id!r}")
            ts = msg.get("ts")
            if isinstance(ts, int | float) and ts > self.clock() + MAX_FUTURE_S:
                raise _Reject("clock_ahead", f"ts {int(ts)} is {int(ts - self.clock())} s ahead "
                                             f"of the gateway's clock (> {MAX_FUTURE_S} s)")
        except _Reject as r:
            msg = msg if msg is not None else r.doc
            if subtopic == "event" and msg is not None:
                self._refused_event(site, msg)
            return self._reject(topic, payload, site, subtopic, r.reason, r.detail)
        assert site is not None and subtopic is not None
        _int_fields(msg)
        try:
            if self.savepoints:
                # Its own savepoint: a failure rolls back this message only, never its batch.
                with self.store.savepoint():
                    result = self._file(site, subtopic, msg, raw)
            else:
                result = self._file(site, subtopic, msg, raw)
        except SYSTEMIC:
            raise  # the database itself failed: not this message's fault, it stays unfiled
        except Exception as e:  # noqa: BLE001 - any other failure is this message's alone
            if not self.savepoints:
                raise Redo(topic) from e
            if self._latest is not None:
                self._latest.pop(site, None)  # what it wrote is rolled back: read it again
            if subtopic == "event":
                self._refused_event(site, msg)
            return self._reject(topic, payload, site, subtopic, "store",
                                f"{type(e).__name__}: {e}"[:300])
        if result.outcome == "stored" and self.on_stored is not None:
            try:
                self.on_stored(site, subtopic)
            except Exception:
                log.exception("on_stored failed for %s", safe_text(topic[:100]))
        return result

    def _fast_ok(self, subtopic: str, msg: dict[str, Any]) -> bool:
        check = self.fast.get(subtopic)
        if check is None:
            return False
        try:
            check(msg)
        except fastjsonschema.JsonSchemaException:
            return False
        return True

    def _parse_topic(self, topic: str) -> tuple[str, str, str | None]:
        parts = topic.split("/")
        if len(parts) == 6 and parts[3] == "crisis" and parts[5] == "ack":
            if f"{parts[0]}/{parts[1]}" != TOPIC_ROOT or not _SLUG.fullmatch(parts[2]) \
                    or not _CRISIS_ID.fullmatch(parts[4]):
                raise _Reject("bad_topic", topic[:100])
            if parts[2] not in self.known_sites:
                raise _Reject("unknown_site", parts[2])
            return parts[2], CRISIS_ACK, parts[4]
        if len(parts) != 4 or f"{parts[0]}/{parts[1]}" != TOPIC_ROOT \
                or not _SLUG.fullmatch(parts[2]):
            raise _Reject("bad_topic", topic[:100])
        site, subtopic = parts[2], parts[3]
        if subtopic not in SUBTOPICS:
            raise _Reject("unknown_subtopic", subtopic[:50])
        if site not in self.known_sites:
            raise _Reject("unknown_site", site)
        return site, subtopic, None

    def _file(self, site: str, subtopic: str, msg: dict[str, Any], raw: str) -> Result:
        received = self.clock()
        if subtopic in ("event", CRISIS_ACK):
            if subtopic == "event":
                self.touched.add((site, msg["boot"]))
                if msg.get("hist"):
                    self._replayed[site] = received
            new = (self.store.add_event(site, msg, raw, received) if subtopic == "event"
                   else self.store.add_crisis_ack(site, msg, received))
            if new is None:
                # Filed with the group commit's other events at its end (PostgreSQL): counted
                # then, by `filed`. A second copy in the same batch is a duplicate at once.
                key = (site, msg["boot"], msg["seq"])
                if key in self._pending:
                    self.duplicates[subtopic] += 1
                    return Result("duplicate", site, subtopic)
                self._pending[key] = (msg, received)
                return Result("pending", site, subtopic)
            if new:
                self._new_filed(site, subtopic, msg, received)
                return Result("stored", site, subtopic)
            self.duplicates[subtopic] += 1
            return Result("duplicate", site, subtopic)
        current = self._current(site, subtopic)
        newer = is_newer(subtopic, msg, current)
        if newer is None:
            self.duplicates[subtopic] += 1
            return Result("duplicate", site, subtopic)
        if not newer:
            self.outdated[subtopic] += 1
            return Result("outdated", site, subtopic)
        put = {"status": self.store.put_status, "birth": self.store.put_birth,
               "state": self.store.put_state}[subtopic]
        put(site, msg, raw, received)
        if self._latest is not None and site in self._latest:
            self._latest[site][subtopic] = {**msg, "received": received}
        self.accepted[subtopic] += 1
        return Result("stored", site, subtopic)

    def _new_filed(self, site: str, subtopic: str, msg: dict[str, Any], received: float) -> None:
        self.accepted[subtopic] += 1
        if subtopic == "event" and msg.get("type") == "cmd_result":
            # every command result in the audit log, once (docs/commands.md)
            d = msg["data"]
            self.store.add_audit(received, site, "cmd_result",
                                 f"{site}/{d.get('name')}/{d.get('id')}",
                                 f"{d['result']} {d.get('why') or ''}".strip())

    def filed(self, new: set[tuple[Any, ...]]) -> None:
        """After the group commit's deferred writes, inside its transaction: count the events
        that waited for them, new (`new` holds their (site, boot, seq)) or already filed."""
        pending, self._pending = self._pending, {}
        for key, (msg, received) in pending.items():
            if key in new:
                self._new_filed(key[0], "event", msg, received)
            else:
                self.duplicates["event"] += 1

    def begin_batch(self, topics: Iterable[str]) -> None:
        """At the start of a group commit, inside its transaction: read the latest messages of
        the sites it has messages from, in one query (and on PostgreSQL lock their rows until
        the commit: another worker's commit for the same site waits for this one)."""
        sites = sorted({parts[2] for parts in (t.split("/", 4) for t in topics)
                        if len(parts) > 3 and parts[2] in self.known_sites})
        stored = self.store.latest_raw(sites)
        self._latest = {site: dict(stored.get(site, {})) for site in sites}

    def end_batch(self) -> None:
        self._latest = None
        self._pending = {}

    def _current(self, site: str, kind: str) -> dict[str, Any] | None:
        """The latest stored message of `kind` from `site` (None: none yet)."""
        latest = self._latest
        if latest is None or site not in latest:
            return (self.store.latest(site) or {}).get(kind)
        kinds = latest[site]
        found = kinds.get(kind)
        if isinstance(found, tuple):
            found = kinds[kind] = payload(*found)
        return found

    def refuse(self, topic: str, payload: bytes, reason: str, detail: str) -> Result:
        """Count, file and log a message the caller could not file (`MqttIngest` when a commit
        of that message alone failed)."""
        parts = topic.split("/")
        site = parts[2] if len(parts) > 2 and parts[2] in self.known_sites else None
        subtopic = parts[3] if len(parts) == 4 else None
        if subtopic == "event" and site is not None:
            with contextlib.suppress(_Reject):
                self._refused_event(site, parse_payload(payload)[0])  # its seq is handled
        return self._reject(topic, payload, site, subtopic, reason, detail)

    def counters(self) -> tuple[Counter[str], ...]:
        return (Counter(self.accepted), Counter(self.duplicates), Counter(self.outdated),
                Counter(self.rejected))

    def restore_counters(self, saved: tuple[Counter[str], ...]) -> None:
        """Back to `counters()`: a batch rolled back is counted again when filed again."""
        self.accepted, self.duplicates, self.outdated, self.rejected = (Counter(c) for c in saved)

    def _reject(self, topic: str, payload: bytes, site: str | None, subtopic: str | None,
                reason: str, detail: str) -> Result:
        now = self.clock()
        # Everything here is logged and filed: never let the refused text break either.
        topic, detail = safe_text(topic), safe_text(detail)
        self.rejected[reason] += 1
        start, filed = self._filed_window
        if now - start >= 60.0:
            start, filed = now, 0
        if filed < REJECTS_FILED_PER_MIN:
            try:
                self.store.add_rejected(now, topic, reason, detail, payload)
                filed += 1
            except Exception:
                log.exception("could not file a rejected message")
        self._filed_window = (start, filed)
        # Sites that are not configured share one key: random topics cannot grow this dict.
        key = (site if site in self.known_sites else "*", reason)
        last, suppressed = self._last_log.get(key, (-math.inf, 0))
        if now - last >= LOG_EVERY_S:
            more = f" (+{suppressed} more since last report)" if suppressed else ""
            log.warning("rejected %s: %s: %s%s", topic[:100], reason, detail, more)
            self._last_log[key] = (now, 0)
        else:
            self._last_log[key] = (last, suppressed + 1)
        return Result("rejected", site, subtopic, reason, detail)

    def progress(self) -> tuple[list[tuple[str, int, int]], list[str]]:
        """After a commit: ([(site, boot, seq) to acknowledge], [sites with a gap])."""
        acks: list[tuple[str, int, int]] = []
        gaps: list[str] = []
        now = self.clock()
        keys = sorted(self.touched | self._held_gaps)
        filed = self.store.event_seqs_many(
            [(site, boot, self._acked.get((site, boot), -1)) for site, boot in keys],
            SEQS_READ) if keys else {}
        for site, boot in keys:
            high, gap = self._contiguous(site, boot, filed.get((site, boot), []))
            if high >= 0 and (site, boot) in self.touched:
                acks.append((site, boot, high))
            self._held_gaps.discard((site, boot))
            if gap and now - self._replayed.get(site, -math.inf) < REPLAY_QUIET_S:
                # A live event went ahead of the site's replay, which is filling the hole:
                # look again after the next commit, ask only once the replay has gone quiet.
                self._held_gaps.add((site, boot))
            elif gap and site not in gaps:
                gaps.append(site)
        self.touched.clear()
        return acks, gaps

    def _refused_event(self, site: str | None, msg: dict[str, Any]) -> None:
        """An event from the site's journal that the gateway will never file: its seq counts as
        handled, or the site would hold it, and everything after it, until its journal fills."""
        boot, seq = msg.get("boot"), msg.get("seq")
        if site is not None and type(boot) is int and type(seq) is int and 0 <= seq < 2**32:
            self._refused.add((site, boot, seq))
            self.touched.add((site, boot))

    def _held_from(self, site: str, boot: int) -> float:
        """The lowest seq of (site, boot) the site's journal may still send, from its latest
        birth: 0 when it may hold all of them, infinity when it holds none any more (all were
        acknowledged or dropped). What lies below was dropped by the site and counted there."""
        birth = self._current(site, "birth") or {}
        oldest = (birth.get("journal") or {}).get("oldest")
        if oldest is not None and oldest[0] == boot:
            return oldest[1]
        if (oldest is not None and oldest[0] > boot) or \
                (oldest is None and birth.get("boot", -1) > boot):
            return math.inf
        return 0

    def _contiguous(self, site: str, boot: int, seqs: list[int]) -> tuple[int, bool]:
        """The highest seq of (site, boot) up to which everything is filed or refused, and
        whether a gap lies above it. `seqs`: the filed ones above the last such seq, as
        `event_seqs` reads them (the first `SEQS_READ`; more are read here)."""
        key = (site, boot)
        high = self._acked.get(key, -1)
        while True:
            for seq in seqs:
                high = self._past_refused(site, boot, high)
                if seq != high + 1:
                    held = self._held_from(site, boot)
                    if held <= high + 1:
                        self._acked[key] = high
                        return high, True  # missing ones the site still holds: ask again
                    high = int(min(held, seq)) - 1
                    if seq != high + 1:
                        self._acked[key] = high
                        return high, True
                high = seq
            if len(seqs) < SEQS_READ:
                break
            seqs = self.store.event_seqs(site, boot, high, SEQS_READ)
        high = self._past_refused(site, boot, high)
        self._acked[key] = high
        return high, False

    def _past_refused(self, site: str, boot: int, high: int) -> int:
        while (site, boot, high + 1) in self._refused:
            self._refused.discard((site, boot, high + 1))
            high += 1
        return high

    def stats(self) -> dict[str, Any]:
        return {
            "accepted": sum(self.accepted.values()),
            "accepted_by_topic": dict(self.accepted),
            "duplicates": sum(self.duplicates.values()),
            "outdated": sum(self.outdated.values()),
            "rejected": sum(self.rejected.values()),
            "rejected_by_reason": dict(self.rejected),
            "ignored": self.ignored,
        }


class MqttIngest:
    """The gateway's MQTT session: subscribe, announce, hand messages to `Ingest` on the loop.

    Several workers (docs/deploy.md, "Several workers"). The uplink (`status`, `birth`,
    `state`, `event`, crisis acknowledgements) is subscribed as the MQTT shared subscription
    `$share/<group>/...`: the broker gives each message to one worker of the group. Each worker
    has a persistent session of its own (its own account and client id), so what the broker
    handed a worker that died stays in that worker's session until it comes back. Retained
    messages are not sent to shared subscriptions, and a dead worker's session holds its share:
    so the leader (`set_leading`) also holds plain subscriptions to the sites' `status` (their
    retained Wills, which the alert rules need at once) and crisis acknowledgements (the one
    uplink message a controller does not keep in its journal); both are filed idempotently, so
    the copy the group also delivers is a duplicate. Any old plain subscription to the other
    uplink topics (a session from before shared subscriptions) is dropped at CONNECT.

    Gateway status: `sot/v1/gateway/status` retained, `{"state": "online", "ts"}` after each
    CONNECT, `{"state": "offline"}` as the Will and `{"state": "offline", "ts"}` on a clean stop
    (a clean DISCONNECT does not fire the Will). Every worker has that Will and subscribes to
    the status plainly: a worker that sees a live `offline` (another worker died or stopped)
    while it is itself connected says `online` again at once, so one dead worker never leaves
    the panels saying the gateway is gone, and the sites, seeing the status come back `online`,
    send their unacknowledged journal again (docs/mqtt.md, "Session rules"): the events the dead
    worker held come in through the living one. The leader then also asks every site for
    `rebirth` (at most every `REBIRTH_EVERY_S`), so births and states are current too.

    The leader asks every configured site for `rebirth` after each of its CONNECTs and when it
    takes the lead, so the latest birth and state are current whatever the gateway missed; the
    other workers do not (one request per site, not one per worker).
    """

    def __init__(self, ingest: Ingest, loop: asyncio.AbstractEventLoop, *, host: str,
                 port: int, client_id: str = "sot-gateway", keepalive_s: int = 30,
                 username: str | None = None, password: str | None = None,
                 clock: Clock = time.time, ca: str | Path | None = None,
                 group: str = "sot-gateway", leading: bool = True,
                 session_expiry_s: int = 0) -> None:
        self.ingest = ingest
        self.group = group
        self.leading = leading  # the leader's subscriptions and rebirths (class docstring)
        self.reannounced = 0  # `online` said again after another worker's `offline`
        self._status_seen: str | None = None  # the last gateway status heard
        self._recycle_pending = False  # a reconnect is due once the store answers again
        self._recycling = False
        self.recycled = 0
        self._connected_at = -math.inf  # monotonic
        self._peer_rebirth_at = -math.inf
        self.loop = loop
        self.host, self.port, self.keepalive_s = host, port, keepalive_s
        self.clock = clock
        self.connected = threading.Event()
        self._stopping = False
        self._unreachable = False  # logged once when the broker cannot be reached, once back
        self.connects = 0  # bumped per CONNECT: acks of an older connection are not sent
        # Called on the loop with the time the session came up, or None when it went down.
        self.on_listening: Callable[[float | None], None] | None = None
        self._batch: list[tuple[str, bytes, int, int, int]] = []
        # Handed over from paho's thread: one wake-up of the loop per burst, not per message.
        self._inbox: list[tuple[str, bytes, int, int, int]] = []
        self._inbox_lock = threading.Lock()
        self.batches = 0
        self.redone = 0  # group commits filed a second time, with a savepoint per message
        # For /metrics (gateway/metrics.py): received on paho's thread, processed on the loop
        # (their difference is the backlog), and the group commit's time.
        self.received = self.processed = 0
        self.commit_seconds = commit_histogram()
        self._rebirth_asked: dict[str, float] = {}
        self.gap_rebirths = 0
        self.session_expiry_s = session_expiry_s
        if session_expiry_s:
            # MQTT 5: the broker forgets the session (and stops sharing messages out to it)
            # this long after the connection is gone.
            self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                      protocol=mqtt.MQTTv5, manual_ack=True)
        else:
            self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                      clean_session=False, manual_ack=True)
        if username is not None:
            self.client.username_pw_set(username, password)
        if ca is not None:
            # TLS 1.2+, the broker's certificate verified against the municipality's CA and its
            # host name checked: a plaintext broker or another CA's certificate fails the
            # handshake, which counts as a failed connect (logged once, retried). Never plaintext.
            self.client.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED,
                                tls_version=ssl.PROTOCOL_TLS_CLIENT)
        else:
            log.warning("MQTT without TLS: set [mqtt] ca (docs/mqtt.md, \"TLS\")")
        self.client.will_set(GATEWAY_STATUS_TOPIC, json.dumps({"state": "offline"}), qos=1,
                             retain=True)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_message = self._on_message

    def start(self) -> None:
        # connect_async + loop_start: the network thread keeps retrying while the broker is away.
        if self.session_expiry_s:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.session_expiry_s
            self.client.connect_async(self.host, self.port, keepalive=self.keepalive_s,
                                      clean_start=False, properties=props)
        else:
            self.client.connect_async(self.host, self.port, keepalive=self.keepalive_s)
        self.client.loop_start()

    def stop(self, timeout: float = 2.0) -> None:
        """Announce offline, disconnect, join the network thread. Blocks up to ~timeout."""
        self._stopping = True
        if self.connected.is_set():
            info = self.client.publish(GATEWAY_STATUS_TOPIC, self._status("offline"), qos=1,
                                       retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()

    def _status(self, state: str) -> str:
        return json.dumps({"state": state, "ts": int(self.clock())})

    def is_connected(self) -> bool:
        return self.connected.is_set()

    def publish(self, topic: str, payload: bytes, *, retain: bool) -> bool:
        """Publish QoS 1 through this session (the crisis-message sender uses it). True when
        paho accepted it while connected: it then stays in the session until the PUBACK, and is
        resent after a reconnect. False when the broker is not connected: nothing is queued."""
        if not self.connected.is_set():
            return False
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    # paho's network thread -------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            log.warning("MQTT %s:%d refused the connection: %s", self.host, self.port, reason)
            return
        self.connects += 1
        self._connected_at = time.monotonic()
        self._unreachable = False
        log.info("MQTT connected to %s:%d", self.host, self.port)
        shared = f"$share/{self.group}/{TOPIC_ROOT}"
        client.subscribe([(f"{shared}/+/{sub}", 1) for sub in SUBTOPICS]
                         + [(f"{shared}/+/crisis/+/ack", 1), (GATEWAY_STATUS_TOPIC, 1)])
        # Plain subscriptions of a persistent session from before (or of a former leader):
        # every message would come twice. The leader's own are made again just below.
        client.unsubscribe([f"{TOPIC_ROOT}/+/{sub}" for sub in SUBTOPICS]
                           + [f"{TOPIC_ROOT}/+/crisis/+/ack"])
        if self.leading:
            client.subscribe(LEADER_TOPICS)
        client.publish(GATEWAY_STATUS_TOPIC, self._status("online"), qos=1, retain=True)
        if self.leading or flags.session_present:
            # The leader always; another worker when it resumed a session that lived on while
            # it was away: the broker shared messages out to it meanwhile and kept at most its
            # `max_queued_messages` of them, so what the sites sent may be missing.
            self._ask_rebirth_all(client)
        self.connected.set()
        self._tell_listening(self.clock())

    def _ask_rebirth_all(self, client: mqtt.Client) -> None:
        now = self.clock()
        self._peer_rebirth_at = now
        body = json.dumps({"ts": int(now)})
        for site in sorted(self.ingest.known_sites):
            # The journal comes back with this rebirth: a gap seen before its replay begins (the
            # broker's queued messages arrive first) is no reason to ask again (REBIRTH_EVERY_S).
            self._rebirth_asked[site] = now
            client.publish(f"{TOPIC_ROOT}/{site}/rebirth", body, qos=1)

    def set_leading(self, leading: bool) -> None:
        """This worker took (True) or lost (False) the lead: the leader's plain subscriptions,
        and on taking it, a rebirth request to every site (the engine starts from current
        data). Safe from any thread."""
        if leading == self.leading:
            return
        self.leading = leading
        if not self.connected.is_set():
            return  # the next CONNECT does it
        if leading:
            self.client.subscribe(LEADER_TOPICS)
            self._ask_rebirth_all(self.client)
        else:
            self.client.unsubscribe([t for t, _qos in LEADER_TOPICS])

    def _peer_status(self, client: mqtt.Client, msg: mqtt.MQTTMessage) -> None:
        """The gateway status as another worker left it (network thread). A live `offline` (its
        Will, or its clean stop) while this worker is connected: say `online` again. Right
        after a CONNECT the persistent session first hands over what it queued meanwhile, this
        worker's own Will from before a restart among it: such an `offline` is answered only if
        it is still the last word `STATUS_QUIET_S` later (this worker's own `online` normally
        comes back first)."""
        try:
            state = json.loads(msg.payload).get("state")
        except (ValueError, AttributeError):
            return
        self._status_seen = state
        if msg.retain or state != "offline" or self._stopping or not self.connected.is_set():
            return  # retained: from before this subscription, answered by the CONNECT
        wait = self._connected_at + STATUS_QUIET_S - time.monotonic()
        if wait > 0:
            with contextlib.suppress(RuntimeError):  # loop closed while stopping
                self.loop.call_soon_threadsafe(self.loop.call_later, wait, self._status_check)
            return
        self._reannounce(client)

    def _status_check(self) -> None:
        if self._status_seen == "offline" and self.connected.is_set() and not self._stopping:
            self._reannounce(self.client)

    def _reannounce(self, client: mqtt.Client) -> None:
        self.reannounced += 1
        log.warning("another gateway worker went offline; announcing this one online")
        client.publish(GATEWAY_STATUS_TOPIC, self._status("online"), qos=1, retain=True)
        now = self.clock()
        if self.leading and now - self._peer_rebirth_at >= REBIRTH_EVERY_S:
            self._ask_rebirth_all(client)
        if self.session_expiry_s:
            # If the other worker does not come back, its session expires and what the broker
            # queued for it is gone: whoever leads by then asks every site once more (until
            # then, half of any replay went to the dead session too).
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self.loop.call_later,
                                               self.session_expiry_s + STATUS_QUIET_S,
                                               self._after_peer_expiry)

    def _after_peer_expiry(self) -> None:
        if self.leading and self.connected.is_set() and not self._stopping:
            log.info("another worker's session has expired: asking every site for rebirth")
            self._ask_rebirth_all(self.client)

    def _tell_listening(self, since: float | None) -> None:
        if self.on_listening is None:
            return
        try:
            self.loop.call_soon_threadsafe(self.on_listening, since)
        except RuntimeError:
            pass  # loop closed while stopping

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        if self.connected.is_set() and not self._stopping and not self._recycling:
            log.warning("MQTT connection to %s:%d lost: %s", self.host, self.port, reason)
        self.connected.clear()
        self._tell_listening(None)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        if not self._unreachable and not self._stopping:
            log.warning("MQTT broker %s:%d unreachable; retrying", self.host, self.port)
        self._unreachable = True

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = "(topic is not UTF-8)"
        self.received += 1
        if topic == GATEWAY_STATUS_TOPIC:
            self._peer_status(client, msg)
        item = (topic, bytes(msg.payload), msg.mid, msg.qos, self.connects)
        with self._inbox_lock:
            self._inbox.append(item)
            if len(self._inbox) > 1:
                return  # the loop has been woken for the first and takes this one with it
        try:
            self.loop.call_soon_threadsafe(self._take_inbox)
        except RuntimeError:
            pass  # loop closed while stopping: unacknowledged, the broker will redeliver

    # asyncio loop thread ---------------------------------------------------------------------

    def _take_inbox(self) -> None:
        with self._inbox_lock:
            items, self._inbox = self._inbox, []
        for item in items:
            self._deliver(*item)

    def _deliver(self, topic: str, payload: bytes, mid: int, qos: int, connection: int) -> None:
        """Queue one message for the next group commit (scheduled behind the messages already
        waiting on the loop, so a burst lands in one transaction)."""
        if not self._batch:
            self.loop.call_soon(self._flush)
        self._batch.append((topic, payload, mid, qos, connection))
        if len(self._batch) >= BATCH_MAX:
            self._flush()

    def _flush(self) -> None:
        batch, self._batch = self._batch, []
        if not batch:
            return
        saved = self.ingest.counters()
        t0 = time.perf_counter()
        try:
            try:
                self._commit(batch, savepoints=False)
            except Redo:
                # A message the store refused: file the batch again, each in its savepoint.
                self.ingest.restore_counters(saved)
                self.redone += 1
                self._commit(batch, savepoints=True)
            done = batch
            self.commit_seconds.observe(time.perf_counter() - t0)
        except Exception:
            log.exception("could not commit %d messages together (first on %s); filing them "
                          "one by one", len(batch), safe_text(batch[0][0][:100]))
            self.ingest.restore_counters(saved)
            done = self._file_one_by_one(batch)
            if len(done) < len(batch):
                self._left_unacknowledged()
        self.batches += 1
        self.processed += len(batch)
        for _topic, _payload, mid, qos, connection in done:
            if qos and connection == self.connects:
                self.client.ack(mid, qos)
        try:
            self._acknowledge()
        except SYSTEMIC:
            # The store failed after the commit, reading what to tell the sites: they are told
            # after the next commit (what was to be acknowledged is kept), and this callback
            # ends cleanly instead of leaving the exception to the event loop.
            log.warning("the store failed while reading what to acknowledge to the sites; "
                        "they are told after the next commit", exc_info=True)

    def _commit(self, batch: list[tuple[str, bytes, int, int, int]], *,
                savepoints: bool) -> None:
        """File the batch in one transaction (`Ingest.savepoints` says how)."""
        ingest = self.ingest
        store = ingest.store
        try:
            with store.batch():
                ingest.savepoints = savepoints
                if not savepoints:
                    store.defer_writes()  # the latest messages and history rows at the end
                ingest.begin_batch(item[0] for item in batch)
                for topic, payload, _mid, _qos, _conn in batch:
                    ingest.handle(topic, payload)
                if not savepoints:
                    try:
                        ingest.filed(store.flush_writes())
                    except SYSTEMIC:
                        raise
                    except Exception as e:  # noqa: BLE001 - which message's: filed again
                        raise Redo("the batch's deferred writes") from e
        finally:
            ingest.end_batch()
            ingest.savepoints = True

    def _left_unacknowledged(self) -> None:
        """The store failed as a whole and messages stay unacknowledged. The broker sends
        them again only on a new connection (MQTT resends in-flight messages at a reconnect, not
        before), and while they fill the in-flight window it sends nothing more: once the store
        answers again, the session is reconnected (not ended: no Will, the session and its
        messages kept) so they come again. Loop thread."""
        if self._recycle_pending:
            return
        self._recycle_pending = True
        log.warning("messages left unacknowledged while the store fails; the MQTT session is "
                    "reconnected once it answers again")
        self.loop.call_later(RECYCLE_PROBE_S, self._probe_store)

    def _probe_store(self) -> None:
        if self._stopping:
            return
        try:
            self.ingest.store.site_ids()
        except Exception:  # noqa: BLE001 - still down: look again
            self.loop.call_later(RECYCLE_PROBE_S, self._probe_store)
            return
        self.loop.run_in_executor(None, self._reconnect)

    def _reconnect(self) -> None:
        """Drop the connection and connect again (a thread of its own: blocks briefly)."""
        self._recycling = True
        try:
            self.client.disconnect()
            self.client.loop_stop()
            if self._stopping:
                return
            self.recycled += 1
            log.info("store back: reconnecting to MQTT for the unacknowledged messages")
            self.start()
        finally:
            self._recycling = False
            self._recycle_pending = False

    def _file_one_by_one(self, batch: list[tuple[str, bytes, int, int, int]]
                         ) -> list[tuple[str, bytes, int, int, int]]:
        """Each message in its own transaction. Returns those filed or refused (to acknowledge);
        one the database as a whole could not take stays unacknowledged (redelivered)."""
        done = []
        logged = False
        for item in batch:
            topic, payload = item[0], item[1]
            saved = self.ingest.counters()
            try:
                with self.ingest.store.batch():
                    self.ingest.handle(topic, payload)
            except SYSTEMIC:
                self.ingest.restore_counters(saved)
                if not logged:
                    log.exception("the store failed; message on %s left unacknowledged",
                                  safe_text(topic[:100]))
                    logged = True
                continue
            except Exception as e:  # noqa: BLE001 - its own commit failed: refuse it alone
                self.ingest.restore_counters(saved)
                self.ingest.refuse(topic, payload, "store", f"{type(e).__name__}: {e}"[:300])
            done.append(item)
        return done

    def _acknowledge(self) -> None:
        """Tell the sites what is committed (`ack`) and ask for the rest again on a gap."""
        acks, gaps = self.ingest.progress()
        now = self.clock()
        for site, boot, seq in acks:
            self.client.publish(f"{TOPIC_ROOT}/{site}/ack",
                                json.dumps({"boot": boot, "seq": seq, "ts": int(now)}), qos=1)
        for site in gaps:
            if now - self._rebirth_asked.get(site, -math.inf) >= REBIRTH_EVERY_S:
                self._rebirth_asked[site] = now
                self.gap_rebirths += 1
                log.info("sequence gap from %s: asking for a rebirth", site)
                self.client.publish(f"{TOPIC_ROOT}/{site}/rebirth",
                                    json.dumps({"ts": int(now), "why": "gap"}), qos=1)
