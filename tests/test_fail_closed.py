"""Enforcement fails closed for rejected policies; analysis leaves them out.

A rejected NetworkPolicy (the API server would refuse it) still isolates, both ways and with
no rule, the pods its selector was meant to cover; when the selector itself is what is wrong,
every pod of the namespace. A rejected cluster-wide policy becomes a Deny of everything for its
subject, in its tier at its priority; when its subject is what is wrong, it is ignored with an
error. The other policies are untouched.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from netfence.cluster.state import ClusterState, IPAddress, Pod
from netfence.k8s.loader import load_paths, load_text
from netfence.k8s.models import AdminNetworkPolicySpec, ClusterNetworkPolicySpec
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


# -- cluster-wide policies: a stand-in of the same kind, tier and priority denies everything

ANP = """\
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: %(name)s}
spec:
  priority: %(priority)s
  subject: %(subject)s
  egress: [{action: %(action)s, to: [%(peer)s]}]
"""
WEB = "{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}}"
ALLOW_ALL = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-all, namespace: shop}
spec: {podSelector: {}, ingress: [{}], egress: [{}], policyTypes: [Ingress, Egress]}
"""
OUTSIDE = ipaddress.ip_address("192.0.2.1")
OUTSIDE6 = ipaddress.ip_address("2001:db8::1")


def anp(
    name: str = "web-out",
    priority: object = 10,
    subject: str = WEB,
    action: str = "Deny",
    peer: str = "{networks: [10.0.0.0/33]}",
) -> str:
    return ANP % {
        "name": name,
        "priority": priority,
        "subject": subject,
        "action": action,
        "peer": peer,
    }


def _cluster(*documents: str, fail_closed: bool = True) -> ClusterState:
    return ClusterState.build(
        load_text("---\n".join([PODS, *documents]), "m.yaml"), fail_closed=fail_closed
    )


def _closed_off(state: ClusterState, key: str) -> bool:
    """Whether pod `key` gets nothing at all: from and to every pod and outside address."""
    engine = Engine(state, host_network="node")
    [pod] = [p for p in state.pods if p.key == key]
    others: list[Pod | IPAddress] = [p for p in state.pods if p is not pod]
    others += [OUTSIDE, OUTSIDE6]
    port = pod.ports[0].port
    return not any(
        engine.verdict(src, dst).allows("TCP", port)
        for other in others
        for src, dst in ((pod, other), (other, pod))
    )


def test_a_rejected_admin_policy_denies_its_subject_everything_at_its_priority() -> None:
    bad = anp()
    analysis = _cluster(bad, fail_closed=False)
    assert not analysis.cluster_policies  # analysis: left out, no word about enforcement
    assert not [p for p in analysis.problems if p.code in ("fails-closed", "fails-open")]
    assert [p.path for p in analysis.errors] == ["spec.egress[0].to[0].networks[0]"]

    state = _cluster(bad, ALLOW_ALL)  # the Deny of an admin policy beats a NetworkPolicy allow
    (closed,) = state.cluster_policies
    assert (closed.kind, closed.name, closed.closed) == ("AdminNetworkPolicy", "web-out", True)
    assert isinstance(closed.spec, AdminNetworkPolicySpec) and closed.spec.priority == 10
    [problem] = [p for p in state.problems if p.code == "fails-closed"]
    assert (problem.obj, problem.file, problem.severity) == (
        "AdminNetworkPolicy web-out",
        "m.yaml",
        "warning",
    )
    assert "priority 10" in problem.message
    # Its subject (app=web, in every namespace) is closed both ways, to pods and outside.
    assert _closed_off(state, "shop/web") and _closed_off(state, "elsewhere/other")
    engine = Engine(state, host_network="node")
    [db] = [p for p in state.pods if p.key == "shop/db"]
    assert engine.verdict(db, OUTSIDE).allows("TCP", 443)
    assert engine.verdict(OUTSIDE, db).allows("TCP", 5432)


