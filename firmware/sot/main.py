# Controller start-up: read the config from flash and count the boot, then hand over to the app.
# On unix: micropython -X heapsize=64k -m sot.main <flash folder>.
#
# The config is parsed before the rest of the firmware is imported: on a 64 KiB heap the point
# tables then sit low in a fresh heap instead of in the gaps that importing leaves behind.
import gc
import sys

from sot import config as config_mod
from sot import hal


def next_boot(flash):
    raw = flash.read("boot")
    try:
        boot = int(raw) + 1 if raw else 1
    except ValueError:
        boot = 1  # a damaged counter restarts at 1 rather than stopping the controller
    flash.write("boot", str(boot).encode())
    return boot


def main(argv):
    hal.init(argv)
    flash = hal.Flash()
    try:
        cfg = config_mod.load(flash)
    except config_mod.ConfigError as e:
        print("E config:", e)
        sys.exit(3)
    hal.configure(cfg)  # a board's pins and network come from the config (docs/hardware.md)
    boot = next_boot(flash)
    reset = hal.reset_cause()
    from sot.supervisor import boot_health

    health = boot_health(flash, reset)
    print("I", cfg["site"], "boot", boot, "reset", reset, "config", cfg["hash"],
          "resets", health["resets"])
    gc.collect()
    from sot import app

    app.run(cfg, boot, reset, health)


main(sys.argv)
