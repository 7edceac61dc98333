# Swedish local time under MicroPython. Expected values come from CPython's zoneinfo
# (Europe/Stockholm, tzdata 2025).
from sot import localtime

# Every change of the Swedish UTC offset 2020-2040 (UTC epochs), alternately to CEST and to CET.
TRANSITIONS = [
    1585443600, 1603587600, 1616893200, 1635642000, 1648342800, 1667091600, 1679792400,
    1698541200, 1711846800, 1729990800, 1743296400, 1761440400, 1774746000, 1792890000,
    1806195600, 1824944400, 1837645200, 1856394000, 1869094800, 1887843600, 1901149200,
    1919293200, 1932598800, 1950742800, 1964048400, 1982797200, 1995498000, 2014246800,
    2026947600, 2045696400, 2058397200, 2077146000, 2090451600, 2108595600, 2121901200,
    2140045200, 2153350800, 2172099600, 2184800400, 2203549200, 2216250000, 2234998800,
]


def test_every_transition_2020_to_2040():
    for i, t in enumerate(TRANSITIONS):
        summer = i % 2 == 0
        assert localtime.offset(t - 1) == (3600 if summer else 7200), t
        assert localtime.offset(t) == (7200 if summer else 3600), t


def test_hhmm_winter_summer_and_the_changes():
    assert localtime.hhmm(1768483800) == "14:30"  # 2026-01-15 13:30 UTC, CET
    assert localtime.hhmm(1782909000) == "14:30"  # 2026-07-01 12:30 UTC, CEST
    assert localtime.hhmm(1774745999) == "01:59"  # 2026-03-29, last second of CET
    assert localtime.hhmm(1774746000) == "03:00"  # clocks go forward
    assert localtime.hhmm(1792889999) == "02:59"  # 2026-10-25, last second of CEST
    assert localtime.hhmm(1792890000) == "02:00"  # clocks go back


def test_date_rolls_over_at_local_midnight():
    assert localtime.local(1709249400) == (2024, 3, 1, 0, 30)  # leap day 23:30 UTC
    assert localtime.local(1798758300) == (2027, 1, 1, 0, 5)  # new year's eve 23:05 UTC
    assert localtime.local(0) == (1970, 1, 1, 1, 0)


def test_civil_days_round_trip():
    for z in (-1, 0, 59, 11016, 19782, 20000, 24837, 47482):
        y, m, d = localtime.civil_from_days(z)
        assert localtime.days_from_civil(y, m, d) == z, z
    assert localtime.civil_from_days(11016) == (2000, 2, 29)


def test_nonsense_is_dashes_not_an_exception():
    for v in (None, "14:30", -5, True, 1e30, float("inf"), float("nan"), [1]):
        assert localtime.hhmm(v) == "--:--", v
    assert localtime.hhmm(1768483800.7) == "14:30"


def test_stamp_adds_the_date_only_for_another_day():
    now = 1768483800  # 2026-01-15 14:30 local
    assert localtime.stamp(now - 3600, now) == "13:30"
    assert localtime.stamp(now - 86400, now) == "14/1 14:30"
    assert localtime.stamp(None, now) == "--:--"
