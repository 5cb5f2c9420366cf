"""RESP2/RESP3 framing: an incremental request parser with Redis's limits, and the
reply encoder.

The parser accepts what ``redis-server`` accepts, multibulk and inline requests, and
refuses what it refuses with the same ``Protocol error: ...`` texts, so a client sees
no difference. Every length is checked before memory is committed to it: a client
cannot make the adapter buffer more than the configured limits.

When the ``hiredis`` C extension is installed, runs of complete frames are parsed by
it, ten times faster than in Python; each frame it returns is accepted only if it is
exactly the canonical encoding of what it returned (``*n``, then ``$len`` bulk strings,
within the limits), so anything else (inline commands, other types, odd numbers, a
frame still arriving) goes through the Python parser, the authority on Redis's texts.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

try:
    import hiredis
except ImportError:  # pragma: no cover - the pure-Python parser does everything then
    hiredis = None  # type: ignore[assignment]

from gateway.resp.replies import ErrorReply, MapReply, NullArray, Reply, SimpleString

CRLF = b"\r\n"

# Before AUTH Redis refuses big frames outright: an unauthenticated client cannot
# make the server allocate much (Redis 7 uses the same two numbers).
UNAUTHENTICATED_MAX_MULTIBULK = 10
UNAUTHENTICATED_MAX_BULK = 16384


BULK_HEADER_TABLE = 4096
_BULK_HEADERS = [b"$%d\r\n" % size for size in range(BULK_HEADER_TABLE)]


class ProtocolError(Exception):
    """The client sent something that is not RESP; the connection must be closed.

    ``message`` is Redis's own text (``Protocol error: invalid bulk length``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class ParserLimits:
    max_bulk_len: int
    max_multibulk_len: int
    max_inline_len: int


