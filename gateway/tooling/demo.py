"""`sot demo`: a simulated municipality of three SOT-points, end to end through real parts.

Per site a plant simulator (pymodbus on pty links, with physics) and the real firmware under the
MicroPython unix port; one private Mosquitto; the gateway with its SQLite database and web page;
and a scripted storm:

    t = STORM_AT      the grid drops at Kall and Hede; Hede's generator will fail to start
                      (its controller latches the fail-to-start alarm, as a DSE module does)
    t = COMMAND_AT    a coordinator sends Hede a signed remote start; the controller refuses
                      it and its result says why (the latched alarm)
    t = VMA_AT        the demo's own feed of official alerts (a local aiohttp server) issues a
                      VMA for Åre kommun: the gateway polls it and it reaches Kall's panel and
                      signage, not Hede's or Föllinge's (docs/feeds.md)
    t = RETURN_AT     the grid comes back at both
    throughout        generators burn fuel at `time_scale` times real time

Everything it starts is stopped by process id (or joined, for the plant threads) on exit, after
`--duration` seconds or at Ctrl-C/SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from gateway import commands, mqttauth
from gateway import config as config_mod
from gateway.model import SiteSummary
from gateway.service import Gateway

log = logging.getLogger("sot.demo")

STORM_AT = 20.0
RETURN_AT = 110.0
COMMAND_AT = STORM_AT + 45  # after the site reported its failed start (start_timeout_s 30)
STORM_SITES = ("are-kall", "harjedalen-hede")
FAILING_SITE = "harjedalen-hede"
STATUS_EVERY = 5.0
HEARTBEAT_S = 5  # faster than the shipped 30 s so the page moves while you watch
VMA_AT = STORM_AT + 1
VMA_FIXTURE = "vma-are-actual.xml"  # gateway/tests/feeds/: the project's own, fictional
VMA_MARK = "VMA"  # on the panel and the signage once it arrived
FEED_INTERVAL_S = 10  # the shortest poll interval a feed may have
# The demo's policy: Åre's sites show severe official alerts at once, the others wait for a
# coordinator (docs/feeds.md, "Policy per kommun").
FEED_POLICY = {"default": "approve", "municipalities": {"2321": "auto"}}


DEMO_USER = "samordnare"


def create_demo_user(gateway: Gateway) -> str:
    """A coordinator with a fresh random password: there are no default passwords."""
    import secrets

    from gateway.auth import hash_password

    password = secrets.token_urlsafe(12)
    assert gateway.store is not None
    gateway.store.put_user(DEMO_USER, "coordinator", hash_password(password), time.time())
    return password


def feed_entries(extra: Sequence[str], own_url: str) -> list[dict[str, Any]]:
    """The demo's `[[feeds]]`: its own VMA feed, then each `--feed` (CAP, or
    "krisinformation:URL")."""
    out: list[dict[str, Any]] = [{"name": "demo-vma", "kind": "cap", "url": own_url,
                                  "interval_s": FEED_INTERVAL_S}]
    for i, url in enumerate(extra):
        kind = "cap"
        for k in ("krisinformation", "cap"):
            if url.startswith(k + ":") and not url.startswith(k + "://"):
                kind, url = k, url[len(k) + 1:]
        out.append({"name": f"feed-{i + 1}", "kind": kind, "url": url, "interval_s": 60})
    return out


async def official_alert_seen(http: aiohttp.ClientSession, base: str,
                              sims: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(sites whose panel shows the VMA, sites whose signage shows it): what a person at each
    site would see, the panel's frame and the public signage page's data."""
    panel = sorted(sid for sid, sim in sims.items() if VMA_MARK in sim.panel_text())
    signage = []
    for sid in sorted(sims):
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with http.get(f"{base}api/signage/{sid}") as r:
                if r.status == 200 and VMA_MARK in await r.text():
                    signage.append(sid)
    return panel, signage


def _fmt(row: SiteSummary) -> str:
    def num(v: Any, unit: str) -> str:
        return "–" if v is None else f"{v:.0f}{unit}" if unit == "%" else f"{v:.1f}{unit}"

    link = "LOST" if row.status == "lost" else "stale" if row.stale else "ok"
    return (
        f"  {row.id:<17} {row.mode or '–':<14} grid={row.grid_state or '–':<8} "
        f"gen={row.genset_state or '–':<8} fuel={num(row.fuel_pct, '%'):>4} "
        f"left={num(row.hours_left, ' h'):>7}  link={link}"
    )


