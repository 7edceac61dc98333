# Signed commands from the gateway: `sot/v1/<site>/cmd/<name>` (docs/mqtt.md, "Commands").
#
# A command is acted on only if its HMAC-SHA256 (per-site command key, not the MQTT password)
# verifies over the canonical form, it is within its validity window on this controller's
# clock (SKEW_S either side), and its counter is above the last accepted one. The counter is
# written to flash (new file, then rename) before the command acts, so neither a replay nor a
# power cut between accepting and acting lets the same counter in twice.
#
# Every command gets one final result, journalled as a `cmd_result` event so it survives a
# dead link and a reboot like any event. Refusals of unverified input are journalled at most
# REFUSALS_PER_MIN a minute; the rest are counted (`refused_quiet`) and logged once, so a flood
# costs only itself.
#
# MicroPython has hashlib.sha256 but no hmac module: HMAC (RFC 2104) is built here, the keyed
# pads computed once.
import binascii
import hashlib
import json

from sot.bus import NotVerified
from sot.modbus.rtu import ModbusError, ModbusException

MAX_PAYLOAD = 512  # a signed command is ~250 bytes
MAX_WINDOW_S = 300  # expires - issued
SKEW_S = 30  # clock difference tolerated between the gateway and this controller
EPOCH_MIN = 1577836800  # 2020-01-01: a clock before that was never set
REFUSALS_PER_MIN = 4
COUNTER_FILE = "cmdctr"
NAMES = ("rebirth", "gen_start", "gen_stop", "gen_test")
MAX_TEST_MIN = 120
SCHEDULED = ""  # the command id of a scheduled test run (a real one is never empty)
WRITES_MAX = 2  # queued on a bus owner at once
START_TIMEOUT_S = 120  # a remote start that has not reached running by then failed


def _epoch():
    from sot import hal

    return hal.epoch()


def _pads(key):
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    k = bytearray(64)
    k[:len(key)] = key
    i = bytes(b ^ 0x36 for b in k)
    o = bytes(b ^ 0x5C for b in k)
    return i, o


def hmac_sha256(key, msg, pads=None):
    """HMAC-SHA256 (RFC 2104) of bytes `msg`; `pads` from _pads(key) saves recomputing them."""
    i, o = pads or _pads(key)
    h = hashlib.sha256(i)
    h.update(msg)
    inner = h.digest()
    h = hashlib.sha256(o)
    h.update(inner)
    return h.digest()


def equal(a, b):
    """Constant-time comparison of two byte strings of the same length."""
    if len(a) != len(b):
        return False
    r = 0
    for i in range(len(a)):
        r |= a[i] ^ b[i]
    return r == 0


def _ident_ok(s, n):
    if not isinstance(s, str) or not 0 < len(s) <= n:
        return False
    for c in s:
        if not ("a" <= c <= "z" or "0" <= c <= "9" or c == "-" or c == "_"):
            return False
    return True


def canonical_args(args):
    """`key=value` sorted by key, joined by `;`. Keys [a-z0-9_-] up to 16; values integers
    0 ... 2^31-1 (decimal) or booleans (`true`/`false`). None when args break that rule."""
    if not isinstance(args, dict) or len(args) > 8:
        return None
    parts = []
    for k in sorted(args):
        v = args[k]
        if not _ident_ok(k, 16):
            return None
        if v is True or v is False:
            parts.append(k + ("=true" if v else "=false"))
        elif isinstance(v, int) and 0 <= v <= 0x7FFFFFFF:
            parts.append(k + "=" + str(v))
        else:
            return None
    return ";".join(parts)


def canonical(site, name, cid, issued, expires, counter, cargs):
    return ("v1\n%s\n%s\n%s\n%d\n%d\n%d\n%s" % (site, name, cid, issued, expires, counter,
                                               cargs)).encode()


def _latched(dev):
    """`alarm:<name>` of the genset's first shutdown or trip alarm: why it cannot start."""
    for p in dev.points:
        if p[0].startswith("alarm_") and dev.get(p[0]) in ("shutdown", "trip"):
            return "alarm:" + p[0][6:]
    return None


