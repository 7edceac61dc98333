"""Notifiers: one small class per channel, each sends one stored `Notification` or raises.

    email    SMTP (stdlib smtplib on a worker thread), optional STARTTLS and login
    webhook  JSON POST with an `Idempotency-Key` header; 2xx is success
    file     one JSON line appended to a file (the demo, and a last-resort local log)

Retries are not done here: the engine's dispatcher records every attempt in the store and tries
again later with a growing delay, so a failure survives a restart and is never lost silently.
Every send is bounded by a timeout. The idempotency key (`Notification.idem`) is the same on
every attempt: the webhook receiver gets it as a header, an e-mail as its Message-ID, so a
receiver that saw an attempt the gateway thinks failed can drop the repeat.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from ..model import Notification

TIMEOUT_S = 15.0


class Sender(Protocol):
    async def send(self, n: Notification) -> None: ...


@dataclass(frozen=True)
class SmtpSettings:
    host: str = "127.0.0.1"
    port: int = 25
    sender: str = "sot-gateway@localhost"
    starttls: bool = False
    user: str | None = None
    password: str | None = None
    timeout_s: float = TIMEOUT_S


class EmailSender:
    def __init__(self, settings: SmtpSettings) -> None:
        self.s = settings

    def message(self, n: Notification) -> EmailMessage:
        doc = json.loads(n.body)
        msg = EmailMessage()
        msg["From"] = self.s.sender
        msg["To"] = n.target
        msg["Subject"] = n.subject
        msg["Date"] = formatdate(localtime=False)
        domain = self.s.sender.rpartition("@")[2] or "localhost"
        msg["Message-ID"] = f"<{n.idem}@{domain}>"
        msg.set_content(doc.get("text") or n.subject)
        return msg

    def _send(self, n: Notification) -> None:
        msg = self.message(n)
        with smtplib.SMTP(self.s.host, self.s.port, timeout=self.s.timeout_s) as smtp:
            if self.s.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.s.user:
                smtp.login(self.s.user, self.s.password or "")
            smtp.send_message(msg)

    async def send(self, n: Notification) -> None:
        await asyncio.to_thread(self._send, n)


class WebhookSender:
    def __init__(self, timeout_s: float = TIMEOUT_S) -> None:
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def send(self, n: Notification) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        async with self._session.post(
                n.target, data=n.body.encode(),
                headers={"Content-Type": "application/json; charset=utf-8",
                         "Idempotency-Key": n.idem, "User-Agent": "sot-gateway"}) as r:
            if not 200 <= r.status < 300:
                text = (await r.text())[:200]
                raise RuntimeError(f"HTTP {r.status}: {text}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class FileSender:
    """Appends `{"idem", "subject", ...body}` as one line; relative paths from `base`."""

    def __init__(self, base: Path) -> None:
        self.base = base

    def _send(self, n: Notification) -> None:
        path = Path(n.target)
        path = path if path.is_absolute() else self.base / path
        path.parent.mkdir(parents=True, exist_ok=True)
        doc: dict[str, Any] = {"idem": n.idem, "to": n.contact, "subject": n.subject,
                               **json.loads(n.body)}
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(doc, ensure_ascii=False) + "\n")

    async def send(self, n: Notification) -> None:
        await asyncio.to_thread(self._send, n)
