"""The repository stands alone: nothing in it points to the team's documents outside it, and
every fault label the code cites (N5, P3, A6, ...) is defined in docs/fault-scenarios.md."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FAULTS = REPO / "docs" / "fault-scenarios.md"
THIS = Path(__file__).resolve()

# Names of documents that live outside the repository; built from parts so this file does not
# match itself.
OUTSIDE = ["../" + "shared", "DESIGN" + ".md", "RELIABILITY" + ".md", "TOOLCHAIN" + ".md",
           "STYLE" + ".md"]
# The same documents cited without their file name ("RELIABILITY N5", "DESIGN §7").
OUTSIDE_RE = re.compile(r"\b" + "RELIABILITY" + r"\b|\b" + "DESIGN" + r" §")
LABEL = re.compile(r"\b[NPMCA][1-9]\b")


def repo_files() -> list[Path]:
    """Every file git knows of or would add (tracked and untracked, not ignored), so build
    output and virtual environments are left out."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=REPO, capture_output=True, check=True).stdout.decode()
    return [REPO / p for p in out.split("\0") if p and (REPO / p).is_file()]


def text(p: Path) -> str | None:
    try:
        return p.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None  # binary


def test_no_file_points_to_documents_outside_the_repository() -> None:
    files = repo_files()
    assert len(files) > 100
    found = []
    for p in files:
        if p == THIS:
            continue
        t = text(p)
        if t is None:
            continue
        for n, line in enumerate(t.splitlines(), 1):
            if any(name in line for name in OUTSIDE) or OUTSIDE_RE.search(line):
                found.append(f"{p.relative_to(REPO)}:{n}: {line.strip()[:100]}")
    assert not found, "\n".join(found)


def defined_labels() -> set[str]:
    return set(re.findall(r"^\| ([NPMCA][1-9]) \|", FAULTS.read_text(encoding="utf-8"), re.M))


def test_every_fault_label_the_code_cites_is_defined() -> None:
    defined = defined_labels()
    assert {"N1", "N7", "P4", "M3", "C1", "C6", "A6", "A8"} <= defined
    missing = []
    for p in repo_files():
        if p.suffix != ".py" or p == THIS:
            continue
        t = text(p) or ""
        for n, line in enumerate(t.splitlines(), 1):
            for label in LABEL.findall(line):
                if label not in defined:
                    missing.append(f"{p.relative_to(REPO)}:{n}: {label}")
    assert not missing, "labels not in docs/fault-scenarios.md:\n" + "\n".join(missing)


def test_every_defined_label_says_what_passes() -> None:
    rows = re.findall(r"^\| ([NPMCA][1-9]) \| (.+?) \| (.+?) \|$",
                      FAULTS.read_text(encoding="utf-8"), re.M)
    assert len(rows) == len(defined_labels()) >= 30
    for label, fault, passes in rows:
        assert len(fault) > 20 and len(passes) > 10, label
