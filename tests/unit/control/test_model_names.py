"""Names that become identities, or are compared with them, are checked in full: a trailing newline, NUL,
Unicode look-alikes and non-ASCII digits are refused with the field named, never carried on as a second
spelling of a name (`web\\n` beside `web`) or a policy entry no identity could ever match."""

from __future__ import annotations

from typing import Any

import pytest

from control.model.fields import ValidationError
from control.model.kube import Namespace, Pod
from control.model.security import AuthorizationPolicy


def pod(spec: dict[str, Any] | None = None, **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "mesh", "uid": "u1", **metadata},
        "spec": {"nodeName": "node1", "serviceAccountName": "web", **(spec or {})},
        "status": {"phase": "Running", "podIP": "10.0.0.5"},
    }


def policy(rule: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "deny-web", "namespace": "mesh"},
        "spec": {"action": "DENY", "rules": [rule]},
    }


HOSTILE_NAMES = [
    ("trailing newline", "web\n"),
    ("trailing CRLF", "web\r\n"),
    ("NUL", "w\x00eb"),
    ("Cyrillic e", "w\u0435b"),
    ("fullwidth", "\uff57\uff45\uff42"),
    ("Arabic-Indic digit", "web\u0668"),
    ("upper case", "Web"),
    ("slash", "web/x"),
]
IDS = [w for w, _ in HOSTILE_NAMES]


@pytest.mark.parametrize(("what", "name"), HOSTILE_NAMES, ids=IDS)
def test_a_pod_field_that_makes_an_identity_is_refused(what: str, name: str) -> None:
    cases = [
        (pod({"serviceAccountName": name}), "spec.serviceAccountName"),
        (pod({"nodeName": name}), "spec.nodeName"),
        (pod(name=name), "metadata.name"),
        (pod(namespace=name), "metadata.namespace"),
    ]
    if name != "Web":  # label values may be upper case
        cases.append((pod(labels={"app": name}), "metadata.labels.app"))
    for raw, field in cases:
        with pytest.raises(ValidationError) as err:
            Pod.from_k8s(raw)
        assert err.value.field == field, (what, field)


def test_a_namespace_name_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(ValidationError) as err:
        Namespace.from_k8s({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "mesh\n"}})
    assert err.value.field == "metadata.name"


def test_a_pod_with_good_names_converts() -> None:
    p = Pod.from_k8s(pod({"serviceAccountName": "web.v1-2", "nodeName": "node-1.zone-a"}))
    assert (p.service_account, p.node) == ("web.v1-2", "node-1.zone-a")


HOSTILE_PRINCIPALS = [
    ("trailing newline", "cluster.local/ns/mesh/sa/web\n"),
    ("NUL", "cluster.local/ns/mesh/sa/web\x00"),
    ("Cyrillic e", "cluster.local/ns/mesh/sa/w\u0435b"),
    ("fullwidth", "cluster.local/ns/mesh/sa/\uff57\uff45\uff42"),
    ("space", "cluster.local/ns/mesh/sa/web "),
    ("tab", "cluster.local/ns/mesh/sa/\tweb"),
]


@pytest.mark.parametrize(("what", "principal"), HOSTILE_PRINCIPALS, ids=[w for w, _ in HOSTILE_PRINCIPALS])
def test_a_principal_no_identity_could_match_is_refused_with_its_field(what: str, principal: str) -> None:
    cases = [
        ({"from": [{"source": {"principals": [principal]}}]}, "spec.rules[0].from[0].source.principals[0]"),
        ({"from": [{"source": {"notPrincipals": [principal]}}]}, "spec.rules[0].from[0].source.notPrincipals[0]"),
        ({"when": [{"key": "source.principal", "values": [principal]}]}, "spec.rules[0].when[0].values[0]"),
    ]
    for rule, field in cases:
        with pytest.raises(ValidationError) as err:
            AuthorizationPolicy.from_k8s(policy(rule))
        assert err.value.field == field
        assert "printable ASCII" in err.value.reason and repr(principal) in err.value.reason


@pytest.mark.parametrize("namespace", ["mesh\n", "m\u0435sh", "mesh\x00"])
def test_a_source_namespace_no_identity_could_match_is_refused(namespace: str) -> None:
    for rule, field in [
        ({"from": [{"source": {"namespaces": [namespace]}}]}, "spec.rules[0].from[0].source.namespaces[0]"),
        ({"when": [{"key": "source.namespace", "notValues": [namespace]}]}, "spec.rules[0].when[0].notValues[0]"),
    ]:
        with pytest.raises(ValidationError) as err:
            AuthorizationPolicy.from_k8s(policy(rule))
        assert err.value.field == field and "a namespace is printable ASCII" in err.value.reason


def test_principals_with_wildcards_still_convert() -> None:
    rule = {"from": [{"source": {"principals": ["*", "cluster.local/ns/mesh/sa/*", "*/sa/web"]}}]}
    assert AuthorizationPolicy.from_k8s(policy(rule)).rules[0].sources[0].principals[0] == "*"


@pytest.mark.parametrize("port", ["\u0668\u0660", "\uff18\uff10", "\u00b2", "80\n", " 80", "+80", "0x50", "8_0"])
def test_a_policy_port_in_anything_but_ascii_digits_is_refused(port: str) -> None:
    with pytest.raises(ValidationError) as err:
        AuthorizationPolicy.from_k8s(policy({"to": [{"operation": {"ports": [port]}}]}))
    assert err.value.field == "spec.rules[0].to[0].operation.ports[0]"
    with pytest.raises(ValidationError) as err:
        AuthorizationPolicy.from_k8s(policy({"when": [{"key": "destination.port", "values": [port]}]}))
    assert err.value.field == "spec.rules[0].when[0].values[0]"
