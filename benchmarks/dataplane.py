#!/usr/bin/env python3
"""Benchmark the nftables dataplane on a 10,000-pod / 1,000-policy cluster (as root).

One run prints, with pass/fail against the targets of the dataplane issue:

1. TCP throughput between two pods (one iperf3 stream), unfiltered vs with the node's full
   ruleset loaded;
2. new TCP connections per second between the same pods (`conn_rate.c`, compiled here
   with the system gcc into a temporary directory), unfiltered vs filtered;
3. the time to load the node's full ruleset (one transaction, via `Nftables.apply`) and,
   separately, to compute it in Python (`NodeProgram` + `render_table`);
4. the time of one pod's incremental update in the loaded table (a pod added, removed or
   relabelled, in turn): Python (`update` + `flush` + `render_changes`) and nft (the
   element transaction, through one `Nftables` kept for the node, as the `Enforcer`
   does), median and p99.

nft is reached through libnftables when it can be loaded, else the `nft` command
(`--nft-command` forces the command, for comparison); the table says which.

    python benchmarks/dataplane.py                        # as root; ~3 minutes
    python benchmarks/dataplane.py --runs 3 --updates 15  # quicker

The cluster comes from `generate.py` (cached in benchmarks/out, as `run.py` does). Its
pods are spread round-robin over `--nodes` nodes (default 10: 1,000 pods per node, so the
measured node's table holds a tenth of the cluster as local pods), keeping their
addresses. The measured pair sits on one node and takes the full lookup path on both
sides: the source is egress-isolated, the destination ingress-isolated, and on each side a
rule with a pod peer allows the measured port (checked with the engine, and in the
compiled program's maps).

Topology (the lab's own planner and builder, `netfence.lab`, as lab `bench`): three nodes,
each a namespace with a bridge and `bridge-nf-call-iptables=1`, each with a copy of the
pair in two pod namespaces on veths (bridged, same node): `n0` loads no table
(unfiltered), `n1` a netfence table in which nothing is isolated (connection tracking and
the first map lookup only: it tells the cost of conntrack from that of the policies),
`n2` the measured node's full table, with the pair's addresses. Before measuring, a probe
checks that the pair connects on the measured port on every node and that another port is
dropped on `n2` only. Everything lives in `nf-bench-*` namespaces and is removed at the
end, on error and on Ctrl-C; the host's own namespace, routes and firewall are never
touched.

Noise: the machine is shared, and other processes' load moves a 2-second rate by tens of
percent. So every round measures the three nodes back to back in a shuffled order, the
ratios are taken within each round (their median is judged, their range shown), and next
to the rates the CPU time the client and server spent per byte or per connection is
reported (their user + system time, which includes the softirq packet path run in their
context; the scheduler's figures, so another process's load barely moves it): on a
CPU-bound quiet machine the rate ratio tends to that CPU ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import math
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from netfence.cluster.state import ClusterState, Pod  # noqa: E402
from netfence.dataplane.apply import Nftables  # noqa: E402
from netfence.dataplane.compile import render_changes, render_table  # noqa: E402
from netfence.dataplane.program import NodeProgram  # noqa: E402
from netfence.k8s.loader import load_paths  # noqa: E402
from netfence.lab import netns  # noqa: E402
from netfence.lab.probe import Probe, run_probes  # noqa: E402
from netfence.lab.signals import HELD, held, interrupting  # noqa: E402
from netfence.lab.topology import LabError, LabPlan, PodPlan, plan_lab  # noqa: E402
from netfence.policy.engine import DirectionVerdict, Engine  # noqa: E402
from netfence.policy.ir import PodPeer  # noqa: E402
from run import add_cluster_arguments, cluster_dir, load_average  # noqa: E402  (benchmarks/ is not a package)

LAB = "bench"
VARIANTS = ("unfiltered", "empty table", "full ruleset")  # lab nodes n0, n1, n2
TARGETS = {"throughput": 0.95, "connections": 0.90, "load": 1.0, "update": 0.010}
BLOCKED_CANDIDATES = (9, 7, 13, 19, 1, 65000)  # a port the pair must NOT be allowed on
CHURN4 = ipaddress.IPv4Network("10.250.0.0/16")  # addresses for pods the updates add
CHURN6 = ipaddress.IPv6Network("fd00:250::/64")
FILL = (ipaddress.IPv4Network("10.128.0.0/12"), ipaddress.IPv6Network("fd00:128::/64"))


class SetupError(Exception):
    """The benchmark cannot run as asked; the message says why."""


@dataclasses.dataclass(frozen=True)
class Pair:
    src: Pod
    dst: Pod
    port: int  # allowed TCP port, declared by the destination
    blocked: int  # a TCP port the pair is not allowed on
    egress_by: str  # the policies whose rules allow it, per side
    ingress_by: str


# -- the cluster --------------------------------------------------------------------------


def load_cluster(args: argparse.Namespace) -> tuple[Path, ClusterState]:
    folder = args.dir or cluster_dir(HERE / "out", args.pods, args.policies, args.seed)
    state = ClusterState.build(load_paths([folder]))
    if not state.pods or not state.policies:
        raise SetupError(f"{folder}: no pods or no policies")
    if args.nodes:
        state.pods = [
            dataclasses.replace(p, node=f"n{i % args.nodes}") for i, p in enumerate(state.pods)
        ]
    if any(p.node is None for p in state.pods):
        raise SetupError(f"{folder}: with --nodes 0 every pod needs a node (spec.nodeName)")
    state.pods = [_addressed(p, i) for i, p in enumerate(state.pods)]
    return folder, state


def _addressed(pod: Pod, index: int) -> Pod:
    """The pod with an address of each family, as a cluster would give it (the generated
    pods all have both; other clusters may not)."""
    have = {ip.version for ip in pod.ips}
    extra = [net.network_address + index + 1 for net in FILL if net.version not in have]
    return dataclasses.replace(pod, ips=(*pod.ips, *extra)) if extra else pod


def plan_bench(template: Pod) -> LabPlan:
    """Three lab nodes with a (src, dst) pair each; addresses allocated on the node's
    bridge subnet, so the pair's traffic is bridged through the node's forward hook."""
    pods = [
        dataclasses.replace(
            template,
            namespace="bench",
            name=f"{role}-{i}",
            labels={},
            ports=(),
            ips=(),
            node=f"n{i}",
            host_network=False,
        )
        for i in range(len(VARIANTS))
        for role in ("src", "dst")
    ]
    return plan_lab(ClusterState(pods=pods), name=LAB, nodes=len(VARIANTS))


def lab_pods(plan: LabPlan, variant: int) -> tuple[PodPlan, PodPlan]:
    return plan.pod(f"bench/src-{variant}"), plan.pod(f"bench/dst-{variant}")


def _with_ips(pod: Pod, lab_pod: PodPlan) -> Pod:
    return dataclasses.replace(pod, ips=(lab_pod.ip4, lab_pod.ip6))


def _pod_peer_allows(engine: Engine, side: DirectionVerdict, port: int, peer: Pod) -> str | None:
    """The policy whose rule decided the port on this side, if that rule has a pod peer
    matching `peer` (so the lookup goes through the peer map, not an address range)."""
    decided = side.decided_by("TCP", port)
    if decided is None:
        return None
    rule = engine.rules[decided.provenance]
    pod_peers = [p for p in rule.peers or () if isinstance(p, PodPeer)]
    return (
        decided.provenance.policy if any(engine.peer_matches(p, peer) for p in pod_peers) else None
    )


def choose_pair(state: ClusterState, src_plan: PodPlan, dst_plan: PodPlan, seed: int) -> Pair:
    """A pair on one node that takes the full lookup path on both sides, judged with the
    addresses it will have in the lab."""
    engine = Engine(state, family=4, host_network="node")
    by_node: dict[str | None, list[Pod]] = defaultdict(list)
    for pod in state.pods:
        if not pod.host_network:
            by_node[pod.node].append(pod)
    rng = random.Random(seed)
    dsts = [
        p
        for p in state.pods
        if not p.host_network
        and any(c.protocol == "TCP" for c in p.ports)
        and engine.selecting(p, "ingress")
    ]
    rng.shuffle(dsts)
    for dst_pod in dsts[:300]:
        dst = _with_ips(dst_pod, dst_plan)
        srcs = [p for p in by_node[dst.node] if p.key != dst.key and engine.selecting(p, "egress")]
        rng.shuffle(srcs)
        for src_pod in srcs[:100]:
            src = _with_ips(src_pod, src_plan)
            verdict = engine.verdict(src, dst)
            if not (verdict.egress.isolated and verdict.ingress.isolated):
                continue
            blocked = [p for p in BLOCKED_CANDIDATES if not verdict.allows("TCP", p)]
            for port in sorted({c.port for c in dst.ports if c.protocol == "TCP"}):
                if not verdict.allows("TCP", port) or not blocked:
                    continue
                egress_by = _pod_peer_allows(engine, verdict.egress, port, dst)
                ingress_by = _pod_peer_allows(engine, verdict.ingress, port, src)
                if egress_by and ingress_by:
                    return Pair(src, dst, port, blocked[0], egress_by, ingress_by)
    raise SetupError(
        "no pod pair on one node where the source is egress-isolated, the destination "
        "ingress-isolated and pod-peer rules on both sides allow a declared TCP port"
    )


def with_pair(state: ClusterState, pair: Pair) -> ClusterState:
    """The cluster with the pair at its lab addresses, checked against the engine and for
    address clashes."""
    lab_ips = {*pair.src.ips, *pair.dst.ips}
    clash = [
        p.key
        for p in state.pods
        if p.key not in (pair.src.key, pair.dst.key) and lab_ips & {*p.ips}
    ]
    if clash:
        raise SetupError(
            f"pods {clash[:3]} already use the lab addresses {sorted(map(str, lab_ips))}"
        )
    swap = {pair.src.key: pair.src, pair.dst.key: pair.dst}
    placed = dataclasses.replace(state, pods=[swap.get(p.key, p) for p in state.pods])
    verdict = Engine(placed, family=4, host_network="node").verdict(pair.src, pair.dst)
    if not (
        verdict.egress.isolated and verdict.ingress.isolated and verdict.allows("TCP", pair.port)
    ):
        raise SetupError(f"the engine no longer allows {pair.src.key} -> {pair.dst.key}")
    return placed


def check_full_path(program: NodeProgram, pair: Pair) -> None:
    """Both sides of the pair are in the compiled maps: own pod and peer found by address."""
    src4, dst4 = (next(ip for ip in p.ips if ip.version == 4) for p in (pair.src, pair.dst))
    egress, ingress = program.sides[(4, "egress")], program.sides[(4, "ingress")]
    missing = [
        name
        for name, element_map, ip in (
            ("egress own", egress.own, src4),
            ("egress peer", egress.peer, dst4),
            ("ingress own", ingress.own, dst4),
            ("ingress peer", ingress.peer, src4),
        )
        if ip not in element_map.data
    ]
    if missing:
        raise SetupError(f"the compiled table misses the pair in: {', '.join(missing)}")


# -- processes in the lab -----------------------------------------------------------------


class Processes:
    """Servers started in lab namespaces, their output in files; each stopped by its pid."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, netns_name: str, argv: Sequence[str], ready: str) -> None:
        log = self.workdir / f"{netns_name}-{len(self.procs)}.log"
        # Held: a signal cannot land between the start and the record. The child must not
        # inherit that mask, or it would ignore the SIGTERM that stops it.
        with held(), open(log, "wb") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", netns_name, *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD),
            )
            self.procs.append(proc)
        deadline = time.monotonic() + 10
        while ready not in log.read_text(errors="replace"):  # the servers flush that line
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SetupError(f"{argv[0]} in {netns_name} did not start: {log.read_text()}")
            time.sleep(0.02)

    def cpu_seconds(self, index: int) -> float:
        """Time on CPU of all threads of server `index`, from the scheduler (ns precise,
        including the softirq work run in their context)."""
        tasks = Path(f"/proc/{self.procs[index].pid}/task")
        return sum(int((t / "schedstat").read_text().split()[0]) for t in tasks.iterdir()) / 1e9

    def stop_all(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


def run_in(netns_name: str, argv: Sequence[str], timeout: float) -> tuple[str, float]:
    """Run a client in a namespace: its output and its time on CPU (user + system, which
    includes the softirq work run in its context: most of the packet path)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        ["ip", "netns", "exec", netns_name, *argv],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SetupError(
            f"{argv[0]} in {netns_name} failed: {(proc.stderr or proc.stdout).strip()}"
        )
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return proc.stdout, cpu


def compile_conn_rate(workdir: Path) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise SetupError(
            "needs gcc to build benchmarks/conn_rate.c (apt-get install gcc libc6-dev)"
        )
    binary = workdir / "conn_rate"
    proc = subprocess.run(
        [gcc, "-O2", "-Wall", "-pthread", "-o", str(binary), str(HERE / "conn_rate.c")],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SetupError(f"gcc failed on conn_rate.c: {proc.stderr.strip()}")
    return binary


def check_reachability(plan: LabPlan, pair: Pair) -> None:
    """The measured port connects on every node; the blocked port is dropped (a timeout)
    on the filtered node and refused (nothing listens) on the others."""
    probes = []
    for variant in range(len(VARIANTS)):
        src, dst = lab_pods(plan, variant)
        for port in (pair.port, pair.blocked):
            probes.append(
                Probe(
                    src.key,
                    dst.key,
                    4,
                    "TCP",
                    port,
                    src.netns,
                    dst.netns,
                    str(src.ip4),
                    str(dst.ip4),
                )
            )
    results = run_probes(probes, timeout=1.0)
    refused = "Connection refused"
    expected = ["connected", refused, "connected", refused, "connected", "timeout"]
    got = [r.detail for r in results]
    if got != expected:
        raise SetupError(f"reachability check: expected {expected}, got {got}")


# -- measurements -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Sample:
    rate: float  # per second of wall time
    cost: float  # CPU seconds (client + server) per unit


def in_rounds(runs: int, seed: int, measure: Callable[[int], Sample]) -> list[list[Sample]]:
    """`measure(variant)` for every variant, `runs` rounds, each round in a shuffled order:
    samples per variant, aligned by round, so that ratios can be taken within a round (the
    machine's load changes less within one round than across the whole run)."""
    rng = random.Random(seed)
    found: list[list[Sample]] = [[] for _ in VARIANTS]
    for _ in range(runs):
        order = list(range(len(VARIANTS)))
        rng.shuffle(order)
        for variant in order:
            found[variant].append(measure(variant))
    return found


def measure_throughput(
    plan: LabPlan, pair: Pair, processes: Processes, args: argparse.Namespace
) -> list[list[Sample]]:
    """Bytes per second received over one iperf3 stream, and CPU seconds per byte."""

    def once(variant: int) -> Sample:
        src, dst = lab_pods(plan, variant)
        argv = ["iperf3", "-c", str(dst.ip4), "-p", str(pair.port), "-t", f"{args.seconds:g}", "-J"]
        server = processes.cpu_seconds(variant)
        text, client = run_in(src.netns, argv, timeout=args.seconds + 30)
        received = json.loads(text)["end"]["sum_received"]
        cpu = client + processes.cpu_seconds(variant) - server
        return Sample(received["bytes"] / received["seconds"], cpu / received["bytes"])

    return in_rounds(args.runs, args.seed, once)


def measure_connections(
    plan: LabPlan, pair: Pair, processes: Processes, binary: Path, args: argparse.Namespace
) -> tuple[list[list[Sample]], list[int]]:
    """Connections per second and CPU seconds per connection; connects that failed (1 s
    timeout) per variant."""
    failed = [0 for _ in VARIANTS]

    def once(variant: int) -> Sample:
        src, dst = lab_pods(plan, variant)
        client = ["client", str(dst.ip4), str(pair.port), str(args.threads), f"{args.seconds:g}"]
        server = processes.cpu_seconds(variant)
        text, cpu = run_in(src.netns, [str(binary), *client], timeout=args.seconds + 30)
        cpu += processes.cpu_seconds(variant) - server
        out = dict(kv.split("=") for kv in text.split())
        failed[variant] += int(out["errors"])
        connections = int(out["connections"])
        return Sample(connections / float(out["seconds"]), cpu / max(connections, 1))

    return in_rounds(args.runs, args.seed, once), failed


@dataclasses.dataclass(frozen=True)
class Update:
    kind: str  # "add", "remove", "relabel"
    pod: str
    python: float  # seconds: update + flush + render_changes
    nft: float  # seconds: the element transaction (0 when nothing changed)
    elements: int  # elements deleted plus added


@dataclasses.dataclass
class Churn:
    """Pod changes on the measured node, in turn: a new replica of a workload, a pod
    removed, a pod relabelled with the labels of another workload of its namespace (as if
    moved under it, so the policies selecting it change)."""

    pods: dict[str, Pod]  # the node's current pods, except the measured pair
    used: set[ipaddress.IPv4Address | ipaddress.IPv6Address]
    rng: random.Random
    added: int = 0

    def change(self, step: int) -> tuple[str, list[Pod], list[str]]:
        pod = self.pods[self.rng.choice(sorted(self.pods))]
        if step % 3 == 0:
            self.added += 1
            new = dataclasses.replace(pod, name=f"{pod.name}-x{self.added}", ips=self._fresh_ips())
            self.pods[new.key] = new
            return "add", [new], []
        if step % 3 == 1:
            del self.pods[pod.key]
            return "remove", [], [pod.key]
        others = sorted(
            {
                tuple(sorted(p.labels.items()))
                for p in self.pods.values()
                if p.namespace == pod.namespace and p.labels != pod.labels
            }
        )
        labels = dict(self.rng.choice(others)) if others else {**pod.labels, "moved": str(step)}
        relabelled = dataclasses.replace(pod, labels=labels)
        self.pods[pod.key] = relabelled
        return "relabel", [relabelled], []

    def _fresh_ips(self) -> tuple[ipaddress.IPv4Address, ipaddress.IPv6Address]:
        for n in range(2, CHURN4.num_addresses - 1):
            ip4, ip6 = CHURN4.network_address + n, CHURN6.network_address + n
            if ip4 not in self.used and ip6 not in self.used:
                self.used.update((ip4, ip6))
                return ip4, ip6
        raise SetupError("no free addresses left for added pods")


def measure_updates(
    program: NodeProgram, state: ClusterState, pair: Pair, nft: Nftables, count: int, seed: int
) -> list[Update]:
    """Pod changes one at a time, each applied to the loaded table as the enforcer does:
    one element transaction, none when nothing changed."""
    churn = Churn(
        {
            p.key: p
            for p in state.pods
            if p.node == program.node and p.key not in (pair.src.key, pair.dst.key)
        },
        {ip for p in state.pods for ip in p.ips},
        random.Random(seed),
    )
    updates = []
    for step in range(count):
        kind, upserted, deleted = churn.change(step)
        t0 = time.perf_counter()
        program.update(upserted=upserted, deleted=deleted)
        removed, added = program.flush()
        script = render_changes(program, removed, added)
        t1 = time.perf_counter()
        if script:
            nft.apply(script)
        t2 = time.perf_counter()
        changed = sum(map(len, removed.values())) + sum(map(len, added.values()))
        key = upserted[0].key if upserted else deleted[0]
        updates.append(Update(kind, key, t1 - t0, t2 - t1, changed))
    return updates


def process_start(netns_name: str, count: int = 10) -> float:
    """Median wall time of `ip netns exec NS true`: the part of each nft call that is
    starting a process in the namespace."""
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        run_in(netns_name, ["true"], timeout=30)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# -- reporting ----------------------------------------------------------------------------

Row = tuple[str, str, str, str]  # measure, value, target, result


def p99(values: Sequence[float]) -> float:
    """Nearest rank (of 50 samples, the largest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def judged(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def _ratios(values: Sequence[Sequence[float]], num: int, den: int) -> tuple[float, str]:
    """The median of the per-round ratios num / den, and a text with their range (how much
    the machine's load moved them)."""
    ratios = [a / b for a, b in zip(values[num], values[den], strict=True)]
    ratio = statistics.median(ratios)
    return ratio, f"{ratio:.1%} (runs {min(ratios):.0%}-{max(ratios):.0%})"


def traffic_rows(
    name: str,
    samples: Sequence[Sequence[Sample]],
    text: Callable[[Sample], str],
    target: float,
) -> list[Row]:
    """Medians per variant, then ratios: of the rates, and of the CPU spent per unit
    (inverted: below 100% when filtering costs CPU), which the load of other processes
    moves less than the rates. The target is judged against the unfiltered node;
    the empty table's ratios split the cost into conntrack's and the policies' own."""
    rows: list[Row] = [
        (
            f"{name}, {label} (median of {len(some)})",
            text(
                Sample(
                    statistics.median(s.rate for s in some),
                    statistics.median(s.cost for s in some),
                )
            ),
            "",
            "",
        )
        for label, some in zip(VARIANTS, samples, strict=True)
    ]
    kinds = (
        ("rate", [[s.rate for s in some] for some in samples]),
        ("CPU", [[1 / s.cost for s in some] for some in samples]),
    )
    for num, den in ((1, 0), (2, 1)):
        parts = [f"{kind} {_ratios(values, num, den)[1]}" for kind, values in kinds]
        rows.append((f"{name}, {VARIANTS[num]} / {VARIANTS[den]}", ", ".join(parts), "", "(info)"))
    for kind, values in kinds:
        ratio, ratio_text = _ratios(values, 2, 0)
        rows.append(
            (
                f"{name}, full ruleset / unfiltered, {kind}",
                ratio_text,
                f">= {target:.0%}",
                judged(ratio >= target),
            )
        )
    return rows


def _throughput_text(sample: Sample) -> str:
    return f"{sample.rate * 8 / 1e9:.2f} Gbit/s, {sample.cost * 1e9:.2f} CPU-s/GB"


def _connections_text(sample: Sample) -> str:
    return f"{sample.rate:,.0f}/s, {sample.cost * 1e6:.0f} CPU-µs each"


def ruleset_rows(ruleset: Ruleset, loads: Sequence[float], backend: str) -> list[Row]:
    load = statistics.median(loads)
    python = ruleset.build_seconds + ruleset.render_seconds
    size = f"{ruleset.program.element_count:,} elements, {len(ruleset.script) / 1e6:.2f} MB"
    return [
        ("ruleset: size", size, "", ""),
        (
            f"ruleset: load ({backend}), median of {len(loads)}",
            f"{load:.3f} s (max {max(loads):.3f})",
            "< 1 s",
            judged(load < TARGETS["load"]),
        ),
        (
            "ruleset: Python NodeProgram + render_table",
            f"{ruleset.build_seconds:.2f} + {ruleset.render_seconds:.2f} s",
            "< 1 s",
            judged(python < TARGETS["load"]),
        ),
    ]


def update_rows(updates: Sequence[Update], start: float, backend: str) -> list[Row]:
    rows: list[Row] = []
    for kind in ("add pod", "remove pod", "relabel pod", "all"):
        some = [u for u in updates if kind in (u.kind + " pod", "all")]
        if some:
            python, nft = [u.python for u in some], [u.nft for u in some]
            rows.append(
                (
                    f"update: {kind} ({len(some)}), median / p99",
                    f"Python {ms(statistics.median(python))} / {ms(p99(python))} ms,"
                    f" nft {ms(statistics.median(nft))} / {ms(p99(nft))} ms",
                    "",
                    "",
                )
            )
    total = [u.python + u.nft for u in updates]
    elements = sorted(u.elements for u in updates)
    worst = max(updates, key=lambda u: u.python + u.nft)
    limit = TARGETS["update"]
    return [
        *rows,
        (
            "update: all, Python + nft median",
            f"{ms(statistics.median(total))} ms",
            "< 10 ms",
            judged(statistics.median(total) < limit),
        ),
        (
            "update: all, Python + nft p99",
            f"{ms(p99(total))} ms",
            "< 10 ms",
            judged(p99(total) < limit),
        ),
        ("update: nft reached through", backend, "", "(info)"),
        ("update: `ip netns exec NS true` alone", f"{ms(start)} ms", "", "(info)"),
        (
            "update: elements changed, median / max",
            f"{statistics.median(elements):g} / {elements[-1]:,}",
            "",
            "",
        ),
        (
            "update: slowest",
            f"{worst.kind}, {worst.elements:,} elements: {worst.python:.2f} + {worst.nft:.2f} s",
            "",
            "",
        ),
    ]


def print_table(rows: Sequence[Row]) -> None:
    header: Row = ("measure", "value", "target", "result")
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(4)]
    for row in (header, tuple("-" * w for w in widths), *rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


# -- the run ------------------------------------------------------------------------------


@dataclasses.dataclass
class Ruleset:
    """The measured node's table and what computing it cost."""

    program: NodeProgram
    script: str
    build_seconds: float  # NodeProgram(state, node)
    render_seconds: float  # render_table(program)


def compile_ruleset(state: ClusterState, pair: Pair) -> Ruleset:
    assert pair.src.node is not None
    t0 = time.perf_counter()
    program = NodeProgram(state, pair.src.node)
    t1 = time.perf_counter()
    script = render_table(program)
    t2 = time.perf_counter()
    check_full_path(program, pair)
    return Ruleset(program, script, t1 - t0, t2 - t1)


@contextmanager
def bench_lab(plan: LabPlan, workdir: Path) -> Iterator[Processes]:
    """The lab's namespaces and our servers, removed whatever happens. A lab someone
    brought up with `netfence lab up --name bench` is left alone: the run refuses."""
    netns.require_root()
    for tool in ("nft", "iperf3"):
        if shutil.which(tool) is None:
            raise SetupError(f"needs `{tool}` (see scripts/setup)")
    processes = Processes(workdir)
    with netns.locked(LAB), interrupting():
        if (netns.state_dir(LAB) / "plan.json").exists():
            raise SetupError(f"a lab named {LAB} is up: `netfence lab down --name {LAB}` first")
        netns.down(LAB)  # leftovers of a killed run
        try:
            netns.build(plan, [])
            yield processes
        finally:
            with held():
                processes.stop_all()
                netns.down(LAB)


def serve(processes: Processes, plan: LabPlan, argv: Sequence[str], ready: str) -> None:
    """The same server in every variant's destination pod (and no other)."""
    processes.stop_all()
    for variant in range(len(VARIANTS)):
        processes.start(lab_pods(plan, variant)[1].netns, argv, ready)


def run(args: argparse.Namespace) -> int:
    load_before = load_average()
    t0 = time.perf_counter()
    folder, state = load_cluster(args)
    print(
        f"cluster {folder}: {len(state.pods):,} pods, {len(state.policies):,} policies"
        f" (read in {time.perf_counter() - t0:.1f} s)"
    )
    plan = plan_bench(state.pods[0])
    pair = choose_pair(state, *lab_pods(plan, VARIANTS.index("full ruleset")), args.seed)
    state = with_pair(state, pair)
    local = sum(1 for p in state.pods if p.node == pair.src.node)
    print(
        f"pair {pair.src.key} -> {pair.dst.key} TCP {pair.port}, node {pair.src.node}"
        f" ({local:,} pods): egress allowed by {pair.egress_by}, ingress by {pair.ingress_by}"
    )
    ruleset = compile_ruleset(state, pair)
    empty_script = render_table(NodeProgram(ClusterState(), "empty"))

    with tempfile.TemporaryDirectory(prefix="nf-bench-") as tmp:
        binary = compile_conn_rate(Path(tmp))
        with bench_lab(plan, Path(tmp)) as processes:
            _, empty, full = (n.netns for n in plan.nodes)  # n0 stays unfiltered
            library = False if args.nft_command else None
            with Nftables(empty, library) as nft:
                nft.apply(empty_script)
            nft = Nftables(full, library)  # the node's, as an Enforcer holds it
            loads = []
            for _ in range(args.loads):  # the first into the bare node, then replacing it
                t0 = time.perf_counter()
                nft.apply(ruleset.script)
                loads.append(time.perf_counter() - t0)
            iperf = ["iperf3", "-s", "-p", str(pair.port), "--forceflush"]
            serve(processes, plan, iperf, "Server listening")
            check_reachability(plan, pair)
            throughput = measure_throughput(plan, pair, processes, args)
            server = [str(binary), "server", str(pair.port), str(args.threads)]
            serve(processes, plan, server, "ready")
            rates, failed = measure_connections(plan, pair, processes, binary, args)
            processes.stop_all()
            updates = measure_updates(ruleset.program, state, pair, nft, args.updates, args.seed)
            nft.close()
            start = process_start(full)

    rows = [
        *traffic_rows("TCP throughput", throughput, _throughput_text, TARGETS["throughput"]),
        *traffic_rows("new connections", rates, _connections_text, TARGETS["connections"]),
        *ruleset_rows(ruleset, loads, nft.backend),
        *(update_rows(updates, start, nft.backend) if updates else []),
    ]
    print()
    print_table(rows)
    if any(failed):
        counts = ", ".join(f"{label} {n}" for label, n in zip(VARIANTS, failed, strict=True))
        print(f"\nnote: connects that failed (1 s timeout) in the connection-rate runs: {counts}")
    print(f"\nload average before: {load_before}; after: {load_average()} ({os.cpu_count()} CPUs)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_cluster_arguments(parser)
    parser.add_argument("--nodes", type=int, default=10, help="0: keep the manifests' nodes")
    parser.add_argument("--runs", type=int, default=7, help="rounds per traffic measurement")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one run")
    parser.add_argument("--threads", type=int, default=2, help="conn_rate client/server threads")
    parser.add_argument("--loads", type=int, default=3, help="full ruleset loads to time")
    parser.add_argument("--updates", type=int, default=50)
    parser.add_argument(
        "--nft-command", action="store_true", help="load with `nft`, not libnftables"
    )
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (SetupError, LabError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; the lab is removed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
