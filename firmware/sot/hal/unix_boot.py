# Start the firmware on the unix port the way a board starts it: from a ROMFS image.
#
#   micropython -X heapsize=<64 KiB + image size> unix_boot.py <sot.romfs> <flash folder>
#
# A board maps its ROMFS partition from flash and imports modules in place. The unix port has
# no flash to map, so the image is read into one bytes object on the heap; the runner adds
# exactly its size to the heap, and `heap_used()` subtracts it, so the firmware still has 64 KiB
# for everything that is RAM on a board.
import gc
import sys
import vfs

image_path = sys.argv.pop(1)
with open(image_path, "rb") as f:
    image = f.read()
vfs.mount(vfs.VfsRom(image), "/rom")
sys.path.insert(0, "/rom")
gc.collect()

import sot.hal.unix  # noqa: E402

sot.hal.unix.RESERVED = len(image)
import sot.main  # noqa: E402,F401 -- runs the controller
