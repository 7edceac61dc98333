# Reading a crisis message's JSON without building its strings, and cleaning its text for the
# panel (firmware/sot/crisis.py uses it; docs/mqtt.md, "Crisis messages: sizes and refusals").
#
# Imported only while a message is being taken in and dropped again afterwards
# (crisis.Crisis._receive): its functions would otherwise hold about 1.3 KiB of a 64 KiB heap
# that is already close to full, for something that runs a few times a day.
_CHUNK = 128  # bytes per write to flash


# Combining marks that compose with an ASCII letter into a character the panel draws (NFC for
# these; any other mark, U+0300..U+036F, is dropped): the mark's low byte, the letter, the
# composed character's low byte (U+00xx). Tables as bytes: constants cost no heap.
_MARK = b"\x08\x08\x08\x08\x08\x08\x0a\x0a\x01\x01"
_BASE = b"aoAOuUaAeE"
_COMPOSED = b"\xe4\xf6\xc4\xd6\xfc\xdc\xe5\xc5\xe9\xc9"  # ä ö Ä Ö ü Ü å Å é É
Bad = ValueError  # the payload is not UTF-8 JSON of the contract's shape; args[0] may say why


class _Out:
    """Cleaned text out, in _CHUNK pieces, to a stream (a file on flash) or into a bytearray
    (`clean()`). Code points in (`cp`): control characters (C0, DEL, C1, U+2028/9) and spaces
    become one space between words, none at either end; a combining mark is composed with the
    ASCII letter before it or dropped (the last byte is held back until the next one, so the
    letter can still be replaced). `chars` counts characters; past `limit` it raises Bad."""

    def __init__(self, stream=None):
        self.stream = stream
        self.buf = bytearray(_CHUNK)
        self.n = 0
        self.out = bytearray() if stream is None else None
        self.start(0)

    def start(self, limit):
        self.limit = limit
        self.chars = 0
        self.space = False  # a space is owed before the next character
        self.letter = False  # the last byte out is an ASCII letter a mark may sit on

    def put(self, b):
        if self.n == _CHUNK:
            self.flush(_CHUNK - 1)
        self.buf[self.n] = b
        self.n += 1

    def flush(self, k):
        mv = memoryview(self.buf)
        if self.stream is not None:
            self.stream.write(mv[:k])
        else:
            self.out.extend(mv[:k])
        self.buf[:self.n - k] = mv[k:self.n]  # what is held back moves to the front
        self.n -= k

    def cp(self, c):
        if c <= 0x20 or 0x7F <= c <= 0x9F or c == 0x2028 or c == 0x2029:
            self.space = self.chars > 0
            self.letter = False
            return
        if 0x300 <= c <= 0x36F:
            if self.letter and not self.space:
                last = self.buf[self.n - 1]
                for i in range(len(_MARK)):
                    if _MARK[i] == c - 0x300 and _BASE[i] == last:
                        self.n -= 1  # the letter gives way to the composed one
                        self.put(0xC3 if _COMPOSED[i] >= 0xC0 else 0xC2)
                        self.put(0x80 | _COMPOSED[i] & 0x3F)
                        break
            self.letter = False
            return
        if self.space:
            self.put(0x20)
            self.chars += 1
            self.space = False
        self.chars += 1
        if self.chars > self.limit:
            raise Bad("long")
        put = self.put
        if c < 0x80:
            put(c)
        elif c < 0x800:
            put(0xC0 | c >> 6)
            put(0x80 | c & 0x3F)
        elif c < 0x10000:
            put(0xE0 | c >> 12)
            put(0x80 | (c >> 6) & 0x3F)
            put(0x80 | c & 0x3F)
        else:
            put(0xF0 | c >> 18)
            put(0x80 | (c >> 12) & 0x3F)
            put(0x80 | (c >> 6) & 0x3F)
            put(0x80 | c & 0x3F)
        self.letter = 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A


def _utf8(p, i, end):
    """(code point, next index) of the UTF-8 sequence at p[i]; raises Bad if it is not one."""
    c = p[i]
    if c < 0x80:
        return c, i + 1
    if 0xC2 <= c <= 0xDF:
        k, v, lo = 1, c & 0x1F, 0x80
    elif 0xE0 <= c <= 0xEF:
        k, v, lo = 2, c & 0x0F, 0x800
    elif 0xF0 <= c <= 0xF4:
        k, v, lo = 3, c & 0x07, 0x10000
    else:
        raise Bad()
    for j in range(i + 1, i + 1 + k):
        if j >= end or p[j] & 0xC0 != 0x80:
            raise Bad()
        v = v << 6 | p[j] & 0x3F
    if v < lo or v > 0x10FFFF or 0xD800 <= v <= 0xDFFF:
        raise Bad()
    return v, i + 1 + k


_ESC_IN = b'"\\/bfnrt'
_ESC_OUT = b'"\\/\x08\x0c\n\r\t'


