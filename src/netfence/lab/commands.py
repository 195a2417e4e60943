"""`netfence lab up | apply | probe | down`: the typer sub-app, mounted by `netfence.cli`.

Kept here rather than in `cli.py` so the lab's wiring sits with the lab; like the main CLI
it only loads, calls and renders. Errors are one line on stderr: exit 1 for a lab that
cannot be built or reached (or a probe that disagrees with the engine), 2 for bad usage.
"""

from __future__ import annotations

import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from netfence.cluster.state import ClusterState
from netfence.k8s.loader import load_paths
from netfence.lab import agents, netns
from netfence.lab import watch as lab_watch
from netfence.lab.compare import mismatches, render_json, render_text
from netfence.lab.topology import LabError, external_spans, plan_lab
from netfence.policy.ipranges import span_text

lab_app = typer.Typer(
    name="lab",
    help="A cluster of network namespaces: build it from manifests, load the rulesets, "
    "try every connection for real and compare with the engine. Needs root.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)

Name = Annotated[str, typer.Option("--name", help="Lab name (a-z, 0-9).")]
Manifests = Annotated[
    list[Path], typer.Argument(help="Manifest files or folders.", show_default=False)
]


class Output(StrEnum):
    txt = "txt"
    json = "json"


class Enforcer(StrEnum):
    agent = "agent"
    inline = "inline"


def _error(message: str, code: int = 1) -> typer.Exit:
    stderr.print(f"error: {message}", style="red", markup=False)
    return typer.Exit(code)


def _note(message: str) -> None:
    stderr.print(message, markup=False)


def _load(paths: list[Path], quiet: bool = False) -> ClusterState:
    state = ClusterState.build(load_paths(paths), fail_closed=True)
    if not quiet:
        for problem in state.problems:
            style = "red" if problem.severity == "error" else "yellow"
            stderr.print(str(problem), style=style, markup=False)
    return state


def _dataplane(enforce: bool) -> netns.Dataplane | None:
    if not enforce:
        return None
    try:
        return netns.load_dataplane()
    except ImportError as exc:  # pragma: no cover - the dataplane ships with netfence
        _note(f"warning: no dataplane ({exc}): the lab runs without policies")
        return None


def _info(name: str) -> dict[str, Any]:
    return netns.read_json(netns.state_dir(name) / "lab.json")


@lab_app.command("up")
def up_cmd(
    paths: Manifests,
    name: Name = "default",
    nodes: Annotated[int, typer.Option("--nodes", help="Number of lab nodes.")] = 2,
    enforce: Annotated[
        bool,
        typer.Option(
            "--enforce/--no-enforce",
            help="Load the nftables rulesets (--no-enforce: topology only, every probe "
            "should pass).",
        ),
    ] = True,
    enforcer: Annotated[
        Enforcer,
        typer.Option(
            "--enforcer",
            help="agent: one `netfence agent` per node follows a folder of the manifests as "
            "the lab runs them (`lab apply` rewrites it); inline: this command loads the "
            "tables itself.",
        ),
    ] = Enforcer.agent,
) -> None:
    """Build a lab from manifests (replacing a lab of the same name) and load its rulesets."""
    by_agents = enforce and enforcer == Enforcer.agent
    try:
        netns.require_root()
        state = _load(paths)
        plan = plan_lab(state, name=name, nodes=nodes, external=external_spans(state))
        timings: dict[str, float] = {}
        dataplane = _dataplane(enforce and not by_agents)
        with netns.locked(name):
            netns.up(plan, state, paths, dataplane=dataplane, timings=timings)
            if by_agents:
                del timings["rulesets"]  # (none loaded by this command)
                start = time.monotonic()
                agents.up(plan, state, paths)
                timings["agents"] = time.monotonic() - start
            netns.write_json(
                netns.state_dir(name) / "lab.json",
                {
                    "enforced": enforce,
                    "enforcer": enforcer.value,
                    "sources": [str(p) for p in paths],
                },
            )
    except LabError as exc:
        raise _error(str(exc)) from None
    own = sum(not p.host_network for p in plan.pods)
    if by_agents:
        port = agents.read_registry(name)[plan.nodes[0].name]["port"]
        how = (
            f"enforced by {len(plan.nodes)} agents (in each node: "
            f"`ip netns exec {plan.nodes[0].netns} curl 127.0.0.1:{port}/metrics`; "
            f"logs in {netns.state_dir(name) / 'logs'})"
        )
    else:
        how = "rulesets loaded" if dataplane is not None else "no rulesets (not enforcing)"
    _note(
        f"lab {name} up: {len(plan.nodes)} nodes, {len(plan.pods)} pods ({own} namespaces), "
        f"{len(plan.outside.addresses)} outside addresses; "
        + how
        + " ("
        + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items())
        + ")"
    )
    for span, reason in plan.outside.skipped:
        _note(f"note: external range {span_text(span)} not probed: {reason}")


