# The firmware as a board image freezes it (MicroPython's manifest format, read by
# tools/makemanifest.py when a port is built with FROZEN_MANIFEST=<this file>).
#
# Frozen modules are compiled on the host and linked into the image: their bytecode, constants
# and interned names stay in flash and only the objects made when a module runs (functions,
# classes, module globals) land on the heap. docs/firmware-build.md has the build.
#
# Nothing is taken from micropython-lib (no require()): the build reads only the upstream tree.

# asyncio's Python half (the C half is MICROPY_PY_ASYNCIO, switched on for the build).
include("$(MPY_DIR)/extmod/asyncio")

# The controller: every module of sot/, the unix HAL included (it is never imported on a board;
# hal/__init__.py picks the board's own module).
package("sot")
