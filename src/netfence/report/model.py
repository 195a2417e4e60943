"""The data a report embeds: connectivity, explanations, findings, diff and summary.

Everything the page shows is computed here, by the code behind `list`, `check`, `diff` and
`explain`; the page's script only decodes, looks up and draws. It never evaluates a
selector, an ipBlock, a port or a tier.

Explanations cannot be embedded pair by pair: 5,000 pods make about 1,400 workloads, two
million workload pairs, and more pod-class pairs (replicas on different nodes fall in
different ipBlocks). They are embedded as *side records* instead. A side of a connection (the
source's egress or the destination's ingress) is decided by three facts only: the policies
that select the subject pod, which of their rules match the peer, and the destination's
container ports. `Engine.side` gathers those facts for one pair and hands them to the pure
`decide_side`; here they are gathered for whole rows at once: the policies per pod class
(`Engine.selecting`), the rules' peers as the masks the class matrix is built from
(`ClusterMatrix.rule_mask`), the distinct columns of those masks, and `decide_side` called once
per distinct combination. The report then holds
- `sides[direction].records`: each distinct `decide_side` answer (selecting policies, the
  matching rules with what each covers and decided, what the side allows);
- `sides[direction].rows`: per distinct row, the record id for every peer column (pod
  classes, then the direction's external ranges), and per class its row;
- `meet`: what both sides together allow, for every pair of side answers that occurs.
A clicked workload pair is then a lookup per pod-class pair; tests check the lookups against
`Engine.verdict` for every pair of a cluster.

Large numeric arrays are little-endian typed arrays in base64 (`{"dtype", "data"}`): the
edges and rows of 5,000 pods are a few MB that way, and decode without parsing.
"""

from __future__ import annotations

import base64
import ipaddress
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import numpy.typing as npt

from netfence.analysis.connlist import ConnList, Peer, connectivity
from netfence.analysis.diff import Difference, diff
from netfence.analysis.explain import describe_rule
from netfence.analysis.lint import lint
from netfence.cluster.state import ClusterState, ContainerPort
from netfence.policy.conns import PROTOCOLS, Conns
from netfence.policy.engine import HostNetworkMode, decide_side
from netfence.policy.ir import AnyPolicy, Direction, Rule, compile_policy
from netfence.policy.matrix import ALL_ID, NONE_ID, ClusterMatrix
from netfence.problems import Problem

Json = dict[str, object]
SCHEMA = 1
WORKLOAD, SOURCE_RANGE, DESTINATION_RANGE = 0, 1, 2
DIRECTIONS: tuple[Direction, ...] = ("ingress", "egress")
_SAMPLE_PODS = 3
_BLOCK = 512


def typed_array(values: npt.ArrayLike) -> Json:
    """Non-negative integers as the smallest little-endian unsigned typed array holding them."""
    array = np.asarray(values, dtype=np.int64).reshape(-1)
    top = int(array.max()) if array.size else 0
    dtype = "u1" if top < 2**8 else "u2" if top < 2**16 else "u4"
    data = array.astype(f"<{dtype}").tobytes()
    return {"dtype": dtype, "data": base64.b64encode(data).decode("ascii")}


def report_data(
    state: ClusterState,
    *,
    old: ClusterState | None = None,
    host_network: HostNetworkMode = "pod",
    source: str = "",
    against: str = "",
) -> Json:
    """Everything the report page needs, as plain JSON-able values."""
    # Cut the external ranges with the old policies' ipBlocks too, as `diff` does, so that
    # the report's peers are the ones the differences name.
    cut_with = [compile_policy(p) for p in old.policies] if old is not None else []
    matrix = ClusterMatrix(state, host_network=host_network, cut_with=cut_with)
    connections = connectivity(state, matrix)
    problems = [*state.problems, *lint(state, matrix)]
    differences = diff(old, state, host_network) if old is not None else None
    peers = _Peers(state, matrix, connections)
    policies = _Policies(state, matrix)
    sides = {d: _Sides(matrix, policies, peers.port_groups, d) for d in DIRECTIONS}
    data: Json = {
        "schema": SCHEMA,
        "meta": _meta(source, against, host_network),
        "namespaces": peers.namespaces,
        "peers": peers.json(),
        "edges": peers.edges(),
        "classes": peers.classes(sides),
        "policies": policies.json(),
        "rules": policies.rules_json(),
        "sides": {d: sides[d].json() for d in DIRECTIONS},
        "meet": _meets(matrix),
        "findings": [p.as_dict() for p in _ordered(problems)],
        "diff": None if differences is None else peers.differences(differences),
        "summary": peers.summary(problems, differences),
    }
    # Last: every conns id above is interned by now (rules, meets, exposure unions).
    data["conns"] = [_conns_json(c) for c in matrix.table.values]
    return data


