"""Firmware memory on the 32-bit build: the storm day on the qemu board (issue 13).

    python -m hil_tests.bench.bench_board [--hours 24] [--time-scale 360] [--no-write]

Runs `hil_tests/rig/soak.py` with target "qemu": the firmware frozen into upstream MicroPython's
ports/qemu (Cortex-M3, MPS2-AN385, a 64 KiB heap, single-precision floats, littlefs), against
the plant simulator on UART1 and a private Mosquitto on UART2 (docs/firmware-build.md). The
firmware logs its live heap, `gc.mem_alloc()` after a collection, every 5 s; nothing is
scaled: these are the board's own bytes.

Writes build/bench/board-memory.json and the section "Firmware memory on the 32-bit board" of
docs/benchmarks.md (other sections are kept).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from gateway import config
from gateway.tooling import firmware
from hil_tests.bench import report
from hil_tests.rig import soak

SECTION = "Firmware memory on the 32-bit board"
GOAL_KIB = 48
OUT = config.REPO_ROOT / "build" / "bench" / "board-memory.json"


def kib(n: float) -> str:
    return f"{n / 1024:.1f}"


def section(res: soak.SoakResult, m: dict[str, str], time_scale: float) -> str:
    goal = GOAL_KIB * 1024
    verdict = "met" if res.peak_live <= goal else "**not met**"
    acts = ", ".join(f"{k} {v}" for k, v in sorted(res.actions.items()))
    return f"""## {SECTION}

Measured {m['date']} on {m['cpu']} ({m['cores']} cores): upstream MicroPython
`{firmware.MICROPY_COMMIT[:10]}` `ports/qemu` for the MPS2-AN385 (Cortex-M3) in
qemu-system-arm, the firmware frozen in; firmware at `{m['git']}`.
`python -m hil_tests.bench.bench_board` (`make bench-board`, part of `make bench`) rewrites this
section and writes `build/bench/board-memory.json`.

{res.hours:g} simulated hours of a storm day at the Kall site in {res.real_s / 60:.1f} real
minutes (plant clock x{time_scale:g}; polling every 200 ms, a state every 5 s): {acts}.

| 32-bit board, firmware frozen | |
|---|---|
| heap (the collector's own tables take 1.5 KiB of it) | {kib(res.heap_budget)} KiB |
| live after start-up | {kib(res.start_live)} KiB |
| **peak live** ({res.samples} samples, after a collection) | **{kib(res.peak_live)} KiB** |
| least free after a collection | {kib(res.min_free)} KiB |
| MemoryErrors | {res.memory_errors} |
| faults | {res.faults} |

Goal: peak ≤ {GOAL_KIB} KiB of the 64 KiB heap: {verdict}. The firmware published
{res.states} states and {res.events} events and {res.acks} staff acknowledgements reached the
broker during the run. docs/architecture.md, "Memory", says what the heap is made of.
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=24)
    ap.add_argument("--time-scale", type=float, default=360)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sot-board-") as tmp:
        res = soak.run(Path(tmp), hours=args.hours, time_scale=args.time_scale,
                       target="qemu")
    figures = {"target": f"qemu mps2-an385 (Cortex-M3), micropython {firmware.MICROPY_COMMIT[:10]}",
               "heap_bytes": res.heap_budget, "after_start_bytes": res.start_live,
               "peak_bytes": res.peak_live, "min_free_bytes": res.min_free,
               "samples": res.samples, "memory_errors": res.memory_errors,
               "faults": res.faults, "hours": res.hours, "time_scale": args.time_scale,
               "goal_bytes": GOAL_KIB * 1024}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    print(f"wrote {OUT}")
    if not args.no_write:
        text = section(res, report.machine(), args.time_scale)
        print(text)
        report.write_section(SECTION, text)
        print(f"wrote {report.DOC}")
    return 0 if res.memory_errors == 0 and res.faults == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
