#!/usr/bin/env python3
"""Run network-config-analyzer (nca) as the peer tool in the netfence benchmarks.

Why: netfence's speed and memory only mean something next to an established
tool answering the same question - "which workload may talk to which, on what
ports?" - on the same manifests.  IBM's network-config-analyzer (PyPI
``network-config-analyzer``, command ``nca``) is the closest Python peer.  It
lives in its own virtualenv (``benchmarks/setup_nca.sh``, default
``/work/.nca-venv``) because it pins its own PyYAML/networkx/greenery.

The command (nca 2.1.0)
-----------------------
For a folder written by ``benchmarks/generate.py``::

    nca --connectivity DIR/policies.yaml --pod_list DIR/pods.yaml \\
        --ns_list DIR/namespaces.yaml --output_format txt_no_fw_rules --file_out OUT

For an arbitrary folder the three inputs are all ``DIR`` (nca scans it
recursively).  All three flags are needed: ``--connectivity DIR`` alone only
reads NetworkPolicies, finds no pods and fails with "does not have any peers"
(exit 4).  When a folder holds both ``pods.yaml`` and ``workloads.yaml`` only
the pods are given to nca, because nca also synthesises pods from every
Deployment/StatefulSet/DaemonSet and would see each workload twice.

``txt_no_fw_rules`` is used instead of the default ``txt`` because ``txt``
prints *minimised firewall rules* in label-selector terms
(``src_ns: [a,b] src_pods: [app in (x,y)] dst_ns: ... conn: ...``) that cannot
be turned back into pairs, while ``txt_no_fw_rules`` prints one line per
allowed (source, destination) pair.  It is also the cheaper format (no rule
minimisation).

Output format (``txt_no_fw_rules``), observed on a generated 500-pod cluster::

    0.0.0.0-9.255.255.255 => platform-dev/auth-f74ff29227[ReplicaSet] : All connections
    fd00:10:1::-fd00:10:1:ffff:ffff:ffff:ffff:ffff => platform-dev/auth-f74ff29227[ReplicaSet] : All connections
    catalog-staging/mysql[StatefulSet] => kube-system/kube-dns-2cc9467c45[ReplicaSet] : {protocols:TCP, UDP,dst_ports:53}
    logging/fluent-bit[DaemonSet] => 0.0.0.0-255.255.255.255 : All connections
    monitoring/prometheus[StatefulSet] => platform-dev/auth-f74ff29227[ReplicaSet] : {protocols:TCP,dst_ports:9090,9100}
    platform-dev/auth-f74ff29227[ReplicaSet] => platform-dev/gateway-5fb9225c42[ReplicaSet] : {protocols:TCP,dst_ports:8000-8010}

i.e. ``SRC => DST : CONNS``, sorted, where an endpoint is either an IP range
``a-b`` (IPv4 and IPv6 on separate lines) or ``namespace/owner[Kind]``.
Pods owned by a ReplicaSet are named by the *ReplicaSet* (with its
pod-template-hash), other pods by their owner (``[StatefulSet]``,
``[DaemonSet]``, ``[Deployment]`` for pods nca synthesised from a Deployment,
``[Pod]`` for ownerless pods).  ``CONNS`` is ``All connections``, ``All but
{...}`` or comma-joined cubes ``{protocols:TCP, UDP,dst_ports:53,80-90}``.
Connections from a workload to itself are never printed.  IPv6 ranges appear
only when some policy mentions an IPv6 CIDR (or with ``--print_ipv6``).
If the input contains Istio policies the output is split into ``TCP
Connections:`` / ``non-TCP Connections:`` sections (header lines are skipped).

Performance notes: nca keeps at most two pods per (namespace, owner, labels)
class, so its cost grows with the number of *workloads* and policies, not
with replicas: 2.2 s / 55 MB for 500 pods and 100 policies (151 workloads),
7-9 min / 135-170 MB for 5,000 pods and 1,000 policies (1,419 workloads).
Those representatives are capped at 10,000 (``max_num_of_pods`` in
``nca/CoreDS/Peer.py``); above that nca exits 7 after printing only
``Error: `` (an AssertionError; ``--debug`` shows it) - the generated
20,000-pod cluster (5,765 workloads) hits this after about 20 s.  Warnings (missing named ports, selectors that select
nothing...) go to stdout; ``--file_out`` keeps the result separate from them.

Measurement: wall time around the child process, peak RSS from ``os.wait4``
(``ru_maxrss`` of exactly that child, in KiB on Linux), so no ``/usr/bin/time``
or helper process is needed and concurrent runs do not pollute each other.
"""  # noqa: E501 - the example lines are verbatim nca output

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

