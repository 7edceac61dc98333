"""Polling one configured feed: conditional GET, limits, backoff and health.

    [[feeds]]                          # config/gateway.toml, one table per source
    name = "vma"                       # unique, names the feed in logs, counts and health
    kind = "cap"                       # cap (a CAP 1.2 document or an Atom/RSS feed of them)
                                       # | krisinformation (API v3 JSON)
    url = "https://example.org/cap.atom"
    interval_s = 60                    # poll interval (10..3600)
    area = ["23"]                      # optional: county/municipality codes it is kept to
    timeout_s = 10                     # total time for one request, connect to last byte
    max_bytes = 1048576                # a larger response is refused, not read
    stale_s = 300                      # no success this long = stale (default 5 x interval)
    max_age_h = 24                     # krisinformation: an item counts this long after its
                                       # last update (the API gives no expiry)

Each poll sends If-None-Match / If-Modified-Since from the last good response, so an unchanged
feed costs a 304 and no parsing. A failure (timeout, network, HTTP error, a body refused whole)
doubles the wait up to `max_backoff_s`; a success returns to `interval_s`. Every refusal is
counted per reason (parse.REASONS) and logged once: a failed poll is counted each time and
logged when its reason first occurs in a run of failures; a refused entry (a CAP alert with no
area, say), which the feed lists on every poll, is counted and logged once. `health()` says when the
feed last succeeded, how many polls in a row failed and whether it is stale, for an alert rule
that tells the coordinators (docs/feeds.md). Nothing here ever raises out of `poll_once`: a
broken feed never stops the gateway.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

from .geo import in_filter
from .model import OfficialAlert
from .parse import (
    MAX_BYTES,
    FeedError,
    Parsed,
    parse_cap_element,
    parse_cap_feed,
    parse_krisinformation,
    safe_xml,
)

log = logging.getLogger("gateway.feeds")

KINDS = ("cap", "krisinformation")
MAX_LINKS = 50  # linked CAP documents fetched per poll
CHUNK = 65536


@dataclass(frozen=True)
class FeedConfig:
    name: str
    kind: str
    url: str
    interval_s: float = 60.0
    area: tuple[str, ...] = ()
    timeout_s: float = 10.0
    max_bytes: int = MAX_BYTES
    stale_s: float | None = None
    max_age_h: float = 24.0
    max_backoff_s: float | None = None

    @property
    def stale_after(self) -> float:
        return self.stale_s if self.stale_s is not None else 5 * self.interval_s

    @property
    def backoff_cap(self) -> float:
        if self.max_backoff_s is not None:
            return self.max_backoff_s
        return max(self.interval_s, min(3600.0, 16 * self.interval_s))


_KEYS = {"name", "kind", "url", "interval_s", "area", "timeout_s", "max_bytes", "stale_s",
         "max_age_h", "max_backoff_s"}


def load_feeds(raw: Any) -> list[FeedConfig]:
    """The `[[feeds]]` entries of config/gateway.toml (None: no feeds). Raises ValueError that
    names the entry and the key."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ValueError("[[feeds]] must be an array of tables")
    out: list[FeedConfig] = []
    for i, t in enumerate(raw):
        where = f"[[feeds]] #{i + 1}"
        if not isinstance(t, dict):
            raise ValueError(f"{where}: must be a table")
        unknown = sorted(set(t) - _KEYS)
        if unknown:
            raise ValueError(f"{where}: unknown key '{unknown[0]}' (allowed: "
                             f"{', '.join(sorted(_KEYS))})")

        name = t.get("name")
        if not isinstance(name, str) or not name or not all(
                c.isalnum() or c in "-_" for c in name):
            raise ValueError(f"{where}: key 'name' must be a name of letters, digits, - and _")
        where = f"[[feeds]] '{name}'"
        if any(f.name == name for f in out):
            raise ValueError(f"{where}: duplicate name")

        def num(key: str, lo: float, hi: float, default: float | None,
                t: dict[str, Any] = t, where: str = where) -> float | None:
            v = t.get(key, default)
            if v is None:
                return None
            if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
                raise ValueError(f"{where}: key '{key}' must be a number from {lo:g} to {hi:g}, "
                                 f"got {v!r}")
            return float(v)

        kind = t.get("kind")
        if kind not in KINDS:
            raise ValueError(f"{where}: key 'kind' must be one of {', '.join(KINDS)}, "
                             f"got {kind!r}")
        url = t.get("url")
        if not isinstance(url, str) or URL(url).scheme not in ("http", "https") or not URL(
                url).host:
            raise ValueError(f"{where}: key 'url' must be an http(s) URL, got {url!r}")
        area = t.get("area", [])
        if not isinstance(area, list) or not all(
                isinstance(c, str) and c.isdigit() and len(c) in (2, 4) for c in area):
            raise ValueError(f"{where}: key 'area' must be a list of county (\"23\") or "
                             f"municipality (\"2321\") codes")
        out.append(FeedConfig(
            name=name, kind=kind, url=url,
            interval_s=num("interval_s", 10, 3600, 60.0) or 60.0,
            area=tuple(area),
            timeout_s=num("timeout_s", 1, 120, 10.0) or 10.0,
            max_bytes=int(num("max_bytes", 1024, 16 * 1024 * 1024, MAX_BYTES) or MAX_BYTES),
            stale_s=num("stale_s", 10, 7 * 86400, None),
            max_age_h=num("max_age_h", 1, 24 * 30, 24.0) or 24.0,
            max_backoff_s=num("max_backoff_s", 10, 86400, None),
        ))
    return out


