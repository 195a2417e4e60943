"""The `netfence` command: thin wiring of loader -> state -> engine -> renderers.

typer gives typed options and help for free; rich is used only for what a person reads on a
terminal (problems, explanations), never for machine formats, which go to stdout verbatim
so that pipes and the conformance runner see exactly the documented text.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from netfence.analysis.connlist import connectivity
from netfence.analysis.render import ListFormat, render_list
from netfence.cluster.state import ClusterState
from netfence.k8s.loader import load_paths
from netfence.problems import Problem

app = typer.Typer(
    name="netfence",
    help="Kubernetes NetworkPolicy, implemented for real: see, check and enforce who can talk to whom.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)

Paths = Annotated[
    list[Path],
    typer.Argument(help="Manifest files or folders (read recursively).", show_default=False),
]


@app.callback()
def _group() -> None:
    """Kubernetes NetworkPolicy, implemented for real: see, check and enforce who can talk to whom."""


def print_problems(problems: list[Problem]) -> None:
    for problem in problems:
        style = "red" if problem.severity == "error" else "yellow"
        stderr.print(str(problem), style=style, markup=False)


def load_state(paths: list[Path]) -> ClusterState:
    """Load and validate; problems go to stderr, invalid objects are left out."""
    state = ClusterState.build(load_paths(paths))
    print_problems(state.problems)
    return state


def write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


@app.command("list")
def list_cmd(
    paths: Paths,
    output: Annotated[
        ListFormat, typer.Option("--output", "-o", help="Output format.")
    ] = ListFormat.txt,
) -> None:
    """Whole-cluster connectivity: every pair of workloads or external ranges that can connect."""
    state = load_state(paths)
    write(render_list(connectivity(state), output))
    if state.errors:
        raise typer.Exit(1)


def main() -> None:
    try:
        app()
    except BrokenPipeError:  # `netfence list ... | head`
        sys.stderr.close()
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
