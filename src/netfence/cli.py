"""The `netfence` command: thin wiring of loader -> state -> engine -> renderers.

typer gives typed options and help for free; rich is used only for what a person reads on a
terminal (problems, explanations, summaries), never for machine formats, which go to stdout
verbatim so that pipes and the conformance runner see exactly the documented text.

Exit codes: 0 success; 1 the input has errors (the rest is still analysed, as the API
server would have rejected just those objects), `check` found errors (or warnings with
--strict), or `explain` found the connection denied; 2 usage errors.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.text import Text

# What the commands' options name is imported here; the matrix, lint, explanations and the
# report (numpy and all) by the commands that use them, so that `netfence agent`, which runs
# for good on every node, does not hold them.
from netfence.analysis.formats import DiffFormat, ListFormat
from netfence.cluster.state import ClusterState
from netfence.dataplane.compile import compile_node
from netfence.dataplane.decisions import DecisionLog
from netfence.k8s.loader import load_paths
from netfence.policy.conns import parse_port
from netfence.policy.engine import Engine
from netfence.problems import Problem

if TYPE_CHECKING:
    from netfence.analysis.connlist import ConnList

app = typer.Typer(
    name="netfence",
    help="Kubernetes NetworkPolicy, implemented for real: see, check and enforce who can "
    "talk to whom.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)
stdout = Console(highlight=False, soft_wrap=True)

Paths = Annotated[
    list[Path],
    typer.Argument(help="Manifest files or folders (read recursively).", show_default=False),
]


class HostNetwork(StrEnum):
    pod = "pod"
    node = "node"


HostNetworkOption = Annotated[
    HostNetwork,
    typer.Option(
        "--host-network",
        help="hostNetwork pods, whose policy behaviour Kubernetes leaves undefined: 'pod' "
        "selects and governs them like other pods (netpol-analyzer's reading); 'node' ignores "
        "them in selectors and treats their traffic as the node's (what netfence enforces).",
    ),
]


class TextOrJson(StrEnum):
    txt = "txt"
    json = "json"


@app.callback()
def _group() -> None:
    """Kubernetes NetworkPolicy, implemented for real: see, check and enforce who can talk
    to whom."""


def print_problems(problems: list[Problem]) -> None:
    for problem in problems:
        style = "red" if problem.severity == "error" else "yellow"
        stderr.print(str(problem), style=style, markup=False)


def load_state(
    paths: list[Path], *, quiet: bool = False, fail_closed: bool = False
) -> ClusterState:
    """Load and validate; problems go to stderr, invalid objects are left out (or, with
    `fail_closed`, rejected NetworkPolicies deny all for what they cover)."""
    state = ClusterState.build(load_paths(paths), fail_closed=fail_closed)
    if not quiet:
        print_problems(state.problems)
    return state


def write(text: str | Iterable[str]) -> None:
    for chunk in [text] if isinstance(text, str) else text:
        sys.stdout.write(chunk)
    sys.stdout.flush()


def fail(message: str, code: int = 2) -> typer.Exit:
    stderr.print(f"error: {message}", style="red", markup=False)
    return typer.Exit(code)


@app.command("list")
def list_cmd(
    paths: Paths,
    output: Annotated[
        ListFormat, typer.Option("--output", "-o", help="Output format.")
    ] = ListFormat.txt,
    host_network: HostNetworkOption = HostNetwork.pod,
) -> None:
    """Whole-cluster connectivity: every pair of workloads or external ranges that can connect."""
    from netfence.analysis.connlist import connectivity
    from netfence.analysis.render import render_list
    from netfence.policy.matrix import ClusterMatrix

    state = load_state(paths)
    matrix = ClusterMatrix(state, host_network=host_network.value)
    connections = connectivity(state, matrix)
    if output == ListFormat.txt and stdout.is_terminal:
        _print_colored(connections)
    else:
        write(render_list(connections, output))
    if state.errors:
        raise typer.Exit(1)


def _print_colored(connections: ConnList) -> None:
    """The txt form with peers and connections coloured; same characters as when piped."""
    for c in connections:
        line = Text()
        line.append(str(c.src), style="magenta" if c.src.is_external else "cyan")
        line.append(" => ", style="dim")
        line.append(str(c.dst), style="magenta" if c.dst.is_external else "cyan")
        line.append(" : ", style="dim")
        line.append(str(c.conns), style="bold green" if c.conns.is_all else "green")
        stdout.print(line)


@app.command("explain")
def explain_cmd(
    path: Annotated[Path, typer.Argument(help="Manifest file or folder.", show_default=False)],
    src: Annotated[
        str, typer.Option("--from", help="Source: NS/NAME (pod or workload), an IP or a CIDR.")
    ],
    dst: Annotated[
        str, typer.Option("--to", help="Destination: NS/NAME (pod or workload), an IP or a CIDR.")
    ],
    port: Annotated[
        str | None, typer.Option("--port", help="Port to decide, e.g. 80/TCP or 53/UDP.")
    ] = None,
    output: Annotated[
        TextOrJson, typer.Option("--output", "-o", help="Output format.")
    ] = TextOrJson.txt,
    host_network: HostNetworkOption = HostNetwork.pod,
) -> None:
    """Why a connection is allowed or denied: the isolating policies and the deciding rules."""
    from netfence.analysis.explain import EndpointError, as_dict, explain, render_text

    try:
        wanted = parse_port(port) if port else None
    except ValueError as exc:
        raise fail(f"--port: {exc}") from None
    state = load_state([path])
    engine = Engine(state, host_network=host_network.value)
    try:
        result = explain(engine, src, dst, wanted)
    except EndpointError as exc:
        raise fail(str(exc)) from None
    if output == TextOrJson.json:
        write(json.dumps(as_dict(result), indent=2) + "\n")
    else:
        stdout.print(render_text(result), markup=False, end="")
    if state.errors or (wanted is not None and not result.allowed):
        raise typer.Exit(1)


@app.command("check")
def check_cmd(
    paths: Paths,
    strict: Annotated[bool, typer.Option("--strict", help="Fail on warnings too.")] = False,
    output: Annotated[
        TextOrJson, typer.Option("--output", "-o", help="Output format.")
    ] = TextOrJson.txt,
    host_network: HostNetworkOption = HostNetwork.pod,
) -> None:
    """Validation errors (the API server's rules), then lint warnings about the policies."""
    from netfence.analysis.lint import lint
    from netfence.policy.matrix import ClusterMatrix

    state = load_state(paths, quiet=True)
    matrix = ClusterMatrix(state, host_network=host_network.value)
    errors = [p for p in state.problems if p.severity == "error"]
    warnings = [p for p in state.problems if p.severity == "warning"] + lint(state, matrix)
    problems = errors + warnings
    if output == TextOrJson.json:
        write(json.dumps([p.as_dict() for p in problems], indent=2) + "\n")
    else:
        for problem in problems:
            style = "red" if problem.severity == "error" else "yellow"
            stdout.print(str(problem), style=style, markup=False)
        cluster_wide = (
            f", {len(state.cluster_policies)} cluster-wide policies"
            if state.cluster_policies
            else ""
        )
        summary = (
            f"{len(errors)} error(s), {len(warnings)} warning(s) in {len(state.policies)} "
            f"valid policies{cluster_wide}, {len(state.pods)} pods, "
            f"{len(state.namespaces)} namespaces"
        )
        stderr.print(summary, style="bold", markup=False)
    if errors or (strict and warnings):
        raise typer.Exit(1)


@app.command("diff")
def diff_cmd(
    old: Annotated[Path, typer.Argument(help="Manifests before the change.", show_default=False)],
    new: Annotated[Path, typer.Argument(help="Manifests after the change.", show_default=False)],
    output: Annotated[
        DiffFormat, typer.Option("--output", "-o", help="Output format.")
    ] = DiffFormat.txt,
    host_network: HostNetworkOption = HostNetwork.pod,
) -> None:
    """Connectivity added, removed or changed between two sets of manifests."""
    before = load_state([old])
    after = load_state([new])
    from netfence.analysis.diff import diff, render_diff

    write(render_diff(diff(before, after, host_network.value), output))
    if before.errors or after.errors:
        raise typer.Exit(1)


@app.command("compile")
def compile_cmd(
    paths: Paths,
    node: Annotated[
        str, typer.Option("--node", help="The node whose pods (spec.nodeName) get rules.")
    ],
    decision_log: Annotated[
        bool,
        typer.Option("--decision-log", help="With the agent's decision log (NFLOG) rules."),
    ] = False,
    audit: Annotated[
        bool, typer.Option("--audit", help="As the agent's --audit: log would-be drops, accept.")
    ] = False,
) -> None:
    """The nftables ruleset netfence would load on one node, for inspection."""
    state = load_state(paths, fail_closed=True)
    local = [p for p in state.pods if p.node == node]
    if not local:
        stderr.print(
            f"note: no pod has spec.nodeName {node!r}; the table holds only peers",
            style="yellow",
            markup=False,
        )
    decisions = DecisionLog(audit=audit) if decision_log or audit else None
    write(compile_node(state, node, decisions))
    if state.errors:
        raise typer.Exit(1)


@app.command("report")
def report_cmd(
    paths: Paths,
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="The HTML file to write ('-': stdout).", show_default=False
        ),
    ],
    against: Annotated[
        Path | None,
        typer.Option("--against", help="Older manifests: the report highlights what changed."),
    ] = None,
    host_network: HostNetworkOption = HostNetwork.pod,
) -> None:
    """One self-contained HTML file: graph, matrix, explanations, findings (and the diff)."""
    from netfence.report.html import render_html
    from netfence.report.model import report_data

    state = load_state(paths)
    old = load_state([against]) if against is not None else None
    data = report_data(
        state,
        old=old,
        host_network=host_network.value,
        source=" ".join(str(p) for p in paths),
        against=str(against or ""),
    )
    page = render_html(data)
    if str(output) == "-":
        write(page)
    else:
        try:
            output.write_text(page, encoding="utf-8")
        except OSError as exc:
            raise fail(f"cannot write {output}: {exc.strerror}", 1) from None
        stderr.print(f"wrote {output} ({len(page) / 1e6:.1f} MB)", markup=False)
    if state.errors or (old is not None and old.errors):
        raise typer.Exit(1)