class RequestParser:
    """Turns a byte stream into commands (lists of words), one frame at a time.

    >>> parser = RequestParser(ParserLimits(512, 1024, 1024))
    >>> parser.feed(b"*2\\r\\n$4\\r\\nECHO\\r\\n$2\\r\\nhi\\r\\nPING\\r\\n")
    >>> parser.next_command(), parser.next_command(), parser.next_command()
    ([b'ECHO', b'hi'], [b'PING'], None)
    """

    def __init__(self, limits: ParserLimits) -> None:
        self.limits = limits
        self.authenticated = True
        """False while a password is required and not given: tighter frame limits."""
        self._buffer = bytearray()
        self._pos = 0
        self._pending_words: int | None = None
        self._words: list[bytes] = []
        self._bulk_len: int | None = None
        self._ready: deque[tuple[list[bytes], int]] = deque()
        """Commands parsed ahead by hiredis, not yet taken, with their frame sizes."""
        self._ready_bytes = 0
        self.fast = hiredis is not None
        """Parse runs of canonical frames with hiredis (tests turn it off)."""

    @property
    def buffered(self) -> int:
        """Bytes received and not yet consumed (for the query-buffer limit)."""
        pending = len(self._buffer) - self._pos + self._ready_bytes
        return pending + sum(len(word) for word in self._words)

    def feed(self, data: bytes) -> None:
        if self._pos and self._pos > len(self._buffer) // 2:
            del self._buffer[: self._pos]  # compact: keep memory proportional to what is unread
            self._pos = 0
        self._buffer += data

    def next_command(self) -> list[bytes] | None:
        """The next complete command, ``None`` when more bytes are needed.

        Empty multibulk frames (``*0``) and blank inline lines are skipped, as Redis does.
        """
        if not self._ready and self.fast and self.authenticated and self._pending_words is None:
            self._parse_ahead()
        if self._ready:
            words, size = self._ready.popleft()
            self._ready_bytes -= size
            return words
        while True:
            if self._pending_words is None:
                if self._pos >= len(self._buffer):
                    return None
                if self._buffer[self._pos] == ord("*"):
                    count = self._read_multibulk_count()
                    if count is None:
                        return None
                    if count <= 0:
                        continue
                    self._pending_words = count
                else:
                    inline = self._read_inline()
                    if inline is None:
                        return None
                    if inline:
                        return inline
                    continue
            if not self._read_bulks():
                return None
            words, self._words, self._pending_words = self._words, [], None
            return words

    def _parse_ahead(self) -> None:
        """Take every complete canonical frame at the front of the buffer via hiredis.

        A fresh reader over the unread bytes each time: the Python parser takes over at
        the first frame this one does not accept, and works through an incomplete frame
        alone, so no byte is fed twice while a big frame trickles in."""
        buffer, pos = self._buffer, self._pos
        if pos >= len(buffer) or buffer[pos] != ord("*"):
            return
        reader = hiredis.Reader()
        reader.feed(buffer, pos, len(buffer) - pos)  # type: ignore[arg-type] # any buffer works
        max_words, max_bulk = self.limits.max_multibulk_len, self.limits.max_bulk_len
        while True:
            try:
                words = reader.gets()
            except hiredis.ProtocolError:
                break
            if type(words) is not list or len(words) > max_words:
                break
            end = self._canonical_end(words, pos, max_bulk)
            if end < 0:
                break
            if words:  # *0 is skipped, as Redis does
                self._ready.append((words, end - pos))
                self._ready_bytes += end - pos
            pos = end
        self._pos = pos

    def _canonical_end(self, words: list[bytes], pos: int, max_bulk: int) -> int:
        """Where the frame at ``pos`` ends if it is ``words`` in canonical form, else -1.

        The headers are compared in place; payloads are what hiredis read at the same
        places, and like Redis neither parser checks the two bytes after a payload."""
        buffer = self._buffer
        header = b"*%d\r\n" % len(words)
        if not buffer.startswith(header, pos):
            return -1
        pos += len(header)
        headers = _BULK_HEADERS
        for word in words:
            if type(word) is not bytes or len(word) > max_bulk:
                return -1
            size = len(word)
            # A table lookup for the usual sizes: formatting an int costs more.
            header = headers[size] if size < BULK_HEADER_TABLE else b"$%d\r\n" % size
            if not buffer.startswith(header, pos):
                return -1
            pos += len(header) + size + 2
        return pos

    def _line_end(self, too_long: str) -> int | None:
        end = self._buffer.find(CRLF, self._pos)
        if end < 0:
            if len(self._buffer) - self._pos > self.limits.max_inline_len:
                raise ProtocolError(f"Protocol error: {too_long}")
            return None
        if end - self._pos > self.limits.max_inline_len:
            raise ProtocolError(f"Protocol error: {too_long}")
        return end

    def _read_multibulk_count(self) -> int | None:
        end = self._line_end("too big mbulk count string")
        if end is None:
            return None
        count = _parse_int(self._buffer[self._pos + 1 : end])
        limit = (
            self.limits.max_multibulk_len if self.authenticated else UNAUTHENTICATED_MAX_MULTIBULK
        )
        if count is None or count > limit:
            raise ProtocolError("Protocol error: invalid multibulk length")
        self._pos = end + 2
        return count

    def _read_bulks(self) -> bool:
        assert self._pending_words is not None
        limit = self.limits.max_bulk_len if self.authenticated else UNAUTHENTICATED_MAX_BULK
        while len(self._words) < self._pending_words:
            if self._bulk_len is None:
                if self._pos >= len(self._buffer):
                    return False
                marker = self._buffer[self._pos]
                if marker != ord("$"):
                    raise ProtocolError(f"Protocol error: expected '$', got '{chr(marker)}'")
                end = self._line_end("too big bulk count string")
                if end is None:
                    return False
                length = _parse_int(self._buffer[self._pos + 1 : end])
                if length is None or length < 0 or length > limit:
                    raise ProtocolError("Protocol error: invalid bulk length")
                self._pos = end + 2
                self._bulk_len = length
            if len(self._buffer) - self._pos < self._bulk_len + 2:
                return False
            start, stop = self._pos, self._pos + self._bulk_len
            self._words.append(bytes(self._buffer[start:stop]))
            self._pos = stop + 2  # Redis does not check the CRLF after the payload either
            self._bulk_len = None
        return True

    def _read_inline(self) -> list[bytes] | None:
        end = self._buffer.find(b"\n", self._pos)
        if end < 0:
            if len(self._buffer) - self._pos > self.limits.max_inline_len:
                raise ProtocolError("Protocol error: too big inline request")
            return None
        line = bytes(self._buffer[self._pos : end])
        self._pos = end + 1
        if line.endswith(b"\r"):
            line = line[:-1]
        words = split_inline(line)
        if words is None:
            raise ProtocolError("Protocol error: unbalanced quotes in request")
        return words


def _parse_int(raw: bytes | bytearray) -> int | None:
    # Redis's string2ll: optional '-', digits only, no spaces or '+'.
    text = bytes(raw)
    digits = text[1:] if text.startswith(b"-") else text
    if not digits or not digits.isdigit() or len(digits) > 19:
        return None
    return int(text)


