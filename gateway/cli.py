"""`sot` — the command line of the SOT-punkt gateway and tooling.

sot demo [--duration S] [--mqtt-port P] [--http-port P]   simulated municipality, end to end
sot gateway --config config/gateway.toml                  the gateway for production use
sot config check                                          validate config/devices and config/sites
sot config compile SITE [--out FILE]                      the controller's config.json for SITE
sot firmware build [--out DIR] [--march xtensawin|armv6m] compile the firmware to .mpy
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from gateway import config


def _cmd_config(args: argparse.Namespace) -> int:
    if args.action == "check":
        for line in config.check_all():
            print(line)
        return 0
    sites = config.load_sites()
    if args.site not in sites:
        print(
            f"sot: no site '{args.site}' in config/sites/ (have: {', '.join(sorted(sites))})",
            file=sys.stderr,
        )
        return 2
    text = json.dumps(
        config.compile_site(sites[args.site]), ensure_ascii=False, separators=(",", ":")
    )
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out} ({len(text.encode())} bytes)")
    else:
        print(text)
    return 0


def _cmd_firmware(args: argparse.Namespace) -> int:
    from gateway import firmware

    out = (
        firmware.build(Path(args.out), march=args.march)
        if args.out
        else firmware.build(march=args.march)
    )
    files = sorted(out.rglob("*.mpy"))
    print(f"built {len(files)} modules into {out} ({sum(f.stat().st_size for f in files)} bytes)")
    return 0


def _cmd_gateway(args: argparse.Namespace) -> int:
    from gateway import service

    return asyncio.run(service.serve_forever(Path(args.config)))


def _cmd_demo(args: argparse.Namespace) -> int:
    from gateway import demo

    return asyncio.run(
        demo.run(
            duration=args.duration,
            mqtt_port=args.mqtt_port,
            http_port=args.http_port,
            time_scale=args.time_scale,
            workdir=Path(args.workdir) if args.workdir else None,
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
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("gateway", help="run the gateway")
    p.add_argument("--config", default="config/gateway.toml")
    p.set_defaults(func=_cmd_gateway)

    p = sub.add_parser("config", help="validate or compile configuration")
    csub = p.add_subparsers(dest="action", required=True)
    csub.add_parser("check", help="validate every device profile and site")
    pc = csub.add_parser("compile", help="print the controller's config.json for a site")
    pc.add_argument("site")
    pc.add_argument("--out", default=None)
    p.set_defaults(func=_cmd_config)

    p = sub.add_parser("firmware", help="firmware tooling")
    fsub = p.add_subparsers(dest="action", required=True)
    pb = fsub.add_parser("build", help="compile the firmware to .mpy with mpy-cross")
    pb.add_argument("--out", default=None)
    pb.add_argument(
        "--march",
        default=None,
        choices=["xtensawin", "armv6m", "armv7emsp"],
        help="native code for a board (the .mpy then no longer loads on unix)",
    )
    p.set_defaults(func=_cmd_firmware)

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
