"""The Python floor for c=1: the least a Python mTLS relay pair can do, to compare ztunnel's hops with.

One side of a TCP <-> mTLS relay in the shape of the HAProxy pair (haproxy.py): the client side listens on
127.0.0.1 in the client pod and dials the server side over TLS 1.3 with its certificate; the server side
terminates mTLS (a client certificate required) and dials the app on 127.0.0.1. Nothing else: no HTTP/2, no
redirection, no policy, no metrics; uvloop and asyncio Protocols with TCP_NODELAY, as ztunnel runs, one
connection upstream per connection downstream. What ztunnel spends per request above this pair is meshlet's
own path; what this pair spends above HAProxy is Python and its event loop.

    python tests/bench/tls_relay.py client --listen 127.0.0.1:10081 --to 10.244.1.3:9444 --certs DIR
    python tests/bench/tls_relay.py server --listen 0.0.0.0:9444 --to 127.0.0.1:8081 --certs DIR
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import uvloop

if __package__ in (None, ""):  # run as a script in a pod: the repository is not on the path
    sys.path.insert(0, str(Path(__file__).parents[2]))
from tests.bench.haproxy import make_certs  # noqa: E402
from tests.bench.lab import BenchError, Lab, stop  # noqa: E402

CLIENT_PORT = 10081
"""Where the client side listens in the client pod (127.0.0.1); HAProxy's is 10080."""
SERVER_PORT = 9444
SERVER_NAME = "bench-server"
"""The name in the server certificate haproxy.make_certs issues."""


class Half(asyncio.Protocol):
    """One socket of a relayed connection; what it reads goes to its peer's transport."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: Half | None = None
        self.early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)
        else:
            self.early.append(data)

    def eof_received(self) -> bool:
        # TLS has no half-close (asyncio would ignore a True here): either side's end closes both.
        if self.peer is not None and self.peer.transport is not None and not self.peer.transport.is_closing():
            self.peer.transport.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None and not self.peer.transport.is_closing():
            self.peer.transport.close()


class Downstream(Half):
    """An accepted connection: dials the upstream and relays both ways once it answers."""

    def __init__(self, to: tuple[str, int], tls: ssl.SSLContext | None) -> None:
        super().__init__()
        self.to, self.tls = to, tls

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        asyncio.get_running_loop().create_task(self._dial())

    async def _dial(self) -> None:
        loop = asyncio.get_running_loop()
        name = SERVER_NAME if self.tls is not None else None
        try:
            _, up = await loop.create_connection(Half, *self.to, ssl=self.tls, server_hostname=name)
        except OSError:
            if self.transport is not None:
                self.transport.abort()
            return
        up.peer, self.peer = self, up
        for chunk in self.early:
            assert up.transport is not None
            up.transport.write(chunk)
        self.early.clear()


def _contexts(role: str, certs: Path) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    """(context for accepting, context for dialing): TLS 1.3 with the peer verified on the mTLS side."""
    purpose = ssl.Purpose.SERVER_AUTH if role == "client" else ssl.Purpose.CLIENT_AUTH
    ctx = ssl.create_default_context(purpose, cafile=str(certs / "ca.pem"))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(str(certs / f"{role}.crt"), str(certs / f"{role}.key"))
    if role == "server":
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx, None
    return None, ctx


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def serve(role: str, listen: tuple[str, int], to: tuple[str, int], certs: Path) -> None:
    accept_tls, dial_tls = _contexts(role, certs)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Downstream(to, dial_tls), *listen, ssl=accept_tls, backlog=4096)
    print(f"listening on {listen[0]}:{listen[1]}", flush=True)
    await server.serve_forever()


def start_pair(
    lab: Lab, client_pod: str, server_pod: str, server_ip: str, app_port: int, workdir: Path
) -> tuple[subprocess.Popen[str], subprocess.Popen[str]]:
    """(client side, server side) running in the two pods, each listening once this returns."""
    make_certs(workdir)
    started: list[subprocess.Popen[str]] = []
    try:
        for pod, argv in (
            (server_pod, ["server", "--listen", f"0.0.0.0:{SERVER_PORT}", "--to", f"127.0.0.1:{app_port}"]),
            (client_pod, ["client", "--listen", f"127.0.0.1:{CLIENT_PORT}", "--to", f"{server_ip}:{SERVER_PORT}"]),
        ):
            proc = lab.spawn(pod, [sys.executable, __file__, *argv, "--certs", str(workdir)], stdout=subprocess.PIPE)
            started.append(proc)
            assert proc.stdout is not None
            if not proc.stdout.readline().startswith("listening"):  # it exited: the line is empty
                raise BenchError(f"tls_relay.py {argv[0]} in {pod} did not start (exit code {proc.wait(10)})")
    except BaseException:
        for proc in started:
            stop(proc)
        raise
    return started[1], started[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tls_relay.py", description=__doc__.split("\n\n")[0])
    p.add_argument("role", choices=["client", "server"])
    p.add_argument("--listen", type=_address, required=True, help="HOST:PORT to accept on")
    p.add_argument("--to", type=_address, required=True, help="HOST:PORT to dial")
    p.add_argument("--certs", type=Path, required=True, help="haproxy.make_certs' directory")
    args = p.parse_args(argv)
    uvloop.run(serve(args.role, args.listen, args.to, args.certs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