_ESCAPES = {ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t", ord("b"): b"\b", ord("a"): b"\a"}
_HEX = b"0123456789abcdefABCDEF"


def split_inline(line: bytes) -> list[bytes] | None:  # noqa: PLR0912 - one small state machine
    """Split an inline command like Redis's ``sdssplitargs``; ``None`` on bad quoting."""
    words: list[bytes] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in b" \t\n\r\v\f":
            i += 1
        if i >= n:
            return words
        word = bytearray()
        quote = 0
        while True:
            if quote == ord('"'):
                if i >= n:
                    return None
                c = line[i]
                if (
                    c == ord("\\")
                    and i + 3 < n
                    and line[i + 1] == ord("x")
                    and (line[i + 2] in _HEX and line[i + 3] in _HEX)
                ):
                    word.append(int(line[i + 2 : i + 4], 16))
                    i += 3
                elif c == ord("\\") and i + 1 < n:
                    i += 1
                    word += _ESCAPES.get(line[i], bytes([line[i]]))
                elif c == ord('"'):
                    if i + 1 < n and line[i + 1] not in b" \t\n\r\v\f":
                        return None  # closing quote must be followed by a space
                    i += 1
                    break
                else:
                    word.append(c)
            elif quote == ord("'"):
                if i >= n:
                    return None
                c = line[i]
                if c == ord("\\") and i + 1 < n and line[i + 1] == ord("'"):
                    i += 1
                    word.append(ord("'"))
                elif c == ord("'"):
                    if i + 1 < n and line[i + 1] not in b" \t\n\r\v\f":
                        return None
                    i += 1
                    break
                else:
                    word.append(c)
            else:
                if i >= n or line[i] in b" \t\n\r\v\f":
                    break
                c = line[i]
                if c in (ord('"'), ord("'")):
                    quote = c
                else:
                    word.append(c)
            i += 1
        words.append(bytes(word))


def encode(reply: Reply, protocol: int = 2) -> bytes:
    """The RESP bytes of one reply (RESP3 when ``protocol`` is 3)."""
    if type(reply) is bytes:  # the most common reply (XADD ids, GET): no dispatch
        return b"$%d\r\n%b\r\n" % (len(reply), reply)
    parts: list[bytes] = []
    _encode_into(reply, protocol, parts)
    return b"".join(parts)


def _encode_into(reply: Reply, protocol: int, out: list[bytes]) -> None:  # noqa: PLR0912
    if reply is None:
        out.append(b"_\r\n" if protocol == 3 else b"$-1\r\n")
    elif isinstance(reply, bytes):
        out.append(b"$%d\r\n%b\r\n" % (len(reply), reply))
    elif isinstance(reply, SimpleString):
        out.append(b"+%b\r\n" % _one_line(reply))
    elif isinstance(reply, bool):
        out.append((b"#t\r\n" if reply else b"#f\r\n") if protocol == 3 else b":%d\r\n" % reply)
    elif isinstance(reply, int):
        out.append(b":%d\r\n" % reply)
    elif isinstance(reply, float):
        text = format_double(reply).encode()
        out.append(b",%b\r\n" % text if protocol == 3 else b"$%d\r\n%b\r\n" % (len(text), text))
    elif isinstance(reply, ErrorReply):
        out.append(b"-%b\r\n" % _one_line(reply.message))
    elif isinstance(reply, NullArray):
        out.append(b"_\r\n" if protocol == 3 else b"*-1\r\n")
    elif isinstance(reply, MapReply):
        if protocol == 3:
            out.append(b"%%%d\r\n" % len(reply.items))
        else:
            out.append(b"*%d\r\n" % (2 * len(reply.items)))
        for key, value in reply.items:
            _encode_into(key, protocol, out)
            _encode_into(value, protocol, out)
    elif isinstance(reply, list):
        out.append(b"*%d\r\n" % len(reply))
        for item in reply:
            _encode_into(item, protocol, out)
    else:
        raise TypeError(f"cannot encode {type(reply).__name__} as RESP")


def _one_line(text: str) -> bytes:
    # A simple string or error cannot carry CR/LF: they would end the frame early.
    return text.replace("\r", " ").replace("\n", " ").encode()


def format_double(value: float) -> str:
    """A score as Redis 7.0 prints it (``%.17g``; ``inf``/``-inf``)."""
    if value == float("inf"):
        return "inf"
    if value == float("-inf"):
        return "-inf"
    return f"{value:.17g}"


__all__ = [
    "ParserLimits",
    "ProtocolError",
    "RequestParser",
    "encode",
    "format_double",
    "split_inline",
]
