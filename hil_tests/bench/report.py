"""What every benchmark report shares: the machine it ran on, and rewriting its own section of
docs/benchmarks.md while keeping the others."""

from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
from pathlib import Path

import pymodbus

from gateway import config
from gateway.tooling import firmware

DOC = config.REPO_ROOT / "docs" / "benchmarks.md"


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = m.group(1).strip() if m else cpu
    except OSError:
        pass
    mp = subprocess.run([firmware.micropython(), "-c", _MP_VERSION], capture_output=True,
                        text=True, timeout=10).stdout.strip()
    git = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                         text=True, cwd=config.REPO_ROOT).stdout.strip() or "unknown"
    return {"cpu": cpu, "cores": str(os.cpu_count()), "python": platform.python_version(),
            "micropython": mp, "pymodbus": pymodbus.__version__, "git": git,
            "date": datetime.date.today().isoformat(), "load": f"{os.getloadavg()[0]:.2f}"}


# "1.29.0-preview, build 9458e3a23f on 2026-07-05"
_MP_VERSION = """import sys
v = sys.implementation.version
pre = "-" + v[3] if len(v) > 3 and v[3] else ""
print("%d.%d.%d%s, build %s" % (v[0], v[1], v[2], pre, sys.version.split("MicroPython ")[-1]))"""


def write_section(section: str, text: str, path: Path = DOC) -> None:
    """Replace the `## <section>` of docs/benchmarks.md with `text` (or append it)."""
    old = path.read_text() if path.exists() else "# Benchmarks\n\nResults of `make bench`.\n"
    pattern = re.compile(rf"^## {re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
    new = pattern.sub(lambda _: text + "\n", old) if pattern.search(old) else \
        old.rstrip("\n") + "\n\n" + text
    path.write_text(new.rstrip("\n") + "\n")
