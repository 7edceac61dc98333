"""Firmware memory through a compressed day (fault scenario P4, issue 4): peak live heap.

    python -m hil_tests.bench.bench_memory [--hours 24] [--time-scale 120] [--no-write]

Runs `hil_tests/rig/soak.py`: the whole firmware (ROMFS image, every task: bus owner, site
logic, panel with buttons, telemetry, supervisor) under the MicroPython unix port against the
plant simulator and a private Mosquitto, through `--hours` simulated hours of a storm. The
firmware logs its live heap after a collection every 5 s; the peak of those samples is the
figure, compared with the rig's budget (64 KiB on a 32-bit board, which the 64-bit unix port
needs twice of: every object is made of 8-byte words there). The board's own figure is measured
on the 32-bit qemu board by bench_board.py, not estimated from this one.

Writes the section "Firmware memory" of docs/benchmarks.md (other sections are kept).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from hil_tests.bench import report
from hil_tests.rig import soak
from hil_tests.rig.dut import BOARD_HEAP_KIB, FROZEN_CODE_KIB, TLS_HEAP_KIB, WORD_FACTOR

SECTION = "Firmware memory"
GOAL_KIB = 48


def kib(n: float) -> str:
    return f"{n / 1024:.1f}"


def section(res: soak.SoakResult, m: dict[str, str], time_scale: float) -> str:
    budget = res.heap_budget
    tls_budget = (f"{BOARD_HEAP_KIB} KiB x {WORD_FACTOR} + {FROZEN_CODE_KIB} KiB the frozen code "
                  f"keeps out of a board's heap + {TLS_HEAP_KIB} KiB for TLS")
    acts = ", ".join(f"{k} {v}" for k, v in sorted(res.actions.items()))
    return f"""## {SECTION}

Measured {m['date']} on {m['cpu']} ({m['cores']} cores), MicroPython {m['micropython']}
(unix port, 64-bit); firmware at `{m['git']}`. `python -m hil_tests.bench.bench_memory`
(`make bench`) rewrites this section.

{res.hours:g} simulated hours of a storm day at the Kall site in {res.real_s / 60:.1f} real
minutes (plant clock x{time_scale:g}; polling every 200 ms, a state every 5 s): {acts}.

| unix port (64-bit), firmware from the ROMFS image | |
|---|---|
| heap budget (ROMFS image not counted; {tls_budget}) | {kib(budget)} KiB |
| live after start-up | {kib(res.start_live)} KiB |
| **peak live** ({res.samples} samples, after a collection) | **{kib(res.peak_live)} KiB** |
| least free after a collection | {kib(res.min_free)} KiB |
| MemoryErrors | {res.memory_errors} |
| watchdog resets | {res.resets} |

The firmware published {res.states} states and {res.events} events and {res.acks} staff
acknowledgements reached the broker during the run. This run shows the firmware survives the
day in the rig's budget; it is no measure of a board's heap: about half of it is the code's RAM
side (function and class objects and the interned names of the modules imported from ROMFS),
which freezing keeps in flash, and every object takes twice the bytes of a 32-bit board. The
goal (peak ≤ {GOAL_KIB} KiB of a board's 64 KiB) is measured on the 32-bit build: "Firmware
memory on the 32-bit board" below.

TLS is on (the controller verifies the broker with MicroPython's `tls`, mbedTLS, docs/mqtt.md,
"TLS"). On this port its objects take about 5.7 KiB of the MicroPython heap after a collection
(the context with the parsed CA 3.0 KiB, one connection 2.6 KiB; measured with `gc.mem_free()`
around `asyncio.open_connection(..., ssl=ctx)`); mbedTLS's record buffers (16 KiB in, 4 KiB out
in MicroPython's mbedTLS configuration) come from the C heap here (the unix port's mbedTLS uses
calloc), as they come from ESP-IDF's own heap on an ESP32. The rig gives the unix heap
{TLS_HEAP_KIB} KiB more for TLS (`TLS_HEAP_KIB` in hil_tests/rig/dut.py); without it the
firmware peaked at 122.3 KiB of 128 KiB with 3.3 KiB least free and hit MemoryErrors in a
2-hour run. On a 32-bit board the objects should take roughly half those bytes (an estimate,
not measured) out of its 64 KiB (15.6 KiB least free in the board run below, which has no TLS).
On bare-metal builds (RP2040 among them) MicroPython's mbedTLS configuration allocates from the
MicroPython heap (`m_tracked_calloc`): there the 20 KiB of record buffers come on top and do not
fit a 64 KiB budget without smaller buffers (`MBEDTLS_SSL_IN_CONTENT_LEN`), which is open work.
The 32-bit qemu board has no TLS at all (no network, no `tls` module): its TLS is done by the
rig's modem stand-in, so no board figure with TLS exists yet.
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=24)
    ap.add_argument("--time-scale", type=float, default=120)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sot-soak-") as tmp:
        res = soak.run(Path(tmp), hours=args.hours, time_scale=args.time_scale)
    text = section(res, report.machine(), args.time_scale)
    print(text)
    if not args.no_write:
        report.write_section(SECTION, text)
        print(f"wrote {report.DOC}")
    return 0 if res.memory_errors == 0 and res.resets == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
