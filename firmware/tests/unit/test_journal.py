# The event journal under MicroPython, on the board's flash files: the unix HAL's folder, or
# littlefs on the qemu board (a file's appends are seen only by handles opened after a flush,
# and a file must never be left open to the garbage collector): contiguous seq per boot,
# acknowledgement, torn tails after a power cut, the flash budget (fault scenarios P1/P2, N4).
import json

from fakes import fresh_flash
from sot.journal import BODY_AT, Journal

BUF = memoryview(bytearray(1024))

_journals = []


def flash():
    return fresh_flash("journal")


def journal(fl, boot, **kw):
    j = Journal(fl, boot, BUF, **kw)
    _journals.append(j)
    return j


def teardown():
    """After each test (runner.py): close every journal it opened, failed or not."""
    while _journals:
        _journals.pop().close()


def body(i):
    return json.dumps({"ts": 1767225600 + i, "type": "t", "data": {"i": i}}).encode()


def drain(j):
    out = []
    while True:
        rec = j.next()
        if rec is None:
            return out
        boot, seq, n = rec
        out.append((boot, seq, json.loads(bytes(j.buf[BODY_AT:BODY_AT + n]))["data"]["i"]))


def test_seq_is_contiguous_and_replay_reads_in_order():
    j = journal(flash(), 3)
    assert [j.append(body(i)) for i in range(5)] == [0, 1, 2, 3, 4]
    assert drain(j) == [(3, i, i) for i in range(5)]
    j.append(body(5))
    assert drain(j) == [(3, 5, 5)]  # the cursor waits at the end of the open segment
    j.rewind()
    assert len(drain(j)) == 6


def test_ack_drops_whole_segments_and_skips_acknowledged_records():
    fl = flash()
    j = journal(fl, 1, budget=3200, seg_bytes=200)
    for i in range(20):
        j.append(body(i))
    segs = len(j.segs)
    assert segs > 3 and j.pending() == 20
    j.ack(1, 9)
    assert len(j.segs) < segs and j.pending() == 10
    j.rewind()
    assert [r[1] for r in drain(j)] == list(range(10, 20))
    j.ack(1, 19)
    assert len(j.segs) == 1 and j.pending() == 0  # the open segment stays
    assert len(fl.names("jseg.")) == 1


def test_after_a_reboot_records_survive_and_the_new_boot_starts_a_new_segment():
    fl = flash()
    j = journal(fl, 1)
    for i in range(3):
        j.append(body(i))
    # A power cut: nothing acknowledged, and the next boot reads the flash while boot 1's files
    # were never closed (the test closes them later): what append() returned for is on flash.
    j = journal(fl, 2)
    j.append(body(100))
    assert drain(j) == [(1, 0, 0), (1, 1, 1), (1, 2, 2), (2, 0, 100)]
    assert len(fl.names("jseg.")) == 2
    j.ack(1, 2)  # acknowledging one boot leaves the other's events
    j.rewind()
    assert drain(j) == [(2, 0, 100)]
    assert j.oldest() == [2, 0]


def test_a_torn_tail_is_ignored_and_nothing_before_it_is_lost():
    fl = flash()
    j = journal(fl, 1)
    for i in range(4):
        j.append(body(i))
    teardown()
    name = fl.names("jseg.")[0]
    raw = fl.read(name)
    for cut in (len(raw) - 1, len(raw) - 20, len(raw) - 30):
        with open(fl.path(name), "wb") as f:  # a power cut in the middle of the last append
            f.write(raw[:cut])
        j = journal(fl, 2)
        assert [r[2] for r in drain(j)] == [0, 1, 2]
        teardown()
    # a flipped bit in the body fails the CRC
    bad = bytearray(raw)
    bad[-5] ^= 1
    with open(fl.path(name), "wb") as f:
        f.write(bad)
    j = journal(fl, 3)
    assert [r[2] for r in drain(j)] == [0, 1, 2]
    teardown()
    # nothing but a torn first record: the empty segment is removed
    with open(fl.path(name), "wb") as f:
        f.write(raw[:10])
    j = journal(fl, 4)
    assert j.segs == [] and fl.names("jseg.") == []


def test_the_budget_drops_the_oldest_events_and_counts_them():
    fl = flash()
    j = journal(fl, 1, budget=1000, seg_bytes=250)
    for i in range(60):
        j.append(body(i))
        assert j.size() <= 1000
    got = drain(j)
    assert got[-1][2] == 59 and got == [(1, s, s) for s in range(got[0][1], 60)]
    assert j.dropped == 60 - len(got) > 0
    assert int(fl.read("jdrop")) == j.dropped
    assert journal(fl, 2).dropped == j.dropped  # survives a reboot


def test_oversize_body_is_refused():
    j = journal(flash(), 1)
    assert j.append(b"{" + b" " * 2000 + b"}") is None
    assert j.seq == 0


def test_events_appended_while_the_replay_waits_are_all_sent():
    # After a reconnect the cursor reads the open segment up to its end and waits there; every
    # later event must still go out, not only the first ones (littlefs: a handle opened before
    # an append does not see it).
    j = journal(flash(), 7)
    j.append(body(0))
    assert drain(j) == [(7, 0, 0)]
    for i in range(1, 4):
        j.append(body(i))
        assert drain(j) == [(7, i, i)]
    j.rewind()
    assert [r[1] for r in drain(j)] == [0, 1, 2, 3]


def test_an_event_is_on_flash_when_append_returns():
    fl = flash()
    j = journal(fl, 1)
    j.append(body(0))
    j.append(body(1))
    # what a power cut right now leaves: the segment as a new boot reads it
    assert [r[2] for r in drain(journal(fl, 2))] == [0, 1]
