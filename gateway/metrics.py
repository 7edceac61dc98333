"""The gateway's operations view: Prometheus metrics, liveness and readiness.

`GatewayCollector` reads, at each scrape, the counters the gateway keeps anyway (the ingest's
`Ingest.stats()`, the MQTT session's, the alert engine's, the web guard's, the feeds') and asks
the store for what is true now (open alerts by severity, sites by mode and by link). Nothing is
counted twice and no metric object lives outside the gateway: each gateway has a registry of
its own (`GatewayOps.registry`), so several gateways in one process (the tests) never mix.

`GatewayOps` is what the web's `/metrics`, `/healthz` and `/readyz` ask (gateway/web/ops.py);
docs/deploy.md, "Monitoring", says who may read what and which alerts to set.

Metric names carry the prefix `sot_` and their unit (`_seconds`, `_total` for counters).
They carry no personal data: no user, no contact, no message text; labels are reasons, topics,
severities, modes, links and feed names from the configuration.
"""

from __future__ import annotations

import hmac
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from .validate import ConfigError

if TYPE_CHECKING:
    from .service import Gateway

log = logging.getLogger(__name__)

# Group-commit time of the ingest (filing a batch of messages and its COMMIT): from a
# millisecond on SQLite to a second when PostgreSQL struggles.
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def commit_histogram() -> Histogram:
    """The ingest's commit-time histogram (`MqttIngest.commit_seconds`), registered nowhere:
    the gateway's collector hands it to its own registry's scrape."""
    return Histogram("sot_store_commit_seconds",
                     "Time to file and commit one group of MQTT messages in the store",
                     buckets=COMMIT_BUCKETS, registry=None)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _labelled(kind: type[Metric], name: str, doc: str, label: str,
              values: Iterable[tuple[str, float]]) -> Metric:
    fam = kind(name, doc, labels=[label])  # type: ignore[call-arg]
    for key, value in sorted(values):
        fam.add_metric([key], value)  # type: ignore[attr-defined]
    return fam


