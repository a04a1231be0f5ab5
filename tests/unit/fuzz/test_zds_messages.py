"""Fuzz ZDS, the agent -> ztunnel pod handover: packets as `decode` and `recv` read them, workload infos, hello
acks, and ztunnel's handling of each decoded message.

Packets are built from the real message shapes with fields of the wrong type, identities that are not DNS names,
missing or extra fds, invalid UTF-8, JSON nested past any recursion limit, NaN, huge numbers. For any of them:
- `decode` returns a message of a known type with the fds that type needs, or raises `ZdsError` (nothing else:
  both ends catch only that, and anything else ends the session);
- `recv` over a real SEQPACKET socket closes every fd of a packet it refuses;
- `WorkloadInfo.from_wire` accepts only valid namespaces and service accounts (they make the SPIFFE ID);
- ztunnel's `_apply` never raises, answers None or the reason, and closes every fd it was handed.
"""

from __future__ import annotations

import array
import json
import math
import os
import socket
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from meshlet_contracts import zds as protocol
from meshlet_contracts.identity import DNS_LABEL, DNS_SUBDOMAIN
from tests.unit.fuzz import fuzz_settings
from ztunnel.inpod.client import ZdsClient

DEEP = b"[" * 60_000  # below MAX_MESSAGE, far past the JSON parser's recursion limit

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)  # fmt: skip
names = st.one_of(
    st.sampled_from(["web", "default", "a" * 64, "a" * 254, "Web", "web\n", "wеb", "-web", "web.", "a..b", "", "ns/x"]),
    st.text(max_size=10),
)


@st.composite
def workloads(draw: st.DrawFn) -> Any:
    info: dict[str, Any] = {
        "name": draw(names),
        "namespace": draw(names),
        "serviceAccount": draw(names),
        "ips": draw(st.one_of(st.lists(st.sampled_from(["10.0.0.1", "fd00::1", "x", ""]), max_size=3), json_values)),
    }
    for key in draw(st.lists(st.sampled_from(sorted(info)), max_size=2)):
        info[key] = draw(json_values)  # the wrong type, or gone
        if draw(st.booleans()):
            del info[key]
    return info if draw(st.integers(0, 9)) else draw(json_values)


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from([*protocol.MESSAGE_TYPES, "unknown", ""]))
    message: dict[str, Any] = {"type": kind}
    if draw(st.booleans()):
        message["uid"] = draw(st.one_of(st.text(max_size=10), json_values))
    if draw(st.booleans()):
        message["workload"] = draw(workloads())
    for key in draw(st.lists(st.sampled_from(["version", "error", "by", "pid", "started", "type"]), max_size=2)):
        message[key] = draw(json_values)
    return message


@st.composite
def packets(draw: st.DrawFn) -> bytes:
    """A packet: a message as the agent encodes it, or damaged, or not JSON at all."""
    choice = draw(st.integers(0, 9))
    if choice < 6:
        return json.dumps(draw(messages())).encode()
    if choice == 6:
        raw = bytearray(json.dumps(draw(messages())).encode())
        for _ in range(draw(st.integers(1, 4))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
        return bytes(raw)
    if choice == 7:
        return draw(st.sampled_from([DEEP, b"{" * 5000, b'{"type":' * 3000, b"\xff\xfe", b"", b"NaN", b"1" * 5000]))
    return draw(st.binary(max_size=200))


def decoded_or_refused(data: bytes, fds: list[int]) -> dict[str, Any] | None:
    try:
        message = protocol.decode(data, fds)
    except protocol.ZdsError as exc:
        assert str(exc)
        return None
    assert message["type"] in protocol.MESSAGE_TYPES
    assert len(fds) == (1 if message["type"] in protocol.WITH_FD else 0)
    return message


@fuzz_settings(300)
@given(data=packets(), fd_count=st.sampled_from([0, 0, 1, 2]))
@example(data=DEEP, fd_count=0)  # found by this fuzzer: RecursionError, not ZdsError, ended the session
@example(data=b'{"type":"add_workload","uid":"u","workload":' + b"[" * 50_000, fd_count=1)
def test_decode_accepts_a_known_message_or_raises_zds_error(data: bytes, fd_count: int) -> None:
    decoded_or_refused(data, list(range(100, 100 + fd_count)))


@fuzz_settings(100)
@given(data=packets(), with_fd=st.booleans())
@example(data=DEEP, with_fd=True)
def test_recv_closes_the_fds_of_a_packet_it_refuses(data: bytes, with_fd: bool) -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b:
        before = _open_fds()
        fd = os.open(os.devnull, os.O_RDONLY)
        try:
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))] if with_fd else []
            a.sendmsg([data], ancillary)
        finally:
            os.close(fd)
        try:
            got = protocol.recv(b)
        except protocol.ZdsError:
            got = None
        received = got[1] if got is not None else []
        for mine in received:
            os.close(mine)  # what the caller owns; anything else must already be closed
            assert _open_fds() == before


