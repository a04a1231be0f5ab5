"""`meshlet install [--dry-run] [--set key=value ...]` and `meshlet uninstall [--crds]`.

The manifests are rendered from the values, then checked by our own lint (daemonset/lint.py): a render that
breaks a rule is refused (exit 1, naming the object, the container and the rule) before anything is printed or
applied. With `--dry-run` they are printed as one multi-document YAML stream (for `kubectl apply -f -`, review or
GitOps); without it they are applied with server-side apply to the cluster of `--kubeconfig` (or kubectl's
default), see meshlet/cli/cluster.py. HTTPRoute comes from the Gateway API CRDs, which the install does not
ship: a missing one is a warning, or an error with `--require-gateway-api`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import urllib3
from kubernetes.client.exceptions import ApiException

from meshlet.cli.kubecli import api_client, kubeconfig_option

SET_HELP = (
    "Change one value (repeatable): namespace, image, imagePullPolicy, trustDomain, redirect (auto|ebpf|iptables), "
    "dataplaneLabel, istioCompat (true|false), podsCgroup, caSecret, control.replicas, "
    "resources.<control|agent|ztunnel>.<requests|limits>.<cpu|memory>."
)


def rendered(sets: tuple[str, ...]) -> list[dict[str, Any]]:
    """The linted render for `sets`; a bad `--set` is a usage error, a lint finding a refusal."""
    # Imported here, not at the top: every other command works even where the daemonset package is missing
    # (an editable install made before it existed does not see a new top-level package).
    from daemonset import Values, ValuesError, render
    from daemonset.lint import lint

    try:
        values = Values().with_sets(sets)
    except ValuesError as exc:
        raise click.UsageError(str(exc)) from None
    objects = render(values)
    findings = lint(objects)
    if findings:
        lines = "\n".join(f"  {f}" for f in findings)
        raise click.ClickException(f"the rendered manifests fail the lint; nothing was printed or applied:\n{lines}")
    return objects


@click.command()
@click.option("--dry-run", is_flag=True, help="Print the manifests as YAML instead of applying them.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@kubeconfig_option
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds to wait for the CRDs.")
@click.option("--require-gateway-api", is_flag=True, help="Fail (apply nothing) when HTTPRoute's CRD is missing.")
def install(
    dry_run: bool, sets: tuple[str, ...], kubeconfig: Path | None, timeout: float, require_gateway_api: bool
) -> None:
    """Install meshlet on a Kubernetes cluster: CRDs, RBAC, control and the node DaemonSet.

    \b
    meshlet install                      # server-side apply to kubectl's cluster
    meshlet install --dry-run | kubectl apply --server-side -f -
    """
    objects = rendered(sets)
    if dry_run:
        from daemonset import to_yaml

        click.echo(to_yaml(objects), nl=False)
        return
    from meshlet.cli.cluster import HTTPROUTE_CRD, ClusterError, Installer

    try:
        installer = Installer(api_client(kubeconfig))
        if not installer.has_crd(HTTPROUTE_CRD):
            message = (
                f"the Gateway API CRD {HTTPROUTE_CRD} is not installed: HTTPRoutes cannot be used until it is "
                "(https://gateway-api.sigs.k8s.io/guides/#installing-gateway-api)"
            )
            if require_gateway_api:
                raise click.ClickException(message)
            click.secho(f"warning: {message}", fg="yellow", err=True)
        outcomes = installer.install(objects, timeout=timeout, report=lambda o: click.echo(str(o)))
    except ClusterError as exc:
        raise click.ClickException(str(exc)) from None
    except (ApiException, urllib3.exceptions.HTTPError) as exc:
        raise click.ClickException(f"the API server: {exc}") from None
    changed = sum(o.result != "unchanged" for o in outcomes)
    click.echo(f"meshlet installed: {len(outcomes)} objects, {changed} created or configured")


@click.command()
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="The values the install used (namespace).")
@kubeconfig_option
@click.option("--crds", is_flag=True, help="Also delete the CRDs, and with them every policy stored in them.")
def uninstall(sets: tuple[str, ...], kubeconfig: Path | None, crds: bool) -> None:
    """Remove what `meshlet install` applied (not the CRDs unless --crds). Safe to run again."""
    objects = rendered(sets)
    from meshlet.cli.cluster import ClusterError, Installer

    try:
        outcomes = Installer(api_client(kubeconfig)).uninstall(objects, crds, report=lambda o: click.echo(str(o)))
    except ClusterError as exc:
        raise click.ClickException(str(exc)) from None
    except (ApiException, urllib3.exceptions.HTTPError) as exc:
        raise click.ClickException(f"the API server: {exc}") from None
    deleted = sum(o.result == "deleted" for o in outcomes)
    click.echo(f"meshlet uninstalled: {deleted} objects deleted" + ("" if crds else " (CRDs kept; --crds removes)"))
