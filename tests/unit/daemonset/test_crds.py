"""The CRDs' OpenAPI v3 schemas accept what control accepts and refuse what is certainly wrong.

Samples are checked with `jsonschema` (the validator kubernetes-validate itself runs) against the CRD's
openAPIV3Schema, turned into JSON Schema the way the API server reads it with strict field validation: the
Kubernetes extension `x-kubernetes-int-or-string` becomes "integer or string", and an object with `properties`
takes no other field. The same samples go through control's own conversion, so schema and control agree.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from control.model.fields import ValidationError
from control.model.security import AuthorizationPolicy, PeerAuthentication
from control.model.traffic import TrafficPolicy
from daemonset import Values, render

ROOT = Path(__file__).resolve().parents[3]
CONVERT = {"AuthorizationPolicy": AuthorizationPolicy, "PeerAuthentication": PeerAuthentication}
CONVERT_ALL: dict[str, Any] = {**CONVERT, "TrafficPolicy": TrafficPolicy}


def json_schema(schema: Any) -> Any:
    if isinstance(schema, list):
        return [json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: json_schema(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if schema.get("x-kubernetes-int-or-string"):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def crd_schemas() -> dict[str, dict[str, Any]]:
    out = {}
    for obj in render(Values()):
        if obj["kind"] == "CustomResourceDefinition":
            (version,) = obj["spec"]["versions"]
            out[obj["spec"]["names"]["kind"]] = json_schema(version["schema"]["openAPIV3Schema"])
    return out


SCHEMAS = crd_schemas()


def schema_errors(obj: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(SCHEMAS[obj["kind"]])
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]


def readme_samples() -> list[dict[str, Any]]:
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    docs = [d for block in blocks for d in yaml.safe_load_all(block) if isinstance(d, dict)]
    return [d for d in docs if d.get("kind") in CONVERT and d["apiVersion"] == "security.meshlet.io/v1"]


def test_the_three_crds_are_structural_and_closed() -> None:
    crds = [o for o in render(Values()) if o["kind"] == "CustomResourceDefinition"]
    assert {c["metadata"]["name"] for c in crds} == {
        "authorizationpolicies.security.meshlet.io",
        "peerauthentications.security.meshlet.io",
        "trafficpolicies.networking.meshlet.io",
    }
    for c in crds:
        assert c["spec"]["preserveUnknownFields"] is False
        text = yaml.safe_dump(c)
        assert "x-kubernetes-preserve-unknown-fields" not in text
        for path, node in nodes(c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]):
            # Structural: every node has a type, except int-or-string, which the API server types itself.
            assert "type" in node or node.get("x-kubernetes-int-or-string"), path


def nodes(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, schema)]
    for name, sub in schema.get("properties", {}).items():
        found += nodes(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            found += nodes(schema[key], f"{path}[{key}]")
    return found


def test_the_readme_examples_pass_the_schema_and_control() -> None:
    samples = readme_samples()
    assert {s["kind"] for s in samples} == {"AuthorizationPolicy", "PeerAuthentication"}
    for sample in samples:
        assert schema_errors(sample) == []
        CONVERT[sample["kind"]].from_k8s(sample)


FULL_POLICY = {
    "apiVersion": "security.meshlet.io/v1",
    "kind": "AuthorizationPolicy",
    "metadata": {"name": "web", "namespace": "shop"},
    "spec": {
        "selector": {"matchLabels": {"app": "web"}},
        "action": "ALLOW",
        "rules": [
            {
                "from": [
                    {"source": {"principals": ["cluster.local/ns/shop/sa/front"], "notNamespaces": ["test"]}},
                    {"source": {"ipBlocks": ["10.0.0.0/16"], "notRemoteIpBlocks": ["10.0.9.0/24"]}},
                ],
                "to": [{"operation": {"ports": ["8080", 9090], "methods": ["GET"], "paths": ["/api/*"]}}],
                "when": [
                    {"key": "request.headers[x-team]", "values": ["a"]},
                    {"key": "destination.port", "notValues": ["22"]},
                ],
            },
            {},
        ],
    },
}
FULL_PEER = {
    "apiVersion": "security.meshlet.io/v1",
    "kind": "PeerAuthentication",
    "metadata": {"name": "web", "namespace": "shop"},
    "spec": {
        "selector": {"matchLabels": {"app": "web"}},
        "mtls": {"mode": "STRICT"},
        "portLevelMtls": {"8080": {"mode": "PERMISSIVE"}},
    },
}
# The full policy of tests/unit/control/test_traffic.py, plus the consistent-hash and rate-limit fields.
FULL_TRAFFIC = {
    "apiVersion": "networking.meshlet.io/v1",
    "kind": "TrafficPolicy",
    "metadata": {"name": "web", "namespace": "shop"},
    "spec": {
        "targetRef": {"kind": "Service", "name": "web", "port": 8080},
        "loadBalancer": {"simple": "LEAST_REQUEST"},
        "connectionPool": {"tcp": {"maxConnections": 1}, "http": {"http1MaxPendingRequests": 1, "maxRetries": 0}},
        "outlierDetection": {
            "consecutive5xxErrors": 3,
            "interval": "1s",
            "baseEjectionTime": "15s",
            "maxEjectionPercent": 50,
        },
        "rateLimit": {"requestsPerUnit": 10, "burst": 10, "unit": "minute", "perSourceIdentity": True, "route": "api"},
    },
}
HASHED = {"httpCookie": {"name": "session", "path": "/", "ttl": "1h"}, "maglev": {"tableSize": 65537}}


@pytest.mark.parametrize("sample", [FULL_POLICY, FULL_PEER, FULL_TRAFFIC], ids=lambda s: s["kind"])
def test_full_samples_pass_the_schema_and_control(sample: dict[str, Any]) -> None:
    assert schema_errors(sample) == []
    CONVERT_ALL[sample["kind"]].from_k8s(sample)


def test_a_consistent_hash_policy_passes_both() -> None:
    sample = copy.deepcopy(FULL_TRAFFIC)
    sample["spec"]["loadBalancer"] = {"consistentHash": HASHED}
    assert schema_errors(sample) == []
    TrafficPolicy.from_k8s(sample)


def changed(sample: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(sample)
    *parents, last = path.split(".")
    node = out
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[last] = value
    return out


@pytest.mark.parametrize(
    ("sample", "path", "value"),
    [
        (FULL_POLICY, "spec.rules.0.form", []),  # a typo: the API server would otherwise drop it and widen the policy
        (FULL_POLICY, "spec.action", "LOG"),
        (FULL_POLICY, "spec.rules.0.when.0.value", ["a"]),
        (FULL_POLICY, "spec.rules.0.to.0.operation.ports", [True]),
        (FULL_PEER, "spec.mtls.mode", "strict"),
        (FULL_TRAFFIC, "spec.outlierDetection.maxEjectionPercnt", 10),
        (FULL_TRAFFIC, "spec.outlierDetection.maxEjectionPercent", "10"),
        (FULL_TRAFFIC, "spec.connectionPool.tcp.maxConnections", 0),
        (FULL_TRAFFIC, "spec.loadBalancer.simple", "ROUND_ROBBIN"),
        (FULL_TRAFFIC, "spec.rateLimit.perSourceIdentity", "yes"),
    ],
)
def test_what_both_refuse_the_schema_refuses(sample: dict[str, Any], path: str, value: Any) -> None:
    bad = changed(sample, path, value)
    assert schema_errors(bad), f"{path}={value!r} passed the schema"
    with pytest.raises(ValidationError):
        CONVERT_ALL[bad["kind"]].from_k8s(bad)


def test_a_traffic_policy_without_a_target_is_refused_by_the_schema() -> None:
    bad = copy.deepcopy(FULL_TRAFFIC)
    del bad["spec"]["targetRef"]
    assert any("targetRef" in e for e in schema_errors(bad))


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        ("spec.targetRef", {"kind": "Service", "name": "web"}, "not supported; use selector"),
        ("spec.action", "CUSTOM", "CUSTOM (external authorization) is not supported"),
    ],
)
def test_fields_control_refuses_with_a_reason_reach_control(path: str, value: Any, reason: str) -> None:
    """Pruned by the API server, a targetRef would make the policy select every workload without a word."""
    sample = changed(FULL_POLICY, path, value)
    assert schema_errors(sample) == []
    with pytest.raises(ValidationError, match=re.escape(reason)):
        AuthorizationPolicy.from_k8s(sample)
