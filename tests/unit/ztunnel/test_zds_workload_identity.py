"""A ZDS `add_workload` whose namespace or service account could not make a SPIFFE ID is refused as a
malformed message (acked with its error), before ztunnel opens any listener for the pod."""

from __future__ import annotations

import pytest

from meshlet_contracts import zds as protocol


def wire(namespace: str, service_account: str) -> dict[str, object]:
    return {"name": "web-1", "namespace": namespace, "serviceAccount": service_account, "ips": ["10.0.0.1"]}


@pytest.mark.parametrize(
    ("namespace", "service_account", "part"),
    [
        ("mesh", "web\n", "service account"),
        ("mesh", "web\x00", "service account"),
        ("mesh", "w\u0435b", "service account"),
        ("mesh", "web/../x", "service account"),
        ("mesh\n", "web", "namespace"),
        ("\uff4d\uff45\uff53\uff48", "web", "namespace"),
    ],
)
def test_workload_info_refuses_names_that_make_no_identity(namespace: str, service_account: str, part: str) -> None:
    with pytest.raises(protocol.ZdsError, match=f"workload info: {part}"):
        protocol.WorkloadInfo.from_wire(wire(namespace, service_account))


def test_workload_info_with_good_names_reads_back() -> None:
    info = protocol.WorkloadInfo.from_wire(wire("mesh", "web.v1"))
    assert (info.namespace, info.service_account) == ("mesh", "web.v1")
