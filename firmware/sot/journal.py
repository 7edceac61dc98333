# The event journal on the controller's flash: events stay here until the gateway acknowledges
# them (sot/v1/<site>/ack) after its database commit. docs/mqtt.md, "Session rules".
#
# Files (through hal.Flash only):
#   jseg.NNNNNN  segments, append-only, at most `seg_bytes` each (4 KiB, or budget/16 for a
#                larger budget); every boot starts a new one, so a segment holds one boot's
#                events in seq order
#   jdrop        events dropped by the overflow policy since the flash was formatted (decimal,
#                written new-then-rename)
#
# A record, little-endian:
#
#   0      2      6      10     14            14+n
#   +------+------+------+------+-------------+
#   | n    | crc  | boot | seq  | body (JSON) |   crc = CRC-32 of bytes 6 .. 14+n
#   +------+------+------+------+-------------+
#
# A power cut mid-append leaves a short or CRC-failing tail: reading a segment stops at the first
# such record, and since a boot never appends to an older segment, nothing after it is lost.
# (Write-new-then-rename would copy the whole segment for every event; append + CRC gives the same
# guarantee for a log.) A segment is removed whole once the gateway has acknowledged its last
# record; after a reboot the acknowledgements are not known, so the first segment may be sent
# again: the gateway de-duplicates by (site, boot, seq) and acknowledges again.
#
# Files on a board's littlefs (docs/firmware-build.md, "What the 32-bit build found"): appended
# bytes sit in the writing handle's cache until a flush, and a handle opened for reading does
# not see what was appended after it was opened. So every append is flushed before append()
# returns (the event then survives a power cut), the replay cursor reopens the segment being
# appended when it has caught up with what it saw, and every file is closed explicitly, never
# left to the garbage collector (an open file finalised by the collector was seen to corrupt
# littlefs and fault the board): scanning closes in a finally, close() ends the journal.
#
# Overflow (the journal would exceed `budget` bytes): the oldest segment goes, and its events not
# yet acknowledged are counted in `dropped` (reported in birth). Telemetry is never journalled -
# while the gateway cannot be reached it is thinned to the latest snapshot, held in RAM and sent
# on reconnect - so events are the only thing left to drop, and the oldest go first.
import binascii
import struct
from micropython import const

HDR = const(14)
BODY_AT = const(64)  # a record's body is read to buf[BODY_AT:], leaving room for a header
BODY_MAX = const(960)  # the body plus the header fields added when sending stays under 1 KiB
_PREFIX = "jseg."


