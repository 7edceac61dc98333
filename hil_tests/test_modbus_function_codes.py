"""The firmware's Modbus RTU master against a Modbus stack written by others, per function code.

`hil_tests/mp/fc_probe.py` runs the real firmware (sot.modbus.master and rtu, the unix HAL's
Uart, compiled to .mpy) under the MicroPython unix port and makes one call of each function
code the master speaks -- 01, 02, 03, 04, 05, 06, 15, 16 -- plus three requests for addresses
the slave does not have, on one side of a `PtyLink`. On the other side is a pymodbus 3.16
`ModbusSerialServer` (the `SimDevice`/`SimData` API) with one device whose four tables hold
known, asymmetric patterns, so a swapped byte or a bit order read MSB-first shows.

Checked: every read returns exactly the server's values (bits LSB first, also from an unaligned
start); every write is echoed correctly (else the master raises) and lands in the server's own
datastore, read on the CPython side through the server's `SimCore`, not over the wire; the
refused requests raise ModbusException with code 2 (illegal data address), change nothing, and
the calls after them work; nothing times out, is retried or arrives garbled.

The run happens once per module (a few hundred ms of bus traffic); the tests read its record.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from gateway.tooling import firmware
from hil_tests.rig.links import PtyLink
from hil_tests.rig.loopthread import LoopThread

pytestmark = [pytest.mark.hil, pytest.mark.needs("unix", "bus")]

PROBE = Path(__file__).resolve().parent / "mp" / "fc_probe.py"
# A build of its own: other tests may rebuild build/firmware in place at the same time.
BUILD_OUT = firmware.BUILD_DIR.parent / "fc_probe"
UNIT = 17
BAUD = 9600
PROBE_TIMEOUT_S = 15.0

# The server's tables. Bit patterns are not palindromes per byte, so MSB-first packing fails.
COILS = [1, 0, 1, 1, 0, 0, 1, 0,  1, 1, 1, 0, 0, 0, 0, 1,  0, 1, 0, 1]  # fc 1/5/15, from 0
DISCRETE = [0, 1, 1, 0, 1, 0, 0, 0,  1, 1, 0, 0, 1, 0, 1, 1,  1, 0, 0, 1]  # fc 2, from 0
HOLDING_AT = 100  # fc 3/6/16
HOLDING = [0x0000, 0x1234, 0xFFFF, 0x8001, 0x00FF, 0xFF00, 0x7FFF, 0x0102, 0xA55A, 0x5AA5]
INPUT_AT = 200  # fc 4
INPUT = [0xCAFE, 0x0001, 0xDEAD, 0x8000, 0x4321, 0x0FF0]

# What fc_probe.py writes (pinned here: the expectations below are built from these).
WRITE_COIL_ON = 1
WRITE_COIL_OFF = 0
WRITE_REGISTER = (109, 0xBEEF)
WRITE_COILS = (7, [1, 0, 0, 0, 1, 1, 1, 1, 0, 1])
WRITE_REGISTERS = (101, [0xFFFF, 0x0000, 0x8000])
# Requests for addresses the server has not got: (name, fc).
REFUSED = [("exc_read_holding", 3), ("exc_read_coils", 1), ("exc_write_register", 6)]


def pack_bits(bits: list[int]) -> bytes:
    """Modbus bit packing (Application Protocol §6.1): bit i is bit i % 8 of byte i // 8."""
    out = bytearray((len(bits) + 7) // 8)
    for i, b in enumerate(bits):
        if b:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)


def regs_hex(regs: list[int]) -> str:
    return b"".join(r.to_bytes(2, "big") for r in regs).hex()


def coils_after() -> list[int]:
    coils = list(COILS)
    coils[WRITE_COIL_ON] = 1
    coils[WRITE_COIL_OFF] = 0
    start, bits = WRITE_COILS
    coils[start:start + len(bits)] = bits
    return coils


def holding_after() -> list[int]:
    regs = list(HOLDING)
    address, value = WRITE_REGISTER
    regs[address - HOLDING_AT] = value
    start, values = WRITE_REGISTERS
    regs[start - HOLDING_AT:start - HOLDING_AT + len(values)] = values
    return regs


# --- the server ------------------------------------------------------------------------------


