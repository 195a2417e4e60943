"""Enforcement fails closed for rejected NetworkPolicies; analysis leaves them out.

A rejected policy (the API server would refuse it) still isolates, both ways and with no
rule, the pods its selector was meant to cover; when the selector itself is what is wrong,
every pod of the namespace. The other policies are untouched.
"""

from __future__ import annotations

from pathlib import Path

from netfence.cluster.state import ClusterState
from netfence.k8s.loader import load_paths, load_text
from netfence.policy.engine import Engine

PODS = """\
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {containers: [{name: w, image: x, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop, labels: {app: db}}
spec: {containers: [{name: d, image: x, ports: [{containerPort: 5432}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: elsewhere, labels: {app: web}}
spec: {containers: [{name: o, image: x, ports: [{containerPort: 80}]}]}
"""


def _state(policy: str, fail_closed: bool) -> ClusterState:
    return ClusterState.build(load_text(PODS + "---\n" + policy, "m.yaml"), fail_closed=fail_closed)


def _open(state: ClusterState) -> dict[tuple[str, str], bool]:
    engine = Engine(state, host_network="node")
    return {
        (a.key, b.key): engine.verdict(a, b).allows("TCP", b.ports[0].port)
        for a in state.pods
        for b in state.pods
        if a is not b
    }


def test_a_bad_rule_closes_only_the_selected_pods() -> None:
    policy = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-in, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}]}]
"""
    assert not _state(policy, fail_closed=False).policies  # analysis: left out
    state = _state(policy, fail_closed=True)
    (closed,) = state.policies
    assert closed.closed and closed.key == "shop/web-in"
    assert any(
        p.code == "fails-closed" and "the pods it selects" in p.message for p in state.problems
    )
    verdicts = _open(state)
    assert not verdicts[("shop/db", "shop/web")] and not verdicts[("shop/web", "shop/db")]
    assert verdicts[("shop/db", "elsewhere/other")] and verdicts[("elsewhere/other", "shop/db")]


def test_an_unreadable_selector_closes_the_whole_namespace() -> None:
    policy = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-in, namespace: shop}
spec:
  podSelector: {matchLabels: app=web}
  ingress: [{}]
"""
    state = _state(policy, fail_closed=True)
    assert any("every pod of namespace shop" in p.message for p in state.problems)
    verdicts = _open(state)
    assert not any(ok for (a, b), ok in verdicts.items() if "shop/" in a or "shop/" in b)
    assert all(ok for (a, b), ok in verdicts.items() if "shop/" not in a + b)


def test_the_seed_mistake_fails_closed_for_production() -> None:
    broken = ClusterState.build(load_paths([Path("examples/seed-broken")]), fail_closed=True)
    assert [p.key for p in broken.policies if p.closed] == ["production/allow-port-8000"]
    engine = Engine(broken, host_network="node")
    for pod in broken.pods:
        side = engine.verdict(pod, pod).ingress
        assert side.isolated == (pod.namespace == "production")
