# Crisis messages under MicroPython: what reaches the panel, what is refused (RELIABILITY C5).
import json

from fakes import MemFlash
from sot.crisis import Crisis, clean


def msg(mid="m1", **over):
    m = {"id": mid, "sv": "Koka vattnet", "en": "Boil the water", "severity": "warning",
         "from": "Åre kommun", "ts": 1795444065}
    m.update(over)
    return json.dumps(m).encode()


def logs():
    out = []
    return out, lambda *a: out.append(" ".join(str(x) for x in a))


def test_clean_turns_control_characters_into_single_spaces():
    assert (clean("Rad ett\x1b[2J\x00\n\tRad  två\u2028slut\x85!", 280)
            == "Rad ett [2J Rad två slut !")
    assert clean("   ", 280) is None and clean("", 280) is None and clean(5, 280) is None
    assert clean("x" * 281, 280) is None
    # text, not markup
    assert clean("<script>alert(1)</script>", 280) == "<script>alert(1)</script>"


def test_a_message_is_kept_on_flash_and_comes_back_after_a_power_cut():
    fl = MemFlash()
    c = Crisis(fl)
    assert c.receive("m1", msg()) is True
    c2 = Crisis(fl)  # power cut, network still down
    cur = c2.current(1795444100)
    assert cur["sv"] == "Koka vattnet" and cur["from"] == "Åre kommun" and cur["acked"] is None


def test_abuse_is_refused_and_the_last_valid_message_stays():
    out, log = logs()
    c = Crisis(MemFlash(), log=log)
    c.receive("m1", msg())
    assert c.receive("m2", msg("m2", sv="x" * 5000)) is False
    assert c.receive("m3", b"\xff\xfe{") is False
    assert c.receive("m4", msg("m4", sv="  \n ")) is False
    assert c.receive("m5", msg("m5", severity="panic")) is False
    assert c.receive("m6", b"[1, 2]") is False
    assert c.receive("../x", msg("../x")) is False
    assert c.rejected == 6 and len(out) == 6
    assert [m["id"] for m in c.active(1795444100)] == ["m1"]


def test_retained_copy_after_reconnect_keeps_the_acknowledgement():
    c = Crisis(MemFlash())
    c.receive("m1", msg())
    assert c.acknowledge(1795444100)["id"] == "m1"
    assert c.receive("m1", msg()) is False  # the broker's retained copy again
    assert c.current(1795444200)["acked"] == 1795444100
    assert c.acknowledge(1795444300) is None  # nothing left to acknowledge
    c.receive("m1", msg(ts=1795444400, sv="Uppdaterat"))  # an update needs a new ack
    assert c.current(1795444500)["acked"] is None


def test_unacknowledged_then_most_severe_then_newest_is_shown_first():
    c = Crisis(MemFlash())
    c.receive("a", msg("a", severity="info", ts=1795444000))
    c.receive("b", msg("b", severity="severe", ts=1795443000))
    c.receive("c", msg("c", severity="warning", ts=1795445000))
    now = 1795446000
    assert [m["id"] for m in c.active(now)] == ["b", "c", "a"]
    c.acknowledge(now)
    assert c.current(now)["id"] == "c"


def test_withdrawn_and_expired_messages_leave_the_panel():
    c = Crisis(MemFlash())
    c.receive("a", msg("a", expires=1795444100))
    c.receive("b", msg("b"))
    assert c.receive("b", b"") is True
    assert c.current(1795444000)["id"] == "a"
    assert c.current(1795444200) is None


def test_at_most_four_messages_the_oldest_gives_way():
    c = Crisis(MemFlash())
    for i in range(6):
        c.receive("m%d" % i, msg("m%d" % i, ts=1795444000 + i))
    assert sorted(c.msgs) == ["m2", "m3", "m4", "m5"]
