"""Where a node's agent, ztunnel and control answer, and small blocking HTTP clients for them.

On a node: the agent's status socket (`/var/run/meshlet/agent.sock`) and ztunnel's admin on
`127.0.0.1:15000`, both in the CLI's own netns. Against the local lab, `--node` picks a lab node: its
agent socket lives under the lab directory, and ztunnel's admin is reached by opening the TCP socket
inside the node's netns (admin listens on localhost only, by design). Errors say which socket or
address was tried and what to do about it.
"""

from __future__ import annotations

import http.client
import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.status import read_status
from meshlet.lab import mesh
from meshlet.lab.state import LabState, known_labs
from meshlet_contracts.netns import entered

DEFAULT_AGENT_SOCKET = Path("/var/run/meshlet/agent.sock")
DEFAULT_ADMIN = ("127.0.0.1", 15000)
TIMEOUT = 3.0


class EndpointError(RuntimeError):
    """A component did not answer; the message names where we looked and what to try."""


@dataclass(frozen=True, slots=True)
class NodeEndpoints:
    node: str | None
    agent_socket: Path
    admin: tuple[str, int]
    netns: str | None = None
    """The lab node's netns name, when the node is a lab node."""
    lab: str | None = None
    control_url: str | None = None
    control_metrics: str | None = None
    credential_dir: Path | None = None


def resolve(lab_id: str | None, node: str | None, agent_socket: Path | None, lab_named: bool = False) -> NodeEndpoints:
    """The endpoints of `node`: a lab node when the lab exists (the first node by default), else this host. A lab
    the user named (`--lab`, MESHLET_LAB) must exist: asking this host's node instead would answer another
    question than the one asked."""
    state = LabState.load(lab_id) if lab_id else None
    if state is None and lab_named and agent_socket is None:
        labs = known_labs()
        there = f"labs here: {', '.join(labs)}" if labs else "no lab is up here (`meshlet lab up`)"
        raise EndpointError(f"no lab {lab_id!r}; {there}")
    if state is None or agent_socket is not None:
        if node is not None and agent_socket is None:
            raise EndpointError(
                f"--node {node}: no lab {lab_id!r} is up to find it in; on a cluster node run meshlet there "
                "(or pass --agent-socket)"
            )
        return NodeEndpoints(node, agent_socket or DEFAULT_AGENT_SOCKET, DEFAULT_ADMIN)
    names = [n.name for n in state.plan.nodes]
    chosen = node or names[0]
    if chosen not in names:
        raise EndpointError(f"no node {chosen!r} in lab {state.plan.lab_id!r}; nodes: {', '.join(names)}")
    plan_node = state.plan.node(chosen)
    return NodeEndpoints(
        node=chosen,
        agent_socket=mesh.node_run_dir(state, chosen) / "agent.sock",
        admin=DEFAULT_ADMIN,
        netns=plan_node.netns,
        lab=state.plan.lab_id,
        control_url=state.plan.control_url,
        control_metrics=state.plan.control_metrics,
        credential_dir=mesh.node_credential_dir(state, chosen),
    )


def lab_nodes(lab_id: str | None) -> list[str] | None:
    """The node names of lab `lab_id`, None when no such lab is up."""
    state = LabState.load(lab_id) if lab_id else None
    return None if state is None else [n.name for n in state.plan.nodes]


def _get(conn: http.client.HTTPConnection, path: str, method: str = "GET") -> tuple[int, bytes]:
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def agent_status(ep: NodeEndpoints) -> dict[str, Any]:
    try:
        return read_status(ep.agent_socket, TIMEOUT)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise EndpointError(
            f"the agent did not answer on {ep.agent_socket} ({exc}); is it running on this node? "
            + (
                f"the lab is up: start it again with `meshlet lab --id {ep.lab} restart {ep.node} agent`"
                if ep.lab
                else "check the meshlet DaemonSet pod on this node"
            )
        ) from None


def ztunnel_get(ep: NodeEndpoints, path: str) -> tuple[int, bytes]:
    """GET `path` from ztunnel's admin (inside the lab node's netns when there is one)."""
    return ztunnel_request(ep, "GET", path)


def ztunnel_request(ep: NodeEndpoints, method: str, path: str) -> tuple[int, bytes]:
    """`method` `path` on ztunnel's admin (inside the lab node's netns when there is one): (status, body)."""
    where = f"{ep.admin[0]}:{ep.admin[1]}" + (f" in netns {ep.netns}" if ep.netns else "")
    try:
        if ep.netns is not None:
            with entered(f"/var/run/netns/{ep.netns}"):
                sock = socket.create_connection(ep.admin, timeout=TIMEOUT)
        else:
            sock = socket.create_connection(ep.admin, timeout=TIMEOUT)
        conn = http.client.HTTPConnection(*ep.admin, timeout=TIMEOUT)
        conn.sock = sock
        return _get(conn, path, method)
    except (OSError, http.client.HTTPException) as exc:
        again = f"; start it again with `meshlet lab --id {ep.lab} restart {ep.node} ztunnel`" if ep.lab else ""
        raise EndpointError(
            f"ztunnel's admin did not answer on {where} ({exc}); is ztunnel running on node {ep.node or 'here'}?"
            + again
        ) from None


def control_status(ep: NodeEndpoints) -> dict[str, Any] | None:
    """Control's /debug/status (its store's version and every error in it); None where control's operator port is
    not known (a node outside a lab: there it is the cluster's `meshlet-control` Service)."""
    if not ep.control_metrics:
        return None
    host, _, port = ep.control_metrics.removeprefix("http://").rpartition(":")
    try:
        return _json(_get(http.client.HTTPConnection(host, int(port), timeout=TIMEOUT), "/debug/status"), "control")
    except (OSError, http.client.HTTPException) as exc:
        raise EndpointError(f"control did not answer on {ep.control_metrics} ({exc}); is it running?") from None


def _json(answer: tuple[int, bytes], who: str) -> dict[str, Any]:
    status, body = answer
    if status != 200:
        raise EndpointError(f"{who} answered HTTP {status}")
    result: dict[str, Any] = json.loads(body)
    return result


def config_dump(ep: NodeEndpoints) -> dict[str, Any]:
    return _json(ztunnel_get(ep, "/config_dump"), "ztunnel's /config_dump")