DEFAULT_VENV = Path(os.environ.get("NCA_VENV", "/work/.nca-venv"))

Connection = tuple[str, str, str]
"""(source, destination, connections), all normalised - see :func:`parse_output`."""


class NcaRun(NamedTuple):
    """What the benchmark runner needs from one nca run."""

    seconds: float
    peak_rss_bytes: int
    connections: frozenset[Connection] | None


@dataclass
class NcaResult:
    """Everything observed about one nca run, for debugging a failed/odd run."""

    command: list[str]
    seconds: float
    peak_rss_bytes: int
    returncode: int | None
    timed_out: bool
    output: str | None
    log: str

    @property
    def ok(self) -> bool:
        """True when nca finished in time and wrote its answer."""
        return not self.timed_out and self.output is not None and self.returncode == 0


def nca_executable(venv: Path = DEFAULT_VENV) -> Path:
    """Path of the ``nca`` script, failing early with the fix if it is missing."""
    exe = venv / "bin" / "nca"
    if not exe.exists():
        raise FileNotFoundError(f"{exe} not found; run benchmarks/setup_nca.sh {venv}")
    return exe


def nca_command(
    manifest_dir: Path,
    out_file: Path,
    *,
    nca: Path | None = None,
    output_format: str = "txt_no_fw_rules",
    print_ipv6: bool = False,
) -> list[str]:
    """Build the nca command line for a manifest folder (see module docstring for why)."""
    manifest_dir = Path(manifest_dir)

    def pick(*names: str) -> str:
        for name in names:
            if (manifest_dir / name).is_file():
                return str(manifest_dir / name)
        return str(manifest_dir)

    cmd = [
        str(nca or nca_executable()),
        "--connectivity",
        pick("policies.yaml"),
        "--pod_list",
        pick("pods.yaml", "workloads.yaml"),
        "--ns_list",
        pick("namespaces.yaml"),
        "--output_format",
        output_format,
        "--file_out",
        str(out_file),
    ]
    if print_ipv6:
        cmd.append("--print_ipv6")
    return cmd


def run_nca_raw(
    manifest_dir: Path | str,
    timeout_s: float,
    *,
    nca: Path | None = None,
    output_format: str = "txt_no_fw_rules",
    print_ipv6: bool = False,
) -> NcaResult:
    """Run nca once on ``manifest_dir``; kill it (whole process group) after ``timeout_s``."""
    with tempfile.TemporaryDirectory(prefix="nca-") as tmp:
        out_file = Path(tmp) / "connectivity.txt"
        log_file = Path(tmp) / "log.txt"
        cmd = nca_command(
            Path(manifest_dir),
            out_file,
            nca=nca,
            output_format=output_format,
            print_ipv6=print_ipv6,
        )
        timed_out = threading.Event()
        with log_file.open("wb") as log:
            start = time.perf_counter()
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

            def kill() -> None:
                timed_out.set()
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)

            timer = threading.Timer(timeout_s, kill)
            timer.start()
            try:
                # wait4 gives this child's own rusage (ru_maxrss in KiB on Linux)
                _, status, usage = os.wait4(proc.pid, 0)
            finally:
                timer.cancel()
            seconds = time.perf_counter() - start
            proc.returncode = os.waitstatus_to_exitcode(status)
        output = (
            out_file.read_text(encoding="utf-8")
            if out_file.exists() and not timed_out.is_set()
            else None
        )
        return NcaResult(
            command=cmd,
            seconds=seconds,
            peak_rss_bytes=usage.ru_maxrss * 1024,
            returncode=proc.returncode,
            timed_out=timed_out.is_set(),
            output=output,
            log=log_file.read_text(encoding="utf-8", errors="replace"),
        )


