"""A load generator for the churn test: many short mTLS connections to a ztunnel's HBONE port (15008).

python -m tests.e2e.churn_client HOST PORT COUNT --cert CHAIN_AND_KEY.pem --root ROOT.pem [--procs N] ...

Run inside a lab netns (the test starts it with nsenter). Each connection is what a short-lived HBONE
client does up to its first stream: TCP connect, TLS 1.3 handshake with a workload certificate and ALPN
h2, the HTTP/2 preface, then reading until ztunnel's own SETTINGS arrive, which it sends only once it
accepted the connection (handshake verified, peer identity checked); then close. Every `--full-every`-th
handshake is a full one (certificates both ways), the others resume that one's TLS session, which halves
ztunnel's CPU per connection and so doubles the rate a test can afford on a small machine. Prints one
JSON line: how many connections were accepted, failed, resumed, and the first errors.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import socket
import ssl
import sys
import time
from dataclasses import asdict, dataclass, field

CONNECT_TIMEOUT = 10.0
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000")  # + an empty SETTINGS
KEPT_ERRORS = 5


@dataclass(frozen=True)
class Job:
    host: str
    port: int
    count: int
    cert: str
    root: str
    full_every: int
    deadline: float
    """time.time() after which no new connection is made."""


@dataclass
class Outcome:
    accepted: int = 0
    failed: int = 0
    resumed: int = 0
    errors: list[str] = field(default_factory=list)
    """The first few, for the test's message."""


def context(job: Job) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False  # a SPIFFE identity is a URI SAN; the chain is still verified against the root
    ctx.load_verify_locations(job.root)
    ctx.load_cert_chain(job.cert)
    ctx.set_alpn_protocols(["h2"])
    return ctx


def one(ctx: ssl.SSLContext, job: Job, session: ssl.SSLSession | None) -> ssl.SSLSocket:
    """One accepted connection, still open; raises if ztunnel did not accept it."""
    sock = socket.create_connection((job.host, job.port), timeout=CONNECT_TIMEOUT)
    try:
        tls = ctx.wrap_socket(sock, session=session)
        tls.sendall(PREFACE)
        if not tls.recv(64):  # ztunnel's SETTINGS: sent only by a connection it accepted
            raise ConnectionError("closed by ztunnel before its HTTP/2 preface")
    except BaseException:
        sock.close()
        raise
    return tls


def worker(job: Job) -> Outcome:
    ctx = context(job)
    out = Outcome()
    session: ssl.SSLSession | None = None
    for i in range(job.count):
        if time.time() > job.deadline:
            break
        full = i % job.full_every == 0 or session is None
        try:
            tls = one(ctx, job, None if full else session)
        except (OSError, ssl.SSLError) as exc:
            out.failed += 1
            if len(out.errors) < KEPT_ERRORS:
                out.errors.append(repr(exc))
            continue
        out.accepted += 1
        out.resumed += bool(tls.session_reused)
        if full:
            session = tls.session  # its tickets came with the server's first record, read above
        tls.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.e2e.churn_client")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("count", type=int, help="connections in all (split among the processes)")
    p.add_argument("--cert", required=True, help="PEM: the client's chain, then its key")
    p.add_argument("--root", required=True, help="PEM: the mesh root")
    p.add_argument("--procs", type=int, default=4)
    p.add_argument("--full-every", type=int, default=10, help="every Nth handshake is a full one")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds before no new connection is made")
    args = p.parse_args(argv)
    deadline = time.time() + args.timeout
    shares = [args.count // args.procs + (i < args.count % args.procs) for i in range(args.procs)]
    jobs = [Job(args.host, args.port, n, args.cert, args.root, args.full_every, deadline) for n in shares]
    started = time.monotonic()
    with multiprocessing.get_context("fork").Pool(args.procs) as pool:
        results = pool.map(worker, jobs)
    total = Outcome(
        accepted=sum(r.accepted for r in results),
        failed=sum(r.failed for r in results),
        resumed=sum(r.resumed for r in results),
        errors=[e for r in results for e in r.errors][:KEPT_ERRORS],
    )
    print(json.dumps({**asdict(total), "seconds": round(time.monotonic() - started, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
