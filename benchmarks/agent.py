#!/usr/bin/env python3
"""Benchmark the per-node agent at 10,000 pods / 1,000 policies (as root).

One run prints, with pass/fail against the targets of the agent issue:

(a) event -> enforced latency of a pod add, p50/p99 (target p99 < 50 ms). The real `Agent`
    runs in this process with a synthetic source: an async generator fed from an
    `asyncio.Queue`, which yields the complete view first and then one pod-add `Update` at a
    time. Each added pod is a new replica of a random pod of the cluster (same labels, owner
    and ports; fresh addresses from 10.250.0.0/16 and fd00:250::/64), placed on the measured
    node with probability `--local` and on another node otherwise, so both kinds of add are
    measured: a local pod gets rows of its own, a remote one only touches peer elements.
    The clock starts when the `Update` is put in the queue and stops when the `Enforcer`
    call that carried the pod returns in the agent's worker thread (an `Enforcer` subclass
    records it; the agent is not modified). That span holds the source hand-off, the store,
    the wake-up of the enforce loop, the incremental compile and the nft element transaction
    (returned: the kernel enforces it); the conntrack sweep the agent runs after each load is
    off that path (the change is enforced for new connections before it). The compile +
    load part alone (`Applied.seconds`) and
    the agent's own `netfence_event_to_enforced_seconds` histogram (which starts when the
    agent reads the update, and counts only changes that loaded something) are shown too.
    Adds are sent one at a time, after the previous one was enforced and a random pause of
    up to `--gap` seconds (so the agent's once-a-second drift check runs in between, as it
    would in a cluster), never as a burst that the agent would coalesce.
(b) full sync: from putting the complete view in the queue to the first table loaded (the
    agent ready), in the same process; and, as information, from starting
    `netfence agent --manifests DIR` to its `ready` log line (interpreter start-up, reading
    and validating the YAML, compiling, loading).
(c) the agent's memory at 10,000 pods (target < 100 MB): `netfence agent --manifests DIR
    --node-name NODE --netns NS --listen off` as a child process; VmRSS and VmHWM are read
    from /proc/PID/status `--settle` seconds after it logged `ready`.

After (a) the kernel's table is compared with the same cluster (the final store) compiled
from scratch and loaded into a second namespace: both `nft list` outputs must be equal, so
the latency figures are those of a correct incremental path.

    python benchmarks/agent.py                  # as root; ~2-4 minutes on 2 cores
    python benchmarks/agent.py --adds 100 --no-rss

The cluster comes from `generate.py` (cached in benchmarks/out like `run.py` does), whose
pods carry `spec.nodeName` (50 pods per node) and `status.podIPs`. The measured node is the
one with most pods unless `--node` names one. Everything runs in network namespaces named
`nf-agentbench-<pid>-...` (not `nf-bench-`: `netfence lab down --name bench`, which
`dataplane.py` runs, removes every `nf-bench-*` namespace), removed at the end, on errors
and on Ctrl-C/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import ipaddress
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncGenerator, Iterator, Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from netfence.agent.loop import Agent  # noqa: E402  (benchmarks/ is not a package)
from netfence.cluster.state import ClusterState, Pod  # noqa: E402
from netfence.dataplane.apply import apply_ruleset, list_table, normalized  # noqa: E402
from netfence.dataplane.compile import compile_node  # noqa: E402
from netfence.dataplane.enforcer import Applied, Enforcer, PodChanges  # noqa: E402
from netfence.k8s.loader import load_paths  # noqa: E402
from netfence.lab.signals import held, interrupting  # noqa: E402
from netfence.sources.changes import Change, Update  # noqa: E402
from run import add_cluster_arguments, cluster_dir, load_average  # noqa: E402

TARGET_P99_SECONDS = 0.050
TARGET_RSS_BYTES = 100 * 2**20
ADDED4 = ipaddress.IPv4Network("10.250.0.0/16")  # addresses of the pods the benchmark adds
ADDED6 = ipaddress.IPv6Network("fd00:250::/64")


class SetupError(Exception):
    """The benchmark cannot run as asked; the message says why."""


# -- namespaces ---------------------------------------------------------------------------


@contextlib.contextmanager
def namespaces(count: int) -> Iterator[list[str]]:
    """`count` fresh network namespaces of this run, deleted whatever happens."""
    if os.geteuid() != 0:
        raise SetupError("needs root (it creates network namespaces)")
    names = [f"nf-agentbench-{os.getpid()}-{i}" for i in range(count)]
    created: list[str] = []
    with interrupting():
        try:
            for name in names:
                with held():  # a signal must not land between `ip netns add` and the record
                    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
                    created.append(name)
            yield names
        finally:
            with held():
                for name in created:
                    subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


# -- the cluster and the pods to add ------------------------------------------------------


def load_cluster(args: argparse.Namespace) -> tuple[Path, ClusterState, str]:
    """The folder, its state as `FilesSource` reads it, and the measured node."""
    folder = args.dir or cluster_dir(HERE / "out", args.pods, args.policies, args.seed)
    state = ClusterState.validated(load_paths([folder]))
    if not state.pods or not state.policies:
        raise SetupError(f"{folder}: no pods or no policies")
    per_node = Counter(p.node for p in state.pods if p.node is not None)
    if len(per_node) < 2:
        raise SetupError(f"{folder}: pods need spec.nodeName on at least two nodes")
    node = args.node or min(per_node, key=lambda n: (-per_node[n], n))
    if node not in per_node:
        raise SetupError(f"{folder}: no pod on node {node}")
    return folder, state, node


def complete_view(state: ClusterState) -> Update:
    """The cluster as one `Update`, as a source's first item."""
    records = [*state.namespaces.values(), *state.pods, *state.policies]
    return Update(tuple(Change.upsert(r) for r in records), tuple(state.problems))


