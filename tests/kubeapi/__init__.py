"""An in-process Kubernetes API server for tests (issue #16): the real REST and watch protocol on loopback.

Start one with `KubeApiServer()` as a context manager; see server.py for the faults it can inject, store.py
for resourceVersions and history, handlers.py for the verbs, tokens.py for TokenReview, token_requests.py
for TokenRequest (minting a pod's ServiceAccount token, as the kubelet does), proxy.py for the service
proxy and SelfSubjectAccessReview.
"""

from tests.kubeapi.resources import ResourceType
from tests.kubeapi.server import KubeApiServer
from tests.kubeapi.tokens import Token

__all__ = ["KubeApiServer", "ResourceType", "Token"]
