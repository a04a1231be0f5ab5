"""Kubernetes `Status` objects: the body of every error the test API server answers.

The real server answers a failed request with a `Status` (kind Status, apiVersion v1, status Failure) whose
`code` repeats the HTTP status and whose `reason` names the cause (NotFound, AlreadyExists, Conflict, ...);
clients switch on `reason` and `code`, so both have to match what kube-apiserver sends.
"""

from __future__ import annotations

from typing import Any

# HTTP status for each StatusReason used here (k8s.io/apimachinery/pkg/api/errors).
CODES = {
    "BadRequest": 400,
    "Unauthorized": 401,
    "Forbidden": 403,
    "NotFound": 404,
    "MethodNotAllowed": 405,
    "NotAcceptable": 406,
    "AlreadyExists": 409,
    "Conflict": 409,
    "Gone": 410,
    "Expired": 410,
    "UnsupportedMediaType": 415,
    "Invalid": 422,
    "Timeout": 504,
    "InternalError": 500,
    "ServiceUnavailable": 503,
}


def status(reason: str, message: str, details: dict[str, Any] | None = None, code: int | None = None) -> dict[str, Any]:
    """A failure `Status` as kube-apiserver serialises it."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code if code is not None else CODES[reason],
    }
    if details:
        body["details"] = details
    return body


def success(details: dict[str, Any]) -> dict[str, Any]:
    """The `Status` a delete answers for resources that do not return the deleted object."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}


class ApiError(Exception):
    """Raised anywhere in the server; the HTTP layer turns it into a `Status` response."""

    def __init__(self, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.body = status(reason, message, details)
        self.code: int = self.body["code"]


def not_found(resource: str, group: str, name: str) -> ApiError:
    """`<resource>.<group> "name" not found`, as the server words it (the group omitted for core)."""
    qualified = f"{resource}.{group}" if group else resource
    return ApiError("NotFound", f'{qualified} "{name}" not found', {"name": name, "group": group, "kind": resource})


def already_exists(resource: str, group: str, name: str) -> ApiError:
    qualified = f"{resource}.{group}" if group else resource
    return ApiError(
        "AlreadyExists", f'{qualified} "{name}" already exists', {"name": name, "group": group, "kind": resource}
    )


def conflict(resource: str, group: str, name: str, why: str) -> ApiError:
    qualified = f"{resource}.{group}" if group else resource
    return ApiError(
        "Conflict",
        f'Operation cannot be fulfilled on {qualified} "{name}": {why}',
        {"name": name, "group": group, "kind": resource},
    )


def expired(message: str = "too old resource version") -> ApiError:
    """410 for a resourceVersion older than the kept history (reason Expired, as the watch cache says)."""
    return ApiError("Expired", message)


def bad_request(message: str) -> ApiError:
    return ApiError("BadRequest", message)
