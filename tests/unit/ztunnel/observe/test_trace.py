"""W3C traceparent parsing (invalid means absent), child spans, and x-request-id."""

from __future__ import annotations

import re
import uuid

import pytest

from ztunnel.observe.trace import TraceContext, child, parse, request_id

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{PARENT}-01"


def test_a_valid_header_is_read() -> None:
    assert parse(VALID) == TraceContext(TRACE, PARENT, "", "01")
    assert parse(f" {VALID} ") == TraceContext(TRACE, PARENT, "", "01")  # optional whitespace around the value
    assert parse(f"00-{TRACE}-{PARENT}-00") == TraceContext(TRACE, PARENT, "", "00")  # not sampled


def test_a_later_version_is_read_and_its_extra_fields_ignored() -> None:
    assert parse(f"cc-{TRACE}-{PARENT}-01-what-comes-next") == TraceContext(TRACE, PARENT, "", "01")


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "garbage",
        f"00-{'0' * 32}-{PARENT}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        f"00-{TRACE.upper()}-{PARENT}-01",  # upper case hex
        f"00-{TRACE[:-1]}-{PARENT}-01",  # short trace id
        f"00-{TRACE}-{PARENT}0-01",  # long parent id
        f"ff-{TRACE}-{PARENT}-01",  # version ff is invalid
        f"00-{TRACE}-{PARENT}-01-extra",  # version 00 has exactly four fields
        f"00-{TRACE}-{PARENT}-1",
        f"0-{TRACE}-{PARENT}-01",
    ],
)
def test_an_invalid_header_reads_as_absent(value: str | None) -> None:
    assert parse(value) is None


def test_a_child_continues_the_trace_with_a_new_span() -> None:
    incoming = parse(VALID)
    ours = child(incoming)
    assert (ours.trace_id, ours.parent_id, ours.flags) == (TRACE, PARENT, "01")
    assert re.fullmatch(r"[0-9a-f]{16}", ours.span_id) and ours.span_id != PARENT
    assert ours.header() == f"00-{TRACE}-{ours.span_id}-01"
    assert parse(ours.header()) == TraceContext(TRACE, ours.span_id, "", "01")  # the next hop reads it back


def test_without_an_incoming_trace_a_new_sampled_root_starts() -> None:
    roots = [child(None) for _ in range(100)]
    for root in roots:
        assert re.fullmatch(r"[0-9a-f]{32}", root.trace_id) and root.trace_id != "0" * 32
        assert re.fullmatch(r"[0-9a-f]{16}", root.span_id)
        assert (root.parent_id, root.flags) == ("", "01")
        assert parse(root.header()) is not None
    assert len({r.trace_id for r in roots}) == 100


def test_a_request_id_is_kept_or_made() -> None:
    assert request_id("abc-123") == "abc-123"
    made = {request_id(None) for _ in range(10)} | {request_id("")}
    assert len(made) == 11
    assert all(uuid.UUID(m).version == 4 for m in made)
