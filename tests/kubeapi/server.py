"""An in-process Kubernetes API server for tests: an aiohttp app on 127.0.0.1 in a thread of its own.

`KubeApiServer` starts it (a context manager), hands out a configured official `kubernetes` client, and gives
tests the faults a real cluster has: `restart(keep_state=...)` (same port; every connection and watch is cut),
`drop_watches()`, `compact()` (older resourceVersions answer 410). Tests seed and inspect state through
`server.store` and register tokens through `server.tokens`; both are thread-safe.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.kubeapi import errors, handlers, proxy, resources, token_requests
from tests.kubeapi.handlers import Target
from tests.kubeapi.store import Store
from tests.kubeapi.tokens import Tokens

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _parse(store: Store, segments: list[str], group: str, version: str) -> Target:
    """Map the path after /api/v1 or /apis/<group>/<version> to a resource, namespace, name, subresource."""
    namespace: str | None = None
    if len(segments) >= 3 and segments[0] == "namespaces" and segments[2] not in ("status", "finalize"):
        namespace, segments = segments[1], segments[2:]
    if not segments or len(segments) > 3:
        raise errors.ApiError("NotFound", "the server could not find the requested resource")
    rt = store.find(group, version, segments[0])
    if namespace is not None and not rt.namespaced:
        raise errors.ApiError("NotFound", "the server could not find the requested resource")
    name = segments[1] if len(segments) > 1 else None
    sub = segments[2] if len(segments) > 2 else None
    if sub is not None and not (sub == "status" and rt.status):
        raise errors.ApiError("NotFound", "the server could not find the requested resource")
    if rt.namespaced and name is not None and namespace is None:
        raise errors.ApiError("NotFound", "the server could not find the requested resource")
    return Target(rt, namespace, name, sub)


class KubeApiServer:
    """The server and its thread. Use as `with KubeApiServer() as api: api.core_v1().list_namespace()`."""

    def __init__(
        self,
        history: int = 1000,
        bookmark_interval: float = 60.0,
        bearer_token: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.host = host  # a lab binds its host address, so node network namespaces reach it
        self.bearer_token = bearer_token  # when set, requests without `Authorization: Bearer <it>` get 401
        self.store = Store(history=history)
        self.tokens = Tokens(self.store)
        self.bookmark_interval = bookmark_interval
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kubeapi", daemon=True)
        self._runner: web.AppRunner | None = None
        # (method, path_qs) of the latest requests, for assertions such as "the agent used a fieldSelector"
        self.requests: deque[tuple[str, str]] = deque(maxlen=10_000)
        # (verb, group, resource) a SelfSubjectAccessReview answers "not allowed" for; everything else is allowed
        self.denied: set[tuple[str, str, str]] = set()
        self.version: dict[str, str] = dict(resources.VERSION)  # GET /version; a test may pose as another release

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # ---- lifecycle ----
    def start(self) -> KubeApiServer:
        if not self._thread.is_alive():
            self._thread.start()
        self._run(self._serve())
        return self

    def stop(self) -> None:
        if self._runner is not None:
            self._run(self._shutdown())
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop.close()

    def down(self) -> None:
        """An outage: every watch is cut mid-stream, connections close, new ones are refused until `up()`."""
        self._run(self._shutdown())

    def up(self, keep_state: bool = True) -> None:
        """Serve again on the same port. Without `keep_state` the cluster is fresh (default namespaces only)
        and its resourceVersions continue above the old ones, so every older one answers 410 Expired."""
        if not keep_state:
            self.store = Store(history=self.store.history_size, start_rv=self.store.resource_version + 1)
            self.tokens = Tokens(self.store)
        self._run(self._serve())

    def restart(self, keep_state: bool = True) -> None:
        """`down()` then `up()`: what clients see when kube-apiserver restarts (or etcd is wiped)."""
        self.down()
        self.up(keep_state)

    def drop_watches(self, abrupt: bool = False) -> int:
        """End every open watch stream; returns how many there were. See `Store.drop_watches`."""
        return self.store.drop_watches(abrupt)

    def compact(self) -> None:
        self.store.compact()

    def __enter__(self) -> KubeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- clients ----
    def api_client(self) -> Any:
        """An official `kubernetes.client.ApiClient` pointed at this server."""
        import kubernetes

        config = kubernetes.client.Configuration()
        config.host = self.url
        if self.bearer_token is not None:
            config.api_key = {"authorization": self.bearer_token}
            config.api_key_prefix = {"authorization": "Bearer"}
        return kubernetes.client.ApiClient(config)

    def write_kubeconfig(self, path: Path, token: str | None = None) -> Path:
        """A kubeconfig for this server (as a user's `~/.kube/config`), for processes and the CLI."""
        user: dict[str, Any] = {"token": token or self.bearer_token or "meshlet-test"}
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kubeapi", "cluster": {"server": self.url}}],
            "users": [{"name": "admin", "user": user}],
            "contexts": [{"name": "kubeapi", "context": {"cluster": "kubeapi", "user": "admin"}}],
            "current-context": "kubeapi",
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc))
        path.chmod(0o600)
        return path

    def core_v1(self) -> Any:
        import kubernetes

        return kubernetes.client.CoreV1Api(self.api_client())

    def custom_objects(self) -> Any:
        import kubernetes

        return kubernetes.client.CustomObjectsApi(self.api_client())

    # ---- the loop side ----
    def _run(self, coro: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)  # type: ignore[arg-type]

    async def _serve(self) -> None:
        app = web.Application(middlewares=[self._errors])
        app.router.add_get("/version", self._version)
        app.router.add_get("/version/", self._version)  # the official client asks with the slash
        app.router.add_get("/api", self._api)
        app.router.add_route("*", "/api/{tail:.*}", self._core)
        app.router.add_get("/apis", self._apis)
        app.router.add_route("*", "/apis/{tail:.*}", self._groups)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def _shutdown(self) -> None:
        self.store.drop_watches(abrupt=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        if self.bearer_token is not None and request.headers.get("Authorization") != f"Bearer {self.bearer_token}":
            body = errors.status("Unauthorized", "Unauthorized")
            return web.json_response(body, status=401)
        try:
            return await handler(request)
        except errors.ApiError as exc:
            return web.json_response(exc.body, status=exc.code)
        except web.HTTPNotFound:
            body = errors.status("NotFound", "the server could not find the requested resource")
            return web.json_response(body, status=404)

    async def _version(self, _request: web.Request) -> web.StreamResponse:
        return _json(self.version)

    async def _api(self, _request: web.Request) -> web.StreamResponse:
        return _json(resources.core_versions(f"127.0.0.1:{self.port}"))

    async def _apis(self, _request: web.Request) -> web.StreamResponse:
        return _json(resources.group_list(list(self.store.types.values())))

    async def _core(self, request: web.Request) -> web.StreamResponse:
        segments = [s for s in request.match_info["tail"].split("/") if s]
        if segments == ["v1"]:
            types = [t for t in self.store.types.values() if t.group == ""]
            return _json(token_requests.with_discovery(resources.resource_list("v1", types)))
        if not segments or segments[0] != "v1":
            raise errors.ApiError("NotFound", "the server could not find the requested resource")
        if token_requests.is_token_request(segments[1:]):
            if request.method != "POST":
                raise errors.ApiError(
                    "MethodNotAllowed", "the server does not allow this method on the requested resource"
                )
            body = await handlers.read_json(request)
            answer = token_requests.request_token(self.store, self.tokens, segments[2], segments[4], body)
            return _json(answer, 201)
        if proxy.is_service_proxy(segments[1:]):
            return await proxy.service_proxy(self.store, request, segments[1:])
        return await self._resource(request, _parse(self.store, segments[1:], "", "v1"))

    async def _groups(self, request: web.Request) -> web.StreamResponse:
        segments = [s for s in request.match_info["tail"].split("/") if s]
        types = list(self.store.types.values())
        if len(segments) == 1:
            versions = [t.version for t in types if t.group == segments[0]]
            if not versions:
                raise errors.ApiError("NotFound", "the server could not find the requested resource")
            return _json(resources.api_group(segments[0], list(dict.fromkeys(versions))))
        group, version = segments[0], segments[1]
        if len(segments) == 2:
            served = [t for t in types if t.group == group and t.version == version]
            if not served:
                raise errors.ApiError("NotFound", "the server could not find the requested resource")
            return _json(resources.resource_list(f"{group}/{version}", served))
        if (group, version, segments[2:]) == ("authentication.k8s.io", "v1", ["tokenreviews"]):
            if request.method != "POST":
                raise errors.ApiError(
                    "MethodNotAllowed", "the server does not allow this method on the requested resource"
                )
            return _json(self.tokens.review(await handlers.read_json(request)), 201)
        if (group, version, segments[2:]) == ("authorization.k8s.io", "v1", ["selfsubjectaccessreviews"]):
            if request.method != "POST":
                raise errors.ApiError(
                    "MethodNotAllowed", "the server does not allow this method on the requested resource"
                )
            return _json(proxy.access_review(await handlers.read_json(request), self.denied), 201)
        return await self._resource(request, _parse(self.store, segments[2:], group, version))

    async def _resource(self, request: web.Request, t: Target) -> web.StreamResponse:
        method = request.method
        if t.rt.verbs == ("create",):  # a virtual resource (TokenReview) is answered elsewhere or not at all
            raise errors.ApiError("MethodNotAllowed", "the server does not allow this method on the requested resource")
        if t.name is None:
            if method == "GET":
                if request.query.get("watch") in ("true", "1", "True"):
                    return await handlers.watch(self.store, request, t, self.bookmark_interval)
                return _json(handlers.list_objects(self.store, request, t))
            if method == "POST":
                return _json(*await handlers.create(self.store, request, t))
        else:
            if method == "GET":
                return _json(self.store.get(t.rt, t.namespace or "", t.name))
            if method == "PUT":
                return _json(await handlers.replace(self.store, request, t))
            if method == "PATCH":
                return _json(*await handlers.patch(self.store, request, t))
            if method == "DELETE" and t.subresource is None:
                return _json(await handlers.delete(self.store, request, t))
        raise errors.ApiError("MethodNotAllowed", "the server does not allow this method on the requested resource")


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status)