def new_pods(state: ClusterState, node: str, count: int, local: float, seed: int) -> list[Pod]:
    """`count` new replicas of random pods of the cluster, a share `local` on `node`."""
    rng = random.Random(seed)
    templates = [p for p in state.pods if not p.host_network]
    hosts = {p.node: p.host_ips for p in state.pods if p.node is not None}
    others = sorted(n for n in hosts if n != node)
    used = {ip for p in state.pods for ip in p.ips}
    if count > ADDED4.num_addresses - 2 or any(ip in ADDED4 or ip in ADDED6 for ip in used):
        raise SetupError(f"the cluster uses {ADDED4} or {ADDED6}, where added pods go")
    pods = []
    for i in range(count):
        template = rng.choice(templates)
        where = node if rng.random() < local else rng.choice(others)
        pods.append(
            dataclasses.replace(
                template,
                name=f"{template.name}-add{i}",
                ips=(ADDED4.network_address + 2 + i, ADDED6.network_address + 2 + i),
                node=where,
                host_ips=hosts[where],
            )
        )
    return pods


# -- the agent in this process ------------------------------------------------------------


class QueueSource:
    """A `Source` whose updates are whatever is put in the queue, in order."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Update] = asyncio.Queue()

    async def updates(self) -> AsyncGenerator[Update, None]:
        while True:
            yield await self.queue.get()


@dataclasses.dataclass(frozen=True)
class Enforced:
    """One `Enforcer` call the agent made: when it returned, what it carried and did."""

    called: float  # time.perf_counter()
    returned: float
    keys: frozenset[str]  # pods upserted or deleted (all of them for `apply`)
    applied: Applied


class TimedEnforcer(Enforcer):
    """An `Enforcer` that reports each call's return to the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, netns: str, node: str) -> None:
        super().__init__(netns, node)
        self.calls: asyncio.Queue[Enforced] = asyncio.Queue()
        self._loop = loop

    def apply(self, state: ClusterState, sweep: bool = True) -> Applied:
        called = time.perf_counter()
        applied = super().apply(state, sweep)
        self._report(called, frozenset(p.key for p in state.pods), applied)
        return applied

    def update(self, pods: PodChanges, sweep: bool = True) -> Applied:
        called = time.perf_counter()
        applied = super().update(pods, sweep)
        self._report(called, frozenset([*(p.key for p in pods.upserted), *pods.deleted]), applied)
        return applied

    def _report(self, called: float, keys: frozenset[str], applied: Applied) -> None:
        done = Enforced(called, time.perf_counter(), keys, applied)
        self._loop.call_soon_threadsafe(self.calls.put_nowait, done)


@dataclasses.dataclass
class InProcess:
    sync_seconds: float
    sync_mode: str
    elements: int
    adds: list[tuple[Pod, float, Enforced]]  # pod, seconds from put to enforced, the call
    histogram: dict[float, float]  # the agent's own: upper bound -> cumulative count
    final: ClusterState
    drift_repairs: float


