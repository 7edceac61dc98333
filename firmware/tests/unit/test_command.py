# Signed commands under MicroPython (docs/mqtt.md, "Commands"): forged, tampered, expired,
# replayed (also after a power cut), malformed, oversized and unknown commands are refused with
# a journalled result; a valid one is acted on once; generator preconditions on the controller.
import binascii
import json
import os
import time

from sot import hal
from sot.command import (COUNTER_FILE, REFUSALS_PER_MIN, Commands, canonical, canonical_args,
                         equal, hmac_sha256)
from sot.device import Device
from sot.modbus.rtu import ModbusError

KEY = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
NOW = 1795444065
_n = [0]


def flash():
    _n[0] += 1
    if hal.NAME == "unix":
        root = "/tmp/sot-cmd-%d-%d" % (time.ticks_us(), _n[0])
    else:
        hal.mount_flash(fresh=True)
        root = "/flash/c%d" % _n[0]
    os.mkdir(root)
    return hal.Flash(root)


class _Site:
    """The attributes of sot.site.Site that the commands read."""

    def __init__(self, mode="auto", ready=True, online=True, verified=True):
        self.genset = Device({"name": "genset", "kind": "genset", "unit": 1, "blocks": [],
                              "points": []})
        self.genset.online = online
        self.genset.verified = verified
        self.genset.why = "online" if online else "offline"
        self.genset.values = {"control_mode": mode, "can_remote_start": 1}
        self.ready = ready
        self.gen_cfg = {}
        self.gen = "stopped"
        self.grid = "ok"

    def controlled(self):
        """A bus owner that records (the genset's control registers come with the config)."""
        self.genset.owner = _Owner()  # where the test finds it; make() hands it to Commands
        return self


class _Owner:
    """The BusOwner's write interface (its `writes` queue, run by its task between polls, and
    write_registers); records the writes instead of sending them on a bus."""

    def __init__(self):
        self.writes = []  # the queue the bus task empties
        self.made = []
        self.err = None

    def run_queue(self):
        while self.writes:
            f = self.writes.pop(0)
            co = f(self)
            try:
                co.send(None)
            except StopIteration:
                pass

    async def write_registers(self, dev, start, values):
        self.made.append((start, values))
        if self.err:
            raise self.err


CONTROL = {"register": 4104, "complement": 1, "start": 35732, "stop": 35733}


def make(fl=None, site=None, key=KEY):
    out = []
    site = site or _Site()
    owner = getattr(site.genset, "owner", None)
    devs = [{"name": "genset", "control": CONTROL}] if owner is not None else []
    c = Commands({"site": "are-kall", "mqtt": {"cmd_key": key}, "devices": devs}, fl or flash(),
                 site, log=lambda *a: None, clock=lambda: NOW)
    c.owner = owner
    c.result_cb = lambda ts, etype, data: out.append(data)
    return c, out


def sign(name, counter, args=None, issued=NOW, ttl=120, cid="c1", key=KEY):
    args = args or {}
    body = {"v": 1, "id": cid, "issued": issued, "expires": issued + ttl, "counter": counter,
            "args": args}
    mac = hmac_sha256(binascii.unhexlify(key),
                      canonical("are-kall", name, cid, issued, issued + ttl, counter,
                                canonical_args(args)))
    body["sig"] = binascii.hexlify(mac).decode()
    return json.dumps(body).encode()


def test_hmac_matches_rfc4231_case_2():
    mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?")
    assert binascii.hexlify(mac) == \
        b"5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


