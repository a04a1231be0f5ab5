"""The HTTP/1 proxy session on loopback, between real clients (curl, raw sockets, wsproto) and the sample app.

A trivial router stands in for the mesh: every request goes to the app, kept-alive upstreams are pooled,
`/admin*` is denied. What the mesh adds (policies, endpoints, HBONE) is tested with the real proxy elsewhere;
here it is HTTP: keep-alive, pipelining, bodies both ways with backpressure, 100-continue, HEAD, upgrades,
and the answers to bad input (400, 431, 408) without harm to the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest
import wsproto
import wsproto.events

from tests.conftest import wait_for
from tests.integration.ztunnel.session_front import session_front
from ztunnel.l7.channel import Channel
from ztunnel.l7.exchange import Exchange, Limits, Reply, Untried, Upstream, UpstreamFailed
from ztunnel.l7.session import Session
from ztunnel.l7.upstreams import UpstreamPool, new_upstream
from ztunnel.proxy.relay import TcpSide

pytestmark = pytest.mark.asyncio


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def app_port() -> Iterator[int]:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "meshlet.lab.app",
            "--pod",
            "app",
            "--namespace",
            "t",
            "--node",
            "n",
            "--listen",
            "127.0.0.1",
            "--port",
            str(port),
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: socket.create_connection(("127.0.0.1", port), timeout=0.2).close() or True, 10, "app")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@dataclass
class AppRouter(Untried):
    """Every request to the app; `/admin*` denied; records what `done` saw."""

    port: int
    pool: UpstreamPool = field(default_factory=UpstreamPool)
    done_list: list[Exchange] = field(default_factory=list)
    opened: int = 0

    def admit(self, exchange: Exchange) -> Reply | None:
        if exchange.head.target.startswith("/admin"):
            return Reply(403, "RBAC: access denied", "DENY")
        return None

    async def connect(self, exchange: Exchange, fresh: bool) -> Upstream:
        key = ("app", self.port)
        if not fresh:
            kept = self.pool.take(key)
            if kept is not None:
                return kept
        upstream, channel = new_upstream(f"127.0.0.1:{self.port}", key)
        try:
            _, side = await asyncio.get_running_loop().create_connection(
                lambda: TcpSide(channel), "127.0.0.1", self.port
            )
        except OSError as exc:
            raise UpstreamFailed(Reply(503, "upstream connect error", "UF", str(exc))) from None
        self.opened += 1
        channel.attach(side)
        return upstream

    def release(self, upstream: Upstream, reusable: bool) -> None:
        self.pool.put(upstream, reusable)

    def done(self, exchange: Exchange) -> None:
        self.done_list.append(exchange)


@dataclass
class Proxy:
    port: int
    router: AppRouter
    sessions: set[asyncio.Task[None]]


@contextlib.asynccontextmanager
async def proxy(app_port: int, limits: Limits | None = None) -> AsyncIterator[Proxy]:
    router = AppRouter(app_port)
    try:
        async with session_front(router, limits) as (port, tasks):
            yield Proxy(port, router, tasks)
    finally:
        router.pool.close()


async def curl(*args: str) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-m", "20", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out, err


async def raw_exchange(port: int, data: bytes, until: bytes, timeout: float = 10.0) -> bytes:
    """Send `data` on one connection and read until `until` has been seen `until_count` times or the end."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        got = b""
        async with asyncio.timeout(timeout):
            while until not in got:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                got += chunk
        return got
    finally:
        writer.close()


async def test_keep_alive_requests_and_denial_on_one_connection(app_port: int) -> None:
    async with proxy(app_port) as p:
        base = f"http://127.0.0.1:{p.port}"
        code, out, err = await curl("-w", "\\n%{http_code} %{num_connects}\\n", f"{base}/public/a", f"{base}/admin/x",
                                    f"{base}/public/b")  # fmt: skip
        assert code == 0, err
        text = out.decode()
        assert "RBAC: access denied" in text
        assert [line.split()[0] for line in text.splitlines() if line[:1].isdigit() and " " in line] == [
            "200",
            "403",
            "200",
        ]
        # One client connection for the three requests (num_connects counts new ones), one upstream connection.
        assert text.count(" 1\n") == 1
        assert p.router.opened == 1
        assert [e.status for e in p.router.done_list] == [200, 403, 200]
        assert p.router.done_list[1].flags == "DENY"


