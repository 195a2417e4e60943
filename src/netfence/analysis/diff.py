"""`diff`: what a change of manifests changes in connectivity, in connectivity-list terms.

Both sides are computed over the same external ranges (cut at the ipBlock edges of both),
so a range is never reported as changed merely because the other side cut it differently.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from netfence.analysis.connlist import Connection, Peer, connectivity
from netfence.analysis.formats import DiffFormat
from netfence.cluster.state import ClusterState
from netfence.policy.conns import NO_CONNS, Conns
from netfence.policy.engine import HostNetworkMode
from netfence.policy.ir import compile_state
from netfence.policy.matrix import ClusterMatrix

Change = Literal["added", "removed", "changed"]


@dataclass(frozen=True, slots=True)
class Difference:
    change: Change
    src: Peer
    dst: Peer
    old: Conns
    new: Conns
    note: str = ""  # e.g. "workload added"

    def as_dict(self) -> dict[str, object]:
        return {
            "diff-type": self.change,
            "src": str(self.src),
            "dst": str(self.dst),
            "old": str(self.old),
            "new": str(self.new),
            "note": self.note,
        }


def diff(
    old: ClusterState, new: ClusterState, host_network: HostNetworkMode = "pod"
) -> list[Difference]:
    old_policies = compile_state(old)
    new_policies = compile_state(new)
    before = _by_pair(connectivity(old, ClusterMatrix(old, None, host_network, new_policies)))
    after = _by_pair(connectivity(new, ClusterMatrix(new, None, host_network, old_policies)))
    old_peers = {peer for pair in before for peer in pair} | _workloads(old)
    new_peers = {peer for pair in after for peer in pair} | _workloads(new)
    result = []
    for pair in sorted(before.keys() | after.keys(), key=lambda p: (str(p[0]), str(p[1]))):
        was, now = before.get(pair, NO_CONNS), after.get(pair, NO_CONNS)
        if was == now:
            continue
        change: Change = "changed" if was and now else ("added" if now else "removed")
        notes = [
            f"workload {peer} {'added' if change == 'added' else 'removed'}"
            for peer in pair
            if not peer.is_external
            and (peer not in old_peers if change == "added" else peer not in new_peers)
        ]
        result.append(Difference(change, pair[0], pair[1], was, now, "; ".join(notes)))
    return result


def _by_pair(connections: Iterable[Connection]) -> dict[tuple[Peer, Peer], Conns]:
    return {(c.src, c.dst): c.conns for c in connections}


def _workloads(state: ClusterState) -> set[Peer]:
    return {Peer.of_pod(p) for p in state.pods}


def render_diff(differences: Sequence[Difference], fmt: DiffFormat) -> str:
    if fmt == DiffFormat.json:
        return json.dumps([d.as_dict() for d in differences], indent=2) + "\n"
    rows = [
        [d.change, str(d.src), str(d.dst), _text(d.old), _text(d.new), d.note] for d in differences
    ]
    header = ["diff-type", "source", "destination", "dir1", "dir2", "workloads-diff-info"]
    if fmt == DiffFormat.csv:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        return out.getvalue()
    if fmt == DiffFormat.md:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines) + "\n"
    # netpol-analyzer's diff text form
    return "".join(
        f"diff-type: {r[0]}, source: {r[1]}, destination: {r[2]}, dir1: {r[3]}, dir2: {r[4]}"
        + (f", workloads-diff-info: {r[5]}" if r[5] else "")
        + "\n"
        for r in rows
    )


def _text(conns: Conns) -> str:
    return str(conns) if conns else "No Connections"
