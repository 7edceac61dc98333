"""The alert engine: runs the rules, keeps the alerts in the store, sends the notifications.

    ingest stores a message ─> engine.mark(site) ──────┐
    every tick_s/2, the sites not evaluated for that long ┴─> evaluate ─> apply (one transaction)
    (dead-man, hold and repeat times)
                                                                    └─> notifications queued
    dispatcher: queued notifications ─> notifiers; every attempt logged; retry with backoff

Everything the engine decides on is in the store, so a restarted gateway carries on where it
stopped: an alert that was notified is not notified again, an acknowledgement holds, a
notification that was queued but not yet sent is sent. The rules are pure (`rules.evaluate`);
this class only loads their inputs and writes their outputs.

An acknowledgement from `sot ack` (another process) lands in the store directly; every write
here is conditional on the alert's status (`Store.update_alert(expect=...)`), so an escalation
computed just before the acknowledgement committed is dropped, never sent.

One site's data cannot stop the others: `rules.evaluate` runs each site on its own, and a site
whose data makes a rule raise (or whose view cannot be built) is skipped for the round, counted
in `site_failures` and logged once until it evaluates again; every other site, `site_silent`
included, goes on. Each action is applied in its own savepoint: one the store cannot write is
counted (`failed_actions`), logged once per alert key, and the round's other actions commit.

Delivery is at least once: a gateway killed between a successful send and its record sends that
notification again after the restart, with the same idempotency key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from functools import partial
from typing import Any, Protocol

from ..ingest import SYSTEMIC, safe_text
from ..model import OPEN, AlertRecord, Notification, SiteSnapshot
from ..store import AlertStore, AuditStore, Transactions
from . import texts
from .config import INCIDENT_RULE, AlertConfig, Contact
from .kinds import GATEWAY_TARGET
from .notify import Sender
from .rules import (
    Action,
    Attach,
    Change,
    Clearing,
    Fire,
    Notify,
    Open,
    Resolve,
    evaluate,
    gateway_view,
    site_view,
)

log = logging.getLogger(__name__)

RETRY_FIRST_S = 5.0
RETRY_MAX_S = 900.0
MAX_ATTEMPTS = 12  # 5 s doubling to 15 min: about 66 min of trying before giving up
PARALLEL_SENDS = 8
# Rounds for sites that sent something start at most this often: under a burst (a county's
# controllers replaying their journals after a blackout) a site's many messages cost one
# evaluation, and ingest keeps the loop. It adds at most this much to the alert latency: at
# 50 ms it was half the median (docs/benchmarks.md, "Rounds every 20 ms").
MIN_ROUND_S = 0.02
# A round over many sites runs in parts of about this many (whole municipalities each, so the
# grouping rule sees all of a municipality's alerts) and gives the event loop back between
# them: 2 000 sites in one piece held ingest and the web for over 100 ms.
ROUND_SITES = 200


class EngineStore(AlertStore, AuditStore, Transactions, Protocol):
    """What the engine uses: the alerts and notifications, the audit log, transactions, and the
    sites' snapshots (the rules' input)."""

    def snapshots(self, site: str | None = None, *,
                  sites: Sequence[str] | None = None) -> list[SiteSnapshot]: ...
    def site_municipalities(self) -> dict[str, str]: ...


class AlertEngine:
    def __init__(self, store: EngineStore, config: AlertConfig,
                 clock: Callable[[], float] = time.time, *,
                 senders: dict[str, Sender] | None = None, tick_s: float = 5.0,
                 base_url: str | None = None, name: str = "sot-gateway",
                 exercise: Callable[[str, float], Any] | None = None,
                 feeds: Callable[[float], Any] | None = None) -> None:
        self.store = store
        # now -> the health of the gateway's feeds of official alerts (gateway/feeds/run.py
        # Feeds.health): the input of the gateway-scope rules (feed_failed), None: quiet.
        self.feeds = feeds
        # site, now -> gateway.exercise.Facts: the test-run rules' input (None: they stay quiet)
        self.exercise = exercise
        self.config = config
        self.clock = clock
        self.senders = senders or {}
        self.tick_s = tick_s
        self.base_url = base_url
        self.name = name
        self.listening_since: float | None = None
        self.evaluations = 0
        self.failed_notifications = 0
        self.failed_actions = 0
        self.site_failures: Counter[str] = Counter()  # rule failures per site, since start
        self._failing: set[str] = set()  # sites whose failure is logged already
        self._failed_keys: set[str] = set()  # alert keys whose failed write is logged already
        self._dirty: set[str] = set()
        # site (municipality) -> time.monotonic() of the last evaluation of it (of its alerts):
        # a timed round leaves out those evaluated within the last half tick, see `_run`.
        self._evaluated_at: dict[str, float] = {}
        self._munis_at: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._sending: set[int] = set()
        self._send_tasks: set[asyncio.Task[None]] = set()
        self._sem = asyncio.Semaphore(PARALLEL_SENDS)
        self._no_contact_logged: set[str] = set()
        self._max_repeat = max([r.repeat_s for r in config.rules.values()]
                               + [config.grouping.rule.repeat_s, 0.0])
        # Several gateway workers (gateway/lease.py): `active()` false means this worker's
        # lease is no longer good, so no round runs and nothing is sent; `claim(id, now)` takes
        # a due notification for sending, fenced by the lease, before it is sent (None: one
        # gateway alone, everything due is sent).
        self.active: Callable[[], bool] | None = None
        self.claim: Callable[[int, float], bool] | None = None

    # --- inputs ------------------------------------------------------------------------------

    def listening(self, since: float | None) -> None:
        """The MQTT session came up at `since` (None: it is down). Silence counts from then."""
        self.listening_since = since
        self.mark_all()

    def mark(self, site: str) -> None:
        """A message from `site` was stored: evaluate it soon."""
        self._dirty.add(site)
        self._wake.set()

    def mark_all(self) -> None:
        self._dirty.add("*")
        self._wake.set()

    # --- one evaluation ----------------------------------------------------------------------

    def evaluate_sites(self, sites: Iterable[str] | None = None) -> list[Action]:
        """Evaluate the named sites (None: all, and the gateway's own rules) at the clock's now
        and apply the result, part by part (`parts`)."""
        actions: list[Action] = []
        for part in self.parts(sites):
            actions.extend(part())
        self.evaluations += 1
        return actions

    def parts(self, sites: Iterable[str] | None = None, *,
              skip_since: float | None = None) -> list[partial[list[Action]]]:
        """A round as its parts, each evaluated and applied on its own (`_run` yields to the
        event loop between them): the named sites (None: every active site, less those
        evaluated at or after the monotonic time `skip_since` if given) in groups of about
        `ROUND_SITES`, whole municipalities together; a full round ends with the gateway's own
        rules and the alerts of municipalities no part covered (an inactive site's, say; less
        those evaluated since `skip_since`), whose notifications still fall due. Each part
        reads the store when it runs, so it sees what the parts before it wrote."""
        where = self.store.site_municipalities()
        wanted = set(where) if sites is None else set(sites)
        if sites is None and skip_since is not None:
            wanted = {s for s in wanted if self._evaluated_at.get(s, -math.inf) < skip_since}
        by_muni: dict[str, list[str]] = {}
        for site in sorted(wanted):
            by_muni.setdefault(where.get(site, ""), []).append(site)
        groups: list[list[str]] = []
        for muni in sorted(by_muni):
            if not groups or len(groups[-1]) + len(by_muni[muni]) > ROUND_SITES:
                groups.append([])
            groups[-1].extend(by_muni[muni])
        # The municipalities whose alerts the last part need not read: those the parts cover,
        # and those evaluated since `skip_since`.
        covered: set[str] = set() if skip_since is None else {
            m for m, at in self._munis_at.items() if at >= skip_since}
        out = [partial(self._evaluate, g, covered) for g in groups]
        if sites is None:
            out.append(partial(self._evaluate, None, covered))
        return out

    def _evaluate(self, wanted: list[str] | None, covered: set[str]) -> list[Action]:
        """One part: the sites of `wanted` and their municipalities' alerts (adding those to
        `covered`), or with None the gateway's rules and the alerts outside `covered`."""
        now = self.clock()
        since = now - self._max_repeat
        t = time.monotonic()
        if wanted is None:
            snaps: list[SiteSnapshot] = []
            alerts = self.store.alerts(resolved_since=since,
                                       not_municipalities=sorted(covered))
        else:
            snaps = self.store.snapshots(sites=wanted)
            munis = sorted({s.info.municipality for s in snaps})
            covered.update(munis)
            alerts = self.store.alerts(municipalities=munis, resolved_since=since)
        failed: dict[str, Exception] = {}
        views = {}
        for s in snaps:
            try:
                views[s.info.id] = site_view(s, now, self.listening_since)
                if self.exercise is not None:
                    views[s.info.id] = replace(views[s.info.id],
                                               exercise=self.exercise(s.info.id, now))
            except Exception as e:  # noqa: BLE001 - one site's data: that site only
                failed[s.info.id] = e
        gateway = None
        if wanted is None and self.feeds is not None:
            try:
                gateway = gateway_view(self.feeds(now))
            except Exception as e:  # noqa: BLE001 - the feeds' health: the gateway rules only
                failed[GATEWAY_TARGET] = e
        actions = evaluate(self.config, views, alerts, now, failed, gateway)
        if gateway is not None and GATEWAY_TARGET not in failed:
            self._failing.discard(GATEWAY_TARGET)
        for site in views.keys() - failed.keys():
            self._failing.discard(site)
        for site, err in sorted(failed.items()):
            self._site_failed(site, err)
        if actions:
            self.apply(actions, alerts, now)
        if wanted is not None:  # done: the timed round may leave these out (`_run`)
            for site in wanted:
                self._evaluated_at[site] = t
            for m in munis:
                self._munis_at[m] = t
        return actions

    def _site_failed(self, site: str, e: BaseException) -> None:
        """One site's data made a rule raise: counted, logged once until that site evaluates
        again, and skipped this round; the other sites were evaluated."""
        self.site_failures[site] += 1
        if site not in self._failing:
            self._failing.add(site)
            log.error("alert rules failed on the data of site %s; skipping that site until its "
                      "data changes (other sites are evaluated)", site,
                      exc_info=(type(e), e, e.__traceback__))

    def apply(self, actions: Sequence[Action], alerts: Sequence[AlertRecord], now: float) -> None:
        """Write the round's actions in one transaction: first all together (on PostgreSQL a
        savepoint is two round trips more per action), and if one fails, again with each in
        its own savepoint, so that one costs only itself."""
        try:
            with self.store.batch():
                by_key = {a.key: a for a in alerts if a.open}
                for act in actions:
                    self._apply_one(act, by_key, now)
            return
        except SYSTEMIC:
            raise
        except Exception:  # noqa: BLE001 - found below, action by action
            pass
        by_key = {a.key: a for a in alerts if a.open}
        with self.store.batch():
            for act in actions:
                try:
                    # One action that cannot be written costs that action, not the round.
                    with self.store.savepoint():
                        self._apply_one(act, by_key, now)
                except SYSTEMIC:
                    raise
                except Exception:  # noqa: BLE001 - logged, counted, the others go on
                    self.failed_actions += 1
                    if act.key not in self._failed_keys:  # once per alert key
                        self._failed_keys.add(act.key)
                        log.exception("could not apply %s for %s; the round's other actions "
                                      "are written", type(act).__name__,
                                      safe_text(act.key)[:100])

    def _apply_one(self, act: Action, by_key: dict[str, AlertRecord], now: float) -> None:
        if isinstance(act, Open):
            self._open(act, by_key, now)
            return
        a = by_key.get(act.key)
        if a is None:
            return
        if isinstance(act, Fire):
            self.store.update_alert(a.id, ("pending",), status="firing", fired=now)
            by_key[act.key] = _with(a, status="firing", fired=now)
        elif isinstance(act, Clearing):
            self.store.update_alert(a.id, OPEN, clearing_since=act.since)
        elif isinstance(act, Change):
            fields: dict[str, Any] = {"severity": act.severity, "sv": act.sv,
                                      "en": act.en, "data": act.data}
            if act.refire:
                fields["status"] = "firing"
            if self.store.update_alert(a.id, OPEN, **fields):
                by_key[act.key] = _with(a, **fields)
        elif isinstance(act, Attach):
            self.store.update_alert(a.id, OPEN, incident=act.incident)
        elif isinstance(act, Resolve):
            if self.store.update_alert(a.id, OPEN, status="resolved", resolved=now,
                                       resolve_reason=act.reason, clearing_since=None) \
                    and act.recovery:
                sv, en = _resolved_text(a)
                self._queue(a, "recovery", list(range(max(a.level, 0) + 1)), sv, en, now)
        elif isinstance(act, Notify):
            self._notify(act, a, by_key, now)

    def _open(self, act: Open, by_key: dict[str, AlertRecord], now: float) -> None:
        rec = AlertRecord(id=0, key=act.key, rule=act.rule, site=act.site,
                          municipality=act.municipality, detail=act.detail,
                          severity=act.severity, status=act.status, started=act.started,
                          fired=now if act.status == "firing" else None, sv=act.sv, en=act.en,
                          data=act.data)
        aid = self.store.open_alert(rec)
        if aid is None:
            return  # open already (a duplicate evaluation): nothing new
        by_key[act.key] = _with(rec, id=aid)
        for m in act.incident_members:
            member = by_key.get(m)
            if member is not None:
                self.store.update_alert(member.id, OPEN, incident=act.key)
                by_key[m] = _with(member, incident=act.key)

    def _notify(self, act: Notify, a: AlertRecord, by_key: dict[str, AlertRecord],
                now: float) -> None:
        expect = ("firing", "acknowledged") if act.kind in ("update", "worse") else ("firing",)
        # The escalation delay counts from the first message, each escalation and each new
        # worse step (news the contact has not had time to act on).
        escalated = act.kind in ("escalation", "worse") or a.level < 0
        fields: dict[str, Any] = {"notified": now, "notify_count": a.notify_count + 1,
                                  "level": max(a.level, act.level)}
        if escalated:
            fields["level_since"] = now
        if not self.store.update_alert(a.id, expect, **fields):
            return  # acknowledged or resolved in the meantime: say nothing
        by_key[act.key] = _with(a, **fields)
        if a.rule == INCIDENT_RULE:
            for k, m in list(by_key.items()):
                if m.incident == a.key and m.open:
                    self.store.update_alert(m.id, OPEN, notified=now,
                                            notify_count=m.notify_count + 1)
                    by_key[k] = _with(m, notified=now, notify_count=m.notify_count + 1)
        levels = [act.level] if act.kind == "escalation" else list(range(act.level + 1))
        self._queue(by_key[act.key], act.kind, levels, act.sv, act.en, now)

    def _queue(self, a: AlertRecord, kind: str, levels: list[int], sv: str, en: str,
               now: float) -> None:
        rule = self.config.rule(a.rule) if (a.rule in self.config.rules
                                            or a.rule == INCIDENT_RULE) else None
        audience = rule.audience if rule else ("coordinator",)
        steps = self.config.steps(a.municipality, audience)
        to: list[Contact] = [c for i in levels if 0 <= i < len(steps) for c in steps[i]]
        to += [c for c in self.config.always(a.municipality, audience) if c not in to]
        if not to:
            if a.municipality not in self._no_contact_logged:
                self._no_contact_logged.add(a.municipality)
                log.error("no contact for %s alerts in municipality %s (config/contacts.toml): "
                          "alert %s is in the store only", "/".join(audience), a.municipality,
                          a.key)
            self.store.add_audit(now, self.name, "no_contact", f"alert {a.id} {a.key}", kind)
            return
        subject, doc = self.render(a, kind, sv, en, now)
        seq = a.notify_count + (1 if kind == "recovery" else 0)
        jobs = []
        for c in to:
            for channel, target in c.channels():
                idem = f"{self.name}-{a.id}-{kind}-{seq}-{c.name}-{channel}"
                body = json.dumps({**doc, "idempotency_key": idem}, ensure_ascii=False)
                jobs.append(Notification(0, a.id, kind, c.name, channel, target, subject, body,
                                         idem, next_at=now))
        self.store.add_notifications(jobs, now)
        self._wake.set()

    def render(self, a: AlertRecord, kind: str, sv: str, en: str,
               now: float) -> tuple[str, dict[str, Any]]:
        """Subject line and the JSON document every channel sends (the e-mail's text inside)."""
        t_sv, t_en = texts.title(a.rule)
        k_sv, k_en = texts.notice(kind)
        i_sv, i_en = texts.instruction(a.rule)
        s_sv, s_en = texts.severity(a.severity)
        do_sv, do_en = texts.pair("notice.do")
        ack_sv, ack_en = texts.pair("notice.ack")
        where = a.data.get("site_name") or a.site or a.municipality
        subject = f"[SOT] {k_sv}: {t_sv} – {where} / {k_en}: {t_en}"
        link = f"{self.base_url.rstrip('/')}/" if self.base_url else ""
        ack = f"sot ack {a.id}"
        lines = [f"{k_sv}: {t_sv} ({s_sv})", sv]
        if kind != "recovery":
            lines += [f"{do_sv}: {i_sv}", f"{ack_sv}: {ack}"]
        lines += ["", f"{k_en}: {t_en} ({s_en})", en]
        if kind != "recovery":
            lines += [f"{do_en}: {i_en}", f"{ack_en}: {ack}"]
        if link:
            lines += ["", link]
        doc: dict[str, Any] = {
            "alert": {"id": a.id, "key": a.key, "rule": a.rule, "site": a.site,
                      "municipality": a.municipality, "severity": a.severity,
                      "status": "resolved" if kind == "recovery" else a.status,
                      "started": a.started, "fired": a.fired, "level": a.level},
            "kind": kind, "ts": now,
            "sv": {"title": t_sv, "text": sv, "instruction": i_sv},
            "en": {"title": t_en, "text": en, "instruction": i_en},
            "ack": ack, "text": "\n".join(lines),
        }
        if a.rule == INCIDENT_RULE:
            doc["alert"]["sites"] = a.data.get("sites", [])
        return subject, doc

    # --- running -----------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="alert-engine")

    async def stop(self) -> None:
        if self._task is not None:
            # A flag, not only cancel(): on Python 3.11 `wait_for` can swallow a cancellation
            # that races with its inner wait finishing, and the loop would run on.
            self._stopping = True
            self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 5)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        for t in list(self._send_tasks):
            t.cancel()
        if self._send_tasks:
            await asyncio.gather(*self._send_tasks, return_exceptions=True)
        for s in self.senders.values():
            close = getattr(s, "close", None)
            if close is not None:
                await close()

    async def _run(self) -> None:
        """Rounds: the sites that sent something (`mark`), at most every MIN_ROUND_S; and
        every tick_s/2 a timed round for the sites and municipalities' alerts not evaluated in
        the last tick_s/2, and the gateway's rules. So every site and alert is evaluated at
        least every tick_s, and one that reports often is not evaluated again for nothing: at
        2 000 sites a second the timed round re-evaluated all of them every 5 s, which took the
        event loop for some 300 ms and was most of the tail of the alert latency
        (docs/benchmarks.md)."""
        half = self.tick_s / 2
        next_tick = 0.0
        while not self._stopping:
            if not self._dirty:  # (a timed round leaves the marked sites it skipped here)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, next_tick - time.monotonic())):
                        await self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            if self.active is not None and not self.active():
                await asyncio.sleep(MIN_ROUND_S)  # the lease is being lost: the service stops us
                continue
            try:
                parts = []
                now = time.monotonic()
                if "*" in self._dirty:  # everything changed (the link, the config): every site
                    self._dirty.clear()
                    next_tick = now + half
                    parts = self.parts(None)
                elif now >= next_tick:
                    next_tick = now + half
                    parts = self.parts(None, skip_since=now - half)
                elif self._dirty:
                    sites, self._dirty = self._dirty, set()
                    parts = self.parts(sites)
                for i, part in enumerate(parts):
                    if i:
                        await asyncio.sleep(0)  # ingest and the web between the parts
                        if self._stopping or (self.active is not None and not self.active()):
                            break
                        if self._dirty and "*" not in self._dirty:
                            # Sites that sent something meanwhile go first: a site's news
                            # waits for one part of the round, not for the whole round.
                            sites, self._dirty = self._dirty, set()
                            for urgent in self.parts(sites):
                                urgent()
                                await asyncio.sleep(0)
                    part()
                self.evaluations += bool(parts)
                self.dispatch_due()
            except Exception:
                log.exception("alert evaluation failed; retrying at the next tick")
            # Let ingest run between rounds: a burst of messages coalesces into one round.
            await asyncio.sleep(MIN_ROUND_S)

    def dispatch_due(self) -> None:
        now = self.clock()
        for n in self.store.due_notifications(now, limit=PARALLEL_SENDS * 4):
            if n.id in self._sending:
                continue
            self._sending.add(n.id)
            t = asyncio.get_running_loop().create_task(self._send(n))
            self._send_tasks.add(t)
            t.add_done_callback(self._send_tasks.discard)
        pending = self.store.next_notification_at()
        if pending is not None and pending > now:
            asyncio.get_running_loop().call_later(min(pending - now, self.tick_s) + 0.01,
                                                  self._wake.set)

    async def _send(self, n: Notification) -> None:
        try:
            async with self._sem:
                # Claimed only now that a sender is free (gateway/lease.py): one waiting here
                # holds no claim, so if this worker stops leading meanwhile the next leader
                # sends it at once instead of after the claim's hold.
                try:
                    if self.claim is not None and not self.claim(n.id, self.clock()):
                        return  # another worker's, or this worker's lease is gone
                except SYSTEMIC:
                    return  # the store failed (logged where it is noticed): it stays queued
                except Exception:  # noqa: BLE001 - not sent; said, and tried again
                    log.exception("could not claim notification %d for sending; it stays "
                                  "queued", n.id)
                    return
                sender = self.senders.get(n.channel)
                error: str | None = None
                if sender is None:
                    error = f"no notifier for channel {n.channel!r}"
                else:
                    try:
                        await asyncio.wait_for(sender.send(n), 60)
                    except Exception as e:  # noqa: BLE001 - every failure is recorded below
                        error = f"{type(e).__name__}: {e}"[:500] or type(e).__name__
            now = self.clock()
            if error is None:
                self.store.record_attempt(n.id, now, None, None)
                return
            attempts = n.attempts + 1
            if attempts >= MAX_ATTEMPTS:
                self.store.record_attempt(n.id, now, error, None)
                self.failed_notifications += 1
                self.store.add_audit(now, self.name, "notification_failed",
                                     f"notification {n.id} alert {n.alert_id}",
                                     f"{n.channel} {n.contact}: {error}")
                log.error("gave up notifying %s over %s after %d attempts: %s", n.contact,
                          n.channel, attempts, error)
            else:
                delay = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (attempts - 1))
                self.store.record_attempt(n.id, now, error, now + delay)
                log.warning("notifying %s over %s failed (attempt %d), retry in %.0f s: %s",
                            n.contact, n.channel, attempts, delay, error)
                asyncio.get_running_loop().call_later(delay + 0.01, self._wake.set)
        finally:
            self._sending.discard(n.id)

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait for the notifications being sent (tests, and a clean stop)."""
        if self._send_tasks:
            await asyncio.wait(list(self._send_tasks), timeout=timeout)

    def stats(self) -> dict[str, Any]:
        return {"evaluations": self.evaluations,
                "notifications_given_up": self.failed_notifications,
                "site_failures": dict(self.site_failures),
                "failed_actions": self.failed_actions,
                "listening_since": self.listening_since}


def _with(a: AlertRecord, **changes: Any) -> AlertRecord:
    from dataclasses import replace
    return replace(a, **changes)


def _resolved_text(a: AlertRecord) -> tuple[str, str]:
    where = a.data.get("site_name") or a.site or a.municipality
    if a.rule == INCIDENT_RULE:
        return texts.say(f"alert.{INCIDENT_RULE}.resolved", municipality=a.municipality)
    return texts.say("alert.common.resolved", where=where, title=texts.Two(*texts.title(a.rule)))
