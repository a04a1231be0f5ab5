"""The workloads' server: nginx in a server pod on :8081, serving a 1 KB body and a 100 MB file.

In the eBPF lab it also listens on :8082, the target of the HTTP service port scenario E calls, so that
no HTTP service port ever targets :8081, which the L4 scenarios call (see services.py).

One worker process (the machine has two cores, and the client and proxies need them too), enough file
descriptors and connections for 10,000 held connections, keep-alive without practical limits, idle
connections kept for ten minutes. Everything it writes (pid, error log) stays in the work directory.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.bench.lab import Lab, wait_alive

PORT = 8081
L7_PORT = 8082
"""The same server, reached by scenario E through a Service port named `http`."""
SMALL_PATH, SMALL_BYTES = "/1k", 1024
BULK_PATH, BULK_BYTES = "/100m", 100 * 1024 * 1024

_CONFIG = """\
worker_processes 1;
worker_rlimit_nofile 30000;
pid {dir}/nginx-{name}.pid;
error_log {dir}/nginx-{name}.error.log warn;
events {{ worker_connections 20000; }}
http {{
  access_log off;
  client_body_temp_path {dir}/nginx-tmp;
  proxy_temp_path {dir}/nginx-tmp;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000000;
  keepalive_timeout 600s;
  client_header_timeout 600s;
  default_type application/octet-stream;
  server {{
{listen}    location = {small} {{ alias {dir}/1k.bin; }}
    location = {bulk} {{ alias {dir}/100m.bin; }}
  }}
}}
"""


def write_site(workdir: Path) -> None:
    """The two bodies: 1 KB and 100 MB of incompressible bytes (a 1 MB random block repeated)."""
    (workdir / "1k.bin").write_bytes(os.urandom(SMALL_BYTES))
    block = os.urandom(1024 * 1024)
    with open(workdir / "100m.bin", "wb") as f:
        for _ in range(BULK_BYTES // len(block)):
            f.write(block)
    (workdir / "nginx-tmp").mkdir(exist_ok=True)
    for path in workdir.iterdir():
        path.chmod(0o755 if path.is_dir() else 0o644)  # nginx's worker runs as nobody


def config(workdir: Path, name: str, ports: tuple[int, ...] = (PORT,)) -> str:
    listen = "".join(f"    listen {port} backlog=4096;\n" for port in ports)
    return _CONFIG.format(dir=workdir, name=name, listen=listen, small=SMALL_PATH, bulk=BULK_PATH)


def start(lab: Lab, pod: str, workdir: Path, ports: tuple[int, ...] = (PORT,)) -> subprocess.Popen[str]:
    """Start nginx in `pod` (foreground, so its PID is ours to stop), listening on `ports`; the caller
    checks it answers."""
    conf = workdir / f"nginx-{pod}.conf"
    conf.write_text(config(workdir, pod, ports))
    log = open(workdir / f"nginx-{pod}.stderr", "w")  # the child keeps its own copy of the fd
    proc = lab.spawn(
        pod, ["nginx", "-c", str(conf), "-e", str(workdir / f"nginx-{pod}.error.log"), "-g", "daemon off;"], stderr=log
    )
    log.close()
    wait_alive(proc, f"nginx in {pod} (see {workdir}/nginx-{pod}.error.log)")
    return proc
