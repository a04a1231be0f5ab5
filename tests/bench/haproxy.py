"""Scenarios B and F: the sidecar-style mTLS tunnel a user would otherwise set up, as a pair of HAProxy processes.

client pod:  app -> 127.0.0.1:10080 (haproxy) == TLS 1.3, client certificate ==>
server pod:  :9443 (haproxy: mTLS termination, client certificate required) -> 127.0.0.1:8081 (nginx)

B runs both in `mode tcp` (the L4 reference); F runs both in `mode http` (the L7 reference for meshlet's
L7 scenario E): each side parses every request and response, keeps its client connections alive and
reuses idle server-side connections across client connections (`http-reuse always`), as a mesh's L7
proxy pools its upstream connections. Same certificates and topology for both.

Same key type and TLS version as meshlet (ECDSA P-256 certificates from one CA, TLS 1.3 only), and both
sides verify the peer (the client also checks the server's name, as ztunnel checks the SPIFFE ID). Each
haproxy runs one thread (`nbthread 1`), as ztunnel runs one event loop: CPU per request compares like
for like.
"""

from __future__ import annotations

import resource
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.bench.lab import BenchError, Lab, wait_alive

CLIENT_PORT = 10080
"""Where the client-side haproxy listens in the client pod (127.0.0.1)."""
SERVER_PORT = 9443
"""Where the server-side haproxy terminates mTLS in the server pod."""
SERVER_NAME = "bench-server"

MAXCONN = 30000


def maxconn(open_files: int) -> int:
    """30,000, or what the open files limit allows: haproxy needs two descriptors per proxied connection
    (and refuses to start when it cannot raise its limit far enough; raising the hard limit takes
    CAP_SYS_RESOURCE, which a sandbox may not grant)."""
    return max(1, min(MAXCONN, (open_files - 200) // 2))


_GLOBAL = """\
global
  nbthread 1
  maxconn {maxconn}
  ssl-default-bind-options ssl-min-ver TLSv1.3
  ssl-default-server-options ssl-min-ver TLSv1.3

defaults
  mode {mode}
  maxconn {maxconn}
  timeout connect 5s
  timeout client 600s
  timeout server 600s
{http_defaults}"""

_HTTP_DEFAULTS = """\
  option http-keep-alive
  timeout http-keep-alive 600s
  timeout http-request 600s
"""
MODES = ("tcp", "http")

_CLIENT = """\
frontend app
  bind 127.0.0.1:{listen}
  default_backend tunnel

backend tunnel
{reuse}  server peer {server_ip}:{server_port} ssl crt {dir}/client.pem ca-file {dir}/ca.pem verify required \
ssl-min-ver TLSv1.3 verifyhost {name} sni str({name})
"""

_SERVER = """\
frontend tunnel
  bind :{server_port} ssl crt {dir}/server.pem ca-file {dir}/ca.pem verify required ssl-min-ver TLSv1.3
  default_backend app

backend app
{reuse}  server nginx 127.0.0.1:{app_port}
"""
_REUSE = "  http-reuse always\n"


@dataclass(frozen=True, slots=True)
class Pair:
    """The two running haproxy processes."""

    client: subprocess.Popen[str]
    server: subprocess.Popen[str]


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise BenchError(f"openssl {args[0]} failed: {proc.stderr.strip()[-300:]}")


def make_certs(workdir: Path) -> None:
    """A CA, and a server and a client certificate it signs; ECDSA P-256 keys; haproxy's PEM bundles.
    Made once per work directory, so B and F use the same ones."""
    if (workdir / "client.pem").exists():
        return
    ec = ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out"]
    _openssl(*ec, "ca.key", cwd=workdir)
    _openssl(
        "req",
        "-x509",
        "-new",
        "-key",
        "ca.key",
        "-subj",
        "/CN=meshlet-bench-ca",
        "-days",
        "2",
        "-out",
        "ca.pem",
        cwd=workdir,
    )
    for role, usage in (("server", "serverAuth"), ("client", "clientAuth")):
        ext = workdir / f"{role}.ext"
        ext.write_text(f"subjectAltName=DNS:bench-{role}\nextendedKeyUsage={usage}\n")
        _openssl(*ec, f"{role}.key", cwd=workdir)
        _openssl("req", "-new", "-key", f"{role}.key", "-subj", f"/CN=bench-{role}", "-out", f"{role}.csr", cwd=workdir)
        _openssl(
            "x509", "-req", "-in", f"{role}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", ext.name, "-out", f"{role}.crt", cwd=workdir,
        )  # fmt: skip
        pem = (workdir / f"{role}.crt").read_text() + (workdir / f"{role}.key").read_text()
        (workdir / f"{role}.pem").write_text(pem)


def _global(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"haproxy mode {mode!r}: expected one of {MODES}")
    return _GLOBAL.format(
        mode=mode,
        maxconn=maxconn(resource.getrlimit(resource.RLIMIT_NOFILE)[0]),
        http_defaults=_HTTP_DEFAULTS if mode == "http" else "",
    )


def client_config(workdir: Path, server_ip: str, mode: str = "tcp") -> str:
    client = _CLIENT.format(
        listen=CLIENT_PORT,
        server_ip=server_ip,
        server_port=SERVER_PORT,
        dir=workdir,
        name=SERVER_NAME,
        reuse=_REUSE if mode == "http" else "",
    )
    return _global(mode) + "\n" + client


def server_config(workdir: Path, app_port: int, mode: str = "tcp") -> str:
    server = _SERVER.format(
        server_port=SERVER_PORT, dir=workdir, app_port=app_port, reuse=_REUSE if mode == "http" else ""
    )
    return _global(mode) + "\n" + server


def _start(lab: Lab, pod: str, workdir: Path, role: str, text: str) -> subprocess.Popen[str]:
    """`role` names the files: haproxy-<role>.cfg and .log in the work directory."""
    conf = workdir / f"haproxy-{role}.cfg"
    conf.write_text(text)
    check = subprocess.run(["haproxy", "-c", "-q", "-f", str(conf)], capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        raise BenchError(f"haproxy {role} config refused: {(check.stderr or check.stdout).strip()[-400:]}")
    log = open(workdir / f"haproxy-{role}.log", "w")  # the child keeps its own copy of the fd
    # -db: stay in the foreground, one process, so the PID we hold is the proxy whose CPU and RSS we read
    proc = lab.spawn(pod, ["haproxy", "-db", "-f", str(conf)], stderr=log, stdout=log)
    log.close()
    wait_alive(proc, f"haproxy {role} in {pod} (see {workdir}/haproxy-{role}.log)")
    return proc


def start_pair(
    lab: Lab, client_pod: str, server_pod: str, server_ip: str, app_port: int, workdir: Path, mode: str = "tcp"
) -> Pair:
    """Certificates, then the server side, then the client side; the caller checks the path answers.
    `mode` is haproxy's: "tcp" (scenario B) or "http" (scenario F)."""
    make_certs(workdir)
    server = _start(lab, server_pod, workdir, f"server-{mode}", server_config(workdir, app_port, mode))
    try:
        client = _start(lab, client_pod, workdir, f"client-{mode}", client_config(workdir, server_ip, mode))
    except BaseException:
        server.terminate()
        server.wait(10)
        raise
    return Pair(client=client, server=server)