class Storm:
    """The scripted sequence, stepped once a second."""

    def __init__(self, sims: dict[str, Any], command: Any = None) -> None:
        self.sims = sims
        self.done: set[str] = set()
        # command(site, name) -> the signed body: a coordinator's remote start (docs/commands.md)
        self.command = command
        self.sent: dict[str, Any] | None = None

    def step(self, t: float) -> None:
        if t >= STORM_AT and "storm" not in self.done:
            self.done.add("storm")
            for sid in STORM_SITES:
                if sid in self.sims:
                    if sid == FAILING_SITE:
                        self.sims[sid].physics.fail_next_start(True)
                    self.sims[sid].physics.grid_lost()
            print(
                f"[{t:5.0f} s] storm: grid lost at {', '.join(STORM_SITES)}; "
                f"{FAILING_SITE}'s generator will fail to start",
                flush=True,
            )
        failing = self.sims.get(FAILING_SITE)
        if failing is not None and t >= STORM_AT + 8 and "latch" not in self.done:
            self.done.add("latch")  # the start has failed by now (2 s delay, 3 s cranking)
            if failing.plant.has_point("genset", "alarm_fail_to_start"):
                failing.plant.set("genset", "alarm_fail_to_start", "shutdown")
        if failing is not None and self.command is not None and t >= COMMAND_AT \
                and "command" not in self.done:
            self.done.add("command")
            self.sent = self.command(FAILING_SITE, "gen_start")
            print(f"[{t:5.0f} s] samordnaren fjärrstartar / a coordinator remote-starts "
                  f"{FAILING_SITE} (command {self.sent['id']})", flush=True)
        if t >= RETURN_AT and "return" not in self.done:
            self.done.add("return")
            for sid in STORM_SITES:
                if sid in self.sims:
                    self.sims[sid].physics.grid_restored()
            print(f"[{t:5.0f} s] storm over: grid back at {', '.join(STORM_SITES)}", flush=True)
            if failing is not None and "latch" in self.done \
                    and failing.plant.has_point("genset", "alarm_fail_to_start"):
                failing.plant.set("genset", "alarm_fail_to_start", "inactive")
                print(f"[{t:5.0f} s] a technician resets {FAILING_SITE}'s fail-to-start alarm",
                      flush=True)