async def _enforced(enforcer: TimedEnforcer, key: str, timeout: float) -> Enforced:
    """The first enforcer call that carries `key`."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                call = await enforcer.calls.get()
                if key in call.keys:
                    return call
    except TimeoutError:
        raise SetupError(f"the agent did not enforce {key} within {timeout:g} s") from None


async def run_agent(
    state: ClusterState, node: str, netns: str, pods: Sequence[Pod], gap: float, seed: int
) -> InProcess:
    source = QueueSource()
    enforcer = TimedEnforcer(asyncio.get_running_loop(), netns, node)
    agent = Agent(source, enforcer)
    task = asyncio.create_task(agent.run())
    rng = random.Random(seed)
    try:
        first = complete_view(state)
        start = time.perf_counter()
        source.queue.put_nowait(first)
        synced = await _enforced(enforcer, state.pods[0].key, timeout=600)
        adds = []
        for pod in pods:
            await asyncio.sleep(rng.uniform(0, gap))
            put = time.perf_counter()
            source.queue.put_nowait(Update((Change.upsert(pod),)))
            call = await _enforced(enforcer, pod.key, timeout=60)
            adds.append((pod, call.returned - put, call))
        await asyncio.sleep(0.2)  # let the loop record the last observation
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task  # raises what stopped the agent, if something did
    registry = agent.metrics.registry
    histogram = {
        float(s.labels["le"]): s.value
        for metric in registry.collect()
        if metric.name == "netfence_event_to_enforced_seconds"
        for s in metric.samples
        if s.name.endswith("_bucket")
    }
    program = enforcer.program
    return InProcess(
        sync_seconds=synced.returned - start,
        sync_mode=synced.applied.mode,
        elements=program.element_count if program else 0,
        adds=adds,
        histogram=histogram,
        final=agent.store.snapshot(),
        drift_repairs=registry.get_sample_value("netfence_drift_repairs_total") or 0.0,
    )


def check_table(netns: str, reference_netns: str, state: ClusterState, node: str) -> None:
    """The agent's table equals the final cluster compiled from scratch: the same chains,
    rules and set elements, as nft lists them."""
    apply_ruleset(reference_netns, compile_node(state, node))
    if normalized(list_table(netns)) != normalized(list_table(reference_netns)):
        raise SetupError(
            "after the adds the agent's table differs from the cluster compiled from scratch"
        )


# -- the agent as a process ---------------------------------------------------------------


@dataclasses.dataclass
class Child:
    ready_seconds: float  # from spawning to the `ready` log line
    rss: int  # bytes, after settling
    hwm: int


def _status_bytes(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024  # kB
    raise SetupError(f"no {field} in /proc/{pid}/status")


def run_child(folder: Path, node: str, netns: str, settle: float, timeout: float) -> Child:
    argv = [sys.executable, "-m", "netfence.cli", "agent", "--manifests", str(folder)]
    argv += ["--node-name", node, "--netns", netns, "--listen", "off"]
    ready = threading.Event()
    log: list[str] = []
    start = time.perf_counter()
    with held():
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
    stderr = proc.stderr
    assert stderr is not None

    def read() -> None:
        for raw in stderr:
            line = raw.decode(errors="replace")
            log.append(line)
            if '"msg": "ready' in line:
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        while not ready.wait(0.05):
            if proc.poll() is not None or time.perf_counter() - start > timeout:
                tail = "".join(log[-5:]).strip() or f"exit {proc.returncode}"
                raise SetupError(f"`netfence agent` did not get ready: {tail}")
        ready_seconds = time.perf_counter() - start
        time.sleep(settle)
        if proc.poll() is not None:
            raise SetupError(f"`netfence agent` exited with {proc.returncode} after ready")
        return Child(
            ready_seconds, _status_bytes(proc.pid, "VmRSS"), _status_bytes(proc.pid, "VmHWM")
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)


# -- reporting ----------------------------------------------------------------------------


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0 < q < 1), interpolated between the closest ranks."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[round(q * 1000) - 1]


def histogram_quantile(histogram: dict[float, float], q: float) -> str:
    """Which bucket of the agent's histogram holds its q-quantile (Prometheus buckets
    only bound it)."""
    total = histogram.get(float("inf"), 0.0)
    if not total:
        return "no observations"
    bounds = sorted(histogram)
    for lower, upper in zip([0.0, *bounds], bounds, strict=False):
        if histogram[upper] >= q * total:
            return f"{ms(lower)}-{ms(upper)}" if upper != float("inf") else f"> {ms(lower)}"
    return "?"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def mib(size: float) -> str:
    return f"{size / 2**20:.0f} MiB"


def verdict(ok: bool) -> str:
    return "[green]pass[/]" if ok else "[red]FAIL[/]"


def p50_p99(values: Sequence[float]) -> str:
    return f"{ms(quantile(values, 0.5))} / {ms(quantile(values, 0.99))}"


def latency_rows(result: InProcess, node: str) -> list[tuple[str, str, str, str]]:
    """Per group of adds: the span measured, then its parts (the enforcer call's compile +
    load, the rest of that call (the agent sweeps conntrack after it, off the measured path),
    and the rest: hand-offs between the queue, the agent's loop and its worker thread)."""
    rows = []
    groups = (
        ("all", result.adds),
        (f"on {node}", [a for a in result.adds if a[0].node == node]),
        ("elsewhere", [a for a in result.adds if a[0].node != node]),
    )
    for name, adds in groups:
        if not adds:
            continue
        total = [seconds for _, seconds, _ in adds]
        load = [call.applied.seconds for _, _, call in adds]
        other = [call.returned - call.called - call.applied.seconds for _, _, call in adds]
        rest = [seconds - (call.returned - call.called) for _, seconds, call in adds]
        rows.append(
            (
                f"pod add {name} ({len(adds)}): event -> enforced, p50 / p99",
                p50_p99(total),
                f"p99 < {ms(TARGET_P99_SECONDS)}" if name == "all" else "",
                verdict(quantile(total, 0.99) < TARGET_P99_SECONDS) if name == "all" else "",
            )
        )
        rows.append(
            (
                "  compile + nft load / rest of the enforcer call",
                f"{p50_p99(load)}  |  {p50_p99(other)}",
                "",
                "",
            )
        )
        rows.append(("  queue -> enforcer call (hand-offs)", p50_p99(rest), "", ""))
    modes = Counter(call.applied.mode for _, _, call in result.adds)
    rows.append(
        ("enforcer modes of the adds", ", ".join(f"{m} {n}" for m, n in modes.items()), "", "")
    )
    rows.append(
        (
            "agent's own histogram, p50 / p99 bucket",
            f"{histogram_quantile(result.histogram, 0.5)} / "
            f"{histogram_quantile(result.histogram, 0.99)}",
            "",
            "",
        )
    )
    return rows


def print_report(
    folder: Path,
    state: ClusterState,
    node: str,
    result: InProcess | None,
    child: Child | None,
) -> None:
    table = Table(title=f"netfence agent on {folder.name}, node {node}")
    for column in ("measure", "value", "target", "result"):
        table.add_column(column)
    if result is not None:
        for row in latency_rows(result, node):
            table.add_row(*row)
        table.add_row(
            "full sync in process: complete view -> ready",
            f"{result.sync_seconds:.2f} s ({result.sync_mode}, {result.elements:,} elements)",
            "",
            "(info)",
        )
    if child is not None:
        table.add_row(
            "`netfence agent --manifests`: start -> ready",
            f"{child.ready_seconds:.2f} s",
            "",
            "(info)",
        )
        table.add_row(
            "agent RSS after ready (peak)",
            f"{mib(child.rss)} ({mib(child.hwm)})",
            f"< {mib(TARGET_RSS_BYTES)}",
            verdict(child.rss < TARGET_RSS_BYTES),
        )
    Console(width=150).print(table)


# -- the run ------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    before = load_average()
    t0 = time.perf_counter()
    folder, state, node = load_cluster(args)
    local = sum(p.node == node for p in state.pods)
    print(
        f"cluster {folder}: {len(state.pods):,} pods on {len({p.node for p in state.pods})} nodes,"
        f" {len(state.policies):,} policies (read in {time.perf_counter() - t0:.1f} s);"
        f" measured node {node} ({local} pods)",
        flush=True,
    )
    pods = new_pods(state, node, args.adds, args.local, args.seed)
    result: InProcess | None = None
    child: Child | None = None
    with namespaces(3) as (agent_ns, reference_ns, child_ns):
        if args.adds:
            result = asyncio.run(run_agent(state, node, agent_ns, pods, args.gap, args.seed))
            check_table(agent_ns, reference_ns, result.final, node)
            print(
                f"in-process agent: {len(result.adds)} adds enforced; the table equals the"
                f" final cluster compiled from scratch; drift repairs {result.drift_repairs:g}",
                flush=True,
            )
        if args.rss:
            child = run_child(folder, node, child_ns, args.settle, args.timeout)
    print()
    print_report(folder, state, node, result, child)
    print(f"\nload average before: {before}; after: {load_average()} ({os.cpu_count()} CPUs)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_cluster_arguments(parser)
    parser.add_argument("--node", help="the measured node (default: the one with most pods)")
    parser.add_argument("--adds", type=int, default=300, help="pod adds to time (0: none)")
    parser.add_argument("--local", type=float, default=0.3, help="share of adds on the node")
    parser.add_argument("--gap", type=float, default=0.05, help="max pause between adds (s)")
    parser.add_argument("--rss", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--settle", type=float, default=3.0, help="wait after ready (s)")
    parser.add_argument("--timeout", type=float, default=600.0, help="child start limit (s)")
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (SetupError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # also SIGTERM and SIGHUP (`interrupting`)
        print("interrupted; the namespaces are removed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