def _hex4(p, i):
    return int(str(p[i:i + 4], "ascii"), 16)  # ValueError (= Bad) if not 4 hex digits


def _text(p, a, b, clean):
    """Feed the JSON string body p[a:b] (escapes and all) to an _Out as code points."""
    i = a
    while i < b:
        c = p[i]
        if c == 0x5C:
            e = p[i + 1]
            if e == 0x75:  # \uXXXX, a surrogate pair as two of them
                v = _hex4(p, i + 2)
                i += 6
                if 0xD800 <= v <= 0xDBFF and i + 6 <= b and p[i] == 0x5C and p[i + 1] == 0x75:
                    lo = _hex4(p, i + 2)
                    if 0xDC00 <= lo <= 0xDFFF:
                        v = 0x10000 + ((v - 0xD800) << 10) + lo - 0xDC00
                        i += 6
                if 0xD800 <= v <= 0xDFFF:
                    raise Bad()  # a lone surrogate is no character
            else:
                v = _ESC_OUT[_ESC_IN.index(e)]  # ValueError (= Bad) for an unknown escape
                i += 2
        else:
            v, i = _utf8(p, i, b)
        clean.cp(v)


def _skip_ws(p, i, n):
    while i < n and p[i] in (0x20, 0x09, 0x0A, 0x0D):
        i += 1
    return i


def _string_end(p, i, n):
    """p[i] is the opening quote; the index of the closing one."""
    i += 1
    while i < n:
        c = p[i]
        if c == 0x22:
            return i
        i += 2 if c == 0x5C else 1
    raise Bad()


def _value(p, i, n):
    """(kind, a, b, next): a string ("s", body start, end), an integer ("i", value, None),
    null/true/false ("n"/"t"/"f"), or anything else skipped ("x")."""
    c = p[i]
    if c == 0x22:
        e = _string_end(p, i, n)
        return "s", i + 1, e, e + 1
    if c == 0x2D or 0x30 <= c <= 0x39:
        j = i + 1
        while j < n and (0x30 <= p[j] <= 0x39):
            j += 1
        if j < n and p[j] in (0x2E, 0x45, 0x65):  # a fraction or exponent: not an integer
            while j < n and p[j] in b"0123456789.eE+-":
                j += 1
            return "x", None, None, j
        if j - i > 12:
            raise Bad()
        return "i", int(str(p[i:j], "ascii")), None, j
    for word, kind in ((b"null", "n"), (b"true", "t"), (b"false", "f")):
        if p[i:i + len(word)] == word:
            return kind, None, None, i + len(word)
    if c == 0x7B or c == 0x5B:  # a nested object or array: skipped, strings and all
        depth = 0
        while i < n:
            c = p[i]
            if c == 0x22:
                i = _string_end(p, i, n)
            elif c == 0x7B or c == 0x5B:
                depth += 1
            elif c == 0x7D or c == 0x5D:
                depth -= 1
                if not depth:
                    return "x", None, None, i + 1
            i += 1
    raise Bad()


def scan(p):
    """The top-level fields of a JSON object in the bytes p without building its strings:
    {key: (kind, a, b)}. Raises Bad when p is not one JSON object."""
    n = len(p)
    i = _skip_ws(p, 0, n)
    if i >= n or p[i] != 0x7B:
        raise Bad("not_object") if i < n and p[i] in b'["-0123456789tfn' else Bad()
    out = {}
    i = _skip_ws(p, i + 1, n)
    if i < n and p[i] == 0x7D:
        i += 1
    else:
        while True:
            if i >= n or p[i] != 0x22:
                raise Bad()
            e = _string_end(p, i, n)
            key = bytes(p[i + 1:e]) if e - i <= 16 else b""
            i = _skip_ws(p, e + 1, n)
            if i >= n or p[i] != 0x3A:
                raise Bad()
            i = _skip_ws(p, i + 1, n)
            if i >= n:
                raise Bad()
            kind, a, b, i = _value(p, i, n)
            out[key] = (kind, a, b)
            i = _skip_ws(p, i, n)
            if i < n and p[i] == 0x2C:
                i = _skip_ws(p, i + 1, n)
                continue
            if i < n and p[i] == 0x7D:
                i += 1
                break
            raise Bad()
    if _skip_ws(p, i, n) != n:
        raise Bad()
    return out


def clean(text, limit):
    """The text cleaned as the panel gets it (see _Out); None if not a str, empty or over
    `limit` characters."""
    if not isinstance(text, str):
        return None
    b = text.encode()
    out = _Out()
    out.start(limit)
    i = 0
    try:
        while i < len(b):
            v, i = _utf8(b, i, len(b))
            out.cp(v)
    except Bad:
        return None
    if not out.chars:
        return None
    out.flush(out.n)
    data = out.out  # a bytearray: this _Out has no stream
    return None if data is None else str(data, "utf-8")
