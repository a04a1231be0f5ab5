"""The selector grammar and the patch algorithms of the test API server, against the documented examples."""

from __future__ import annotations

from typing import Any

import pytest

from tests.kubeapi import errors
from tests.kubeapi.patches import json_patch, merge_patch, strategic_patch
from tests.kubeapi.selectors import fields_match, labels_match, parse_fields, parse_labels


def _obj(labels: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": "a", "namespace": "ns", "labels": labels}, "spec": {"nodeName": "n1"}}


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("environment=production", {"environment": "production"}, True),
        ("environment==production", {"environment": "qa"}, False),
        ("tier!=frontend", {}, True),  # != also selects objects without the key
        ("tier!=frontend", {"tier": "frontend"}, False),
        ("environment in (production, qa)", {"environment": "qa"}, True),
        ("environment in (production, qa)", {}, False),
        ("tier notin (frontend,backend)", {}, True),
        ("tier notin (frontend,backend)", {"tier": "backend"}, False),
        ("partition", {"partition": ""}, True),
        ("!partition", {"partition": "x"}, False),
        ("!partition", {}, True),
        ("environment=production,tier!=frontend", {"environment": "production", "tier": "db"}, True),
        ("app in (a,b),partition", {"app": "a"}, False),
        ("", {}, True),
    ],
)
def test_label_selectors_as_documented(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert labels_match(parse_labels(selector), _obj(labels)) is expected


@pytest.mark.parametrize("bad", ["a in (", "a b", "!a in (x)", "=x"])
def test_malformed_label_selectors_are_bad_requests(bad: str) -> None:
    with pytest.raises(errors.ApiError) as err:
        parse_labels(bad)
    assert err.value.code == 400


def test_field_selectors() -> None:
    obj = _obj({})
    assert fields_match(parse_fields("metadata.name=a,metadata.namespace==ns", "Pod"), obj)
    assert fields_match(parse_fields("spec.nodeName=n1", "Pod"), obj)
    assert not fields_match(parse_fields("spec.nodeName!=n1", "Pod"), obj)
    with pytest.raises(errors.ApiError):
        parse_fields("spec.nodeName=n1", "Service")  # only pods declare it


def test_merge_patch_follows_rfc_7386() -> None:
    # the RFC's own example (appendix A), reduced
    target = {"title": "Goodbye!", "author": {"givenName": "John", "familyName": "Doe"}, "tags": ["example", "sample"]}
    patch = {"title": "Hello!", "author": {"familyName": None}, "tags": ["example"], "phone": "+01"}
    assert merge_patch(target, patch) == {
        "title": "Hello!",
        "author": {"givenName": "John"},
        "tags": ["example"],
        "phone": "+01",
    }
    assert target["author"] == {"givenName": "John", "familyName": "Doe"}  # the target is untouched


def test_json_patch_follows_rfc_6902() -> None:
    doc = {"a": {"b": [1, 2]}, "c": "x"}
    ops = [
        {"op": "add", "path": "/a/b/1", "value": 9},
        {"op": "add", "path": "/a/b/-", "value": 3},
        {"op": "remove", "path": "/c"},
        {"op": "replace", "path": "/a/b/0", "value": 0},
        {"op": "copy", "from": "/a/b", "path": "/d"},
        {"op": "move", "from": "/d", "path": "/e~1f"},
        {"op": "test", "path": "/e~1f/1", "value": 9},
    ]
    assert json_patch(doc, ops) == {"a": {"b": [0, 9, 2, 3]}, "e/f": [0, 9, 2, 3]}
    with pytest.raises(errors.ApiError) as err:
        json_patch(doc, [{"op": "remove", "path": "/nope/x"}])
    assert err.value.code == 422


def test_strategic_merge_merges_declared_lists_by_their_key_and_replaces_the_rest() -> None:
    pod = {
        "metadata": {"finalizers": ["a"]},
        "spec": {
            "containers": [{"name": "app", "image": "v1"}, {"name": "side", "image": "s"}],
            "tolerations": [{"key": "x"}],
        },
        "status": {"conditions": [{"type": "Ready", "status": "False"}]},
    }
    patch = {
        "metadata": {"finalizers": ["b", "a"]},
        "spec": {"containers": [{"name": "app", "image": "v2"}], "tolerations": [{"key": "y"}]},
        "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Initialized", "status": "True"}]},
    }
    assert strategic_patch(pod, patch) == {
        "metadata": {"finalizers": ["a", "b"]},
        "spec": {
            "containers": [{"name": "app", "image": "v2"}, {"name": "side", "image": "s"}],
            "tolerations": [{"key": "y"}],  # no patchStrategy: replaced
        },
        "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Initialized", "status": "True"}]},
    }