class Journal:
    def __init__(self, flash, boot, buf, budget=65536, seg_bytes=4096):
        """buf: a memoryview of at least BODY_AT + BODY_MAX bytes, lent by the caller (the
        session's send buffer: a second 1 KiB block does not fit the heap)."""
        self.flash = flash
        self.boot = boot
        self.budget = budget
        # At most ~16 segments whatever the budget: each costs RAM for its entry in `segs`.
        self.seg_bytes = max(seg_bytes, budget // 16)
        self.hdr = bytearray(HDR)
        self.buf = buf
        self.segs = []  # [number, boot, first seq, last seq, bytes], oldest first
        self.acked = {}  # boot -> highest seq the gateway has committed
        self.seq = 0  # seq of this boot's next event
        raw = flash.read("jdrop")
        self.dropped = int(raw) if raw else 0
        self._w = None  # this boot's segment, open for appending
        self._r = None  # [segment index, offset, open file or None]: the replay cursor
        for name in flash.names(_PREFIX):
            seg = [int(name[5:]), 0, 0, -1, 0]
            f = flash.open(name)
            n = 0
            try:
                while self._read(f, seg[4]):
                    seg[1] = self._boot
                    if not n:
                        seg[2] = self._seq
                    seg[3] = self._seq
                    seg[4] += HDR + self._n
                    n += 1
            finally:
                f.close()
            if n:
                self.segs.append(seg)
            else:
                flash.remove(name)  # empty, or nothing but a torn first record
        self.rewind()

    def _read(self, f, off):
        """Read the record at `off` of file f into hdr/buf; False at the end or a torn record."""
        f.seek(off)
        h = self.hdr
        if f.readinto(h) != HDR:
            return False
        n, crc, self._boot, self._seq = struct.unpack("<HIII", h)
        b = self.buf[BODY_AT:BODY_AT + n]
        if n > BODY_MAX or f.readinto(b) != n:
            return False
        if binascii.crc32(b, binascii.crc32(memoryview(h)[6:])) != crc:
            return False
        self._n = n
        return True

    def size(self):
        return sum(s[4] for s in self.segs)

    def pending(self):
        """Events held that the gateway has not acknowledged (after a reboot: an upper bound)."""
        return sum(s[3] - max(s[2] - 1, self.acked.get(s[1], -1)) for s in self.segs
                   if s[3] > self.acked.get(s[1], -1))

    def oldest(self):
        """(boot, seq) of the oldest event held, or None."""
        for s in self.segs:
            a = self.acked.get(s[1], -1)
            if a < s[3]:
                return [s[1], max(s[2], a + 1)]
        return None

    def append(self, body):
        """Journal one event body (a JSON object, bytes or memoryview); returns its seq, or
        None if it is too big to ever send."""
        n = len(body)
        if n > BODY_MAX:
            return None
        size = HDR + n
        segs = self.segs
        while self.size() + size > self.budget and len(segs) > 1:
            self._drop(0)
        seg = segs[-1] if segs else None
        if self._w is None or seg[4] + size > self.seg_bytes:
            num = seg[0] + 1 if seg else 1
            if self._w is not None:
                self._w.close()
            seg = [num, self.boot, self.seq, self.seq - 1, 0]
            segs.append(seg)
            self._w = self.flash.open("%s%06d" % (_PREFIX, num), "ab")
        seq = self.seq
        h = self.hdr
        struct.pack_into("<HIII", h, 0, n, 0, self.boot, seq)
        struct.pack_into("<I", h, 2, binascii.crc32(body, binascii.crc32(memoryview(h)[6:])))
        w = self._w
        w.write(h)
        w.write(body)
        w.flush()  # on flash now, and visible to a handle opened from here on
        seg[3] = seq
        seg[4] += size
        self.seq = (seq + 1) & 0xFFFFFFFF
        return seq

    def _drop(self, i):
        s = self.segs.pop(i)
        a = self.acked.get(s[1], -1)
        if a < s[3]:
            self.dropped += s[3] - max(s[2] - 1, a)
            self.flash.write("jdrop", str(self.dropped))
        r = self._r
        if r[0] == i:
            self._close_r()
            r[1] = 0
        elif r[0] > i:
            r[0] -= 1
        self.flash.remove("%s%06d" % (_PREFIX, s[0]))

    def ack(self, boot, seq):
        """The gateway has committed this boot's events up to seq: drop what it covers."""
        if seq <= self.acked.get(boot, -1):
            return
        self.acked[boot] = seq
        segs = self.segs
        # The segment being appended stays (its next records go on after the acknowledged ones).
        while segs and self.acked.get(segs[0][1], -1) >= segs[0][3] and \
                not (self._w is not None and len(segs) == 1):
            self._drop(0)

    def rewind(self):
        """Send everything not yet acknowledged again from the start (after a reconnect, a
        rebirth request, or the gateway coming back)."""
        if self._r is not None:
            self._close_r()
        self._r = [0, 0, None]

    def close(self):
        """Close the journal's files (the next Journal on this flash reads them back)."""
        self._close_r()
        if self._w is not None:
            self._w.close()
            self._w = None

    def _close_r(self):
        if self._r[2] is not None:
            self._r[2].close()
            self._r[2] = None

    def next(self):
        """The next record to send as (boot, seq, n) with its body in buf[BODY_AT:][:n], or
        None."""
        r = self._r
        segs = self.segs
        reopened = False
        while r[0] < len(segs):
            s = segs[r[0]]
            if r[2] is None:
                r[2] = self.flash.open("%s%06d" % (_PREFIX, s[0]))
            if r[1] < s[4]:
                if self._read(r[2], r[1]):
                    r[1] += HDR + self._n
                    if self._seq > self.acked.get(self._boot, -1):
                        return self._boot, self._seq, self._n
                    continue
                if r[0] == len(segs) - 1 and self._w is not None and not reopened:
                    # appended after this handle was opened: littlefs shows it to a new handle
                    self._close_r()
                    reopened = True
                    continue
            if r[0] == len(segs) - 1:
                return None  # caught up with the segment being appended: stay here
            self._close_r()
            r[0] += 1
            r[1] = 0
        return None