@lab_app.command("apply")
def apply_cmd(paths: Manifests, name: Name = "default") -> None:
    """Reload manifests into a running lab: pods added or removed, rulesets reloaded (with
    agents: their folder rewritten, and the command waits until every node enforces it)."""
    try:
        netns.require_root()
        with netns.locked(name):
            old = netns.load_plan(name)
            old_state = _load([netns.manifests_dir(name)], quiet=True)
            state = _load(paths)
            new = plan_lab(state, name=name, external=external_spans(state), previous=old)
            info = _info(name)
            enforce = bool(info.get("enforced", True))
            enforcer = Enforcer(info.get("enforcer", Enforcer.inline.value))
            by_agents = enforce and enforcer == Enforcer.agent
            if by_agents:
                agents.make_room(new)  # before a hostNetwork listener wants an agent's port
            modes = netns.update(
                old,
                new,
                state,
                paths,
                dataplane=_dataplane(enforce and not by_agents),
                old_state=old_state,
            )
            start = time.monotonic()
            if by_agents:
                modes = agents.enforce(new, state, paths)
            seconds = time.monotonic() - start
            netns.write_json(
                netns.state_dir(name) / "lab.json",
                {
                    "enforced": enforce,
                    "enforcer": enforcer.value,
                    "sources": [str(p) for p in paths],
                },
            )
    except LabError as exc:
        raise _error(str(exc)) from None
    except Exception as exc:  # ApplyError and friends: the lab stays as it was loaded
        raise _error(f"{type(exc).__name__}: {exc}") from None
    added = {p.key for p in new.pods} - {p.key for p in old.pods}
    removed = {p.key for p in old.pods} - {p.key for p in new.pods}
    how = ", ".join(f"{node} {mode}" for node, mode in modes.items()) or "not enforcing"
    if by_agents:
        how = f"{how} (by the agents, all enforcing after {seconds:.2f} s)"
    _note(f"lab {name}: {len(added)} pod(s) added, {len(removed)} removed; rulesets: {how}")


@lab_app.command("probe")
def probe_cmd(
    name: Name = "default",
    output: Annotated[Output, typer.Option("--output", "-o", help="Output format.")] = Output.txt,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            help="Probe again every --interval seconds and redraw a source x destination "
            "matrix, changes highlighted (a `lab apply` shows in the next round); Ctrl-C ends.",
        ),
    ] = False,
    interval: Annotated[
        float, typer.Option("--interval", min=0.0, help="Seconds between watch rounds.")
    ] = 2.0,
    rounds: Annotated[
        int | None,
        typer.Option("--rounds", min=1, help="Stop --watch after N rounds (scripts, tests)."),
    ] = None,
) -> None:
    """Try every connection; print what got through, then where the engine disagrees."""
    if watch and output != Output.txt:
        raise _error("--watch draws a matrix: it has no --output json", 2)
    try:
        netns.require_root()
        if watch:
            console = Console(highlight=False)
            raise typer.Exit(lab_watch.watch(name, console, interval, rounds))
        comparisons, seconds = lab_watch.probe_lab(name)
    except LabError as exc:
        raise _error(str(exc)) from None
    enforced = bool(_info(name).get("enforced", True))
    if output == Output.json:
        sys.stdout.write(render_json(comparisons, {"lab": name, "enforced": enforced}))
    else:
        sys.stdout.write(render_text(comparisons))
    sys.stdout.flush()
    _note(f"{len(comparisons)} probes in {seconds:.2f} s")
    if not enforced:
        _note("note: this lab was built with --no-enforce: no policy is loaded")
    if mismatches(comparisons):
        raise typer.Exit(1)


@lab_app.command("down")
def down_cmd(name: Name = "default") -> None:
    """Remove the lab: listeners, every nf-<name>-* namespace, its state."""
    try:
        netns.require_root()
        with netns.locked(name):
            removed = netns.down(name)
    except LabError as exc:
        raise _error(str(exc)) from None
    _note(f"lab {name} down: {len(removed)} namespace(s) removed")
