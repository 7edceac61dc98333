# Runs the firmware's Modbus RTU master (sot.modbus.master, sot.modbus.rtu, the unix HAL's Uart)
# once through every function code it speaks, against whatever slave is on the port, and reports
# each call. hil_tests/test_modbus_function_codes.py runs it against a pymodbus server.
#
#   MICROPYPATH=.frozen:<firmware .mpy build> micropython -X heapsize=128k fc_probe.py <port>
#
# The calls (PLAN) all go to unit UNIT at 9600 baud, timeout 1 s, one after the other. One JSON
# object a line:
#   call  {"name", "fc", "args", "ok": true, "hex", "bits", "ms"}
#         hex: the data bytes of a read reply (registers big-endian; bits packed LSB first), ""
#         for a write; bits: for 01/02, bit i of the reply unpacked with rtu.bit (count of them)
#   call  {"name", "fc", "args", "ok": false, "error", "code", "msg", "ms"}
#         error: the exception's class name; code: ModbusException.code (else null)
#   end   {"stats"}  the master's counters after the last call
import asyncio
import binascii
import json
import sys
import time

from sot.hal.unix import Uart
from sot.modbus import rtu
from sot.modbus.master import Master

UNIT = 17
BAUD = 9600

# (name, function code, master method, args after the unit id). Each request the slave must
# refuse (an address it does not have) comes right before a good one of the same function code;
# the writes come after the first reads, and the last two calls read back what was written.
PLAN = (
    ("read_coils", 1, "read_bits", (1, 0, 20)),
    ("read_discrete", 2, "read_bits", (2, 0, 20)),
    ("exc_read_coils", 1, "read_bits", (1, 40, 4)),
    ("read_coils_unaligned", 1, "read_bits", (1, 3, 13)),
    ("exc_read_holding", 3, "read_registers", (3, 500, 2)),
    ("read_holding", 3, "read_registers", (3, 100, 10)),
    ("read_input", 4, "read_registers", (4, 200, 6)),
    ("write_coil_on", 5, "write_coil", (1, True)),
    ("write_coil_off", 5, "write_coil", (0, False)),
    ("exc_write_register", 6, "write_register", (300, 1)),
    ("write_register", 6, "write_register", (109, 0xBEEF)),
    ("write_coils", 15, "write_coils", (7, [1, 0, 0, 0, 1, 1, 1, 1, 0, 1])),
    ("write_registers", 16, "write_registers", (101, [0xFFFF, 0x0000, 0x8000])),
    ("readback_coils", 1, "read_bits", (1, 0, 20)),
    ("readback_holding", 3, "read_registers", (3, 100, 10)),
)


def emit(fields):
    sys.stdout.write(json.dumps(fields))
    sys.stdout.write("\n")


async def run(master):
    for name, fc, method, args in PLAN:
        line = {"k": "call", "name": name, "fc": fc, "args": list(args)}
        t = time.ticks_ms()
        try:
            data = await getattr(master, method)(UNIT, *args)
        except Exception as e:  # every failure is reported, none stops the run
            line["ok"] = False
            line["error"] = e.__class__.__name__
            line["code"] = getattr(e, "code", None)
            line["msg"] = str(e)
        else:
            line["ok"] = True
            line["hex"] = "" if data is None else binascii.hexlify(bytes(data)).decode()
            if fc <= 2:
                line["bits"] = [rtu.bit(data, i) for i in range(args[2])]
        line["ms"] = time.ticks_diff(time.ticks_ms(), t)
        emit(line)
    emit({"k": "end", "stats": master.stats})


def main(argv):
    if len(argv) != 2:
        print("usage: fc_probe.py <port>")
        sys.exit(2)
    uart = Uart(argv[1], BAUD)
    try:
        asyncio.run(run(Master(uart, BAUD, timeout_ms=1000)))
    finally:
        uart.close()


main(sys.argv)