async def test_pipelined_requests_are_answered_in_order(app_port: int) -> None:
    async with proxy(app_port) as p:
        paths = [f"/public/{i}" for i in range(20)]
        data = b"".join(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for path in paths)
        got = await raw_exchange(p.port, data + b"GET /public/last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                                 b"/public/last")  # fmt: skip
        order = [int(part.split(b'"')[0]) for part in got.split(b"/public/")[1:] if part[:1].isdigit()]
        assert order == list(range(20))


async def test_upload_and_download_stream_through(app_port: int, tmp_path: os.PathLike[str]) -> None:
    size = 64 * 1024 * 1024 + 7
    async with proxy(app_port) as p:
        base = f"http://127.0.0.1:{p.port}"
        code, out, err = await curl("-o", "/dev/null", "-w", "%{size_download}", f"{base}/bytes?n={size}")
        assert (code, out) == (0, str(size).encode()), err
        path = f"{tmp_path}/up"
        with open(path, "wb") as f:
            f.write(os.urandom(1 << 20) * 20)
        with open(path, "rb") as f:
            expected = hashlib.sha256(f.read()).hexdigest()
        # A Content-Length upload (curl sends `Expect: 100-continue` for a body this large), then a chunked one.
        code, out, err = await curl("--data-binary", f"@{path}", f"{base}/sha256")
        assert code == 0, err
        assert json.loads(out)["sha256"] == expected
        code, out, err = await curl("-T", path, "-H", "Transfer-Encoding: chunked", f"{base}/upload")
        assert code == 0, err
        assert json.loads(out)["sha256"] == expected


async def test_head_and_status_codes(app_port: int) -> None:
    async with proxy(app_port) as p:
        base = f"http://127.0.0.1:{p.port}"
        code, out, err = await curl("-I", "-w", "%{http_code}", f"{base}/bytes?n=100")
        assert code == 0, err
        assert out.endswith(b"200")
        assert b"100" in out.lower().split(b"content-length:")[1][:8]
        code, out, err = await curl("-o", "/dev/null", "-w", "%{http_code}", f"{base}/status/503")
        assert (code, out) == (0, b"503"), err


async def test_bad_requests_get_400_and_431_and_the_proxy_serves_on(app_port: int) -> None:
    async with proxy(app_port, Limits(max_head=4096)) as p:
        got = await raw_exchange(p.port, b"GET / HTTP/1.1\r\nHost x\r\n\r\n", b"\r\n\r\n")
        assert got.startswith(b"HTTP/1.1 400 "), got
        assert b"invalid header token" in got
        got = await raw_exchange(p.port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n",
                                 b"\r\n\r\n")  # fmt: skip
        assert got.startswith(b"HTTP/1.1 431 "), got
        code, out, err = await curl("-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{p.port}/healthz")
        assert (code, out) == (0, b"200"), err
        assert [e.status for e in p.router.done_list] == [400, 431, 200]


async def test_slow_headers_get_408(app_port: int) -> None:
    async with proxy(app_port, Limits(header_timeout=0.5)) as p:
        got = await raw_exchange(p.port, b"GET / HTTP/1.1\r\nHost: x\r\n", b"\r\n\r\n")
        assert got.startswith(b"HTTP/1.1 408 "), got


async def test_websocket_upgrade_echoes_frames(app_port: int) -> None:
    async with proxy(app_port) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        writer.write(ws.send(wsproto.events.Request(host="x", target="/ws")))
        events: list[object] = []
        messages: list[str] = []
        async with asyncio.timeout(10):
            while not any(isinstance(e, wsproto.events.AcceptConnection) for e in events):
                ws.receive_data(await reader.read(65536))
                events.extend(ws.events())
            for i in range(3):
                writer.write(ws.send(wsproto.events.TextMessage(data=f"hello {i}")))
            while len(messages) < 3:
                ws.receive_data(await reader.read(65536))
                messages.extend(e.data for e in ws.events() if isinstance(e, wsproto.events.TextMessage))
        assert messages == ["hello 0", "hello 1", "hello 2"]
        writer.close()
        assert p.router.done_list == [] or p.router.done_list[0].status == 101


async def test_upstream_down_is_503_uf() -> None:
    async with proxy(_free_port()) as p:
        code, out, err = await curl("-w", "%{http_code}", f"http://127.0.0.1:{p.port}/")
        assert code == 0, err
        assert out.endswith(b"503")
        assert p.router.done_list[0].flags == "UF"


async def test_http2_prior_knowledge_is_handed_back(app_port: int) -> None:
    router = AppRouter(app_port)
    down = Channel()
    session = Session(down, router, Limits())
    down.write(b"PRI * HTTP/2.0\r\n")
    task = asyncio.get_running_loop().create_task(session.run())
    await asyncio.sleep(0)
    assert not task.done()  # part of the preface: waiting for the rest
    down.write(b"\r\nSM\r\n\r\n\x00\x00")
    handed = await asyncio.wait_for(task, 5)
    assert handed is not None and b"".join(handed).startswith(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
