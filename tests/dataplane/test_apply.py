"""Loading tables into a real kernel, inside a throw-away `nf-` namespace."""

from __future__ import annotations

import re

import pytest

from netfence.cluster.state import ClusterState
from netfence.dataplane.apply import ApplyError, apply_ruleset, check_ruleset, list_table
from netfence.dataplane.compile import compile_node
from netfence.k8s.loader import load_paths
from tests.dataplane.test_compile import _place


def seed_state() -> ClusterState:
    return _place(ClusterState.build(load_paths(["examples/seed"])))


def test_seed_table_loads_and_replaces_atomically(netns: str) -> None:
    script = compile_node(seed_state(), "n0")
    check_ruleset(netns, script)
    apply_ruleset(netns, script)
    first = list_table(netns)
    assert "10.244.1.10" in first and "chain forward" in first
    apply_ruleset(netns, script)  # replacing the table with itself is a no-op in effect
    assert list_table(netns) == first


def test_failed_load_keeps_previous_rules(netns: str) -> None:
    apply_ruleset(netns, compile_node(seed_state(), "n0"))
    before = list_table(netns)
    broken = compile_node(seed_state(), "n1").replace("type ipv4_addr : mark", "type nonsense", 1)
    with pytest.raises(ApplyError, match="nft -f -"):
        apply_ruleset(netns, broken)
    assert list_table(netns) == before


def test_odd_names_cannot_change_the_ruleset(netns: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A policy and pods whose names look like nft syntax give the same table as tame ones."""
    template = """
apiVersion: v1
kind: Pod
metadata: {{name: {pod}, namespace: {ns}, labels: {{app: {label}}}}}
spec: {{containers: [{{name: c, ports: [{{name: web, containerPort: 80}}]}}]}}
status: {{podIP: 10.244.0.10}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: {policy}, namespace: {ns}}}
spec:
  podSelector: {{matchLabels: {{app: {label}}}}}
  ingress: [{{ports: [{{port: web}}]}}]
"""
    odd = tmp_path / "odd.yaml"
    odd.write_text(
        template.format(
            pod="drop.accept", ns="flush", label="counter_drop", policy="delete.table.inet"
        )
    )
    tame = tmp_path / "tame.yaml"
    tame.write_text(template.format(pod="a", ns="b", label="c", policy="d"))
    scripts = []
    for path in (odd, tame):
        state = ClusterState.build(load_paths([path]))
        assert not state.problems
        state = _place(state, nodes=1)
        scripts.append(compile_node(state, "n0"))
    # The ids are hashes of what they stand for, so they differ; up to a consistent
    # renaming of the numbers the two tables are the same, byte for byte.
    assert _numbered(scripts[0]) == _numbered(scripts[1])
    apply_ruleset(netns, scripts[0])


def _numbered(script: str) -> str:
    """Numbers (ids, tags) renamed in order of first appearance."""
    names: dict[str, str] = {}
    return re.sub(
        r"\b(?:0x[0-9a-f]+|[0-9]{4,})\b",
        lambda m: names.setdefault(m.group(0), f"#{len(names)}"),
        script,
    )