class ServerThread(LoopThread):
    """A pymodbus RTU server with one device, in a thread with its own event loop."""

    def __init__(self, port: str) -> None:
        super().__init__("fc-server")
        self.port = port
        self.requests: list[tuple[int, int]] = []  # (unit, function code) as pymodbus decoded
        self.server: ModbusSerialServer | None = None

    def device(self) -> SimDevice:
        # Four separate tables. pymodbus wants DataType.BITS in the bit tables, where addresses
        # are bit numbers (bit-addressing is on by default in this mode) and each table is
        # padded to whole 16-bit registers: coils 20..31 exist (and read 0), 32 on do not.
        return SimDevice(id=UNIT, simdata=(
            [SimData(address=0, values=[bool(b) for b in COILS], datatype=DataType.BITS)],
            [SimData(address=0, values=[bool(b) for b in DISCRETE], datatype=DataType.BITS)],
            [SimData(address=HOLDING_AT, values=list(HOLDING), datatype=DataType.REGISTERS)],
            [SimData(address=INPUT_AT, values=list(INPUT), datatype=DataType.REGISTERS)],
        ))

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self.requests.append((pdu.dev_id, pdu.function_code))
        return pdu

    async def _start(self) -> None:
        # ModbusSerialServer binds the running loop in its constructor: build it in the thread.
        self.server = ModbusSerialServer(self.device(), port=self.port, baudrate=BAUD,
                                         trace_pdu=self._trace_pdu)
        await self.server.serve_forever(background=True)

    def start(self) -> ServerThread:
        self.start_loop(5)
        self.call(self._start)
        return self

    def values(self, fc: int, address: int, count: int) -> list[int]:
        """The server's datastore, read through its own SimCore (no bus traffic)."""
        assert self.server is not None
        got = self.call(self.server.context.async_getValues, UNIT, fc, address, count)
        assert isinstance(got, list), f"server datastore: fc {fc} {address}+{count}: {got!r}"
        return [int(v) for v in got]

    def stop(self) -> None:
        try:
            if self.server is not None and self.running:
                self.call(self.server.shutdown)
        finally:
            self.stop_loop(5)


# --- the run ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    calls: dict[str, dict[str, Any]]
    order: list[str]
    end: dict[str, Any]
    stderr: str
    requests: list[tuple[int, int]]
    before: dict[str, list[int]]
    after: dict[str, list[int]]


def snapshot(server: ServerThread) -> dict[str, list[int]]:
    return {"coils": server.values(1, 0, 32), "discrete": server.values(2, 0, 32),
            "holding": server.values(3, HOLDING_AT, len(HOLDING)),
            "input": server.values(4, INPUT_AT, len(INPUT))}


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    mpy_dir = firmware.build(BUILD_OUT)
    link = PtyLink(name="fc")
    server = ServerThread(link.plant_path)
    proc: subprocess.Popen[bytes] | None = None
    try:
        server.start()
        before = snapshot(server)
        proc = subprocess.Popen(
            [firmware.micropython(), "-X", "heapsize=128k", str(PROBE), link.device_path],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            env=dict(os.environ, MICROPYPATH=f".frozen:{mpy_dir}"), start_new_session=True)
        try:
            out, err = proc.communicate(timeout=PROBE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate(timeout=5)
            pytest.fail(f"fc_probe did not finish in {PROBE_TIMEOUT_S} s; output:\n"
                        f"{out.decode(errors='replace')}\n{err.decode(errors='replace')}")
        stderr = err.decode(errors="replace")
        assert proc.returncode == 0, f"fc_probe exited with {proc.returncode}:\n{stderr}"
        lines = [json.loads(t) for t in out.decode().splitlines() if t.strip()]
        calls = [line for line in lines if line.get("k") == "call"]
        ends = [line for line in lines if line.get("k") == "end"]
        assert len(ends) == 1, f"no end line from fc_probe:\n{out.decode()}\n{stderr}"
        yield Run(calls={c["name"]: c for c in calls}, order=[c["name"] for c in calls],
                  end=ends[0], stderr=stderr, requests=list(server.requests), before=before,
                  after=snapshot(server))
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)
        server.stop()
        link.close()


def ok(run: Run, name: str) -> dict[str, Any]:
    call = run.calls[name]
    assert call["ok"], f"{name}: {call}"
    return call


# --- tests -----------------------------------------------------------------------------------


def test_server_starts_from_the_known_tables(run: Run):
    assert run.before["coils"] == COILS + [0] * 12
    assert run.before["discrete"] == DISCRETE + [0] * 12
    assert run.before["holding"] == HOLDING
    assert run.before["input"] == INPUT


def test_every_call_answered_without_timeout_or_retry(run: Run):
    assert len(run.order) == 15, run.order
    failed = {n: c for n, c in run.calls.items() if not c["ok"]}
    assert set(failed) == {name for name, _ in REFUSED}, failed
    stats = run.end["stats"]
    assert stats["timeouts"] == 0 and stats["crc"] == 0 and stats["frame"] == 0, stats
    assert stats["retries"] == 0, stats
    assert stats["requests"] == len(run.order), stats
    assert stats["ok"] == len(run.order) - len(REFUSED), stats
    # Each call is a single exchange on a quiet line: far below the 1 s timeout.
    assert max(c["ms"] for c in run.calls.values()) < 500, run.calls


