"""The hiredis fast path of the request parser is invisible: for any byte stream, cut
anywhere, it yields the same commands and raises the same protocol errors (Redis's
texts) at the same point as the pure-Python parser."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.resp import protocol
from gateway.resp.protocol import ParserLimits, ProtocolError, RequestParser

LIMITS = ParserLimits(max_bulk_len=64, max_multibulk_len=8, max_inline_len=128)
Outcome = tuple[list[list[bytes]], str | None, int]

pytestmark = pytest.mark.skipif(protocol.hiredis is None, reason="hiredis is not installed")


def run(chunks: list[bytes], *, fast: bool) -> Outcome:
    """Commands until the first error (or the end), the error, and what stays buffered."""
    parser = RequestParser(LIMITS)
    parser.fast = fast
    commands: list[list[bytes]] = []
    try:
        for chunk in chunks:
            parser.feed(chunk)
            while (command := parser.next_command()) is not None:
                commands.append(command)
    except ProtocolError as error:
        return commands, error.message, -1
    return commands, None, parser.buffered


def frame(words: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%b\r\n" % (len(w), w) for w in words)


words = st.lists(st.binary(max_size=80), max_size=10)
pieces = st.one_of(
    words.map(frame),  # canonical frames (some over the limits)
    st.sampled_from(
        [
            b"PING\r\n",
            b"*0\r\n",
            b"*-1\r\n",
            b"*1\r\n+OK\r\n",
            b"*1\r\n:5\r\n",
            b"*1\r\n$-1\r\n",
            b"*2\r\n$03\r\nGET\r\n$1\r\nk\r\n",
            b"*1\r\n$+4\r\nPING\r\n",
            b"*1\r\n=8\r\ntxt:abcd\r\n",
            b"*1\r\n*1\r\n$1\r\na\r\n",
            b"*1\r\n$4\r\nPINGxy",
            b'SET k "v\r\n',
        ]
    ),
    st.binary(max_size=12),
)


@settings(max_examples=400, deadline=None)
@given(parts=st.lists(pieces, max_size=12), cuts=st.lists(st.integers(0, 2000), max_size=6))
def test_fast_path_changes_nothing(parts: list[bytes], cuts: list[int]) -> None:
    data = b"".join(parts)
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    chunks = [data[a:b] for a, b in itertools.pairwise(points)]
    assert run(chunks, fast=True) == run(chunks, fast=False)


def test_pipelines_take_the_fast_path() -> None:
    parser = RequestParser(LIMITS)
    batch = b"".join(frame([b"XADD", b"k", b"*", b"f", b"%d" % n]) for n in range(50))
    parser.feed(batch + b"*1\r\n$4\r\nPI")  # the last frame is still arriving
    assert parser.next_command() == [b"XADD", b"k", b"*", b"f", b"0"]
    assert len(parser._ready) == 49  # parsed ahead, in C
    for n in range(1, 50):
        assert parser.next_command() == [b"XADD", b"k", b"*", b"f", b"%d" % n]
    assert parser.next_command() is None
    parser.feed(b"NG\r\n")
    assert parser.next_command() == [b"PING"]
    assert parser.buffered == 0
