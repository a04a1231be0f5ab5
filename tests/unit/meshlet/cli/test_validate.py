"""`meshlet validate -f`: control's own checks offline, every problem with its file, object and field; exit 1 on
any, 0 when control would take everything (Istio's own policy YAML included)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from meshlet.cli.main import cli

ISTIO_POLICIES = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin, version: v1}}
  action: ALLOW
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/default/sa/sleep"]}
    - source: {namespaces: ["dev"]}
    to:
    - operation: {methods: ["GET"], paths: ["/info*"]}
    when:
    - key: request.auth.claims[iss]
      values: ["https://accounts.google.com"]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: foo}
spec: {replicas: 1}
"""
BROKEN = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bad, namespace: foo}
spec: {action: MAYBE}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: foo}
spec: {ports: [{port: 99999}]}
---
kind: Pod
metadata: {}
"""


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["validate", *args])
    return result.exit_code, result.output


def test_istios_own_policy_yaml_passes(tmp_path: Path) -> None:
    (tmp_path / "istio.yaml").write_text(ISTIO_POLICIES)
    code, out = _run("-f", str(tmp_path / "istio.yaml"))
    assert code == 0, out
    assert "no problems in 3 objects, 1 files" in out


def test_every_problem_is_named_with_its_file_object_and_field(tmp_path: Path) -> None:
    (tmp_path / "ok.yaml").write_text(ISTIO_POLICIES)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "broken.yaml").write_text(BROKEN)
    code, out = _run("-f", str(tmp_path), "-o", "json")
    assert code == 1
    report = json.loads(out)
    assert report["ok"] is False and report["files"] == 2 and report["objects"] == 5
    got = {(Path(p["file"]).name, p["object"], p["problem"].split(":")[0]) for p in report["problems"]}
    assert got == {
        ("broken.yaml", "AuthorizationPolicy foo/bad", "spec.action"),
        ("broken.yaml", "Service foo/web", "spec.ports[0].port"),
        ("broken.yaml", None, "document 3"),
    }, report["problems"]


def test_the_table_shows_yaml_errors_verbatim(tmp_path: Path) -> None:
    (tmp_path / "cut.yaml").write_text("kind: Service\nmetadata: {name: [x\n")
    code, out = _run("-f", str(tmp_path / "cut.yaml"))
    assert code == 1
    assert "1 problems" in out and "unreadable YAML" in out and "[x" in out  # not eaten as markup


def test_the_report_is_said_once_not_again_in_the_stores_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    (tmp_path / "broken.yaml").write_text(BROKEN)
    code, out = _run("-f", str(tmp_path), "-o", "json")
    assert code == 1 and len(json.loads(out)["problems"]) == 3
    assert [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()] == []


def test_a_path_that_does_not_exist_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    code, out = _run("-f", str(tmp_path / "nope.yaml"))
    assert code == 2 and "nope.yaml" in out and "does not exist" in out


@pytest.mark.parametrize("kind", ["VirtualService", "DestinationRule"])
def test_istio_traffic_kinds_meshlet_does_not_apply_say_what_to_use(tmp_path: Path, kind: str) -> None:
    (tmp_path / "vs.yaml").write_text(f"apiVersion: networking.istio.io/v1\nkind: {kind}\n"
                                      "metadata: {name: r, namespace: foo}\nspec: {}\n")  # fmt: skip
    code, out = _run("-f", str(tmp_path), "-o", "json")
    [problem] = json.loads(out)["problems"]
    assert code == 1 and problem["object"] == f"{kind} foo/r" and "not applied" in problem["problem"]