def run_nca(manifest_dir: Path | str, timeout_s: float) -> NcaRun:
    """Benchmark entry point: ``(seconds, peak_rss_bytes, connections or None)``.

    ``connections`` is None when nca timed out, failed, or printed something
    this parser does not understand.
    """
    res = run_nca_raw(manifest_dir, timeout_s)
    conns = None
    if res.ok and res.output is not None:
        try:
            conns = parse_output(res.output)
        except ValueError:
            conns = None
    return NcaRun(res.seconds, res.peak_rss_bytes, conns)


# --------------------------------------------------------------------------
# Parsing / normalisation
# --------------------------------------------------------------------------

_LINE = re.compile(r"^(?P<src>\S+) => (?P<dst>\S+) : (?P<conns>.+)$")
_WORKLOAD = re.compile(r"^(?P<ns>[^/\[]+)/(?P<name>[^\[]+)\[(?P<kind>[A-Za-z-]+)\]$")
# pod-template-hash: k8s "safe" alphabet, 6-10 chars (nca itself only checks "is hex")
_TEMPLATE_HASH = re.compile(r"^(?P<base>.+)-[bcdfghjklmnpqrstvwxz2456789]{6,10}$")
_CUBE_KEY = re.compile(
    r"(?:^|,)(protocols|src_ports|dst_ports|icmp_type|icmp_code|methods|paths|hosts):"
)


def normalise_endpoint(text: str) -> str:
    """``ns/owner[Kind]`` -> ``ns/workload``; addresses -> :func:`normalise_ips` ranges.

    A ReplicaSet name loses its pod-template-hash so that Deployments are
    reported under the Deployment name, like any other workload.
    """
    m = _WORKLOAD.match(text)
    if m:
        name, kind = m["name"], m["kind"]
        if kind == "ReplicaSet":
            h = _TEMPLATE_HASH.match(name)
            name = h["base"] if h else name
        return f"{m['ns']}/{name}"
    try:
        return normalise_ips(text)
    except ValueError:
        return text  # e.g. a livesim peer or something newer nca versions print


def normalise_ips(text: str) -> str:
    """Canonical form of an address set: merged, sorted ``first-last`` ranges, comma-joined.

    Accepts nca's ``a-b`` ranges and CIDRs (comma separated), so a netfence
    ipBlock such as ``10.0.0.0/8`` except ``10.1.0.0/16`` can be converted with
    the same function and compared as a string.  IPv4 sorts before IPv6.
    """
    spans: list[tuple[int, int, int]] = []  # (version, first, last)
    for part in text.split(","):
        part = part.strip()
        if "/" in part:
            net = ipaddress.ip_network(part, strict=False)
            spans.append((net.version, int(net.network_address), int(net.broadcast_address)))
        else:
            lo, _, hi = part.partition("-")
            first, last = ipaddress.ip_address(lo), ipaddress.ip_address(hi or lo)
            if first.version != last.version or int(first) > int(last):
                raise ValueError(f"bad range {part!r}")
            spans.append((first.version, int(first), int(last)))
    merged: list[list[int]] = []
    for version, lo_int, hi_int in sorted(spans):
        if merged and merged[-1][0] == version and lo_int <= merged[-1][2] + 1:
            merged[-1][2] = max(merged[-1][2], hi_int)
        else:
            merged.append([version, lo_int, hi_int])
    addr = {4: ipaddress.IPv4Address, 6: ipaddress.IPv6Address}
    return ",".join(f"{addr[v](lo_int)}-{addr[v](hi_int)}" for v, lo_int, hi_int in merged)


def normalise_conns(text: str) -> str:
    """Canonical protocol/port string: ``all`` or ``SCTP:36412;TCP:53,8000-8100;UDP:53``.

    Cubes are merged per protocol and ports sorted, so equal connection sets
    get equal strings regardless of how nca split them.  Forms that cannot be
    normalised safely (``All but {...}``, Istio methods/paths) are returned
    unchanged.
    """
    text = text.strip()
    if text == "All connections":
        return "all"
    if not (text.startswith("{") and text.endswith("}")):
        return text
    by_proto: dict[str, list[tuple[int, int]] | None] = {}
    for cube in text[1:-1].split("},{"):
        fields = _parse_cube(cube)
        if fields is None or set(fields) - {"protocols", "dst_ports"}:
            return text
        protocols = [p.strip() for p in fields.get("protocols", "").split(",") if p.strip()]
        if not protocols:
            return text
        ports = _parse_ports(fields["dst_ports"]) if "dst_ports" in fields else None
        for proto in protocols:
            if ports is None or by_proto.get(proto, []) is None:
                by_proto[proto] = None  # all ports
            else:
                by_proto.setdefault(proto, []).extend(ports)  # type: ignore[union-attr]
    parts = []
    for proto in sorted(by_proto):
        ranges = by_proto[proto]
        parts.append(f"{proto}:{'all' if ranges is None else _format_ports(ranges)}")
    return ";".join(parts)


