"""`ClusterStore`: the current records, kept up to date by a source's changes.

The agent holds one store for its whole life: sources feed it `Update`s, the loop asks it which
keys changed since the last batch (so a pod relabel touches only that pod's set elements) and
takes `ClusterState` snapshots for the engine. A snapshot copies references only; the records
are immutable, so snapshots stay valid while the store moves on.

Namespaces follow the API server's rules wherever the records come from: the label
`kubernetes.io/metadata.name` always equals the name, and a namespace that pods or policies
use exists even when it was not declared (with only that label). So the effective namespace
can change when a pod is added or removed; the store reports it as changed then.

Nodes are effective in the same way (`effective_nodes`, as `ClusterState.build` has them): a
declared Node, or one that pods are scheduled on, with the addresses its pods report. So a pod
change can change its node; the store reports the node then, and only then (a pod on a known
node reporting the node's known addresses changes nothing there). Cluster-wide policies
(AdminNetworkPolicy, BaselineAdminNetworkPolicy, ClusterNetworkPolicy) belong to no
namespace and imply none.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TypeVar

from netfence.cluster.state import (
    ClusterPolicy,
    ClusterState,
    Namespace,
    Node,
    Pod,
    Policy,
    effective_nodes,
    namespace_record,
    shared_addresses,
)
from netfence.k8s.validation import priority_conflicts
from netfence.problems import Problem
from netfence.sources.changes import CLUSTER_POLICY_KINDS, Change, Kind, Record, Update

R = TypeVar("R", Namespace, Pod, Policy, ClusterPolicy, Node)


@dataclass
class Changed:
    """Keys whose records differ from the last batch; `problems`: the problem list changed."""

    namespaces: set[str] = field(default_factory=set)
    pods: set[str] = field(default_factory=set)
    policies: set[str] = field(default_factory=set)
    cluster_policies: set[str] = field(default_factory=set)
    nodes: set[str] = field(default_factory=set)
    problems: bool = False

    def __bool__(self) -> bool:
        return bool(
            self.namespaces
            or self.pods
            or self.policies
            or self.cluster_policies
            or self.nodes
            or self.problems
        )


class ClusterStore:
    def __init__(self) -> None:
        self.declared: dict[str, Namespace] = {}  # namespaces as their sources declared them
        self.declared_nodes: dict[str, Node] = {}  # nodes as their sources declared them
        self.pods: dict[str, Pod] = {}
        self.policies: dict[str, Policy] = {}
        self.cluster_policies: dict[str, ClusterPolicy] = {}
        self.problems: tuple[Problem, ...] = ()
        self._users: Counter[str] = Counter()  # namespace -> pods and policies in it
        self._on_node: dict[str, set[str]] = {}  # node -> keys of the pods scheduled on it
        # What the keys touched since the last batch were before (net changes are reported:
        # a pod added and removed again within a batch is no change).
        self._before: dict[tuple[Kind, str], Record | None] = {}
        self._problems_before: tuple[Problem, ...] = ()

    def namespace(self, name: str) -> Namespace | None:
        """The effective namespace: declared, or implied by the pods and policies in it."""
        declared = self.declared.get(name)
        if declared is not None:
            return declared
        return namespace_record(name, {}) if self._users[name] else None

    @property
    def namespaces(self) -> dict[str, Namespace]:
        names = dict.fromkeys([*self.declared, *self._users])
        return {name: ns for name in names if (ns := self.namespace(name)) is not None}

    def node(self, name: str) -> Node | None:
        """The effective node: declared, or implied by the pods on it, with their addresses."""
        declared = self.declared_nodes.get(name)
        pods = [self.pods[key] for key in sorted(self._on_node.get(name, ()))]
        return effective_nodes([declared] if declared else [], pods).get(name)

    @property
    def nodes(self) -> dict[str, Node]:
        return effective_nodes(self.declared_nodes.values(), self.pods.values())

    def apply(self, update: Update) -> None:
        for change in update.changes:
            self._apply(change)
        if update.problems is not None:
            self.problems = update.problems

    def take_changed(self) -> Changed:
        """The keys whose records differ from the previous call's (the last batch)."""
        changed = Changed(problems=self.problems != self._problems_before)
        keys: dict[Kind, set[str]] = {
            "Namespace": changed.namespaces,
            "Pod": changed.pods,
            "NetworkPolicy": changed.policies,
            "Node": changed.nodes,
            **{kind: changed.cluster_policies for kind in CLUSTER_POLICY_KINDS},
        }
        for (kind, key), before in self._before.items():
            if self._current(kind, key) != before:
                keys[kind].add(key)
        self._before = {}
        self._problems_before = self.problems
        return changed

    def priority_conflicts(self) -> list[Problem]:
        """Across sources' objects (the API checks each on its own): in netfence's order of
        evaluation for a tie, kind then name."""
        ranked = sorted(
            (p for p in self.cluster_policies.values() if not p.closed),
            key=lambda p: (p.kind, p.name),
        )
        return priority_conflicts(ranked)

    def snapshot(self) -> ClusterState:
        pods = list(self.pods.values())
        return ClusterState(
            namespaces=self.namespaces,
            pods=pods,
            policies=list(self.policies.values()),
            problems=[*self.problems, *shared_addresses(pods), *self.priority_conflicts()],
            cluster_policies=list(self.cluster_policies.values()),
            nodes=self.nodes,
        )

    def _current(self, kind: Kind, key: str) -> Record | None:
        if kind == "Namespace":
            return self.namespace(key)
        if kind == "Node":
            return self.node(key)
        if kind == "Pod":
            return self.pods.get(key)
        return self.policies.get(key) if kind == "NetworkPolicy" else self.cluster_policies.get(key)

    def _touch(self, kind: Kind, key: str) -> None:
        if (kind, key) not in self._before:
            self._before[(kind, key)] = self._current(kind, key)

    def _apply(self, change: Change) -> None:
        kind, key = change.kind, change.key
        if kind == "Namespace":
            self._touch(kind, key)
            namespace = _typed(change, Namespace)
            if namespace is None:
                self.declared.pop(key, None)
            else:
                # Whatever a source sends, the name label is the name.
                self.declared[key] = namespace_record(key, namespace.labels)
        elif kind == "Node":
            self._touch(kind, key)
            _put(self.declared_nodes, key, _typed(change, Node))
        elif kind in CLUSTER_POLICY_KINDS:
            self._touch(kind, key)
            _put(self.cluster_policies, key, _typed(change, ClusterPolicy))
        elif kind == "Pod":
            self._pod(key, _typed(change, Pod))
        else:
            self._namespaced("NetworkPolicy", self.policies, key, _typed(change, Policy))

    def _pod(self, key: str, pod: Pod | None) -> None:
        old = self.pods.get(key)
        nodes = {p.node for p in (old, pod) if p is not None and p.node is not None}
        for name in sorted(nodes):
            self._touch("Node", name)
        if old is not None and old.node is not None:
            on_node = self._on_node[old.node]
            on_node.discard(key)
            if not on_node:
                del self._on_node[old.node]
        if pod is not None and pod.node is not None:
            self._on_node.setdefault(pod.node, set()).add(key)
        self._namespaced("Pod", self.pods, key, pod)

    def _namespaced(self, kind: Kind, records: dict[str, R], key: str, record: R | None) -> None:
        """Pods and NetworkPolicies: their namespace exists while they do."""
        namespace = key.partition("/")[0]
        self._touch("Namespace", namespace)
        self._touch(kind, key)
        if record is not None:
            if key not in records:
                self._users[namespace] += 1
            records[key] = record
        elif records.pop(key, None) is not None:
            self._users[namespace] -= 1
            if not self._users[namespace]:
                del self._users[namespace]


def _put(records: dict[str, R], key: str, record: R | None) -> None:
    if record is None:
        records.pop(key, None)
    else:
        records[key] = record


def _typed(change: Change, cls: type[R]) -> R | None:
    if change.record is None or isinstance(change.record, cls):
        return change.record
    raise TypeError(f"a {change.kind} change carries a {type(change.record).__name__}")
