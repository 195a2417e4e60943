"""The stream every source produces: changes to namespaces, pods, nodes and policies.

A source (a manifest folder, the Kubernetes API) yields `Update`s; a `ClusterStore` applies
them and says which keys changed, so the agent recompiles only what a change touches. Changes
carry the finished records of `cluster.state` (validated, projected to the fields policy needs),
never wire objects, so the store and everything after it do not care where they came from.

Contract of a source: its first update brings an empty store to its complete view (the agent
replaces the kernel's ruleset only once it has one); later updates are the differences, in
order. A source never stops on a bad object: the object is left out (an earlier good version
of it is deleted) and its problems are reported in `Update.problems`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

from netfence.cluster.state import ClusterPolicy, Namespace, Node, Pod, Policy
from netfence.problems import Problem

ClusterPolicyKind = Literal[
    "AdminNetworkPolicy", "BaselineAdminNetworkPolicy", "ClusterNetworkPolicy"
]
Kind = Literal["Namespace", "Pod", "NetworkPolicy", "Node", ClusterPolicyKind]
Action = Literal["upsert", "delete"]
Record = Namespace | Pod | Policy | ClusterPolicy | Node
CLUSTER_POLICY_KINDS: tuple[ClusterPolicyKind, ...] = get_args(ClusterPolicyKind)


class SourceError(Exception):
    """A source cannot start as configured (no such folder, no kubeconfig...)."""


@dataclass(frozen=True, slots=True)
class Change:
    """One record added or replaced (`upsert`) or removed (`delete`).

    `key` is `namespace/name` for pods and NetworkPolicies, the name for namespaces and
    nodes, `Kind/name` for cluster-wide policies (see `ClusterPolicy.key`).
    """

    kind: Kind
    action: Action
    key: str
    record: Record | None = None

    @classmethod
    def upsert(cls, record: Record) -> Change:
        return cls(kind_of(record), "upsert", key_of(record), record)

    @classmethod
    def delete(cls, kind: Kind, key: str) -> Change:
        return cls(kind, "delete", key)


@dataclass(frozen=True, slots=True)
class Update:
    """What a source reports in one step.

    `problems` is the source's complete list of current problems (objects left out, warnings),
    replacing the previous one; `None` when it did not change.
    """

    changes: tuple[Change, ...] = ()
    problems: tuple[Problem, ...] | None = None


class Source(Protocol):
    def updates(self) -> AsyncGenerator[Update, None]:
        """The stream: runs until cancelled; the first update is the complete view."""
        ...


_KINDS: dict[type, Kind] = {
    Namespace: "Namespace",
    Pod: "Pod",
    Policy: "NetworkPolicy",
    Node: "Node",
}


def kind_of(record: Record) -> Kind:
    if isinstance(record, ClusterPolicy):
        return next(kind for kind in CLUSTER_POLICY_KINDS if kind == record.kind)
    return _KINDS[type(record)]


def key_of(record: Record) -> str:
    return record.name if isinstance(record, Namespace | Node) else record.key


def differences(kind: Kind, old: dict[str, Record], new: dict[str, Record]) -> list[Change]:
    """The changes that turn `old` into `new` (records of one kind by key); equal records
    produce nothing, so an object that did not change is not recompiled."""
    changes = [Change.delete(kind, key) for key in old if key not in new]
    changes.extend(Change.upsert(record) for key, record in new.items() if old.get(key) != record)
    return changes