def _parse_cube(cube: str) -> dict[str, str] | None:
    keys = list(_CUBE_KEY.finditer(cube))
    if not keys or keys[0].start() != 0:
        return None
    out = {}
    for i, k in enumerate(keys):
        end = keys[i + 1].start() if i + 1 < len(keys) else len(cube)
        out[k.group(1)] = cube[k.end() : end]
    return out


def _parse_ports(text: str) -> list[tuple[int, int]]:
    ranges = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        ranges.append((int(lo), int(hi or lo)))
    return ranges


def _format_ports(ranges: list[tuple[int, int]]) -> str:
    merged: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in merged)


def parse_output(text: str) -> frozenset[Connection]:
    """Parse ``txt_no_fw_rules`` output into ``{(src, dst, conns)}``, all normalised.

    Raises ValueError on a line that is neither a connection, a section header
    nor blank, so a format change is noticed instead of silently dropping data.
    """
    out: set[Connection] = set()
    for line in text.splitlines():
        line = line.strip()
        if not line or line.endswith("Connections:"):
            continue
        m = _LINE.match(line)
        if not m:
            raise ValueError(f"unexpected nca output line: {line!r}")
        out.add(
            (
                normalise_endpoint(m["src"]),
                normalise_endpoint(m["dst"]),
                normalise_conns(m["conns"]),
            )
        )
    return frozenset(out)


def merge_address_peers(connections: Iterable[Connection]) -> frozenset[Connection]:
    """Union the address ranges that share the workload and the connections.

    Why: tools cut the address space differently.  nca prints per pair the
    ranges it computed (``0.0.0.0-255.255.255.255``) while a tool that splits
    addresses into global atoms prints ``0.0.0.0-169.254.169.253``,
    ``169.254.169.254-169.254.169.254``, ... for the same fact.  After this,
    each (workload, direction, connections) has one address string, so two
    tools' sets can be compared with ``==``.  Workload-to-workload triples
    are unchanged.  Normalised addresses never contain ``/``; workloads do.
    """
    out: set[Connection] = set()
    groups: dict[tuple[str, str, str], list[str]] = {}
    for src, dst, conns in connections:
        if "/" not in src:  # address -> workload
            groups.setdefault(("in", dst, conns), []).append(src)
        elif "/" not in dst:  # workload -> address
            groups.setdefault(("out", src, conns), []).append(dst)
        else:
            out.add((src, dst, conns))
    for (direction, workload, conns), ranges in groups.items():
        addresses = normalise_ips(",".join(ranges))
        out.add((addresses, workload, conns) if direction == "in" else (workload, addresses, conns))
    return frozenset(out)


def main(argv: Sequence[str] | None = None) -> int:
    """``python benchmarks/nca.py DIR [--timeout S]``: time nca on one folder."""
    parser = argparse.ArgumentParser(
        description="Time network-config-analyzer on a manifest folder."
    )
    parser.add_argument("manifest_dir", type=Path)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds (default 3600)")
    parser.add_argument("--save", type=Path, help="write nca's raw output here")
    parser.add_argument("--log", action="store_true", help="print nca's warnings/log")
    args = parser.parse_args(argv)
    res = run_nca_raw(args.manifest_dir, args.timeout)
    if args.log:
        print(res.log, file=sys.stderr)
    if args.save and res.output is not None:
        args.save.write_text(res.output, encoding="utf-8")
    conns = parse_output(res.output) if res.ok and res.output is not None else None
    print(
        json.dumps(
            {
                "command": " ".join(res.command),
                "seconds": round(res.seconds, 3),
                "peak_rss_bytes": res.peak_rss_bytes,
                "returncode": res.returncode,
                "timed_out": res.timed_out,
                "connections": None if conns is None else len(conns),
            },
            indent=2,
        )
    )
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