def _meta(source: str, against: str, host_network: HostNetworkMode) -> Json:
    try:
        own = version("netfence")
    except PackageNotFoundError:  # running from a source tree
        own = "unknown"
    return {
        "source": source,
        "against": against or None,
        "hostNetwork": host_network,
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "version": own,
    }


def _ordered(problems: Sequence[Problem]) -> list[Problem]:
    """Errors first, then warnings, each in the order found (as `check` prints them)."""
    return [p for p in problems if p.severity == "error"] + [
        p for p in problems if p.severity == "warning"
    ]


def _conns_json(conns: Conns) -> Json:
    return {
        "text": str(conns) if conns else "No Connections",
        "all": conns.is_all,
        "ports": {p: [list(r) for r in conns.ranges(p)] for p in PROTOCOLS if conns.ranges(p)},
    }


def _meets(matrix: ClusterMatrix) -> list[int]:
    """[egress id, ingress id, intersection id, ...] for every pair of side answers that two
    pod classes produce (a side towards or from an external range stands alone)."""
    n = matrix.size
    keys: set[int] = set()
    for first in range(0, n, _BLOCK):  # by blocks of sources: n x n int64 would be large
        rows = slice(first, min(n, first + _BLOCK))
        egress = matrix.egress[rows, :n].astype(np.int64)
        ingress = matrix.ingress[:, rows].T.astype(np.int64)  # [source, destination]
        keys.update(np.unique((egress << 32) | ingress).tolist())
    out: list[int] = []
    for key in sorted(keys):
        a, b = key >> 32, key & 0xFFFFFFFF
        out += [a, b, matrix.table.meet(a, b)]
    return out


class _Policies:
    """Every policy of every tier, in the engine's order, and their rules, numbered."""

    def __init__(self, state: ClusterState, matrix: ClusterMatrix) -> None:
        engine = matrix.engine
        self.policies: list[AnyPolicy] = [*engine.policies, *engine.tier_policies]
        self.ids = {p.key: i for i, p in enumerate(self.policies)}
        self.rules: list[Rule] = [r for p in self.policies for r in (*p.ingress, *p.egress)]
        self.rule_ids = {id(r): i for i, r in enumerate(self.rules)}
        self.files = {p.key: p.file for p in state.policies}
        self.files.update((p.key, p.file) for p in state.cluster_policies)

    def json(self) -> list[Json]:
        return [
            {
                "key": p.key,
                "kind": p.kind,
                "tier": p.tier,
                "file": self.files.get(p.key, ""),
                "ingress": [self.rule_ids[id(r)] for r in p.ingress],
                "egress": [self.rule_ids[id(r)] for r in p.egress],
            }
            for p in self.policies
        ]

    def rules_json(self) -> list[Json]:
        return [
            {
                "provenance": str(r.provenance),
                "action": r.action,
                "definition": describe_rule(r),
            }
            for r in self.rules
        ]


