#!/usr/bin/env python3
"""Benchmark `netfence list` on generated clusters, next to the Python peer tool nca.

For each size it generates a cluster (benchmarks/generate.py, cached in benchmarks/out),
times `netfence list DIR -o json` as a child process pinned to one CPU core (wall time and
the child's own peak RSS from `os.wait4`), runs nca on the same folder (benchmarks/nca.py,
in its own virtual environment; skipped with --no-nca or when absent), and prints times,
memory and the speed ratio.

Answers are compared where both tools apply the same semantics: nca never matches pod
addresses against ipBlocks, which Kubernetes leaves to the implementation and netfence does,
so the comparison evaluates netfence with the pods' addresses removed (in-process, the same
engine) and compares the workload-to-workload pairs; and nca gets a copy of each cluster
with one construct it mishandles rewritten to an equivalent one (see `nca_copy`).

    python benchmarks/run.py      # 500/100 ... 20,000/4,000 (nca needs ~10 min at 5,000)
    python benchmarks/run.py --sizes 500:100 --nca-timeout 60
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import yaml  # noqa: E402  (benchmarks/ is not a package)

import generate  # noqa: E402
import nca  # noqa: E402
from netfence.analysis.connlist import connectivity  # noqa: E402
from netfence.cluster.state import ClusterState  # noqa: E402
from netfence.k8s.loader import load_paths  # noqa: E402
from netfence.policy.matrix import ClusterMatrix  # noqa: E402

SIZES = ((500, 100), (1_000, 200), (2_000, 400), (5_000, 1_000), (20_000, 4_000))
TARGET_SECONDS = {5_000: 5.0}  # the engine issue's target: 5,000 pods / 1,000 policies


@dataclasses.dataclass
class Timed:
    seconds: float
    peak_rss_bytes: int
    returncode: int


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the dataplane and agent benchmarks that pick their cluster."""
    parser.add_argument("--dir", type=Path, help="a cluster folder (default: generated)")
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--policies", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=0)


def load_average() -> str:
    """The 1/5/15-minute load: numbers from a busy machine are read with it."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def cluster_dir(out: Path, pods: int, policies: int, seed: int) -> Path:
    target = out / f"p{pods}-n{policies}"
    stamp = target / ".complete"
    if not stamp.exists():
        target.mkdir(parents=True, exist_ok=True)
        cluster = generate.generate(pods, policies, seed)
        generate.write(cluster, target)
        generate.validate(target)
        stamp.write_text(f"seed {seed}\n")
    return target


def nca_copy(folder: Path) -> Path:
    """The same cluster with `Exists` in peer podSelectors written as an equivalent `In`.

    nca 2.1.0 mishandles `Exists` in a peer's podSelector next to a namespaceSelector (it
    matches nothing; with the equivalent `In` list of the cluster's values it matches), so
    it is given this copy: same pods, same meaning, and answers that can be compared.
    """
    target = folder.with_name(folder.name + "-nca")
    if (target / ".complete").exists():
        return target
    target.mkdir(exist_ok=True)
    values: dict[str, set[str]] = {}
    for name in ("namespaces.yaml", "pods.yaml"):
        (target / name).write_bytes((folder / name).read_bytes())
    for pod in yaml.load_all((folder / "pods.yaml").read_text(), Loader=yaml.CSafeLoader):
        for key, value in ((pod or {}).get("metadata", {}).get("labels") or {}).items():
            values.setdefault(key, set()).add(value)
    policies = [
        p
        for p in yaml.load_all((folder / "policies.yaml").read_text(), Loader=yaml.CSafeLoader)
        if p
    ]
    for policy in policies:
        rules = (policy["spec"].get("ingress") or []) + (policy["spec"].get("egress") or [])
        for rule in rules:
            for peer in (rule.get("from") or []) + (rule.get("to") or []):
                for expr in (peer.get("podSelector") or {}).get("matchExpressions") or []:
                    if expr["operator"] == "Exists":
                        expr["operator"] = "In"
                        expr["values"] = sorted(values.get(expr["key"], set())) or ["none"]
    with open(target / "policies.yaml", "w") as out:
        yaml.dump_all(policies, out, Dumper=yaml.CSafeDumper)
    (target / ".complete").write_text("")
    return target


def run_pinned(argv: list[str], stdout_path: Path) -> Timed:
    """Run a child on CPU 0 only; wall time and that child's peak RSS."""
    start = time.perf_counter()
    with open(stdout_path, "wb") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.DEVNULL,
            preexec_fn=lambda: os.sched_setaffinity(0, {0}),
        )
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Timed(seconds, usage.ru_maxrss * 1024, proc.returncode)


def workload_pairs_without_pod_ips(folder: Path) -> frozenset[nca.Connection]:
    """netfence's answer under nca's semantics (ipBlocks never match pods), normalised."""
    state = ClusterState.build(load_paths([folder]))
    state.pods = [dataclasses.replace(p, ips=()) for p in state.pods]
    pairs = set()
    for c in connectivity(state, ClusterMatrix(state)):
        if c.src.is_external or c.dst.is_external:
            continue
        pairs.add(
            (
                nca.normalise_endpoint(str(c.src)),
                nca.normalise_endpoint(str(c.dst)),
                _normalise(str(c.conns)),
            )
        )
    return frozenset(pairs)