def test_hmac_with_a_key_longer_than_a_block():  # RFC 4231 case 6
    mac = hmac_sha256(b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First")
    assert binascii.hexlify(mac) == \
        b"60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"


def test_equal_is_a_plain_comparison_in_result():
    assert equal(b"abc", b"abc") and not equal(b"abc", b"abd") and not equal(b"ab", b"abc")


def test_a_command_signed_by_the_gateway_verifies():
    # gateway.commands.sign("are-kall", "gen_test", KEY, 7, {"minutes": 15, "load": False},
    # now=NOW, ttl_s=120, cid="c1"): the two implementations agree on the canonical form.
    p = (b'{"v":1,"id":"c1","issued":1795444065,"expires":1795444185,"counter":7,'
         b'"args":{"minutes":15,"load":false},'
         b'"sig":"3c2ad4f0c86fee6da879ef28da148bf5c4e2182f85f6d9daa4f768b165be5906"}')
    c, out = make()
    assert c.receive("gen_test", p, NOW + 5) == "refused"  # verified; this set has no [control]
    assert out[-1]["why"] == "no_control" and c.counter == 7


def test_rebirth_is_done_once_and_a_replay_is_refused():
    c, out = make()
    births = []
    c.rebirth_cb = lambda: births.append(1)
    p = sign("rebirth", 1)
    assert c.receive("rebirth", p, NOW) == "done"
    assert c.receive("rebirth", p, NOW + 1) == "refused"  # the same command delivered again
    assert births == [1]
    assert [(r["result"], r.get("why")) for r in out] == [("done", None), ("refused", "replay")]
    assert out[0]["id"] == "c1" and out[0]["name"] == "rebirth"


def test_one_byte_changed_in_the_arguments_is_refused():
    c, out = make()
    p = sign("gen_test", 3, {"minutes": 15})
    bad = p.replace(b'"minutes": 15', b'"minutes": 16')
    assert bad != p
    assert c.receive("gen_test", bad, NOW) == "refused"
    assert out[-1]["why"] == "bad_sig" and c.counter == 0


def test_a_command_for_another_name_or_site_or_key_is_refused():
    c, out = make()
    assert c.receive("gen_stop", sign("gen_start", 1), NOW) == "refused"
    c2, out2 = make(key="ff" * 32)
    assert c2.receive("rebirth", sign("rebirth", 1), NOW) == "refused"
    assert out[-1]["why"] == "bad_sig" and out2[-1]["why"] == "bad_sig"


def test_expired_command_is_refused_and_its_counter_used_up():
    c, out = make()
    p = sign("rebirth", 5, issued=NOW - 4 * 3600)  # queued while the site was offline for hours
    assert c.receive("rebirth", p, NOW) == "refused"
    assert out[-1]["why"] == "expired" and c.counter == 5
    assert c.receive("rebirth", p, NOW) == "refused" and out[-1]["why"] == "replay"


def test_skew_allowance_and_window():
    c, out = make()
    assert c.receive("rebirth", sign("rebirth", 1, ttl=60), NOW + 60 + 30) == "done"
    assert c.receive("rebirth", sign("rebirth", 2, ttl=60), NOW + 60 + 31) == "refused"
    assert out[-1]["why"] == "expired"
    assert c.receive("rebirth", sign("rebirth", 3, issued=NOW + 40), NOW) == "refused"
    assert out[-1]["why"] == "not_yet"
    assert c.receive("rebirth", sign("rebirth", 4, ttl=301), NOW) == "refused"
    assert out[-1]["why"] == "window"


def test_counter_survives_a_power_cut():
    fl = flash()
    c, out = make(fl)
    assert c.receive("rebirth", sign("rebirth", 9), NOW) == "done"
    assert fl.read(COUNTER_FILE) == b"9"
    c2, out2 = make(fl)  # the next boot, same flash
    assert c2.receive("rebirth", sign("rebirth", 8, cid="c2"), NOW) == "refused"
    assert out2[-1]["why"] == "replay"
    assert c2.receive("rebirth", sign("rebirth", 10, cid="c3"), NOW) == "done"


def test_malformed_oversized_and_unknown():
    c, out = make()
    assert c.receive("rebirth", b"not json", NOW) == "refused"
    assert out[-1]["why"] == "malformed"
    assert c.receive("rebirth", b"x" * 600, NOW) == "refused"
    assert out[-1]["why"] == "too_large"
    assert c.receive("rebirth", b'{"v":1,"id":"a","issued":1,"expires":2,"counter":1,'
                                b'"args":{"x":"str"},"sig":"00"}', NOW) == "refused"
    assert out[-1]["why"] == "malformed"
    assert c.receive("self_destruct", sign("self_destruct", 1), NOW) == "refused"
    assert out[-1]["why"] == "unknown" and c.counter == 1


def test_a_flood_of_refusals_is_journalled_at_most_four_a_minute():
    c, out = make()
    for _i in range(50):
        c.receive("rebirth", b"{}", NOW)
    assert len(out) == REFUSALS_PER_MIN and c.refused == 50
    assert c.refused_quiet == 50 - REFUSALS_PER_MIN
    # an authentic command still gets its result during the flood
    assert c.receive("rebirth", sign("rebirth", 1), NOW) == "done" and out[-1]["result"] == "done"


def test_remote_start_refused_in_manual_without_a_write():
    c, out = make(site=_Site(mode="manual"))
    assert c.receive("gen_start", sign("gen_start", 1), NOW) == "refused"
    assert out[-1]["why"] == "mode:manual"


def test_remote_start_refused_when_not_ready_or_unverified_or_without_capability():
    c, out = make(site=_Site(ready=False))
    assert c.receive("gen_start", sign("gen_start", 1), NOW) == "refused"
    assert out[-1]["why"] == "not_ready"
    s = _Site(verified=False)
    c, out = make(site=s)
    assert c.receive("gen_start", sign("gen_start", 1), NOW) == "refused"
    assert out[-1]["why"].startswith("genset_")
    s = _Site()
    s.genset.values["can_remote_start"] = 0
    c, out = make(site=s)
    assert c.receive("gen_start", sign("gen_start", 1), NOW) == "refused"
    assert out[-1]["why"] == "capability"


def test_test_run_on_load_only_where_the_site_allows_it():
    c, out = make()
    assert c.receive("gen_test", sign("gen_test", 1, {"minutes": 10, "load": True}), NOW) == \
        "refused"
    assert out[-1]["why"] == "load_not_allowed"
    assert c.receive("gen_test", sign("gen_test", 2, {"minutes": 0}), NOW) == "refused"
    assert out[-1]["why"] == "minutes"


def test_remote_start_writes_key_and_complement_and_is_done_when_running():
    s = _Site().controlled()
    c, out = make(site=s)
    assert c.receive("gen_start", sign("gen_start", 1), NOW) == "accepted"
    assert out == []  # queued: the bus owner task writes it between two polls
    s.genset.owner.run_queue()
    assert s.genset.owner.made == [(4104, [35732, 0xFFFF - 35732])]
    assert [r["result"] for r in out] == ["accepted"]
    c.tick(NOW + 2)
    assert len(out) == 1  # still starting
    s.gen = "running"
    c.tick(NOW + 10)
    assert out[-1] == {"id": "c1", "name": "gen_start", "result": "done"}
    c.tick(NOW + 11)
    assert len(out) == 2  # one final result


def test_switching_to_manual_during_a_test_run_ends_it_and_local_control_wins():
    s = _Site().controlled()
    c, out = make(site=s)
    assert c.receive("gen_test", sign("gen_test", 1, {"minutes": 5}), NOW) == "accepted"
    s.genset.owner.run_queue()
    s.gen = "running"
    c.tick(NOW + 10)
    s.genset.values["control_mode"] = "manual"
    c.tick(NOW + 20)
    assert out[-1]["result"] == "failed" and out[-1]["why"] == "local:mode:manual"
    s.genset.owner.run_queue()
    assert len(s.genset.owner.made) == 1  # no stop written: the person on site decides
    c.tick(NOW + 30)
    assert len(out) == 2


def test_a_stop_pressed_on_site_ends_the_run_with_a_result_that_says_so():
    s = _Site().controlled()
    c, out = make(site=s)
    c.receive("gen_test", sign("gen_test", 1, {"minutes": 5}), NOW)
    s.genset.owner.run_queue()
    s.gen = "running"
    c.tick(NOW + 10)
    s.gen = "stopped"
    c.tick(NOW + 20)
    assert out[-1]["why"] == "local:stop"


def test_a_test_run_is_stopped_after_its_minutes():
    s = _Site().controlled()
    c, out = make(site=s)
    c.receive("gen_test", sign("gen_test", 1, {"minutes": 2}), NOW)
    s.genset.owner.run_queue()
    s.gen = "running"
    c.tick(NOW + 10)
    c.tick(NOW + 10 + 119)
    s.genset.owner.run_queue()
    assert len(s.genset.owner.made) == 1
    c.tick(NOW + 10 + 120)
    s.genset.owner.run_queue()
    assert s.genset.owner.made[-1] == (4104, [35733, 0xFFFF - 35733])
    assert out[-1] == {"id": "c1", "name": "gen_test", "result": "done"}


def test_a_failed_write_fails_the_command():
    s = _Site().controlled()
    s.genset.owner.err = ModbusError("timeout")
    c, out = make(site=s)
    assert c.receive("gen_start", sign("gen_start", 1), NOW) == "accepted"
    s.genset.owner.run_queue()
    assert out[-1]["result"] == "failed" and out[-1]["why"] == "write:no_answer"
    assert c.running is None