def run_lengths(rows: Sequence[npt.NDArray[np.int64]]) -> Json:
    """Rows as runs of equal values: `starts` (the first column of each run) and `values`,
    row r's runs at `offsets[r]` to `offsets[r + 1]`. Peer columns come grouped by
    namespace, and policies mostly select peers by namespace, so rows are long runs."""
    starts, values, offsets = [], [], [0]
    for row in rows:
        first = np.concatenate([[0], np.flatnonzero(np.diff(row)) + 1])
        starts.append(first)
        values.append(row[first])
        offsets.append(offsets[-1] + first.size)
    return {
        "offsets": typed_array(offsets),
        "starts": typed_array(np.concatenate(starts) if starts else []),
        "values": typed_array(np.concatenate(values) if values else []),
    }


def _distinct_columns(
    facts: npt.NDArray[np.uint8],
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.intp]]:
    """`np.unique(facts, axis=1)` (distinct columns, and each column's index among them),
    comparing each column's bytes as one value, which is many times faster."""
    width = facts.shape[1]
    if not facts.shape[0]:
        return np.zeros((1, 0), dtype=np.uint8), np.zeros(width, dtype=np.intp)
    columns = np.ascontiguousarray(facts.T)
    keys = columns.view(np.dtype((np.void, columns.shape[1]))).reshape(-1)
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return columns[first], inverse.reshape(-1)


class _Sides:
    """One direction's side records and record rows (see the module docstring)."""

    def __init__(
        self,
        matrix: ClusterMatrix,
        policies: _Policies,
        port_groups: list[tuple[ContainerPort, ...]],
        direction: Direction,
    ) -> None:
        self.matrix = matrix
        self.policies = policies
        self.port_groups = port_groups
        self.direction = direction
        group_of = {ports: i for i, ports in enumerate(port_groups)}
        ranges = matrix.src_ranges if direction == "ingress" else matrix.dst_ranges
        self.no_ports = group_of[()]
        self.class_groups = [group_of[c.ports] for c in matrix.classes]
        # Named ports resolve on the destination: the column's class for egress (a range has
        # no ports), the subject's class for ingress.
        column_groups = np.array(self.class_groups + [self.no_ports] * len(ranges), dtype="<u4")
        self.column_groups = column_groups.view(np.uint8).reshape(-1, 4).T  # 4 rows of bytes
        self.width = matrix.size + len(ranges)
        self.records: list[Json] = []
        self._record_ids: dict[tuple[object, ...], int] = {}
        self.rows: list[npt.NDArray[np.int64]] = []
        self.row_of_class: list[int] = []
        row_ids: dict[bytes, int] = {}
        built: dict[tuple[object, ...], npt.NDArray[np.int64]] = {}
        for pod_class in matrix.classes:
            selecting = matrix.engine.selecting(pod_class.pods[0], direction)
            rules = [r for p in selecting for r in p.rules(direction)]
            named = any(r.has_named_ports for r in rules)  # else ports never matter
            group = self.class_groups[pod_class.index] if named else self.no_ports
            key = (tuple(p.key for p in selecting), group if direction == "ingress" else -1)
            row = built.get(key)
            if row is None:
                row = built[key] = self._row(selecting, rules, named, group)
            row_id = row_ids.setdefault(row.tobytes(), len(self.rows))
            if row_id == len(self.rows):
                self.rows.append(row)
            self.row_of_class.append(row_id)

    def _row(
        self, selecting: list[AnyPolicy], rules: list[Rule], named: bool, group: int
    ) -> npt.NDArray[np.int64]:
        """The record id of every peer column for a subject selected by `selecting`."""
        parts = [self.matrix.rule_mask(r, self.direction).view(np.uint8) for r in rules]
        by_column = named and self.direction == "egress"
        if by_column:
            parts += list(self.column_groups)
        facts = np.vstack(parts) if parts else np.zeros((0, self.width), dtype=np.uint8)
        distinct, inverse = _distinct_columns(facts)
        ids = []
        for column in distinct:
            if by_column:
                group = int(column[len(rules) :].view("<u4")[0])
            ids.append(self._record(selecting, rules, column[: len(rules)], group))
        return np.array(ids, dtype=np.int64)[inverse]

    def _record(
        self,
        selecting: list[AnyPolicy],
        rules: list[Rule],
        matches: npt.NDArray[np.uint8],
        group: int,
    ) -> int:
        matched = [r for r, hit in zip(rules, matches.tolist(), strict=True) if hit]
        key = (tuple(p.key for p in selecting), tuple(id(r) for r in matched), group)
        found = self._record_ids.get(key)
        if found is not None:
            return found
        side = decide_side(
            self.direction, selecting, {r.provenance for r in matched}, self.port_groups[group]
        )
        table = self.matrix.table
        by_rule = {c.provenance: c for c in side.contributions}
        entries = []
        for rule in matched:  # a matching rule without a contribution covers no port here
            c = by_rule.get(rule.provenance)
            entries.append(
                [
                    self.policies.rule_ids[id(rule)],
                    table.intern(c.conns) if c else NONE_ID,
                    table.intern(c.decided) if c else NONE_ID,
                ]
            )
        found = self._record_ids[key] = len(self.records)
        self.records.append(
            {
                "policies": [self.policies.ids[p.key] for p in selecting],
                "matched": entries,
                "allowed": table.intern(side.allowed),
            }
        )
        return found

    def json(self) -> Json:
        return {"width": self.width, "records": self.records, "rows": run_lengths(self.rows)}