def test_server_saw_every_function_code_once_per_call(run: Run):
    assert run.requests == [(UNIT, c["fc"]) for c in (run.calls[n] for n in run.order)]
    assert {fc for _, fc in run.requests} == {1, 2, 3, 4, 5, 6, 15, 16}


def test_fc01_read_coils(run: Run):
    call = ok(run, "read_coils")
    assert call["args"] == [1, 0, 20]
    assert call["bits"] == COILS
    assert call["hex"] == pack_bits(COILS).hex()


def test_fc01_read_coils_from_an_unaligned_start(run: Run):
    call = ok(run, "read_coils_unaligned")
    assert call["args"] == [1, 3, 13]
    assert call["bits"] == COILS[3:16]
    assert call["hex"] == pack_bits(COILS[3:16]).hex()


def test_fc02_read_discrete_inputs(run: Run):
    call = ok(run, "read_discrete")
    assert call["args"] == [2, 0, 20]
    assert call["bits"] == DISCRETE
    assert call["hex"] == pack_bits(DISCRETE).hex()


def test_fc03_read_holding_registers(run: Run):
    call = ok(run, "read_holding")
    assert call["args"] == [3, HOLDING_AT, len(HOLDING)]
    assert call["hex"] == regs_hex(HOLDING)


def test_fc04_read_input_registers(run: Run):
    call = ok(run, "read_input")
    assert call["args"] == [4, INPUT_AT, len(INPUT)]
    assert call["hex"] == regs_hex(INPUT)


def test_fc05_write_single_coil(run: Run):
    on, off = ok(run, "write_coil_on"), ok(run, "write_coil_off")
    assert on["args"] == [WRITE_COIL_ON, True] and off["args"] == [WRITE_COIL_OFF, False]
    assert on["hex"] == off["hex"] == ""
    # Both really change the coil (0 -> 1 and 1 -> 0), and the server's datastore has it.
    assert COILS[WRITE_COIL_ON] == 0 and COILS[WRITE_COIL_OFF] == 1
    assert run.after["coils"][WRITE_COIL_ON] == 1
    assert run.after["coils"][WRITE_COIL_OFF] == 0


def test_fc06_write_single_register(run: Run):
    call = ok(run, "write_register")
    address, value = WRITE_REGISTER
    assert call["args"] == [address, value]
    assert HOLDING[address - HOLDING_AT] != value
    assert run.after["holding"][address - HOLDING_AT] == value


def test_fc15_write_multiple_coils(run: Run):
    call = ok(run, "write_coils")
    start, bits = WRITE_COILS
    assert call["args"] == [start, bits]
    # Every written coil flips, across a byte and a 16-bit boundary of the server's table.
    assert all(COILS[start + i] != b for i, b in enumerate(bits))
    assert run.after["coils"][start:start + len(bits)] == bits


def test_fc16_write_multiple_registers(run: Run):
    call = ok(run, "write_registers")
    start, values = WRITE_REGISTERS
    assert call["args"] == [start, values]
    assert all(HOLDING[start - HOLDING_AT + i] != v for i, v in enumerate(values))
    assert run.after["holding"][start - HOLDING_AT:start - HOLDING_AT + len(values)] == values


def test_writes_leave_exactly_the_expected_server_state(run: Run):
    # Nothing but the written coils/registers changed (the padding coils 20..31 stay 0).
    assert run.after["coils"] == coils_after() + [0] * 12
    assert run.after["holding"] == holding_after()
    assert run.after["discrete"] == run.before["discrete"]
    assert run.after["input"] == run.before["input"]


def test_readback_through_the_master_matches_the_server(run: Run):
    coils = ok(run, "readback_coils")
    assert coils["bits"] == coils_after() == run.after["coils"][:20]
    assert coils["hex"] == pack_bits(coils_after()).hex()
    holding = ok(run, "readback_holding")
    assert holding["hex"] == regs_hex(holding_after()) == regs_hex(run.after["holding"])


@pytest.mark.parametrize(("name", "fc"), REFUSED)
def test_illegal_address_is_exception_2(run: Run, name: str, fc: int):
    call = run.calls[name]
    assert call["fc"] == fc
    assert not call["ok"]
    assert call["error"] == "ModbusException", call
    assert call["code"] == 2, call
    # Handled cleanly: the next call, the same function code at a good address, is answered.
    following = run.calls[run.order[run.order.index(name) + 1]]
    assert following["fc"] == fc and following["ok"], following


def test_exceptions_counted_per_code(run: Run):
    stats = run.end["stats"]
    assert stats["exceptions"] == len(REFUSED), stats
    assert stats["exc"] == {"2": len(REFUSED)}, stats


def test_probe_wrote_nothing_to_stderr(run: Run):
    assert run.stderr == ""