def _open_fds() -> set[int]:
    return {int(n) for n in os.listdir("/proc/self/fd")}


@fuzz_settings(300)
@given(info=workloads())
@example(info={"name": "p", "namespace": "ns", "serviceAccount": "web\n", "ips": []})
def test_a_workload_info_is_accepted_only_with_a_valid_identity(info: Any) -> None:
    if not isinstance(info, dict):
        return  # ztunnel passes only dicts (`_apply` checks); anything else is no workload info
    try:
        parsed = protocol.WorkloadInfo.from_wire(info)
    except protocol.ZdsError as exc:
        assert str(exc)
        return
    assert DNS_LABEL.fullmatch(parsed.namespace) and DNS_SUBDOMAIN.fullmatch(parsed.service_account)
    assert all(isinstance(ip, str) for ip in parsed.ips)


@fuzz_settings(200)
@given(
    started=st.one_of(json_values, st.sampled_from([10**400, -(10**400), 1e308, 2**1023])),
    pid=st.one_of(json_values, st.sampled_from([10**400, 0, -1])),
)
@example(started=10**400, pid=1)  # found by this fuzzer: OverflowError in the agent's accept loop, which then died
def test_a_hello_ack_names_a_ztunnel_or_nobody(started: Any, pid: Any) -> None:
    ack = json.loads(json.dumps({"type": "ack", "error": None, "started": started, "pid": pid}))
    who = protocol.ZtunnelId.from_ack(decoded_or_refused(json.dumps(ack).encode(), []) or {})
    if who is not None:
        assert math.isfinite(who.started) and isinstance(who.pid, int)
        assert not (who < who) and who == protocol.ZtunnelId(who.started, who.pid)  # it orders


class _Manager:
    """Takes each netns fd like the real manager (it owns it from then on) and fails on some uids."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def add(self, uid: str, info: protocol.WorkloadInfo | None, netns_fd: int) -> None:
        os.close(netns_fd)
        self.calls.append(f"add {uid}")
        if uid.startswith("x"):
            raise OSError("setns failed")
        if uid.startswith("y"):
            raise RuntimeError("a bug in the manager")

    def delete(self, uid: str) -> None:
        self.calls.append(f"del {uid}")

    def snapshot_done(self) -> None:
        self.calls.append("snapshot")

    def replay_started(self) -> None:
        self.calls.append("replay")


@fuzz_settings(300)
@given(message=messages())
@example(message={"type": "add_workload", "uid": "u", "workload": {"name": "p", "namespace": "NS"}})
def test_ztunnel_applies_a_decoded_message_or_acks_its_reason_and_closes_its_fds(message: dict[str, Any]) -> None:
    before = _open_fds()
    needs_fd = message.get("type") in protocol.WITH_FD
    fds = [os.open(os.devnull, os.O_RDONLY)] if needs_fd else []
    try:
        decoded = decoded_or_refused(json.dumps(message).encode(), list(fds))
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    if decoded is None:
        for fd in fds:
            os.close(fd)
        return
    client = ZdsClient.__new__(ZdsClient)  # only what `_apply` uses: no socket, no event loop
    client.manager = _Manager()  # type: ignore[assignment]
    client.errors, client.last_error = 0, None
    error = client._apply(decoded, list(fds))
    assert error is None or (isinstance(error, str) and error and client.errors == 1)
    assert _open_fds() == before  # every fd closed, by the manager or by `_apply`
