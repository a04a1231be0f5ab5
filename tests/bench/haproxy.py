"""Scenario B: the sidecar-style mTLS tunnel a user would otherwise set up, as a pair of HAProxy processes.

client pod:  app -> 127.0.0.1:10080 (haproxy, mode tcp) == TLS 1.3, client certificate ==>
server pod:  :9443 (haproxy: mTLS termination, client certificate required) -> 127.0.0.1:8081 (nginx)

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
  mode tcp
  maxconn {maxconn}
  timeout connect 5s
  timeout client 600s
  timeout server 600s
"""

_CLIENT = """\
frontend app
  bind 127.0.0.1:{listen}
  default_backend tunnel

backend tunnel
  server peer {server_ip}:{server_port} ssl crt {dir}/client.pem ca-file {dir}/ca.pem verify required \
ssl-min-ver TLSv1.3 verifyhost {name} sni str({name})
"""

_SERVER = """\
frontend tunnel
  bind :{server_port} ssl crt {dir}/server.pem ca-file {dir}/ca.pem verify required ssl-min-ver TLSv1.3
  default_backend app

backend app
  server nginx 127.0.0.1:{app_port}
"""


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
    """A CA, and a server and a client certificate it signs; ECDSA P-256 keys; haproxy's PEM bundles."""
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


def _global() -> str:
    return _GLOBAL.format(maxconn=maxconn(resource.getrlimit(resource.RLIMIT_NOFILE)[0]))


def client_config(workdir: Path, server_ip: str) -> str:
    client = _CLIENT.format(
        listen=CLIENT_PORT, server_ip=server_ip, server_port=SERVER_PORT, dir=workdir, name=SERVER_NAME
    )
    return _global() + "\n" + client


def server_config(workdir: Path, app_port: int) -> str:
    return _global() + "\n" + _SERVER.format(server_port=SERVER_PORT, dir=workdir, app_port=app_port)


def _start(lab: Lab, pod: str, workdir: Path, role: str, text: str) -> subprocess.Popen[str]:
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


def start_pair(lab: Lab, client_pod: str, server_pod: str, server_ip: str, app_port: int, workdir: Path) -> Pair:
    """Certificates, then the server side, then the client side; the caller checks the path answers."""
    make_certs(workdir)
    server = _start(lab, server_pod, workdir, "server", server_config(workdir, app_port))
    try:
        client = _start(lab, client_pod, workdir, "client", client_config(workdir, server_ip))
    except BaseException:
        server.terminate()
        server.wait(10)
        raise
    return Pair(client=client, server=server)
