"""Whole-cluster connectivity as a list of (source peer, destination peer, connections).

Peers are what people and netpol-analyzer think in: workloads (`ns/name[Kind]`, pods merged
by their controlling owner) and external address ranges (`first-last[External]`, the
address space cut at the policies' ipBlock edges). A workload's connectivity is the union
over its pods; pairs of a workload with itself and of two ranges are not listed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

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


class ConnList:
    """The allowed pairs as parallel arrays (source, destination, conns id), sorted.

    A large cluster has millions of pairs; holding them as arrays and making `Connection`
    objects only on iteration keeps `list` on 20,000 pods within memory, and lets renderers
    format each peer and each distinct `Conns` once (`labels`, `conns_text`).
    """

    def __init__(
        self,
        peers: list[Peer],
        src: npt.NDArray[np.int64],
        dst: npt.NDArray[np.int64],
        ids: IdArray,
        matrix: ClusterMatrix,
    ) -> None:
        self.peers = peers
        self.labels = [str(p) for p in peers]
        rank = np.empty(len(peers), dtype=np.int64)
        rank[sorted(range(len(peers)), key=self.labels.__getitem__)] = np.arange(len(peers))
        order = np.lexsort((rank[dst], rank[src]))
        self.src, self.dst, self.ids = src[order], dst[order], ids[order]
        self._matrix = matrix

    def __len__(self) -> int:
        return int(self.ids.size)

    def conns(self, conn_id: int) -> Conns:
        return self._matrix.conns(conn_id)

    def rows(self) -> Iterator[tuple[int, int, int]]:
        """(source peer index, destination peer index, conns id) in output order."""
        return zip(self.src.tolist(), self.dst.tolist(), self.ids.tolist(), strict=True)

    def __iter__(self) -> Iterator[Connection]:
        for s, d, c in self.rows():
            yield Connection(self.peers[s], self.peers[d], self.conns(c))


def connectivity(state: ClusterState, matrix: ClusterMatrix | None = None) -> ConnList:
    """Every allowed (peer, peer) pair, sorted like netpol-analyzer's output."""
    matrix = matrix or ClusterMatrix(state)
    owners: dict[Peer, list[int]] = defaultdict(list)
    for pod in state.pods:
        members = owners[Peer.of_pod(pod)]
        index = matrix.class_of[id(pod)]
        if index not in members:
            members.append(index)
    workloads = list(owners)
    groups = list(owners.values())
    table = matrix.table

    def by_rows(ids: IdArray) -> IdArray:
        """Merge class rows into owner rows (union over an owner's classes)."""
        out = ids[[g[0] for g in groups]]
        for i, g in enumerate(groups):
            for extra in g[1:]:
                out[i] = table.union_arrays(out[i], ids[extra])
        return out

    n = len(workloads)
    sources = [Peer(span=s) for s in matrix.src_ranges]
    destinations = [Peer(span=s) for s in matrix.dst_ranges]
    peers = workloads + sources + destinations
    parts: list[tuple[IdArray, int, int]] = []  # (ids, first source index, first dst index)
    if n:
        pods = by_rows(by_rows(matrix.pod_to_pod()).T.copy()).T  # [src owner, dst owner]
        np.fill_diagonal(pods, NONE_ID)
        parts.append((pods, 0, 0))
        parts.append((by_rows(matrix.pod_to_range().copy()), 0, n + len(sources)))
        parts.append((by_rows(matrix.range_to_pod().T.copy()).T, n, 0))
    src: list[npt.NDArray[np.int64]] = [np.zeros(0, dtype=np.int64)]
    dst: list[npt.NDArray[np.int64]] = [np.zeros(0, dtype=np.int64)]
    ids: list[IdArray] = [np.zeros(0, dtype=np.int32)]
    for block, row0, col0 in parts:
        rows, cols = np.nonzero(block != NONE_ID)
        src.append(rows.astype(np.int64) + row0)
        dst.append(cols.astype(np.int64) + col0)
        ids.append(block[rows, cols])
    return ConnList(peers, np.concatenate(src), np.concatenate(dst), np.concatenate(ids), matrix)
