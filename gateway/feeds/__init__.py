"""Official crisis alerts from national sources (VMA as CAP 1.2, Krisinformation API v3):
parsing, where they apply, what they mean, the municipality's policy, polling, and publishing
through the crisis sender (publish.py), and the whole as the running gateway owns it (run.py,
started by gateway/service.py). docs/feeds.md."""

from .geo import applies, haversine_km, in_circle, in_filter, point_in_polygon
from .model import LEVELS, Area, Circle, OfficialAlert, Texts, level
from .parse import REASONS, FeedError, Parsed, parse_cap, parse_cap_feed, parse_krisinformation
from .policy import POLICIES, PolicyConfig, decide, load_policy
from .poller import FeedConfig, FeedHealth, FeedPoller, PollResult, load_feeds
from .reduce import AlertSet, Change, Outcome, apply_all, expire, reduce

__all__ = [
    "LEVELS", "POLICIES", "REASONS", "AlertSet", "Area", "Change", "Circle", "FeedConfig",
    "FeedError", "FeedHealth", "FeedPoller", "OfficialAlert", "Outcome", "Parsed", "PolicyConfig",
    "PollResult", "Texts", "applies", "apply_all", "decide", "expire", "haversine_km",
    "in_circle", "in_filter", "level", "load_feeds", "load_policy", "parse_cap",
    "parse_cap_feed", "parse_krisinformation", "point_in_polygon", "reduce",
]