def _int(v, lo, hi):
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


class Commands:
    """Verifies and runs commands. `result(ts, data)` journals a cmd_result event (the session's
    `event`); `rebirth()` asks the session for birth and state again; `site` is the site logic
    (generator state, mode, readiness)."""

    def __init__(self, cfg, flash, site=None, log=print, clock=None):
        self.site_id = cfg["site"]
        key = (cfg.get("mqtt") or {}).get("cmd_key")
        self.pads = _pads(binascii.unhexlify(key)) if key else None
        self.flash = flash
        self.site = site
        self.log = log
        self.result_cb = None
        self.rebirth_cb = None
        self.counter = self._load_counter()
        self.refused = 0  # every refusal since boot
        self.refused_quiet = 0  # refusals not journalled (over the rate)
        self._win = -1  # minute of the refusal window
        self._win_n = 0
        self._told = False
        self.running = None  # [id, name, t0, minutes, ran] of the remote run being watched
        self.clock = clock or _epoch
        self.owner = None  # the BusOwner of the genset's bus (set by the app): the only writer
        # the genset's remote-control registers (its profile's [control]), or None
        self.control = None
        self.exercise = None  # sot.exercise.Exercise: told when a test run begins and ends
        # a test run on load only where the site's config says the transfer switch allows it
        self.load_ok = bool((cfg.get("exercise") or {}).get("on_load"))
        g = site.genset if site is not None else None
        for d in cfg.get("devices", ()):
            if g is not None and d["name"] == g.name:
                self.control = d.get("control")

    def _load_counter(self):
        raw = self.flash.read(COUNTER_FILE)
        try:
            return int(raw) if raw else 0
        except ValueError:
            return 0  # unreadable: it was never written whole (write-new-then-rename)

    def _result(self, now, data):
        if data["id"] == SCHEDULED:
            return  # a scheduled test run: its record is the exercise_done event, no command's
        if self.result_cb is not None:
            self.result_cb(now, "cmd_result", data)

    def _refuse(self, now, name, cid, why, verified):
        self.refused += 1
        if not verified:
            minute = now // 60
            if minute != self._win:
                self._win, self._win_n, self._told = minute, 0, False
            if self._win_n >= REFUSALS_PER_MIN:
                self.refused_quiet += 1
                if not self._told:
                    self._told = True
                    self.log("W cmd: refusals over", REFUSALS_PER_MIN, "a minute; counting only")
                return
            self._win_n += 1
        self.log("W cmd: refused", name, why)
        self._result(now, {"id": cid, "name": name, "result": "refused", "why": why})

    def receive(self, name, payload, now):
        """A message on `cmd/<name>`; `payload` a view valid during the call. Returns the final
        result string (for tests and logs)."""
        if not _ident_ok(name, 16):
            name = None
        if len(payload) > MAX_PAYLOAD:
            self._refuse(now, name, None, "too_large", False)
            return "refused"
        try:
            c = json.loads(payload)
        except ValueError:
            c = None
        if not isinstance(c, dict):
            self._refuse(now, name, None, "malformed", False)
            return "refused"
        cid = c.get("id")
        if not _ident_ok(cid, 32):
            cid = None
        issued = c.get("issued") or 0
        expires = c.get("expires") or 0
        counter = c.get("counter") or 0
        sig = c.get("sig")
        cargs = canonical_args(c.get("args", {}))
        if (cid is None or name is None or cargs is None or c.get("v") != 1
                or not _int(issued, 0, 0xFFFFFFFF) or not _int(expires, 0, 0xFFFFFFFF)
                or not _int(counter, 1, 0x1FFFFFFFFFFFFF)
                or not isinstance(sig, str) or len(sig) != 64):
            self._refuse(now, name, cid, "malformed", False)
            return "refused"
        if self.pads is None:
            self._refuse(now, name, cid, "no_key", False)
            return "refused"
        try:
            got = binascii.unhexlify(sig)
        except ValueError:
            got = b""
        want = hmac_sha256(None, canonical(self.site_id, name, cid, issued, expires, counter,
                                           cargs), self.pads)
        if not equal(got, want):
            self._refuse(now, name, cid, "bad_sig", False)
            return "refused"
        # Authentic from here on. A counter not above the last accepted one is a replay (a
        # captured copy, whatever its time): refused at the refusal rate, nothing written.
        if counter <= self.counter:
            self._refuse(now, name, cid, "replay", False)
            return "refused"
        if now < EPOCH_MIN:
            why = "clock"
        elif expires < issued or expires - issued > MAX_WINDOW_S:
            why = "window"
        elif now > expires + SKEW_S:
            why = "expired"
        elif now < issued - SKEW_S:
            why = "not_yet"
        else:
            why = None
        # Consume the counter before acting, on flash, so nothing can bring it in again.
        self.counter = counter
        self.flash.write(COUNTER_FILE, str(counter))
        if why is not None:
            self._refuse(now, name, cid, why, True)
            return "refused"
        if name not in NAMES:
            self._refuse(now, name, cid, "unknown", True)
            return "refused"
        return self._run(now, name, cid, c.get("args") or {})

    # --- the commands ------------------------------------------------------------------------

    def _gen_why(self, name, args):
        """Why the generator cannot take `name` now, or None. Checked on the controller."""
        s = self.site
        dev = s.genset if s is not None else None
        if dev is None:
            return "no_genset"
        if not dev.online or not dev.verified:
            return "genset_" + dev.status()
        mode = dev.get("control_mode")
        if name == "gen_stop":
            return None if mode == "auto" else "mode:%s" % mode
        if mode != "auto":
            return "mode:%s" % mode
        if dev.get("can_remote_start") == 0:
            return "capability"
        if not s.ready:
            return _latched(dev) or "not_ready"
        if name == "gen_test":
            m = args.get("minutes")
            if not _int(m, 1, MAX_TEST_MIN):
                return "minutes"
            if args.get("load") and not (s.gen_cfg.get("test_on_load") or self.load_ok):
                return "load_not_allowed"
        return None

    def _run(self, now, name, cid, args):
        if name == "rebirth":
            if self.rebirth_cb is not None:
                self.rebirth_cb()
            self._result(now, {"id": cid, "name": name, "result": "done"})
            return "done"
        why = self._gen_why(name, args)
        if why is None and self.running is not None and name != "gen_stop":
            why = "busy"  # one remote run at a time
        dev = self.site.genset if self.site is not None else None
        ctl = self.control
        key = ctl.get("stop" if name == "gen_stop" else "start") if ctl else None
        if why is None and (key is None or self.owner is None):
            why = "no_control"  # the profile describes no remote-control registers
        if why is not None:
            self._refuse(now, name, cid, why, True)
            return "refused"
        if name == "gen_stop" and self.running is not None:
            self._end(now, "failed", "stopped_remotely")  # the run it ends gets its result
        # gen_start and gen_test are watched until they end (tick); gen_stop is done when written
        run = None
        if name != "gen_stop":
            minutes = args.get("minutes") if name == "gen_test" else None
            run = [cid, name, now, minutes, False]
            self.running = run
            if name == "gen_test" and self.exercise is not None:
                self.exercise.begin(now, "command", cid, minutes, bool(args.get("load")))
        self._write(dev, ctl, key, lambda err: self._written(cid, name, run, err))
        return "accepted"

    def test_run(self, now, minutes, load):
        """A scheduled test run (sot/exercise.py): the gen_test path without a command, so the
        same preconditions and the same watch. None when started, else why not."""
        args = {"minutes": minutes, "load": load}
        why = self._gen_why("gen_test", args)
        if why is None and self.running is not None:
            why = "busy"
        ctl = self.control
        if why is None and (ctl is None or ctl.get("start") is None or self.owner is None):
            why = "no_control"
        if why is None:
            self.running = run = [SCHEDULED, "gen_test", now, minutes, False]
            self._write(self.site.genset, ctl, ctl["start"],
                        lambda err: self._written(SCHEDULED, "gen_test", run, err))
        return why

    def _write(self, dev, ctl, key, done):
        vals = [key, 0xFFFF - key] if ctl.get("complement") else [key]
        owner = self.owner
        if owner is None or len(owner.writes) >= WRITES_MAX:
            done("busy")
            return

        async def write(owner):
            # Run by the bus owner task between two polls (sot/bus.py): never a second writer.
            try:
                if ctl.get("function") == 5:  # a coil (ComAp): its state is the request
                    await owner.write_coil(dev, ctl["register"], key != 0)
                else:
                    await owner.write_registers(dev, ctl["register"], vals)
                err = None
            except NotVerified:
                err = "unverified"
            except ModbusException as e:
                err = "exception:%d" % e.code
            except ModbusError:
                err = "no_answer"
            self.log("I cmd: write", dev.name, ctl["register"], vals, err or "ok")
            done(err)

        owner.writes.append(write)

    def _released(self, err):
        if err is not None:
            self.log("W cmd: run request not taken back:", err)

    def _written(self, cid, name, run, err):
        now = self.clock()
        ex = self.exercise
        if ex is not None and name == "gen_test" and (run is None or err is not None):
            ex.end(now, None if err is None else "write:" + err)  # stopped after its minutes
        if err is not None:
            if run is not None and self.running is run:
                self.running = None
            self._result(now, {"id": cid, "name": name, "result": "failed", "why": "write:" + err})
        elif run is None:
            self._result(now, {"id": cid, "name": name, "result": "done"})
        else:
            self._result(now, {"id": cid, "name": name, "result": "accepted"})

    def _end(self, now, result, why=None):
        cid, name = self.running[0], self.running[1]
        self.running = None
        if name == "gen_test" and self.exercise is not None:
            self.exercise.end(now, why or result)  # a test run ends here only when it failed
        ctl = self.control
        if ctl and ctl.get("function") == 5 and why != "stopped_remotely" \
                and (result == "failed" or why == "grid_lost"):
            # A run request held as a coil's state would start the set again when someone
            # turns it back to Auto: taken back (the set's own Auto logic still runs it in an
            # outage). A key (DSE) is a one-off and leaves nothing to take back.
            self._write(self.site.genset, ctl, ctl["stop"], self._released)
        d = {"id": cid, "name": name, "result": result}
        if why:
            d["why"] = why
        self._result(now, d)

    def tick(self, now):
        """From the site loop: watch a remote run. Local control wins: MANUAL/OFF or a stop on
        site ends it with a result that says so; a test run is stopped after its minutes."""
        r = self.running
        if r is None:
            return
        cid, name, t0, minutes, ran = r
        dev = self.site.genset
        mode = dev.get("control_mode")
        state = self.site.gen
        if not dev.online:
            return  # silent controller: keep watching; the gateway shows unknown at expiry
        if mode is not None and mode != "auto":
            self._end(now, "failed", "local:mode:%s" % mode)
            return
        if state == "running":
            if not ran:
                r[2] = now  # a test run's minutes count from here
                r[4] = ran = True
            if name == "gen_start":
                self._end(now, "done")
                return
        elif ran and state in ("stopped", "cooling", "fault"):
            self._end(now, "failed", "local:stop" if state != "fault" else "fault")
            return
        if not ran and now - t0 > START_TIMEOUT_S:
            self._end(now, "failed", "no_start")
            return
        if name == "gen_test" and ran and self.site.grid in ("lost", "rejected"):
            # A real outage during a test run: the set carries the site now, under its own Auto
            # logic. The test ends here and no stop is written.
            self._end(now, "done", "grid_lost")
            return
        if name == "gen_test" and ran and now - t0 >= minutes * 60:
            ctl = self.control
            self.running = None
            self._write(dev, ctl, ctl["stop"], lambda err: self._written(cid, name, None, err))
