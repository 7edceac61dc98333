# Swedish local time (Europe/Stockholm) from a UTC epoch, without the port's time module: boards
# differ in their epoch and none of them knows time zones.
#
# CET is UTC+1. Summer time (CEST, UTC+2) follows EU Directive 2000/84/EC: it begins on the last
# Sunday of March at 01:00 UTC and ends on the last Sunday of October at 01:00 UTC, the same
# instant all over the EU.
from micropython import const

_DAY = const(86400)
_HOUR = const(3600)


def days_from_civil(y, m, d):
    """Days since 1970-01-01 of a proleptic Gregorian date (March-based year, 400-year eras)."""
    if m <= 2:
        y -= 1
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m - 3 if m > 2 else m + 9) + 2) // 5 + d - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def civil_from_days(z):
    """(year, month, day) of a day count since 1970-01-01."""
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (1 if m <= 2 else 0), m, d


def _last_sunday(y, m, last_day):
    z = days_from_civil(y, m, last_day)
    return z - (z + 4) % 7  # 1970-01-01 was a Thursday: (z + 4) % 7 == 0 on a Sunday


def offset(epoch):
    """Seconds to add to UTC for Swedish local time at that instant: 3600 or 7200."""
    y = civil_from_days(epoch // _DAY)[0]
    start = _last_sunday(y, 3, 31) * _DAY + _HOUR
    end = _last_sunday(y, 10, 31) * _DAY + _HOUR
    return 2 * _HOUR if start <= epoch < end else _HOUR


def local(epoch):
    """(year, month, day, hour, minute) in Swedish local time."""
    t = epoch + offset(epoch)
    y, m, d = civil_from_days(t // _DAY)
    s = t % _DAY
    return y, m, d, s // _HOUR, s % _HOUR // 60


def _valid(epoch):
    # bool is an int; a clock reading of True is nonsense, not 00:00:01.
    return isinstance(epoch, int) and not isinstance(epoch, bool) and 0 <= epoch < 1 << 40


def hhmm(epoch):
    """"14:30" in Swedish local time; "--:--" when epoch is not a plausible time."""
    if isinstance(epoch, float) and epoch == epoch and 0 <= epoch < 1 << 40:
        epoch = int(epoch)
    if not _valid(epoch):
        return "--:--"
    t = local(epoch)
    return "%02d:%02d" % (t[3], t[4])


def stamp(epoch, now):
    """"14:30" when epoch is on the same local day as now, else "3/11 14:30" (day/month, as
    written in Sweden)."""
    s = hhmm(epoch)
    if s == "--:--" or not _valid(now):
        return s
    a = local(int(epoch))
    b = local(now)
    if a[:3] == b[:3]:
        return s
    return "%d/%d %s" % (a[2], a[1], s)