@app.command("agent")
def agent_cmd(
    node_name: Annotated[
        str,
        typer.Option("--node-name", envvar="NODE_NAME", help="The node whose pods to enforce."),
    ],
    manifests: Annotated[
        Path | None,
        typer.Option("--manifests", help="Follow a folder of manifests instead of the API."),
    ] = None,
    kubeconfig: Annotated[
        str | None,
        typer.Option(
            "--kubeconfig", help="Kubeconfig for the API (default: in-cluster configuration)."
        ),
    ] = None,
    netns: Annotated[
        str | None,
        typer.Option("--netns", help="Enforce in this network namespace (the lab's nodes)."),
    ] = None,
    listen: Annotated[
        str, typer.Option("--listen", help="host:port for /metrics, /healthz, /readyz; or off.")
    ] = "127.0.0.1:9990",
    node_address: Annotated[
        list[str] | None,
        typer.Option("--node-address", help="The node's own address (never filtered)."),
    ] = None,
    pod_cidr: Annotated[
        list[str] | None,
        typer.Option(
            "--pod-cidr",
            help="The node's pod range: addresses there that no known pod holds are refused "
            "until the pod's rules are programmed. Default: the ranges the node's Node object "
            "declares (spec.podCIDRs), when the source has it; 'none' refuses nothing.",
        ),
    ] = None,
    decision_log: Annotated[
        str | None,
        typer.Option(
            "--decision-log",
            help="Append refused new connections (NFLOG, rate-limited) as JSON lines to this "
            "file ('-': stdout).",
        ),
    ] = None,
    audit: Annotated[
        bool,
        typer.Option(
            "--audit",
            help="Enforce nothing: accept and log what the policies would refuse (implies the "
            "decision log, on stdout unless --decision-log says otherwise).",
        ),
    ] = False,
) -> None:
    """Keep this node's nftables table equal to what the cluster's policies demand."""
    import asyncio
    import ipaddress

    from netfence.agent.main import Options, configure_logging, run
    from netfence.dataplane.nflog import NflogError
    from netfence.sources.changes import SourceError

    host, _, port = listen.rpartition(":")
    if listen != "off" and not (host and port.isdigit()):
        raise fail(f"--listen {listen!r}: write host:port, e.g. 127.0.0.1:9990, or off")
    try:
        addresses = frozenset(str(ipaddress.ip_address(a)) for a in node_address or ())
        cidrs = (
            None
            if not pod_cidr
            else tuple(ipaddress.ip_network(c) for c in pod_cidr if c != "none")
        )
    except ValueError as exc:
        raise fail(f"--node-address/--pod-cidr: {exc}") from None
    configure_logging()
    options = Options(
        node=node_name,
        manifests=manifests,
        kubeconfig=kubeconfig,
        netns=netns,
        listen=None if listen == "off" else (host.strip("[]"), int(port)),
        node_addresses=addresses,
        pod_cidrs=cidrs,
        decision_log=decision_log,
        audit=audit,
    )
    try:
        asyncio.run(run(options))
    except (SourceError, NflogError, OSError) as exc:
        raise fail(str(exc), 1) from None


# The lab's commands live with the lab (netfence.lab.commands); mounted here as `lab`.
from netfence.lab.commands import lab_app  # noqa: E402

app.add_typer(lab_app, name="lab")


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
