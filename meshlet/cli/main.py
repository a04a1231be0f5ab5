"""Entry point of `meshlet`: the top-level command group and error reporting.

Commands raise typed errors with messages meant for the user (`LabError`, `PlanError`, `KernelError`);
here they become one red line and exit code 1 instead of a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys

import click
from rich.console import Console

from meshlet.lab.cluster import LabError
from meshlet.lab.kernel import KernelError
from meshlet.lab.mesh import MeshStartError
from meshlet.lab.plan import PlanError

err_console = Console(stderr=True)
NODE_COMMANDS = ("status", "check", "workloads", "services", "policies", "routes", "certs", "connections", "label")
COMMANDS = {
    "lab": "meshlet.cli.lab:lab",
    "install": "meshlet.cli.install:install",
    "uninstall": "meshlet.cli.install:uninstall",
    "validate": "meshlet.cli.validate:validate",
    "apply": "meshlet.cli.apply:apply",
    "delete": "meshlet.cli.apply:delete",
    "version": "meshlet.cli.version:version",
    "log-level": "meshlet.cli.log_level:log_level",
    **{name: f"meshlet.cli.node:{name}" for name in NODE_COMMANDS},
}
"""Command name -> where it is defined. Imported when named: `meshlet lab exec`, run hundreds of times by a
test suite and by scripts, should not import the Kubernetes client that `install` needs (~0.2 s each)."""


class LazyGroup(click.Group):
    """A group whose commands are imported when one is asked for (all of them for --help)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = COMMANDS.get(cmd_name)
        if where is None:
            return None
        module, attr = where.split(":")
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command), where
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="meshlet")
def cli() -> None:
    """meshlet: a sidecarless service mesh (node agent, node proxy, control service).

    \b
    Node commands (status, check, workloads, services, policies, routes, certs, connections) ask a node's
    agent and ztunnel: this host's, or with --node a node of the local lab (`meshlet lab --help`).
    """


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except (LabError, PlanError, KernelError, MeshStartError) as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(1)
    except PermissionError as exc:
        if os.geteuid() != 0:
            err_console.print(f"[red]error:[/red] {exc}: the lab needs root (netns, cgroups); run as root")
            sys.exit(1)
        raise