class GatewayCollector(Collector):
    """Everything under `sot_` for one gateway, read when Prometheus asks."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def collect(self) -> Iterator[Metric]:
        gw = self.gateway
        yield from self._ingest(gw)
        yield from self._mqtt(gw)
        yield from self._store(gw)
        yield from self._alerts(gw)
        yield from self._web(gw)
        yield from self._feeds(gw)

    # --- the ingest and its MQTT session ------------------------------------------------------

    def _ingest(self, gw: Gateway) -> Iterator[Metric]:
        if gw.ingest is None:
            return
        s = gw.ingest.stats()
        yield _labelled(CounterMetricFamily, "sot_ingest_filed_messages",
                        "Messages filed in the store, by subtopic", "topic",
                        s["accepted_by_topic"].items())
        yield _counter("sot_ingest_duplicate_messages",
                       "Messages already stored (a redelivery or a replay), not filed again",
                       s["duplicates"])
        yield _counter("sot_ingest_outdated_messages",
                       "Retained messages older than the ones already stored", s["outdated"])
        yield _labelled(CounterMetricFamily, "sot_ingest_rejected_messages",
                        "Messages refused, by reason (kept in the store's rejected table)",
                        "reason", s["rejected_by_reason"].items())
        yield _counter("sot_ingest_ignored_messages",
                       "Messages on topics the gateway does not read", s["ignored"])

    def _mqtt(self, gw: Gateway) -> Iterator[Metric]:
        m = gw.mqtt
        yield _gauge("sot_mqtt_connected", "1 while the gateway's MQTT session is connected",
                     1.0 if m is not None and m.is_connected() else 0.0)
        if m is None:
            return
        yield _counter("sot_mqtt_connects", "MQTT sessions established since the start",
                       m.connects)
        yield _counter("sot_ingest_batches", "Group commits of the ingest", m.batches)
        # Handed from paho's network thread to the loop, not yet filed: each is unacknowledged
        # until its batch commits (the broker delivers it again if the gateway dies first).
        yield _gauge("sot_ingest_backlog_messages",
                     "Messages received from the broker, not yet filed nor acknowledged",
                     max(0, m.received - m.processed))
        yield from m.commit_seconds.collect()

    # --- the store -----------------------------------------------------------------------------

    def _store(self, gw: Gateway) -> Iterator[Metric]:
        store = gw.store
        if store is None:
            return
        try:
            sites = store.sites_overview(gw.clock())
            alerts = store.alerts(open_only=True)
        except Exception as e:  # noqa: BLE001 - a scrape reports the store down, never fails
            log.warning("metrics: the store did not answer: %s", e)
            yield _gauge("sot_store_up", "1 when the store answered this scrape's queries", 0)
            return
        yield _gauge("sot_store_up", "1 when the store answered this scrape's queries", 1)
        modes = Counter(s.mode or "unknown" for s in sites)
        links = Counter(s.link for s in sites)
        yield _labelled(GaugeMetricFamily, "sot_sites", "Configured sites by operating mode",
                        "mode", modes.items())
        yield _labelled(GaugeMetricFamily, "sot_sites_link",
                        "Configured sites by link as the gateway judges it", "link",
                        links.items())
        yield _gauge("sot_sites_stale", "Sites whose latest state is older than its heartbeat "
                     "allows", sum(1 for s in sites if s.stale))
        fam = GaugeMetricFamily("sot_alerts_open", "Alerts not yet resolved",
                                labels=["severity", "status"])
        for (sev, status), n in sorted(Counter((a.severity, a.status) for a in alerts).items()):
            fam.add_metric([sev, status], n)
        yield fam

    # --- alerts, web, feeds --------------------------------------------------------------------

    def _alerts(self, gw: Gateway) -> Iterator[Metric]:
        engine = gw.engine
        yield _gauge("sot_alert_engine_active",
                     "1 when this gateway runs the alert engine and the notifier",
                     1.0 if engine is not None else 0.0)
        if engine is None:
            return
        s = engine.stats()
        yield _counter("sot_alert_evaluations", "Rounds of the alert rules", s["evaluations"])
        yield _counter("sot_notifications_failed",
                       "Notifications given up after their last attempt",
                       s["notifications_given_up"])
        yield _counter("sot_alert_actions_failed",
                       "Alert changes the store could not take", s["failed_actions"])
        yield _gauge("sot_alert_sites_failing",
                     "Sites whose data the alert rules currently fail on",
                     len(s["site_failures"]))

    def _web(self, gw: Gateway) -> Iterator[Metric]:
        site = gw._site
        if site is None:
            return
        s = site.stats()
        yield _gauge("sot_http_connections_open", "Open web connections", s["open"])
        yield _counter("sot_http_connections_refused",
                       "Web connections refused (over the per-address or total limit)",
                       s["refused"])
        yield _counter("sot_http_connections_timed_out",
                       "Web connections closed for being too slow", s["timed_out"])

    def _feeds(self, gw: Gateway) -> Iterator[Metric]:
        feeds = gw.feeds
        if feeds is None:
            return
        # Polled by the leading worker only: the numbers are its; another worker has none.
        per: dict[str, Any] = feeds.stats()["feeds"] if feeds.running else {}
        failures = GaugeMetricFamily("sot_feed_consecutive_failures",
                                     "Failed polls of an official-alert feed since its last "
                                     "success", labels=["feed"])
        stale = GaugeMetricFamily("sot_feed_stale",
                                  "1 when a feed has not been read successfully for too long",
                                  labels=["feed"])
        last = GaugeMetricFamily("sot_feed_last_success_timestamp_seconds",
                                 "When a feed was last read successfully (Unix time)",
                                 labels=["feed"])
        for name, h in sorted(per.items()):
            failures.add_metric([name], h["failures"])
            stale.add_metric([name], 1.0 if h["stale"] else 0.0)
            if h["last_success"] is not None:
                last.add_metric([name], h["last_success"])
        yield failures
        yield stale
        yield last


class GatewayOps:
    """The gateway as `/metrics`, `/healthz` and `/readyz` see it."""

    def __init__(self, gateway: Gateway, token_file: Path | None = None) -> None:
        self.gateway = gateway
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(GatewayCollector(gateway))
        ProcessCollector(registry=self.registry)  # process_* (CPU, memory, open files)
        self.token: bytes | None = None
        if token_file is not None:
            try:
                token = token_file.read_bytes().strip()
            except OSError as e:
                raise ConfigError(token_file, "[metrics]", "token_file",
                                  f"cannot read the metrics token: {e.strerror}") from None
            if len(token) < 16:
                raise ConfigError(token_file, "[metrics]", "token_file",
                                  "the metrics token must be 16 characters or more")
            self.token = token

    def token_ok(self, authorization: str | None) -> bool:
        """Whether an Authorization header carries the metrics token (`Bearer <token>`)."""
        if self.token is None or not authorization:
            return False
        scheme, _, value = authorization.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(),
                                                                  self.token)

    def metrics(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition (body, content type) in the format the scraper asked for."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def problems(self) -> list[str]:
        """Why this gateway is not ready, [] when it is: the store answers a trivial query and
        the MQTT session is connected."""
        gw = self.gateway
        out: list[str] = []
        if gw.store is None:
            out.append("store: not open")
        else:
            try:
                gw.store.site_ids()
            except Exception as e:  # noqa: BLE001 - any failure means not ready
                # The answer is public: the error's class only; its text (a host, a path) is
                # for the log.
                log.warning("readyz: the store did not answer: %s", e)
                out.append(f"store: not answering ({type(e).__name__})")
        if gw.mqtt is None or not gw.mqtt.is_connected():
            out.append("mqtt: not connected to the broker")
        return out
