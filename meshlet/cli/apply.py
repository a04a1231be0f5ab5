"""`meshlet apply -f` and `meshlet delete -f`: objects into (and out of) the local lab's store, as `kubectl apply`
and `kubectl delete` put them into a cluster; the same as `meshlet lab apply|delete`, named like kubectl's."""

from __future__ import annotations

import click

from meshlet.cli.lab import _manifests, _need_root, _run_apps

_LAB = click.option("--lab", "lab_id", envvar="MESHLET_LAB", default="demo", show_default=True,
                    help="The local lab whose store to change. Env: MESHLET_LAB.")  # fmt: skip
_FILE = click.option("-f", "--filename", "path", required=True, help="YAML manifests (`-` reads stdin).")


@click.command()
@_FILE
@_LAB
def apply(path: str, lab_id: str) -> None:
    """Create or update objects from manifests in the lab's store, the way `kubectl apply` does (Deployments
    become pods; policies, routes and Services reach control and every ztunnel). Same as `meshlet lab apply`."""
    _need_root()
    _run_apps(lab_id, _manifests(path, "-f"))


@click.command()
@_FILE
@_LAB
def delete(path: str, lab_id: str) -> None:
    """Delete the objects the manifests name from the lab's store, the way `kubectl delete -f` does."""
    _need_root()
    _run_apps(lab_id, _manifests(path, "-f"), delete=True)