def test_the_stand_in_keeps_its_place_among_the_admin_policies() -> None:
    """A valid policy with a lower priority number is evaluated first: its Allow stands."""
    first = anp("first", 5, action="Allow", peer="{namespaces: {}}")
    state = _cluster(anp(priority=10), first)
    engine = Engine(state, host_network="node")
    pods = {p.key: p for p in state.pods}
    assert engine.verdict(pods["shop/web"], pods["shop/db"]).allows("TCP", 5432)
    assert not engine.verdict(pods["shop/web"], OUTSIDE).allows("TCP", 443)
    # With the bad one first, its stand-in decides first.
    state = _cluster(anp(priority=1), first)
    engine = Engine(state, host_network="node")
    pods = {p.key: p for p in state.pods}
    assert not engine.verdict(pods["shop/web"], pods["shop/db"]).allows("TCP", 5432)


def test_a_rejected_baseline_policy_denies_only_where_no_network_policy_decides() -> None:
    banp = """\
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata: {name: default}
spec:
  subject: {namespaces: {}}
  ingress: [{action: Pass, from: [{namespaces: {}}]}]
"""
    state = _cluster(banp, ALLOW_ALL)
    (closed,) = state.cluster_policies
    assert (closed.kind, closed.closed) == ("BaselineAdminNetworkPolicy", True)
    assert any("baseline tier" in p.message for p in state.problems if p.code == "fails-closed")
    engine = Engine(state, host_network="node")
    pods = {p.key: p for p in state.pods}
    # shop has a NetworkPolicy allowing all: it decides, the baseline does not apply there.
    assert engine.verdict(pods["shop/web"], pods["shop/db"]).allows("TCP", 5432)
    assert _closed_off(state, "elsewhere/other")


def test_a_cluster_network_policy_of_the_wrong_shape_keeps_tier_and_priority() -> None:
    """A shape error (an unknown field) rejects the object before validation: tier and
    priority are read from what was written."""
    cnp = """\
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: base}
spec:
  tier: Baseline
  priority: 7
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: elsewhere}}}
  ingress: [{action: Accept, from: [{namespaces: {}}], portz: []}]
"""
    assert not _cluster(cnp, fail_closed=False).cluster_policies
    state = _cluster(cnp)
    (closed,) = state.cluster_policies
    assert isinstance(closed.spec, ClusterNetworkPolicySpec)
    assert (closed.key, closed.spec.tier, closed.spec.priority) == (
        "ClusterNetworkPolicy/base",
        "Baseline",
        7,
    )
    assert _closed_off(state, "elsewhere/other")
    assert not _closed_off(state, "shop/web")


def test_an_unreadable_priority_or_tier_fails_closed_first() -> None:
    state = _cluster(anp(priority="high"))
    (closed,) = state.cluster_policies
    assert isinstance(closed.spec, AdminNetworkPolicySpec) and closed.spec.priority == 0
    assert any("unreadable" in p.message for p in state.problems if p.code == "fails-closed")
    cnp = anp(priority=3).replace("v1alpha1", "v1alpha2").replace("AdminNetworkPolicy", "Cluster")
    cnp = cnp.replace("kind: Cluster", "kind: ClusterNetworkPolicy").replace(
        "priority: 3", "priority: 3\n  tier: Middle"
    )
    (closed,) = _cluster(cnp).cluster_policies
    assert isinstance(closed.spec, ClusterNetworkPolicySpec)
    assert (closed.spec.tier, closed.spec.priority) == ("Admin", 3)


def test_a_rejected_subject_is_ignored_with_an_error() -> None:
    """No pod can be named for it: enforcement says it ignores the policy."""
    both = "{namespaces: {}, pods: {namespaceSelector: {}, podSelector: {}}}"
    unreadable = "{namespaces: {matchLabels: app=web}}"
    bad_operator = "{namespaces: {matchExpressions: [{key: a, operator: Has}]}}"
    for subject in (both, unreadable, bad_operator):
        state = _cluster(anp(subject=subject))
        assert not state.cluster_policies, subject
        [ignored] = [p for p in state.problems if p.code == "fails-open"]
        assert ignored.severity == "error" and "enforcement ignores it" in ignored.message
        assert (ignored.obj, ignored.path) == ("AdminNetworkPolicy web-out", "spec.subject")
        assert not _closed_off(state, "shop/web")
