"""Whole-cluster connectivity as a list of (source peer, destination peer, connections).

Peers are what people and netpol-analyzer think in: workloads (`ns/name[Kind]`, pods merged
by their controlling owner) and external address ranges (`first-last[External]`, the
address space cut at the policies' ipBlock edges). A workload's connectivity is the union
over its pods; pairs of a workload with itself and of two ranges are not listed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from netfence.cluster.state import ClusterState, Owner, Pod
from netfence.policy.conns import Conns
from netfence.policy.ipranges import Span, span_text
from netfence.policy.matrix import NONE_ID, ClusterMatrix, IdArray


@dataclass(frozen=True, slots=True)
class Peer:
    """A workload (namespace, kind, name) or an external range (`span`)."""

    namespace: str = ""
    kind: str = ""
    name: str = ""
    span: Span | None = None

    @staticmethod
    def of_owner(namespace: str, owner: Owner) -> Peer:
        return Peer(namespace, owner.kind, owner.name)

    @staticmethod
    def of_pod(pod: Pod) -> Peer:
        return Peer.of_owner(pod.namespace, pod.owner)

    @property
    def is_external(self) -> bool:
        return self.span is not None

    def __str__(self) -> str:
        if self.span is not None:
            return f"{span_text(self.span)}[External]"
        return f"{self.namespace}/{self.name}[{self.kind}]"

    def as_dict(self) -> dict[str, str]:
        if self.span is not None:
            return {"type": "external", "range": span_text(self.span), "name": str(self)}
        return {
            "type": "workload",
            "namespace": self.namespace,
            "kind": self.kind,
            "workload": self.name,
            "name": str(self),
        }


@dataclass(frozen=True, slots=True)
class Connection:
    src: Peer
    dst: Peer
    conns: Conns

    def __str__(self) -> str:
        return f"{self.src} => {self.dst} : {self.conns}"

    def as_dict(self) -> dict[str, object]:
        return {
            "src": self.src.as_dict(),
            "dst": self.dst.as_dict(),
            "conns": str(self.conns),
            "protocols": self.conns.as_dict(),
        }


def connectivity(state: ClusterState, matrix: ClusterMatrix | None = None) -> list[Connection]:
    """Every allowed (peer, peer) pair, sorted like netpol-analyzer's output."""
    matrix = matrix or ClusterMatrix(state)
    owners: dict[Peer, list[int]] = defaultdict(list)
    for pod in state.pods:
        members = owners[Peer.of_pod(pod)]
        index = matrix.class_of[id(pod)]
        if index not in members:
            members.append(index)
    peers = list(owners)
    groups = list(owners.values())
    table = matrix.table

    def by_rows(ids: IdArray) -> IdArray:
        """Merge class rows into owner rows (union over an owner's classes)."""
        out = ids[[g[0] for g in groups]]
        for i, g in enumerate(groups):
            for extra in g[1:]:
                out[i] = table.union_arrays(out[i], ids[extra])
        return out

    result: list[Connection] = []
    if peers:
        pods = by_rows(by_rows(matrix.pod_to_pod()).T.copy()).T  # [src owner, dst owner]
        np.fill_diagonal(pods, NONE_ID)
        result += _emit(pods, peers, peers, matrix)
        to_ranges = by_rows(matrix.pod_to_range().copy())
        result += _emit(to_ranges, peers, [Peer(span=s) for s in matrix.dst_ranges], matrix)
        from_ranges = by_rows(matrix.range_to_pod().T.copy()).T
        result += _emit(from_ranges, [Peer(span=s) for s in matrix.src_ranges], peers, matrix)
    result.sort(key=lambda c: (str(c.src), str(c.dst)))
    return result


def _emit(
    ids: IdArray, srcs: list[Peer], dsts: list[Peer], matrix: ClusterMatrix
) -> list[Connection]:
    rows, cols = np.nonzero(ids != NONE_ID)
    values = ids[rows, cols]
    return [
        Connection(srcs[r], dsts[c], matrix.conns(int(v)))
        for r, c, v in zip(rows.tolist(), cols.tolist(), values.tolist(), strict=True)
    ]
