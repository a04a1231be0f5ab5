"""Control's certificate endpoint signs only a canonical workload identity.

The issue's case: node1 runs a pod as mesh/web, and asked for `spiffe://td.test/ns/mesh/sa/web\\n`; control
read it as mesh/web, found the pod, and signed the URI with the newline, a certificate that a DENY on
`td.test/ns/mesh/sa/web` does not match. Every such request is now a 400 `bad_csr`, and nothing is issued.
"""

from __future__ import annotations

from pathlib import Path

from tests.integration.control.conftest import TD, ControlProcess
from tests.integration.control.test_certificates import request_cert

WEB = f"spiffe://{TD}/ns/mesh/sa/web"
NON_CANONICAL = [
    WEB + "\n",
    WEB + "\r\n",
    WEB + "\x00",
    WEB + " ",
    WEB + "/",
    WEB + "%0a",
    f"spiffe://{TD}/ns/mesh/sa/Web",
    f"spiffe://{TD}/ns/Mesh/sa/web",
    f"spiffe://{TD}/ns/mesh/sa/web/../web",
]


def test_a_csr_for_a_non_canonical_identity_of_a_local_pod_is_refused(control: ControlProcess, tmp_path: Path) -> None:
    for uri in NON_CANONICAL:
        code, body = request_cert(control, uri, "node1", tmp_path)
        assert (code, body.get("reason")) == (400, "bad_csr"), f"{uri!r}: {code} {body}"
        assert repr(uri) in body["error"], body  # the refusal shows the URI escaped, newline and all
    refused = control.metric("meshlet_control_certificates_refused_total", 'reason="bad_csr"')
    assert refused == len(NON_CANONICAL)
    assert control.metric("meshlet_control_certificates_issued_total") == 0
    # The same node still obtains the canonical identity of its pod.
    code, body = request_cert(control, WEB, "node1", tmp_path)
    assert (code, body["spiffeId"]) == (200, WEB)
