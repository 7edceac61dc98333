# The qemu board's image: the firmware plus its unit tests and their runner, so that the tests
# run on the 32-bit build the way they run on the unix port (docs/firmware-build.md). Frozen,
# a test module costs the image flash, not the heap the firmware under test needs.
include("../manifest.py")

freeze("unit")
