"""`meshlet validate -f FILE|DIR`: the store's own checks, offline, on YAML before it is applied.

Each file is read as the file source reads the store (multi-document YAML, nesting bounded, a broken file an error
of its own) and every object goes through control's converters in a fresh store, so what is reported is exactly
what control would refuse, with the file, the object and the field: a bad enum, a selector of the wrong type, a
missing port, an IP two pods claim, a second TrafficPolicy on a port. Kinds the mesh does not read (Deployments,
ConfigMaps) are counted, not errors; Istio kinds meshlet does not apply (VirtualService, DestinationRule) are,
with what to use instead. Then the warnings control would give (control/model/advice.py): Istio's root namespace
or labels without `--istio-compat`, and, when the files hold the pods too, policies that select nothing. Like
`istioctl analyze`, it exits 1 when anything is wrong (warnings alone do not).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from control.model.advice import mesh_warnings
from control.model.kube import Pod
from control.model.mesh import MeshSettings
from control.sources.base import SourceBatch
from control.sources.files import SUFFIXES, FileSource
from control.store import ConfigStore

console = Console()


def batches_of(paths: tuple[Path, ...]) -> list[SourceBatch]:
    """Every file named, and every store file under every directory named, as the file source reads them."""
    out: list[SourceBatch] = []
    for path in paths:
        if path.is_dir():
            out += FileSource(path).scan()
        else:
            out.append(FileSource(path.parent).read(path))
    return out


def check(paths: tuple[Path, ...], istio_compat: bool = False) -> dict[str, Any]:
    """{ok, files, objects, problems: [{file, object, problem}], warnings: [{file, object, code, warning}]}: what
    control would refuse, and why; what it would take but warn about (control/model/advice.py). Without a Pod
    among the files, only the warnings the objects show alone (no cluster's pods to see what a policy selects)."""
    batches = batches_of(paths)
    settings = MeshSettings(istio_compat=istio_compat)
    store = ConfigStore(settings)
    quiet = logging.getLogger("control")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # the store logs each refusal (at ERROR): here they are the report
    try:
        store.apply(batches)
    finally:
        quiet.setLevel(level)
    problems = [
        {"file": _shown(e.origin), "object": e.object, "problem": e.reason}
        for e in sorted(store.all_errors(), key=lambda e: (e.origin, e.object or "", e.reason))
    ]
    objects = sum(len(b.upserts) for b in batches)
    held = list(store.objects.values())
    warnings = [
        {"file": _shown(store.origin(w.key) or ""), "object": w.object, "code": w.code, "warning": w.message}
        for w in mesh_warnings(held, settings, workloads_known=any(isinstance(o, Pod) for o in held))
    ]
    return {"ok": not problems, "files": len(batches), "objects": objects, "problems": problems, "warnings": warnings}


def _shown(origin: str) -> str:
    try:
        return os.path.relpath(origin)
    except ValueError:
        return origin


_FILES_HELP = f"A YAML file, or a directory of them ({', '.join(SUFFIXES)}, recursively). Repeatable."


@click.command()
@click.option("-f", "--filename", "paths", multiple=True, required=True, type=click.Path(exists=True, path_type=Path),
              help=_FILES_HELP)  # fmt: skip
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--istio-compat", is_flag=True, help="As a control run with --istio-compat would see them.")
def validate(paths: tuple[Path, ...], output: str, istio_compat: bool) -> None:
    """Check Kubernetes-shaped YAML as control would, offline: every problem with its file, object and field,
    then the warnings (objects control takes that will not do what they look meant to).

    Exits 0 when control would take every object (warnings or not), 1 when it would refuse any.
    """
    report = check(paths, istio_compat)
    if output == "json":
        click.echo(json.dumps(report, indent=2, sort_keys=True))
        sys.exit(0 if report["ok"] else 1)
    if report["ok"]:
        console.print(f"[green]no problems[/green] in {report['objects']} objects, {report['files']} files")
    else:
        table = Table("FILE", "OBJECT", "PROBLEM", title=f"{len(report['problems'])} problems", title_justify="left")
        for p in report["problems"]:
            table.add_row(escape(p["file"]), escape(p["object"] or "-"), escape(p["problem"]))  # YAML has [brackets]
        console.print(table)
    if report["warnings"]:
        table = Table("FILE", "OBJECT", "WARNING", title=f"{len(report['warnings'])} warnings", title_justify="left")
        for w in report["warnings"]:
            table.add_row(escape(w["file"]), escape(w["object"]), escape(w["warning"]))
        console.print(table)
    sys.exit(0 if report["ok"] else 1)