def _normalise(conns: str) -> str:
    """netfence's `TCP 80,8080,UDP 53` in nca.normalise_conns's `TCP:80,8080;UDP:53` form."""
    if conns == "All Connections":
        return "all"
    parts: dict[str, str] = {}
    protocol = ""
    for token in conns.split(","):
        if " " in token:
            protocol, _, token = token.partition(" ")
            parts[protocol] = token
        else:
            parts[protocol] += "," + token
    full = "1-65535"
    if set(parts) == {"TCP", "UDP", "SCTP"} and all(v == full for v in parts.values()):
        return "all"
    return ";".join(f"{p}:{'all' if v == full else v}" for p, v in sorted(parts.items()))


def merge_pairs(triples: Iterable[nca.Connection]) -> frozenset[nca.Connection]:
    """One triple per pair: nca sometimes prints a pair on several lines (per protocol)."""
    by_pair: dict[tuple[str, str], dict[str, list[tuple[int, int]] | None]] = {}
    for src, dst, conns in triples:
        protocols = by_pair.setdefault((src, dst), {})
        if conns == "all":
            for p in ("SCTP", "TCP", "UDP"):
                protocols[p] = None
            continue
        for part in conns.split(";"):
            protocol, _, ports = part.partition(":")
            if ports == "all" or protocols.get(protocol, []) is None:
                protocols[protocol] = None
            else:
                protocols.setdefault(protocol, []).extend(nca._parse_ports(ports))  # type: ignore[union-attr]
    merged = set()
    for (src, dst), protocols in by_pair.items():
        if set(protocols) == {"SCTP", "TCP", "UDP"} and all(v is None for v in protocols.values()):
            text = "all"
        else:
            text = ";".join(
                f"{p}:{'all' if r is None else nca._format_ports(r)}"
                for p, r in sorted(protocols.items())
            )
        merged.add((src, dst, text))
    return frozenset(merged)


def mb(n: int) -> str:
    return f"{n / 2**20:.0f} MB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        default=",".join(f"{p}:{n}" for p, n in SIZES),
        help="comma-separated PODS:POLICIES (default: %(default)s)",
    )
    parser.add_argument("--out", type=Path, default=HERE / "out", help="generated clusters")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nca-timeout", type=float, default=900.0, help="seconds per nca run")
    parser.add_argument("--no-nca", action="store_true", help="skip the nca comparison")
    args = parser.parse_args(argv)

    netfence = shutil.which("netfence", path=str(Path(sys.executable).parent)) or "netfence"
    use_nca = not args.no_nca and nca.DEFAULT_VENV.joinpath("bin", "nca").exists()
    if not args.no_nca and not use_nca:
        print(f"nca not found in {nca.DEFAULT_VENV}: run benchmarks/setup_nca.sh; skipping it")
    header = (
        f"{'pods':>7} {'policies':>8} {'lines':>9} {'netfence':>9} {'RSS':>8} "
        f"{'nca':>9} {'nca RSS':>8} {'speed-up':>9}  answers"
    )
    print(header)
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.sizes.split(","):
            pods, policies = (int(x) for x in spec.split(":"))
            folder = cluster_dir(args.out, pods, policies, args.seed)
            out = Path(tmp) / "netfence.json"
            ours = run_pinned([netfence, "list", str(folder), "-o", "json"], out)
            lines = sum(1 for line in out.open() if line.startswith('{"src"'))  # one per line
            theirs_text, rss_text, ratio, answers = "-", "-", "-", "-"
            if use_nca:
                theirs = nca.run_nca(nca_copy(folder), args.nca_timeout)
                if theirs.connections is None:
                    timed_out = theirs.seconds >= args.nca_timeout
                    theirs_text = f">{theirs.seconds:.0f} s" if timed_out else "failed"
                    answers = "nca gave no answer"
                else:
                    theirs_text = f"{theirs.seconds:.1f} s"
                    ratio = f"{theirs.seconds / ours.seconds:.0f}x"
                    mine = workload_pairs_without_pod_ips(folder)
                    # normalised workloads are `ns/name`; address ranges never hold a `/`
                    nca_pairs = merge_pairs(
                        c for c in theirs.connections if "/" in c[0] and "/" in c[1]
                    )
                    same = len(mine & nca_pairs)
                    answers = (
                        f"{same} same, {len(mine - nca_pairs)} only netfence, "
                        f"{len(nca_pairs - mine)} only nca"
                    )
                    failed |= mine != nca_pairs
                rss_text = mb(theirs.peak_rss_bytes)
            target = TARGET_SECONDS.get(pods)
            verdict = (
                ""
                if target is None
                else (
                    f"  (target < {target:.0f} s: {'met' if ours.seconds < target else 'MISSED'})"
                )
            )
            print(
                f"{pods:>7} {policies:>8} {lines:>9} {ours.seconds:>7.2f} s "
                f"{mb(ours.peak_rss_bytes):>8} {theirs_text:>9} {rss_text:>8} {ratio:>9}  "
                f"{answers}{verdict}",
                flush=True,
            )
            failed |= ours.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