def _range_start(peer: Peer) -> str:
    assert peer.span is not None
    family, first, _ = peer.span
    return str(ipaddress.IPv4Address(first) if family == 4 else ipaddress.IPv6Address(first))


class _Peers:
    """The connectivity list re-indexed for reading, with per-peer and per-class facts.

    Peers are ordered: workloads by label (so grouped by namespace), then the source ranges,
    then the destination ranges, each in address order.
    """

    def __init__(self, state: ClusterState, matrix: ClusterMatrix, connections: ConnList):
        self.state = state
        self.matrix = matrix
        self.connections = connections
        peers = connections.peers
        workloads = sorted(
            (i for i, p in enumerate(peers) if not p.is_external), key=lambda i: str(peers[i])
        )
        order = workloads + [i for i, p in enumerate(peers) if p.is_external]
        self.position = np.empty(len(peers), dtype=np.int64)
        self.position[order] = np.arange(len(peers))
        self.peers = [peers[i] for i in order]
        self.n_workloads = len(workloads)
        self.n_sources = len(matrix.src_ranges)
        self.namespaces = sorted(state.namespaces)
        index_of = {p: i for i, p in enumerate(self.peers[: self.n_workloads])}
        # A workload's pods by pod class (two workloads with the same labels share classes).
        self.members: list[dict[int, list[str]]] = [{} for _ in self.peers]
        for pod in state.pods:
            by_class = self.members[index_of[Peer.of_pod(pod)]]
            by_class.setdefault(matrix.class_of[id(pod)], []).append(pod.name)
        self.pods = [sum(map(len, m.values())) for m in self.members]
        self.port_groups: list[tuple[ContainerPort, ...]] = list(
            dict.fromkeys([*(c.ports for c in matrix.classes), ()])
        )

    def side(self, index: int) -> int:
        if index < self.n_workloads:
            return WORKLOAD
        return SOURCE_RANGE if index < self.n_workloads + self.n_sources else DESTINATION_RANGE

    def json(self) -> Json:
        isolated = self.matrix.isolated
        both = isolated["ingress"] & isolated["egress"]
        ns_index = {name: i for i, name in enumerate(self.namespaces)}
        out: dict[str, list[object]] = defaultdict(list)
        for i, peer in enumerate(self.peers):
            members = self.members[i]
            out["label"].append(str(peer))
            out["side"].append(self.side(i))
            out["classes"].append(list(members))
            out["classPods"].append([len(names) for names in members.values()])
            out["classSamples"].append([names[:_SAMPLE_PODS] for names in members.values()])
            for key, mask in (("isoIn", isolated["ingress"]), ("isoOut", isolated["egress"])):
                out[key].append(sum(len(names) for c, names in members.items() if mask[c]))
            out["isoBoth"].append(sum(len(names) for c, names in members.items() if both[c]))
            if peer.is_external:
                out["name"].append(str(peer).removesuffix("[External]"))
                out["kind"].append("External")
                out["ns"].append(-1)
                out["explainAs"].append(_range_start(peer))
            else:
                out["name"].append(peer.name)
                out["kind"].append(peer.kind)
                out["ns"].append(ns_index[peer.namespace])
                out["explainAs"].append(f"{peer.namespace}/{peer.name}")
        return {**out, "pods": self.pods, "workloads": self.n_workloads, "sources": self.n_sources}

    def edges(self) -> Json:
        c = self.connections
        return {
            "src": typed_array(self.position[c.src]),
            "dst": typed_array(self.position[c.dst]),
            "conn": typed_array(c.ids),
            "count": len(c),
        }

    def classes(self, sides: dict[Direction, _Sides]) -> Json:
        return {
            "ingressRow": sides["ingress"].row_of_class,
            "egressRow": sides["egress"].row_of_class,
        }

    def differences(self, differences: Sequence[Difference]) -> list[Json]:
        labels = {str(p): i for i, p in enumerate(self.peers)}
        sources = {k: v for k, v in labels.items() if self.side(v) != DESTINATION_RANGE}
        targets = {k: v for k, v in labels.items() if self.side(v) != SOURCE_RANGE}
        return [
            {
                **d.as_dict(),
                "old": str(d.old) if d.old else "No Connections",
                "new": str(d.new) if d.new else "No Connections",
                "s": sources.get(str(d.src), -1),
                "d": targets.get(str(d.dst), -1),
            }
            for d in differences
        ]

    def summary(
        self, problems: Sequence[Problem], differences: Sequence[Difference] | None
    ) -> Json:
        matrix = self.matrix
        table = matrix.table
        pods = np.array([len(c.pods) for c in matrix.classes], dtype=np.int64)
        iso_in, iso_out = matrix.isolated["ingress"], matrix.isolated["egress"]
        exposed: dict[int, int] = {}  # workload -> union of what External may open to it
        reaching: dict[int, int] = {}  # workload -> union of what it may open to External
        for s, d, conn in self.connections.rows():
            src, dst = int(self.position[s]), int(self.position[d])
            if self.side(src) == SOURCE_RANGE and self.side(dst) == WORKLOAD:
                exposed[dst] = table.union(exposed.get(dst, NONE_ID), conn)
            elif self.side(src) == WORKLOAD and self.side(dst) == DESTINATION_RANGE:
                reaching[src] = table.union(reaching.get(src, NONE_ID), conn)
        summary: Json = {
            "pods": len(self.state.pods),
            "workloads": self.n_workloads,
            "namespaces": len(self.state.namespaces),
            "policies": len(self.state.policies) + len(self.state.cluster_policies),
            "errors": sum(1 for p in problems if p.severity == "error"),
            "warnings": sum(1 for p in problems if p.severity == "warning"),
            "connections": len(self.connections),
            "podsIsolatedIngress": int(pods[iso_in].sum()),
            "podsIsolatedEgress": int(pods[iso_out].sum()),
            "podsIsolatedBoth": int(pods[iso_in & iso_out].sum()),
            "podsNotIsolated": int(pods[~(iso_in | iso_out)].sum()),
            "exposed": [
                {"peer": peer, "conn": conn}
                for peer, conn in sorted(exposed.items(), key=lambda kv: (-self.pods[kv[0]], kv[0]))
            ],
            "exposedPods": sum(self.pods[p] for p in exposed),
            "exposedAllPorts": sum(1 for c in exposed.values() if c == ALL_ID),
            "reachingExternal": len(reaching),
            "reachingExternalPods": sum(self.pods[p] for p in reaching),
        }
        if differences is not None:
            counts = {"added": 0, "removed": 0, "changed": 0}
            for difference in differences:
                counts[difference.change] += 1
            summary["diff"] = counts
        return summary
