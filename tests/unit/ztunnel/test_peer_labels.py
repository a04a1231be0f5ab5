"""What metrics say of a workload: Istio's workload, canonical service and revision, app, version, cluster,
and the source of an inbound connection when its certificate and its IP disagree."""

from __future__ import annotations

from typing import Any

import pytest

from meshlet_contracts.config_items import ItemError, parse_workload
from ztunnel.metrics import TCP_LABELS, Metrics, Peer, tcp_labels
from ztunnel.proxy.context import peer_of, source_peer
from ztunnel.state.mesh import Workload

IDENTITY = "spiffe://cluster.local/ns/shop/sa/reviews"


def workload(labels: dict[str, str], workload_name: str | None = "reviews-v2", enrolled: bool = True) -> Workload:
    item: dict[str, Any] = {
        "uid": "u1",
        "name": "reviews-v2-5f7c9-abcde",
        "namespace": "shop",
        "serviceAccount": "reviews",
        "identity": IDENTITY,
        "ips": ["10.0.0.7"],
        "labels": labels,
        "enrolled": enrolled,
    }
    if workload_name is not None:
        item["workloadName"] = workload_name
    return Workload.from_wire(parse_workload(item))


def test_canonical_labels_win_over_app_labels() -> None:
    labels = {
        "service.istio.io/canonical-name": "reviews-canonical",
        "service.istio.io/canonical-revision": "r7",
        "app": "reviews",
        "version": "v2",
    }
    peer = peer_of(workload(labels), cluster="east")
    assert peer == Peer(
        workload="reviews-v2",
        namespace="shop",
        principal=IDENTITY,
        app="reviews",
        version="v2",
        canonical_service="reviews-canonical",
        canonical_revision="r7",
        cluster="east",
    )


def test_kubernetes_recommended_labels_then_app_then_the_workload_name() -> None:
    recommended = peer_of(workload({"app.kubernetes.io/name": "rev", "app.kubernetes.io/version": "2.1", "app": "x"}))
    assert (recommended.canonical_service, recommended.canonical_revision) == ("rev", "2.1")
    assert (recommended.app, recommended.version) == ("x", "2.1")
    app_only = peer_of(workload({"app": "reviews", "version": "v3"}))
    assert (app_only.canonical_service, app_only.canonical_revision) == ("reviews", "v3")
    bare = peer_of(workload({}))
    assert (bare.canonical_service, bare.canonical_revision) == ("reviews-v2", "latest")
    assert (bare.app, bare.version, bare.cluster) == ("unknown", "unknown", "Kubernetes")


def test_a_workload_without_a_workload_name_is_named_after_its_pod() -> None:
    assert peer_of(workload({}, workload_name=None)).workload == "reviews-v2-5f7c9-abcde"


def test_an_unenrolled_workload_has_no_principal_and_no_workload_is_unknown() -> None:
    assert peer_of(workload({}, enrolled=False)).principal == "unknown"
    assert peer_of(None) == Peer()
    assert peer_of(None, IDENTITY).principal == IDENTITY


def test_a_source_whose_certificate_is_not_its_ips_workloads_is_named_by_the_certificate() -> None:
    metrics = Metrics()
    other = "spiffe://cluster.local/ns/attic/sa/intruder"

    agreeing = source_peer(metrics, workload({"app": "reviews"}), IDENTITY)
    assert (agreeing.workload, agreeing.principal) == ("reviews-v2", IDENTITY)
    assert metrics.identity_mismatches == 0

    spoofed = source_peer(metrics, workload({"app": "reviews"}), other)
    assert spoofed == Peer(namespace="attic", principal=other)
    assert metrics.identity_mismatches == 1
    assert "meshlet_source_identity_mismatch_total 1.0" in metrics.render()

    nobody_at_the_ip = source_peer(metrics, None, IDENTITY)
    assert nobody_at_the_ip == Peer(namespace="shop", principal=IDENTITY)
    assert metrics.identity_mismatches == 1  # nothing to disagree with


def test_tcp_labels_are_istios_full_set_in_istios_order() -> None:
    assert TCP_LABELS == (
        "reporter",
        "source_workload",
        "source_canonical_service",
        "source_canonical_revision",
        "source_workload_namespace",
        "source_principal",
        "source_app",
        "source_version",
        "source_cluster",
        "destination_service",
        "destination_service_namespace",
        "destination_service_name",
        "destination_workload",
        "destination_canonical_service",
        "destination_canonical_revision",
        "destination_workload_namespace",
        "destination_principal",
        "destination_app",
        "destination_version",
        "destination_cluster",
        "request_protocol",
        "response_flags",
        "connection_security_policy",
    )
    source = peer_of(workload({"app": "reviews", "version": "v2"}))
    values = dict(zip(TCP_LABELS, tcp_labels("source", source, Peer(), ("shop", "ratings"), True), strict=True))
    assert values["source_canonical_revision"] == "v2" and values["source_cluster"] == "Kubernetes"
    assert values["destination_service"] == "ratings.shop.svc.cluster.local"
    assert values["destination_cluster"] == "unknown"


def test_a_workload_name_that_is_not_a_name_is_refused_naming_the_field() -> None:
    item = {"uid": "u", "name": "p", "namespace": "n", "serviceAccount": "s", "identity": IDENTITY, "ips": []}
    with pytest.raises(ItemError, match="workloadName"):
        parse_workload({**item, "enrolled": True, "workloadName": 5})
