"""`python -m tests.kubeapi --listen HOST:PORT --kubeconfig PATH [--faults HOST:PORT]`: the test API server as a
process of its own.

`meshlet lab up --source kubernetes` runs it as the lab's cluster API: control, the agents and the CLI reach it
over the network like a real kube-apiserver, through the kubeconfig written here once it listens. It serves
until SIGTERM or SIGINT; its state lives in memory (a lab that is taken down starts from a fresh cluster).

`--faults` opens a second, plain HTTP port for tests to inject what a real cluster does to its clients
(`POST /restart`, `/compact`, `/drop-watches`, `/outage?seconds=N`); it is never part of the API itself.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from tests.kubeapi.server import KubeApiServer

MAX_OUTAGE = 120.0


def _fault_server(api: KubeApiServer, address: tuple[str, int]) -> ThreadingHTTPServer:
    lock = threading.Lock()  # one fault at a time: an outage and a restart must not interleave

    class Faults(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            answer: dict[str, object] = {"fault": url.path}
            with lock:
                if url.path == "/restart":
                    api.restart(keep_state=True)
                elif url.path == "/compact":
                    api.compact()
                elif url.path == "/drop-watches":
                    answer["dropped"] = api.drop_watches(abrupt="abrupt" in query)
                elif url.path == "/outage":
                    seconds = min(float(query.get("seconds", ["1"])[0]), MAX_OUTAGE)
                    api.down()
                    time.sleep(seconds)
                    api.up()
                else:
                    self.send_error(404, "faults: /restart, /compact, /drop-watches, /outage?seconds=N")
                    return
            body = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's name)
            print(f"fault {format % args}", flush=True)

    server = ThreadingHTTPServer(address, Faults)
    threading.Thread(target=server.serve_forever, name="kubeapi-faults", daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tests.kubeapi", description="the test Kubernetes API server")
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0: any free port)")
    p.add_argument("--kubeconfig", type=Path, required=True, help="written once the server listens")
    p.add_argument("--faults", help="HOST:PORT of the fault-injection port (tests only)")
    p.add_argument("--bookmark-interval", type=float, default=10.0, help="seconds between watch bookmarks")
    args = p.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with KubeApiServer(host=host or "127.0.0.1", port=int(port), bookmark_interval=args.bookmark_interval) as api:
        faults = None
        if args.faults:
            fhost, _, fport = args.faults.rpartition(":")
            faults = _fault_server(api, (fhost or "127.0.0.1", int(fport)))
        api.write_kubeconfig(args.kubeconfig)
        print(f"kube-apiserver (test) listening on {api.url}", flush=True)
        stop.wait()
        if faults is not None:
            faults.shutdown()


if __name__ == "__main__":
    main()
