"""`ClusterStore`: the current records, kept up to date by a source's changes.

The agent holds one store for its whole life: sources feed it `Update`s, the loop asks it which
keys changed since the last batch (so a pod relabel touches only that pod's set elements) and
takes `ClusterState` snapshots for the engine. A snapshot copies references only; the records
are immutable, so snapshots stay valid while the store moves on.

Namespaces follow the API server's rules wherever the records come from: the label
`kubernetes.io/metadata.name` always equals the name, and a namespace that pods or policies
use exists even when it was not declared (with only that label). So the effective namespace
can change when a pod is added or removed; the store reports it as changed then.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TypeVar

from netfence.cluster.state import (
    ClusterState,
    Namespace,
    Pod,
    Policy,
    namespace_record,
    shared_addresses,
)
from netfence.problems import Problem
from netfence.sources.changes import Change, Kind, Record, Update

R = TypeVar("R", Namespace, Pod, Policy)


@dataclass
class Changed:
    """Keys whose records differ from the last batch; `problems`: the problem list changed."""

    namespaces: set[str] = field(default_factory=set)
    pods: set[str] = field(default_factory=set)
    policies: set[str] = field(default_factory=set)
    problems: bool = False

    def __bool__(self) -> bool:
        return bool(self.namespaces or self.pods or self.policies or self.problems)


class ClusterStore:
    def __init__(self) -> None:
        self.declared: dict[str, Namespace] = {}  # namespaces as their sources declared them
        self.pods: dict[str, Pod] = {}
        self.policies: dict[str, Policy] = {}
        self.problems: tuple[Problem, ...] = ()
        self._users: Counter[str] = Counter()  # namespace -> pods and policies in it
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
        }
        for (kind, key), before in self._before.items():
            if self._current(kind, key) != before:
                keys[kind].add(key)
        self._before = {}
        self._problems_before = self.problems
        return changed

    def snapshot(self) -> ClusterState:
        pods = list(self.pods.values())
        return ClusterState(
            namespaces=self.namespaces,
            pods=pods,
            policies=list(self.policies.values()),
            problems=[*self.problems, *shared_addresses(pods)],
        )

    def _current(self, kind: Kind, key: str) -> Record | None:
        if kind == "Namespace":
            return self.namespace(key)
        return self.pods.get(key) if kind == "Pod" else self.policies.get(key)

    def _touch(self, kind: Kind, key: str) -> None:
        if (kind, key) not in self._before:
            self._before[(kind, key)] = self._current(kind, key)

    def _apply(self, change: Change) -> None:
        namespace = change.key.partition("/")[0]
        self._touch("Namespace", namespace)
        if change.kind == "Namespace":
            record = _typed(change, Namespace)
            if record is None:
                self.declared.pop(change.key, None)
            else:
                # Whatever a source sends, the name label is the name.
                self.declared[change.key] = namespace_record(change.key, record.labels)
            return
        self._touch(change.kind, change.key)
        if change.kind == "Pod":
            self._replace(self.pods, namespace, change.key, _typed(change, Pod))
        else:
            self._replace(self.policies, namespace, change.key, _typed(change, Policy))

    def _replace(self, records: dict[str, R], namespace: str, key: str, record: R | None) -> None:
        if record is not None:
            if key not in records:
                self._users[namespace] += 1
            records[key] = record
        elif records.pop(key, None) is not None:
            self._users[namespace] -= 1
            if not self._users[namespace]:
                del self._users[namespace]


def _typed(change: Change, cls: type[R]) -> R | None:
    if change.record is None or isinstance(change.record, cls):
        return change.record
    raise TypeError(f"a {change.kind} change carries a {type(change.record).__name__}")
