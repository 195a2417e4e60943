"""Label selectors, compiled once into a hashable matcher.

The compiled form doubles as a cache key: two policies that write the same selector (in any
order) share one `Selector`, so the whole-cluster computation evaluates it once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from netfence.k8s.models import LabelSelector


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: str  # In, NotIn, Exists, DoesNotExist (validated before compiling)
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return labels.get(self.key) in self.values
        if self.operator == "NotIn":
            return labels.get(self.key) not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels  # DoesNotExist

    def __str__(self) -> str:
        if self.operator in ("Exists", "DoesNotExist"):
            return self.key if self.operator == "Exists" else f"!{self.key}"
        op = "in" if self.operator == "In" else "notin"
        return f"{self.key} {op} ({','.join(sorted(self.values))})"


@dataclass(frozen=True, slots=True)
class Selector:
    """AND of all requirements; the empty selector matches everything."""

    requirements: tuple[Requirement, ...] = ()

    @staticmethod
    def compile(selector: LabelSelector | None) -> Selector:
        if selector is None:
            return Selector()
        reqs = {
            Requirement(key, "In", frozenset((value,)))
            for key, value in selector.match_labels.items()
        }
        reqs.update(
            Requirement(e.key, e.operator, frozenset(e.values)) for e in selector.match_expressions
        )
        return Selector(tuple(sorted(reqs, key=lambda r: (r.key, r.operator, sorted(r.values)))))

    @staticmethod
    def equals(labels: Mapping[str, str]) -> Selector:
        return Selector(
            tuple(Requirement(k, "In", frozenset((v,))) for k, v in sorted(labels.items()))
        )

    @property
    def is_empty(self) -> bool:
        return not self.requirements

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        """kubectl's selector syntax: `app=web,tier in (a,b),!legacy`; `{}` when empty."""
        if not self.requirements:
            return "{}"
        parts = []
        for r in self.requirements:
            if r.operator == "In" and len(r.values) == 1:
                parts.append(f"{r.key}={next(iter(r.values))}")
            else:
                parts.append(str(r))
        return ",".join(parts)
