"""The HTTP/1 message layer: llhttp (httptools) strictness against request smuggling, events, and the heads and
chunks the proxy writes (hop-by-hop headers dropped, trailers filtered)."""

from __future__ import annotations

import httptools
import pytest

from ztunnel.l7.messages import (
    BadMessage,
    Head,
    RequestParser,
    ResponseParser,
    end_to_end,
    last_chunk,
    local_response,
)

SMUGGLING = {
    "content-length with transfer-encoding": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "two content-lengths": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "two equal content-lengths": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "chunked not last": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "two transfer-encodings": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n"
    ),
    "obs-fold": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
    "bare LF line ends": b"GET / HTTP/1.1\nHost: x\n\n",
    "bare LF in headers": b"GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n",
    "NUL in a value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "CR in a value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
    "space before the colon": b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
    "content-length not a number": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5a\r\n\r\n",
    "negative content-length": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "chunk without its CRLF": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX0\r\n\r\n",
    "HTTP/0.9": b"GET /\r\n\r\n",
    "two hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "HTTP/1.1 without host": b"GET / HTTP/1.1\r\nX: y\r\n\r\n",
    "unknown version": b"GET / HTTP/1.2\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("data", SMUGGLING.values(), ids=SMUGGLING.keys())
def test_smuggling_shapes_are_400(data: bytes) -> None:
    parser = RequestParser()
    with pytest.raises(BadMessage) as refused:
        parser.feed(data)
        parser.feed(b"")  # an error after complete events (a body piece) is raised once those are taken
    assert refused.value.status == 400
    assert str(refused.value)


@pytest.mark.parametrize("split", [1, 7, 30])
def test_smuggling_refused_when_split_across_reads(split: int) -> None:
    data = SMUGGLING["content-length with transfer-encoding"]
    parser = RequestParser()
    with pytest.raises(BadMessage):
        parser.feed(data[:split])
        parser.feed(data[split:])


