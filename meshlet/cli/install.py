"""`meshlet install [--dry-run] [--set key=value ...]`: the cluster install's manifests.

With `--dry-run` the manifests are printed as one multi-document YAML stream (for `kubectl apply -f -`, review or
GitOps). Applying them to a cluster with server-side apply is not implemented yet: without `--dry-run` the
command says so and exits non-zero rather than pretend.
"""

from __future__ import annotations

import click

SET_HELP = (
    "Change one value (repeatable): namespace, image, imagePullPolicy, trustDomain, redirect (auto|ebpf|iptables), "
    "dataplaneLabel, podsCgroup, control.replicas, resources.<control|agent|ztunnel>.<requests|limits>.<cpu|memory>."
)


@click.command()
@click.option("--dry-run", is_flag=True, help="Print the manifests as YAML instead of applying them.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
def install(dry_run: bool, sets: tuple[str, ...]) -> None:
    """Install meshlet on a Kubernetes cluster: CRDs, RBAC, control and the node DaemonSet.

    \b
    meshlet install --dry-run | kubectl apply --server-side -f -
    """
    # Imported here, not at the top: every other command works even where the daemonset package is missing
    # (an editable install made before it existed does not see a new top-level package).
    from daemonset import Values, ValuesError, render, to_yaml

    try:
        values = Values().with_sets(sets)
    except ValuesError as exc:
        raise click.UsageError(str(exc)) from None
    manifests = to_yaml(render(values))
    if not dry_run:
        raise click.ClickException(
            "applying to a cluster is not implemented yet; use --dry-run and apply the output with "
            "`kubectl apply --server-side -f -`"
        )
    click.echo(manifests, nl=False)
