"""An agent's view of the file store: Namespaces and its own node's Pods, nothing else parsed or held."""

from __future__ import annotations

import os
from pathlib import Path

from agent.store_view import NodeView
from control.model.fields import ObjectKey
from control.sources.files import FileSource

POD = """apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: mesh}
spec: {nodeName: %s, containers: [{name: app}]}
"""
NS = "apiVersion: v1\nkind: Namespace\nmetadata: {name: mesh}\n"
SERVICE = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: mesh}\nspec: {ports: [{port: 80}]}\n"


def _replace(path: Path, text: str) -> None:
    """Written as the lab and kubectl-like tools write: a new file renamed over the old (read at once)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _names(src: FileSource) -> list[tuple[str, str]]:
    return sorted((o["kind"], o["metadata"]["name"]) for b in src.scan() for o in b.upserts)


def test_the_agent_holds_namespaces_and_its_own_nodes_pods_only(tmp_path: Path) -> None:
    (tmp_path / "ns.yaml").write_text(NS)
    (tmp_path / "svc.yaml").write_text(SERVICE)
    (tmp_path / "mine.yaml").write_text(POD % ("web-1", "node1"))
    (tmp_path / "theirs.yaml").write_text(POD % ("web-2", "node2"))
    # names this node in a label but is another node's pod: parsed, then left out by its field
    (tmp_path / "near.yaml").write_text(POD.replace("name: %s,", "name: %s, labels: {near: node1},") % ("x", "node10"))
    src = FileSource(tmp_path, view=NodeView("node1"))
    assert _names(src) == [("Namespace", "mesh"), ("Pod", "web-1")]
    assert _names(FileSource(tmp_path)) == [("Namespace", "mesh"), ("Pod", "web-1"), ("Pod", "web-2"),
                                             ("Pod", "x"), ("Service", "web")]  # fmt: skip


def test_a_pod_moved_to_another_node_leaves_the_view_and_one_moved_here_enters_it(tmp_path: Path) -> None:
    pod = tmp_path / "pod.yaml"
    pod.write_text(POD % ("web", "node1"))
    src = FileSource(tmp_path, view=NodeView("node1"))
    assert _names(src) == [("Pod", "web")]
    _replace(pod, POD % ("web", "node2"))
    [batch] = src.scan()
    assert batch.upserts == () and batch.deletes == (ObjectKey("Pod", "mesh", "web"),)
    _replace(pod, POD % ("web", "node1"))
    assert _names(src) == [("Pod", "web")]


def test_bytes_that_could_spell_the_node_are_parsed() -> None:
    view = NodeView("node1")
    assert not view.relevant((POD % ("web", "node2")).encode())
    assert view.relevant((POD % ("web", "node1")).encode())
    assert view.relevant(NS.encode())
    # a YAML escape can spell the name without its bytes, as can UTF-16
    assert view.relevant(b'kind: Pod\nspec: {nodeName: "\\x6eode1"}\n')
    assert view.relevant((POD % ("web", "node1")).encode("utf-16"))
    assert view.relevant((POD % ("web", "node1")).encode("utf-16-le"))


def test_an_escaped_node_name_still_reaches_the_agent(tmp_path: Path) -> None:
    (tmp_path / "pod.yaml").write_text(POD.replace("nodeName: %s", 'nodeName: "\\x6eode1"') % "web")
    assert _names(FileSource(tmp_path, view=NodeView("node1"))) == [("Pod", "web")]


def test_objects_the_view_keeps_are_checked_by_kind_and_node() -> None:
    view = NodeView("node1")
    assert view.keep({"kind": "Namespace", "metadata": {"name": "a"}})
    assert view.keep({"kind": "Pod", "spec": {"nodeName": "node1"}})
    assert not view.keep({"kind": "Pod", "spec": {"nodeName": "node2"}})
    assert not view.keep({"kind": "Pod", "spec": "not a mapping"})
    assert not view.keep({"kind": "Pod"})  # not scheduled yet
    assert not view.keep({"kind": "Service", "spec": {"nodeName": "node1"}})


def test_new_files_outside_the_view_make_no_batch_and_wake_nobody(tmp_path: Path) -> None:
    src = FileSource(tmp_path, view=NodeView("node1"))
    assert src.scan() == []
    for i in range(3):
        (tmp_path / f"pod-{i}.yaml").write_text(POD % (f"web-{i}", "node2"))
    assert src.scan() == []
    (tmp_path / "pod-0.yaml").unlink()
    [gone] = src.scan()  # a file that was seen goes: one (empty) batch, as the store forgets the origin
    assert gone.deletes == () and gone.upserts == ()