async def run(
    *,
    duration: float | None = None,
    mqtt_port: int | None = None,
    http_port: int = 8080,
    time_scale: float = 600.0,
    workdir: Path | None = None,
    config_dir: Path = config_mod.CONFIG_DIR,
    feeds: Sequence[str] = (),
) -> int:
    from hil_tests.rig.broker import Broker
    from hil_tests.rig.feedserver import FeedServer, atom, fixture, retimed
    from hil_tests.rig.sitesim import SimulatedSite

    sites = config_mod.load_sites(config_dir)
    own_dir = workdir is None
    workdir = Path(workdir or tempfile.mkdtemp(prefix="sot-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    # Per-site accounts and ACLs as in production (docs/mqtt.md, "Credentials and ACLs"), and
    # per-site command keys (docs/commands.md).
    logins = mqttauth.passwords(sites, workdir / "mqtt-passwords.json")
    keys = commands.cmd_keys(sites, workdir / "cmd-keys.json")
    broker = Broker(mqtt_port, workdir=workdir / "broker", auth=logins)
    gateway: Gateway | None = None
    sims: dict[str, SimulatedSite] = {}
    feed_server = FeedServer()
    http: aiohttp.ClientSession | None = None
    try:
        feed_server.start()
        feed_server.set("/vma.atom", atom(), "application/atom+xml")  # nothing to say yet
        broker.start()
        gateway = Gateway(
            {
                "mqtt": {"host": broker.host, "port": broker.port,
                         # the dashboard's commands sign with the keys the sites were given
                         "cmd_keys": str(workdir / "cmd-keys.json"),
                         **broker.login(mqttauth.GATEWAY_USER)},
                "http": {"host": "127.0.0.1", "port": http_port},
                "store": {"path": str(workdir / "sot.sqlite3")},
                # `file` contacts write here: the demo never notifies anyone outside.
                "alerts": {"files_dir": str(workdir), "tick_s": 1.0},
                "feeds": feed_entries(feeds, feed_server.url("/vma.atom")),
                "feed_policy": FEED_POLICY,
            },
            config_dir=config_dir,
        )
        await gateway.start()
        demo_password = create_demo_user(gateway)
        for sid, site in sites.items():
            sim = SimulatedSite(
                site,
                workdir,
                mqtt_host=broker.host,
                mqtt_port=broker.port,
                time_scale=time_scale,
                heartbeat_s=HEARTBEAT_S,
                login={**broker.login(sid), "cmd_key": keys[sid]},
                exercise=True,  # the site's test-run schedule, as shipped
            )
            await asyncio.to_thread(sim.start)
            sims[sid] = sim

        url = f"http://127.0.0.1:{gateway.http_port}/"
        print(
            f"""
SOT-punkt demo: {len(sims)} sites, Mosquitto on 127.0.0.1:{broker.port}
  MQTT endast över TLS / over TLS only, port {broker.port}
  CA-certifikat / CA certificate: {broker.ca}
    (e.g. mosquitto_sub --cafile {broker.ca} -h 127.0.0.1 -p {broker.port} -u USER -P PW -t '#')
  Översikt / overview:  {url}
    logga in / log in as "{DEMO_USER}" with password {demo_password}
    (a coordinator made for this demo only; a new password each run)
  Krismeddelanden / crisis messages: {url}crisis
  Officiella larm / official alerts (VMA): {url}feeds
  Skylt / signage:      {url}signage/are-kall  (public, no login)
  JSON API:             {url}api/sites
  CAP feed of active alerts: {url}cap.atom    alerts as JSON: {url}api/alerts
  Officiella larm / official alerts (the demo's VMA feed): {feed_server.url("/vma.atom")}
    {len(feeds)} more feed(s) from --feed; the VMA for Åre kommun comes at {VMA_AT:.0f} s
  Notifications (the demo's contacts write here): {workdir / "notifications.jsonl"}
  Files (database, firmware logs, flash folders): {workdir}
Storm at {STORM_AT:.0f} s, grid back at {RETURN_AT:.0f} s; fuel burns {time_scale:g}x real time.
{f"Stops after {duration:g} s." if duration else "Ctrl-C stops everything."}
""",
            flush=True,
        )

        gw = gateway

        def command(site: str, name: str) -> dict[str, Any]:
            assert gw.store is not None and gw.mqtt is not None
            mqtt = gw.mqtt
            return commands.send(gw.store, lambda topic, body: mqtt.publish(
                topic, body.encode(), retain=False), site, name, keys[site], DEMO_USER)

        storm = Storm(sims, command)
        http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2))
        told = False
        vma_seen: tuple[list[str], list[str]] = ([], [])
        t0 = time.monotonic()
        next_status = 0.0
        while not stop.is_set():
            t = time.monotonic() - t0
            if duration is not None and t >= duration:
                break
            storm.step(t)
            if t >= VMA_AT and "vma" not in storm.done:
                storm.done.add("vma")
                feed_server.set("/vma.atom", atom(retimed(fixture(VMA_FIXTURE))),
                                "application/atom+xml")
                print(f"[{t:5.0f} s] VMA: the official feed issues a VMA for Åre kommun "
                      f"(polled every {FEED_INTERVAL_S} s)", flush=True)
            if "vma" in storm.done:
                seen = await official_alert_seen(http, url, sims)
                if seen != vma_seen:
                    vma_seen = seen
                    print(f"[{t:5.0f} s] VMA på panelen / on the panel: "
                          f"{', '.join(seen[0]) or '-'}; på skylten / on the signage: "
                          f"{', '.join(seen[1]) or '-'}", flush=True)
            if storm.sent is not None and not told and gateway.store is not None:
                recs = [r for r in gateway.store.commands(FAILING_SITE, 5)
                        if r["id"] == storm.sent["id"]]
                state, why = commands.status(recs[0], time.time()) if recs else ("sent", None)
                if state not in ("sent", "accepted"):
                    told = True
                    print(f"[{t:5.0f} s] fjärrstart / remote start {FAILING_SITE}: "
                          f"{commands.label(state)}" + (f" ({why})" if why else ""),
                          flush=True)
            for sid, sim in sims.items():
                fw = sim.firmware
                if fw is not None and not fw.alive():
                    rc = fw.proc.returncode if fw.proc else "?"
                    print(f"[{t:5.0f} s] firmware of {sid} exited ({rc}); log: {fw.log_path}",
                          flush=True)
                    sim.firmware = None
            if t >= next_status:
                next_status = t + STATUS_EVERY
                rows = gateway.store.sites_overview(time.time()) if gateway.store else []
                print(f"[{t:5.0f} s]", flush=True)
                for row in rows:
                    print(_fmt(row), flush=True)
                for a in (gateway.store.alerts() if gateway.store else []):
                    if a.status != "pending":
                        print(f"  LARM/ALERT #{a.id} {a.status:<12} {a.severity:<8} {a.sv}",
                              flush=True)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
    finally:
        print("stopping: firmware, plants, gateway, broker, feed", flush=True)
        if http is not None:
            await http.close()
        for sim in sims.values():
            with contextlib.suppress(Exception):
                await asyncio.to_thread(sim.stop)
        if gateway is not None:
            with contextlib.suppress(Exception):
                await gateway.stop()
        broker.stop()
        feed_server.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if own_dir:
            print(f"(files kept in {workdir})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(run(duration=float(sys.argv[1]) if len(sys.argv) > 1 else None)))
