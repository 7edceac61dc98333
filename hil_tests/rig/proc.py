"""Stopping a process the rig started, by its pid: one way for the broker, the gateway process
and the firmware alike."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_process(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM,
                 grace: float = 5.0) -> int | None:
    """Send `sig`, wait up to `grace` s, then SIGKILL. A process frozen with SIGSTOP (the fault
    tests freeze brokers and controllers) is woken first, or it could not act on `sig`.
    Returns the exit code, or None when there was no process."""
    if proc is None:
        return None
    if proc.poll() is None:
        if sig != signal.SIGKILL:
            os.kill(proc.pid, signal.SIGCONT)
        os.kill(proc.pid, sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(grace)
    return proc.returncode