def test_requests_before_a_bad_one_in_the_same_read_are_served_first() -> None:
    parser = RequestParser()
    events = parser.feed(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost x\r\n\r\n")
    assert [kind for kind, _ in events] == ["head", "end"]
    with pytest.raises(BadMessage) as refused:
        parser.feed(b"GET /c HTTP/1.1\r\n\r\n")
    assert refused.value.status == 400 and parser.failed is refused.value


def test_other_transfer_codings_are_501() -> None:
    # The proxy re-frames bodies per hop: a coding beside chunked would be lost on the way.
    with pytest.raises(BadMessage) as refused:
        RequestParser().feed(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n")
    assert refused.value.status == 501


def test_llhttp_leniencies_are_off_by_default() -> None:
    # httptools only relaxes llhttp when asked; the proxy never asks. A parser left as constructed refuses
    # what a lenient one would take.
    lenient = httptools.HttpRequestParser(object())
    lenient.set_dangerous_leniencies(lenient_headers=True)
    lenient.feed_data(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n")
    with pytest.raises(BadMessage):
        RequestParser().feed(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n")


def test_pipelined_requests_with_bodies_are_separate_events() -> None:
    data = (
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        b"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n"
        b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    parser = RequestParser()
    events = [event for i in range(len(data)) for event in parser.feed(data[i : i + 1])]  # one byte at a time
    heads = [value for kind, value in events if kind == "head"]
    assert [h.target for h in heads if isinstance(h, Head)] == ["/a", "/b", "/c"]
    body = [(kind, value) for kind, value in events if kind in ("body", "end")]
    assert b"".join(v for k, v in body[:4] if k == "body" and isinstance(v, bytes)) == b"abc"
    assert (b"X-T", b"1") in [t for k, v in body if k == "end" and isinstance(v, list) for t in v]
    a, b, c = heads
    assert isinstance(a, Head) and isinstance(b, Head) and isinstance(c, Head)
    assert (a.content_length, a.chunked, b.chunked, c.has_body) == (3, False, True, False)


def test_head_over_the_limit_is_431_before_it_ends() -> None:
    parser = RequestParser(max_head=1024)
    parser.feed(b"GET / HTTP/1.1\r\nHost: x\r\n")
    with pytest.raises(BadMessage) as refused:
        parser.feed(b"X-Big: " + b"a" * 2000)
    assert refused.value.status == 431


def test_http10_keep_alive_only_when_asked() -> None:
    (_, plain), _ = RequestParser().feed(b"GET / HTTP/1.0\r\n\r\n")
    (_, asked), _ = RequestParser().feed(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    (_, close), _ = RequestParser().feed(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert isinstance(plain, Head) and isinstance(asked, Head) and isinstance(close, Head)
    assert (plain.keep_alive, asked.keep_alive, close.keep_alive) == (False, True, False)


def test_responses_without_bodies_and_interim_ones() -> None:
    parser = ResponseParser()
    parser.expect("GET")
    events = parser.feed(
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n"
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"
    )
    assert [k for k, _ in events] == ["head", "end", "head", "end", "head", "end", "head", "body", "end"]
    parser.expect("HEAD")
    events = parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    assert [k for k, _ in events] == ["head", "end"]  # no body whatever Content-Length says
    parser.expect("GET")
    events = parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert events[1] == ("body", b"ok")


def test_close_delimited_response_keeps_no_connection() -> None:
    parser = ResponseParser()
    parser.expect("GET")
    (_, head), *_ = parser.feed(b"HTTP/1.1 200 OK\r\n\r\nsome")
    assert isinstance(head, Head)
    assert (head.keep_alive, head.content_length, head.chunked) == (False, None, False)


def test_hop_by_hop_headers_are_dropped_including_connection_named() -> None:
    head = Head(
        "1.1",
        [
            (b"Host", b"x"),
            (b"Connection", b"keep-alive, X-Secret"),
            (b"X-Secret", b"1"),
            (b"Keep-Alive", b"timeout=5"),
            (b"TE", b"trailers"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Upgrade", b"websocket"),
            (b"Proxy-Connection", b"keep-alive"),
            (b"Trailer", b"X-T"),
            (b"X-Kept", b"yes"),
        ],
    )
    assert end_to_end(head) == [b"Host: x\r\n", b"X-Kept: yes\r\n"]
    assert end_to_end(head, frozenset({b"x-kept"})) == [b"Host: x\r\n"]


def test_trailers_never_carry_framing_fields() -> None:
    trailers = [(b"X-Checksum", b"abc"), (b"Content-Length", b"3"), (b"Transfer-Encoding", b"chunked")]
    assert last_chunk(trailers) == b"0\r\nX-Checksum: abc\r\n\r\n"
    assert last_chunk([]) == b"0\r\n\r\n"


def test_local_response_for_head_has_length_but_no_body() -> None:
    full = local_response(403, "RBAC: access denied", close=False)
    head_only = local_response(403, "RBAC: access denied", close=True, head_only=True)
    assert full.endswith(b"\r\n\r\nRBAC: access denied")
    assert head_only.endswith(b"content-length: 19\r\nconnection: close\r\n\r\n")


@pytest.mark.parametrize(
    "framing, body",
    [(b"Content-Length: 5", b"hello"), (b"Transfer-Encoding: chunked", b"2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n")],
)
def test_upgrade_request_resumed_as_plain_parses_its_body_and_what_follows(framing: bytes, body: bytes) -> None:
    parser = RequestParser()
    events = parser.feed(
        b"POST / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: h2c\r\n" + framing + b"\r\n\r\n"
    )
    (_, head), *_ = events
    assert isinstance(head, Head) and head.upgrade
    parser.resume_plain(head)
    events = parser.feed(body + b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"".join(v for k, v in events if k == "body" and isinstance(v, bytes)) == b"hello"
    kinds = [k for k, _ in events]
    assert kinds[-3:] == ["end", "head", "end"] and kinds.count("head") == 1
