# Minimal unit-test runner for the MicroPython interpreter (no unittest on a 64 KiB heap).
#
#   micropython -X heapsize=64k firmware/tests/unit/runner.py test_rtu [test_name ...]
#
# Runs every top-level function named test_* in the module (coroutines through asyncio.run), then
# the module's teardown() if it has one (e.g. to close files, which a board's littlefs must never
# leave to the garbage collector), prints one line per test -- "PASS <name>",
# "FAIL <name>: <error>" -- then "DONE <passed> <failed>" and exits 1 if any failed. The pytest
# plugin in firmware/tests/conftest.py reads these lines.
import sys
import gc

try:
    import asyncio
except ImportError:
    asyncio = None


def _print_exc(e):
    try:
        sys.print_exception(e)
    except AttributeError:
        import traceback

        traceback.print_exception(e)


def main(argv):
    modname = argv[1]
    only = argv[2:]
    mod = __import__(modname)
    names = sorted(n for n in dir(mod) if n.startswith("test_"))
    if only:
        names = [n for n in names if n in only]
    passed = failed = 0
    teardown = getattr(mod, "teardown", None)
    for name in names:
        fn = getattr(mod, name)
        gc.collect()
        try:
            res = fn()
            if res is not None and asyncio is not None:
                asyncio.run(res)
                asyncio.new_event_loop()
            print("PASS", name)
            passed += 1
        except Exception as e:
            failed += 1
            _print_exc(e)
            print("FAIL", name + ":", repr(e))
        if teardown is not None:
            teardown()
    print("DONE", passed, failed)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main(sys.argv)
