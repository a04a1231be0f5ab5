"""On Kubernetes, control's self-signed root CA lives in the Secret `meshlet-ca` of its namespace (as Istio keeps
its own in `istio-ca-secret`), so a restarted or rescheduled control signs with the same root.

Without it, the CA would live only in the pod's emptyDir: every restart would make a new root, and every ztunnel's
certificates and trust bundle would stop verifying until each one noticed. At start (`adopt`) control reads the
Secret: when it holds a root, that root is written into the state directory and used; when there is none, the
root control made (or found) locally is stored in it, and if another control created the Secret first (409),
that one's root wins and is adopted. A plug-in CA (`--ca-cert/--ca-key`, or the install's `caSecret`) is the
user's and is never written anywhere.

The Secret is only ever created, never overwritten: replacing a root is a rotation a person decides on.
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from control.atomic import write_atomic

log = logging.getLogger(__name__)
NAME = "meshlet-ca"
KEY_FILE, CERT_FILE = "root-key.pem", "root-cert.pem"
LABELS = {"app.kubernetes.io/part-of": "meshlet", "app.kubernetes.io/component": "control"}


def ca_files(state: Path) -> tuple[Path, Path]:
    """Where `CertificateAuthority.load_or_create` keeps the root: (key, cert)."""
    return state / "ca" / KEY_FILE, state / "ca" / CERT_FILE


def adopt(api_client: Any, namespace: str, state: Path, timeout: float = 5.0) -> str:
    """Make the state directory's root the one in the Secret (creating the Secret from the local root when there
    is none); returns what happened: `created`, `adopted` (the local files were replaced) or `unchanged`.
    Raises ApiException / urllib3 errors when the API server cannot be asked (the caller retries)."""
    v1 = client.CoreV1Api(api_client)
    key_path, cert_path = ca_files(state)
    try:
        secret = v1.read_namespaced_secret(NAME, namespace, _request_timeout=timeout)
    except ApiException as exc:
        if exc.status != 404:
            raise
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(name=NAME, namespace=namespace, labels=LABELS),
            type="Opaque",
            data={KEY_FILE: _b64(key_path.read_bytes()), CERT_FILE: _b64(cert_path.read_bytes())},
        )
        try:
            v1.create_namespaced_secret(namespace, body, _request_timeout=timeout)
            return "created"
        except ApiException as race:
            if race.status != 409:
                raise
            secret = v1.read_namespaced_secret(NAME, namespace, _request_timeout=timeout)  # another control won
    data = secret.data or {}
    if KEY_FILE not in data or CERT_FILE not in data:
        raise ValueError(f"Secret {namespace}/{NAME} lacks {KEY_FILE} or {CERT_FILE}: fix or delete it")
    key, cert = base64.b64decode(data[KEY_FILE]), base64.b64decode(data[CERT_FILE])
    if key_path.read_bytes() == key and cert_path.read_bytes() == cert:
        return "unchanged"
    write_atomic(key_path, key, 0o600)
    write_atomic(cert_path, cert, 0o644)
    return "adopted"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
