"""Shared helpers of the test_feeds_* files: the fixtures in gateway/tests/feeds/ (written by the
project from the public format descriptions; no real messages) and the demo sites."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from gateway.config import Site, load_sites

FIXTURES = Path(__file__).parent / "feeds"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def ts(text: str) -> float:
    """Epoch seconds of an ISO time with zone, e.g. "2026-12-05T09:00:00+01:00"."""
    return datetime.fromisoformat(text).timestamp()


NOW = ts("2026-12-05T09:00:00+01:00")  # during the storm of the fixtures


def demo_sites() -> dict[str, Site]:
    return load_sites()


def oversized(n: int = 5 * 1024 * 1024) -> bytes:
    """A well-formed CAP alert of n bytes (a 5 MB response, generated rather than committed)."""
    doc = fixture("vma-are-actual.xml").decode()
    pad = n - len(doc.encode()) - len("<!--  -->")
    return doc.replace("<alert ", f"<!-- {'x' * pad} -->\n<alert ", 1).encode()
