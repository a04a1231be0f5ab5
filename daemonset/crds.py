"""The CustomResourceDefinitions of meshlet's own kinds, with OpenAPI v3 schemas that accept what control accepts.

The field lists come from the shared contracts (`meshlet_contracts.policy`, `meshlet_contracts.traffic`), the same
lists control checks objects against, so a field added there appears here. The schemas are structural and closed
(no field of unknown shape is kept), types are specific, and they check only what is certain to be wrong; the finer
rules (a DENY without rules, a Maglev table size that is not prime, a duration's syntax) stay in control, which
names the field and keeps the last good version, instead of the API server refusing the object with less to say.

Fields control refuses with a reason (AuthorizationPolicy's `targetRef`, `provider`) are in the schema on purpose:
left out, the API server would prune them silently, and a policy meant for one workload would select them all.
HTTPRoute is not here: it comes with the Gateway API CRDs. Istio's `security.istio.io` kinds, which control also
reads, are not installed either: a cluster moving from Istio has them already.
"""

from __future__ import annotations

from typing import Any

from meshlet_contracts.policy import ACTIONS, MODES, OPERATION_FIELDS, SOURCE_FIELDS
from meshlet_contracts.traffic import SIMPLE, SPEC_FIELDS

Schema = dict[str, Any]

STRING: Schema = {"type": "string"}
BOOLEAN: Schema = {"type": "boolean"}
# Ports are written as integers or, as Istio writes them, strings of digits; control reads both.
PORT: Schema = {"x-kubernetes-int-or-string": True}


def integer(minimum: int = 0, maximum: int | None = None) -> Schema:
    out: Schema = {"type": "integer", "minimum": minimum}
    if maximum is not None:
        out["maximum"] = maximum
    return out


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def obj(properties: dict[str, Schema], required: tuple[str, ...] = (), description: str = "") -> Schema:
    out: Schema = {"type": "object", "properties": properties}
    if required:
        out["required"] = list(required)
    if description:
        out["description"] = description
    return out


STRINGS = array(STRING)
SELECTOR = obj(
    {"matchLabels": {"type": "object", "additionalProperties": STRING}},
    description="Workloads (pods) the policy applies to; absent: every workload of the namespace.",
)
# Accepted by the schema so that control can refuse it with its reason (see the module's docstring).
TARGET_REF = obj({"group": STRING, "kind": STRING, "name": STRING, "namespace": STRING})


def _authorization_policy() -> Schema:
    source = obj({name: STRINGS for name in SOURCE_FIELDS})
    operation = obj({name: array(PORT) if name.lower().endswith("ports") else STRINGS for name in OPERATION_FIELDS})
    condition = obj({"key": STRING, "values": STRINGS, "notValues": STRINGS}, required=("key",))
    rule = obj(
        {
            "from": array(obj({"source": source})),
            "to": array(obj({"operation": operation})),
            "when": array(condition),
        }
    )
    # CUSTOM is accepted here so that control can say why it is not supported.
    action = {"type": "string", "enum": [*ACTIONS, "CUSTOM"]}
    return obj(
        {
            "selector": SELECTOR,
            "targetRef": TARGET_REF,
            "targetRefs": array(TARGET_REF),
            "action": action,
            "provider": obj({"name": STRING}),
            "rules": array(rule),
        }
    )


def _peer_authentication() -> Schema:
    mtls = obj({"mode": {"type": "string", "enum": list(MODES)}})
    # Keys are port numbers (`"8080": {mode: STRICT}`); control checks that they are.
    return obj({"selector": SELECTOR, "mtls": mtls, "portLevelMtls": {"type": "object", "additionalProperties": mtls}})


def _traffic_policy() -> Schema:
    duration = {"type": "string", "description": "As Istio writes durations: 10s, 1m, 500ms, 1h30m."}
    consistent_hash = obj(
        {
            "httpHeaderName": STRING,
            "httpCookie": obj({"name": STRING, "path": STRING, "ttl": duration}, required=("name",)),
            "useSourceIp": BOOLEAN,
            "ringHash": obj({"minimumRingSize": integer(1)}),
            "maglev": obj({"tableSize": integer(2)}),
        }
    )
    sections: dict[str, Schema] = {
        "targetRef": obj({"group": STRING, "kind": STRING, "name": STRING, "port": PORT}, required=("name",)),
        # LEAST_CONN is Istio's older name for LEAST_REQUEST; control reads it as such.
        "loadBalancer": obj(
            {"simple": {"type": "string", "enum": [*SIMPLE, "LEAST_CONN"]}, "consistentHash": consistent_hash}
        ),
        "connectionPool": obj(
            {
                "tcp": obj({"maxConnections": integer(1)}),
                "http": obj(
                    {
                        "http1MaxPendingRequests": integer(0),
                        "maxRequestsPerConnection": integer(0),
                        "maxRetries": integer(0),
                    }
                ),
            }
        ),
        "outlierDetection": obj(
            {
                "consecutive5xxErrors": integer(0),
                "consecutiveGatewayErrors": integer(0),
                "interval": duration,
                "baseEjectionTime": duration,
                "maxEjectionPercent": integer(0, 100),
            }
        ),
        "rateLimit": obj(
            {
                "requestsPerUnit": integer(1),
                # Control takes the unit in any case (Second, MINUTE), so no enum here.
                "unit": STRING,
                "burst": integer(1),
                "perSourceIdentity": BOOLEAN,
                "route": STRING,
            },
            required=("requestsPerUnit",),
        ),
    }
    if tuple(sections) != SPEC_FIELDS:
        raise RuntimeError("the TrafficPolicy schema no longer follows meshlet_contracts.traffic.SPEC_FIELDS")
    return obj(sections, required=("targetRef",))


def crd(group: str, kind: str, plural: str, spec: Schema, columns: list[dict[str, str]]) -> dict[str, Any]:
    root = obj({"apiVersion": STRING, "kind": STRING, "metadata": {"type": "object"}, "spec": spec})
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}", "labels": {"app.kubernetes.io/part-of": "meshlet"}},
        "spec": {
            "group": group,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "categories": ["meshlet"],
            },
            "scope": "Namespaced",
            "preserveUnknownFields": False,
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": root},
                    "additionalPrinterColumns": [
                        *columns,
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                }
            ],
        },
    }


def crds() -> list[dict[str, Any]]:
    return [
        crd(
            "security.meshlet.io",
            "AuthorizationPolicy",
            "authorizationpolicies",
            _authorization_policy(),
            [{"name": "Action", "type": "string", "jsonPath": ".spec.action"}],
        ),
        crd(
            "security.meshlet.io",
            "PeerAuthentication",
            "peerauthentications",
            _peer_authentication(),
            [{"name": "Mode", "type": "string", "jsonPath": ".spec.mtls.mode"}],
        ),
        crd(
            "networking.meshlet.io",
            "TrafficPolicy",
            "trafficpolicies",
            _traffic_policy(),
            [{"name": "Service", "type": "string", "jsonPath": ".spec.targetRef.name"}],
        ),
    ]