@dataclass(frozen=True)
class FeedHealth:
    name: str
    url: str
    last_success: float | None
    last_attempt: float | None
    consecutive_failures: int
    last_error: str | None  # a parse.REASONS key
    stale: bool
    counts: dict[str, int]

    @property
    def failing(self) -> bool:
        return self.consecutive_failures > 0


@dataclass
class PollResult:
    """One poll: `alerts` parsed (within the area filter), `not_modified` for a 304, `error`
    the reason the poll failed (None on success), `refused` the entries refused."""

    alerts: list[OfficialAlert] = field(default_factory=list)
    not_modified: bool = False
    error: FeedError | None = None
    refused: list[FeedError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


class FeedPoller:
    def __init__(self, cfg: FeedConfig, session: aiohttp.ClientSession | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self._session = session
        self._own_session = session is None
        self.clock = clock
        self.etag: str | None = None
        self.last_modified: str | None = None
        self.last_success: float | None = None
        self.last_attempt: float | None = None
        self.started = clock()
        self.failures = 0
        self.last_error: str | None = None
        self.counts: Counter[str] = Counter()  # refusals per reason, and "polls", "parsed", ...
        self._logged_streak: set[str] = set()
        self._told: set[tuple[str, str]] = set()
        self._linked: dict[str, list[OfficialAlert]] = {}  # CAP documents linked from a feed

    # --- plumbing ---------------------------------------------------------------------------

    def use_session(self, session: aiohttp.ClientSession) -> None:
        """Poll through `session`, which the caller owns and closes (several feeds share one)."""
        self._session, self._own_session = session, False

    def _sess(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def _get(self, url: str, *, conditional: bool) -> tuple[int, bytes, Any]:
        headers = {"Accept": "application/json" if self.cfg.kind == "krisinformation" else
                   "application/cap+xml, application/atom+xml, application/xml;q=0.9, */*;q=0.5",
                   "User-Agent": "sot-punkt-gateway"}
        if conditional and self.etag:
            headers["If-None-Match"] = self.etag
        if conditional and self.last_modified:
            headers["If-Modified-Since"] = self.last_modified
        timeout = aiohttp.ClientTimeout(total=self.cfg.timeout_s)
        try:
            async with self._sess().get(url, headers=headers, timeout=timeout,
                                        allow_redirects=True, max_redirects=3) as resp:
                if resp.status == 304:
                    return 304, b"", resp.headers
                if resp.status != 200:
                    raise FeedError("http", f"HTTP {resp.status}")
                if (resp.content_length or 0) > self.cfg.max_bytes:
                    raise FeedError("too_large", f"Content-Length {resp.content_length}")
                buf = bytearray()
                async for chunk in resp.content.iter_chunked(CHUNK):
                    buf += chunk
                    if len(buf) > self.cfg.max_bytes:
                        raise FeedError("too_large", f"more than {self.cfg.max_bytes} bytes")
                return 200, bytes(buf), resp.headers
        except TimeoutError:
            raise FeedError("timeout", f"after {self.cfg.timeout_s:g} s") from None
        except (aiohttp.ClientError, OSError) as e:
            raise FeedError("network", type(e).__name__) from None

    def _refuse(self, err: FeedError, what: str) -> None:
        """A refused entry: a feed lists it on every poll, so it is counted and logged once."""
        key = (err.reason, f"{what} {err.detail}")
        if key not in self._told:
            if len(self._told) > 1000:
                self._told.clear()
            self._told.add(key)
            self.counts[err.reason] += 1
            log.warning("feed %s: refused %s: %s", self.cfg.name, what, err)

    # --- one poll ---------------------------------------------------------------------------

    async def poll_once(self) -> PollResult:
        now = self.clock()
        self.last_attempt = now
        self.counts["polls"] += 1
        try:
            status, body, headers = await self._get(self.cfg.url, conditional=True)
            if status == 304:
                self.counts["not_modified"] += 1
                self._succeeded(now)
                return PollResult(not_modified=True)
            parsed = self._parse(body)
            await self._fetch_links(parsed)
        except FeedError as e:
            self._failed(e)
            return PollResult(error=e)
        self.etag = headers.get("ETag")
        self.last_modified = headers.get("Last-Modified")
        for err in parsed.errors:
            self._refuse(err, "an entry")
        kept = [a for a in parsed.alerts if in_filter(a, self.cfg.area)]
        self.counts["filtered"] += len(parsed.alerts) - len(kept)
        self._succeeded(now)
        return PollResult(alerts=kept, refused=list(parsed.errors))

    def _parse(self, body: bytes) -> Parsed:
        self.counts["parsed"] += 1
        if self.cfg.kind == "krisinformation":
            return parse_krisinformation(body, feed=self.cfg.name, max_bytes=self.cfg.max_bytes,
                                         max_age_s=self.cfg.max_age_h * 3600)
        return parse_cap_feed(body, feed=self.cfg.name, max_bytes=self.cfg.max_bytes)

    async def _fetch_links(self, parsed: Parsed) -> None:
        """CAP documents an Atom/RSS feed links to, on the feed's own host (scheme, host and
        port): fetched once each (a CAP message never changes; an update is a new message),
        the cache kept to the links still listed."""
        base = URL(self.cfg.url)
        links = []
        for u in parsed.links[:MAX_LINKS]:
            try:
                target = base.join(URL(u))
            except ValueError:
                parsed.errors.append(FeedError("foreign_link", u[:80]))
                continue
            # only the feed's own host: an entry must not send the gateway to other machines
            # (its own dashboard, the broker, the municipality's network)
            if (target.scheme, target.host, target.port) != (base.scheme, base.host, base.port):
                parsed.errors.append(FeedError("foreign_link", str(target)[:80]))
                continue
            links.append(str(target))
        if len(parsed.links) > MAX_LINKS:
            parsed.errors.append(FeedError("too_many", f"{len(parsed.links)} linked documents"))
        for url in links:
            if url not in self._linked:
                try:
                    _, body, _ = await self._get(url, conditional=False)
                    self._linked[url] = [parse_cap_element(safe_xml(body, self.cfg.max_bytes),
                                                           feed=self.cfg.name)]
                except FeedError as e:
                    if e.reason in ("timeout", "network", "http"):
                        self._refuse(e, f"the linked document {url}")
                        continue  # tried again next poll, not remembered
                    parsed.errors.append(e)
                    self._linked[url] = []  # refused once, not fetched again
            parsed.alerts.extend(self._linked[url])
        for url in set(self._linked) - set(links):
            del self._linked[url]

    def _succeeded(self, now: float) -> None:
        if self.failures:
            log.info("feed %s: recovered after %d failed polls", self.cfg.name, self.failures)
        self.failures = 0
        self.last_error = None
        self.last_success = now
        self._logged_streak.clear()

    def _failed(self, err: FeedError) -> None:
        self.failures += 1
        self.last_error = err.reason
        self.counts[err.reason] += 1
        if err.reason not in self._logged_streak:
            self._logged_streak.add(err.reason)
            log.warning("feed %s (%s): %s", self.cfg.name, self.cfg.url, err)

    # --- schedule and health ----------------------------------------------------------------

    def next_delay(self) -> float:
        """interval_s after a success; after n failures in a row, interval_s * 2**n up to
        the backoff cap."""
        if not self.failures:
            return self.cfg.interval_s
        return min(self.cfg.backoff_cap, self.cfg.interval_s * 2 ** min(self.failures, 16))

    def health(self, now: float | None = None) -> FeedHealth:
        now = self.clock() if now is None else now
        since = self.last_success if self.last_success is not None else self.started
        return FeedHealth(name=self.cfg.name, url=self.cfg.url, last_success=self.last_success,
                          last_attempt=self.last_attempt, consecutive_failures=self.failures,
                          last_error=self.last_error, stale=now - since > self.cfg.stale_after,
                          counts=dict(self.counts))

    async def run(self, on_result: Callable[[PollResult], Awaitable[None]],
                  stop: asyncio.Event) -> None:
        """Poll until `stop` is set; `on_result` gets every poll's result (its exceptions are
        logged, never stop the loop)."""
        try:
            while not stop.is_set():
                result = await self.poll_once()
                try:
                    await on_result(result)
                except Exception:
                    log.exception("feed %s: handling a poll failed", self.cfg.name)
                try:
                    await asyncio.wait_for(stop.wait(), self.next_delay())
                except TimeoutError:
                    pass
        finally:
            await self.close()
