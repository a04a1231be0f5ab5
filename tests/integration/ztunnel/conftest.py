"""Fixtures of the data-path integration tests: two real node proxies on loopback (a source and a destination
node, each serving one pod) sharing one socket factory, a test CA, and apps standing in for the pods' own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio

from control.ca import CertificateAuthority
from tests.integration.ztunnel.loopback import (
    CLIENT_ID,
    SERVER_ID,
    TD,
    App,
    Handler,
    LoopbackSockets,
    workload_certificate,
)
from tests.integration.ztunnel.served import CLIENT_POD, ServedNode

StartApp = Callable[[Handler], Awaitable[App]]


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(tmp_path_factory.mktemp("mesh-ca"), TD)


@pytest.fixture
def sockets() -> LoopbackSockets:
    """The socket factory both nodes of a test share (one loopback stands for the network)."""
    return LoopbackSockets()


@pytest_asyncio.fixture
async def destination(ca: CertificateAuthority, sockets: LoopbackSockets) -> AsyncIterator[ServedNode]:
    """The server pod's node: its 15008 and the app behind it."""
    node = ServedNode(workload_certificate(ca, SERVER_ID), sockets=sockets)
    try:
        yield await node.start()
    finally:
        await node.close()


@pytest_asyncio.fixture
async def node(ca: CertificateAuthority, sockets: LoopbackSockets) -> AsyncIterator[ServedNode]:
    """The client pod's node, alone (its endpoints are apps on loopback, reached through the socket map)."""
    served = ServedNode(workload_certificate(ca, CLIENT_ID), pod=CLIENT_POD, sockets=sockets)
    try:
        yield await served.start()
    finally:
        await served.close()


@pytest_asyncio.fixture
async def source(
    ca: CertificateAuthority, sockets: LoopbackSockets, destination: ServedNode
) -> AsyncIterator[ServedNode]:
    """The client pod's node: its 15001 captures the client app's connections."""
    node = ServedNode(workload_certificate(ca, CLIENT_ID), pod=CLIENT_POD, sockets=sockets)
    try:
        yield await node.start()
    finally:
        await node.close()


@pytest_asyncio.fixture
async def apps() -> AsyncIterator[StartApp]:
    """Starts apps on loopback for a test; all of them are closed after it."""
    started: list[App] = []

    async def start(handler: Handler) -> App:
        app = await App(handler).start()
        started.append(app)
        return app

    try:
        yield start
    finally:
        for app in started:
            await app.close()
    assert [e for app in started for e in app.errors] == []
