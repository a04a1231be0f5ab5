"""A served pod that control has not named yet (the agent handed its netns over first): where a policy selects by
label, its labels decide, so its connections are refused until the config names it, never let through because a
DENY policy could not match unknown labels. Where no policy looks at labels, it is served at once."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from tests.integration.ztunnel.conftest import StartApp
from tests.integration.ztunnel.served import POD, ServedNode, mesh
from ztunnel.rbac import UNKNOWN_LABELS

pytestmark = pytest.mark.asyncio
TIMEOUT = 20.0


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


def _policy(name: str, action: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": POD.namespace},
        "spec": {"action": action, **spec},
    }


DENY_SERVER = _policy("deny-server", "DENY", {"selector": {"matchLabels": {"app": "server"}}, "rules": [{}]})
ALLOW_ALL = _policy("allow-all", "ALLOW", {"rules": [{}]})


async def _answered(source: ServedNode, authority: str) -> bool:
    async with asyncio.timeout(TIMEOUT), source.captured(authority) as (reader, writer):
        writer.write(b"ping")
        try:
            return await reader.readexactly(4) == b"ping"
        except (ConnectionResetError, asyncio.IncompleteReadError):
            return False


async def test_a_pod_a_label_policy_denies_is_refused_before_the_config_names_it_and_after(
    source: ServedNode, destination: ServedNode, apps: StartApp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ztunnel.proxy.delivery")
    app = await apps(echo)
    destination.ctx.index = mesh(policies=[DENY_SERVER], without=[POD])
    assert not await _answered(source, app.authority)  # before the fix: answered, the DENY could not match
    assert UNKNOWN_LABELS in caplog.text
    destination.ctx.index = mesh(policies=[DENY_SERVER])
    assert not await _answered(source, app.authority)  # now denied by the policy itself
    assert app.accepted == 0
    assert destination.ctx.metrics.decisions[("inbound", "deny")] == 2


async def test_a_pod_no_policy_selects_by_label_is_served_before_the_config_names_it(
    source: ServedNode, destination: ServedNode, apps: StartApp
) -> None:
    app = await apps(echo)
    destination.ctx.index = mesh(policies=[ALLOW_ALL], without=[POD])
    assert await _answered(source, app.authority)
    destination.ctx.index = mesh(without=[POD])
    assert await _answered(source, app.authority)
    assert app.accepted == 2
