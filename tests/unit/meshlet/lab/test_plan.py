"""Lab planning: names fit the kernel's limits, labs never share a name or a subnet, bad input is named."""

from __future__ import annotations

import ipaddress
import itertools

import pytest

from meshlet.lab.plan import MAX_NODES, MAX_SLOTS, LabPlan, PlanError, plan_lab


def test_two_by_two_lab_has_both_namespaces_on_every_node() -> None:
    plan = plan_lab("demo", 0, 2, 2)
    assert [n.name for n in plan.nodes] == ["node1", "node2"]
    for node in plan.nodes:
        assert {p.namespace for p in plan.pods if p.node == node.name} == {"mesh", "plain"}
    assert {s.namespace for s in plan.services} == {"mesh", "plain"}


def test_pod_ips_are_inside_their_nodes_cidr_and_unique() -> None:
    plan = plan_lab("demo", 3, 4, 5)
    for pod in plan.pods:
        node = plan.node(pod.node)
        assert ipaddress.ip_address(pod.ip) in ipaddress.ip_network(node.pod_cidr)
        assert pod.ip != node.gateway
    assert len({p.ip for p in plan.pods}) == len(plan.pods)


def test_interface_names_fit_in_ifnamsiz() -> None:
    plan = plan_lab("abcdefgh", MAX_SLOTS - 1, MAX_NODES, 26)
    names = [plan.bridge] + [n.host_link for n in plan.nodes] + [p.node_link for p in plan.pods]
    assert max(len(n) for n in names) <= 15


def test_labs_in_different_slots_share_no_name_or_subnet() -> None:
    a, b = plan_lab("a", 0, MAX_NODES, 3), plan_lab("ab", 1, MAX_NODES, 3)

    def host_names(plan: LabPlan) -> set[str]:
        return (
            {plan.bridge, plan.cgroup}
            | {n.netns for n in plan.nodes}
            | {n.host_link for n in plan.nodes}
            | {x.netns for x in plan.pods}
        )

    assert not host_names(a) & host_names(b)
    nets_a = [a.underlay, a.service_cidr, *(n.pod_cidr for n in a.nodes)]
    nets_b = [b.underlay, b.service_cidr, *(n.pod_cidr for n in b.nodes)]
    for x, y in itertools.product(nets_a, nets_b):
        assert not ipaddress.ip_network(x).overlaps(ipaddress.ip_network(y)), (x, y)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("Demo", 0, 2, 2), "lab id 'Demo' is invalid"),
        (("toolongid9", 0, 2, 2), "is invalid"),
        (("demo", 0, 0, 2), "--nodes 0"),
        (("demo", 0, MAX_NODES + 1, 2), f"--nodes {MAX_NODES + 1}"),
        (("demo", 0, 2, 0), "--pods-per-node 0"),
        (("demo", MAX_SLOTS, 2, 2), "slot"),
    ],
)
def test_bad_input_is_named(args: tuple[str, int, int, int], message: str) -> None:
    with pytest.raises(PlanError, match=message):
        plan_lab(*args)


def test_bad_redirect_mode_is_named() -> None:
    with pytest.raises(PlanError, match="--redirect 'bpf'"):
        plan_lab("demo", 0, 1, 1, redirect="bpf")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"service_port_name": "HTTP"}, "--service-port-name 'HTTP'"),
        ({"service_port_name": "http-"}, "--service-port-name 'http-'"),
        ({"service_port_name": "a-very-long-port-name"}, "--service-port-name"),
        ({"service_app_protocol": "not a protocol"}, "--service-app-protocol 'not a protocol'"),
    ],
)
def test_bad_service_protocol_is_named(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(PlanError, match=message):
        plan_lab("demo", 0, 1, 1, **kwargs)  # type: ignore[arg-type]


def test_ztunnel_args_are_kept_in_order_and_an_empty_one_is_named() -> None:
    plan = plan_lab("a", 0, 1, 1, ztunnel_args=("--http-upstream-idle-timeout", "0"))
    assert plan.ztunnel_args == ("--http-upstream-idle-timeout", "0")
    assert plan_lab("a", 0, 1, 1).ztunnel_args == ()
    with pytest.raises(PlanError, match="--ztunnel-arg: an empty argument"):
        plan_lab("a", 0, 1, 1, ztunnel_args=("--log-level", ""))
