"""ClusterStore: records from changes, changed keys per batch, namespace and node rules,
snapshots."""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from netfence.cluster.state import (
    HOSTNAME_LABEL,
    NAMESPACE_NAME_LABEL,
    ClusterPolicy,
    Namespace,
    Node,
    Owner,
    Pod,
    Policy,
    effective_nodes,
)
from netfence.cluster.store import Changed, ClusterStore
from netfence.k8s.models import AdminNetworkPolicySpec, NetworkPolicySpec
from netfence.sources.changes import Change, Record, Update


def make_pod(namespace: str, name: str, app: str = "a", ip: str | None = None) -> Pod:
    ips = (ipaddress.ip_address(ip),) if ip else ()
    return Pod(namespace, name, {"app": app}, (), Owner("Pod", name), ips=ips)


def make_policy(namespace: str, name: str) -> Policy:
    return Policy(namespace, name, NetworkPolicySpec())


def apply(store: ClusterStore, *changes: Change) -> Changed:
    store.apply(Update(changes))
    return store.take_changed()


def test_a_used_namespace_exists_and_its_name_label_is_its_name() -> None:
    store = ClusterStore()
    changed = apply(store, Change.upsert(make_pod("x", "a")))
    assert changed == Changed(namespaces={"x"}, pods={"x/a"})
    assert store.namespace("x") == Namespace("x", {NAMESPACE_NAME_LABEL: "x"})

    # Declared with labels (and a wrong name label, which the API server would overwrite).
    declared = Namespace("x", {"team": "blue", NAMESPACE_NAME_LABEL: "other"})
    assert apply(store, Change.upsert(declared)) == Changed(namespaces={"x"})
    assert store.namespaces["x"].labels == {"team": "blue", NAMESPACE_NAME_LABEL: "x"}

    # Undeclared again while a pod uses it: back to the name label alone.
    assert apply(store, Change.delete("Namespace", "x")) == Changed(namespaces={"x"})
    assert store.namespace("x") == Namespace("x", {NAMESPACE_NAME_LABEL: "x"})
    # The last user goes: so does the namespace.
    assert apply(store, Change.delete("Pod", "x/a")) == Changed(namespaces={"x"}, pods={"x/a"})
    assert store.namespace("x") is None
    assert store.namespaces == {}


def test_only_real_differences_are_changes() -> None:
    store = ClusterStore()
    apply(store, Change.upsert(make_pod("x", "a")), Change.upsert(make_policy("x", "p")))
    assert not apply(store, Change.upsert(make_pod("x", "a")))  # equal record
    assert not apply(store, Change.delete("Pod", "x/zzz"))  # not there
    assert not apply(store, Change.upsert(make_pod("x", "b")), Change.delete("Pod", "x/b"))
    assert apply(store, Change.upsert(make_pod("x", "a", app="b"))) == Changed(pods={"x/a"})
    # A second pod in a used namespace leaves the namespace as it was.
    assert apply(store, Change.upsert(make_pod("x", "c"))) == Changed(pods={"x/c"})
    store.apply(Update(problems=()))
    assert not store.take_changed()


def test_snapshot() -> None:
    store = ClusterStore()
    apply(
        store,
        Change.upsert(Namespace("y", {"a": "b"})),
        Change.upsert(make_pod("x", "a", ip="10.0.0.1")),
        Change.upsert(make_pod("x", "b", ip="10.0.0.1")),
        Change.upsert(make_policy("x", "p")),
    )
    store.apply(Update(problems=()))
    state = store.snapshot()
    assert list(state.namespaces) == ["y", "x"]
    assert [p.key for p in state.pods] == ["x/a", "x/b"]
    assert [p.key for p in state.policies] == ["x/p"]
    # Addresses are checked across the whole store: the warning names both pods.
    [shared] = state.problems
    assert (shared.code, shared.obj) == ("shared-address", "Pod x/b")
    assert "x/a" in shared.message
    # Snapshots do not move with the store.
    apply(store, Change.delete("Pod", "x/a"))
    assert [p.key for p in state.pods] == ["x/a", "x/b"]
    assert store.snapshot().problems == []


KEYS = st.sampled_from(["x/a", "x/b", "y/a", "z/c"])
NAMESPACES = st.sampled_from(["x", "y", "z"])


def _change(draw: st.DrawFn) -> Change:
    kind = draw(st.sampled_from(["Namespace", "Pod", "NetworkPolicy"]))
    if kind == "Namespace":
        name = draw(NAMESPACES)
        if draw(st.booleans()):
            return Change.delete("Namespace", name)
        return Change.upsert(Namespace(name, {"v": draw(st.sampled_from(["1", "2"]))}))
    key = draw(KEYS)
    if draw(st.booleans()):
        return Change.delete(kind, key)
    namespace, name = key.split("/")
    if kind == "Pod":
        return Change.upsert(make_pod(namespace, name, app=draw(st.sampled_from(["1", "2"]))))
    return Change.upsert(make_policy(namespace, name))


changes = st.composite(_change)()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(changes, max_size=6), max_size=6))
def test_changed_keys_are_exactly_what_differs(batches: list[list[Change]]) -> None:
    """Against a model: after each batch, the reported keys are those whose effective record
    (namespaces: declared or implied, with the name label) differs from the previous batch."""
    store = ClusterStore()
    model: dict[tuple[str, str], Record] = {}
    before = effective(model)
    for batch in batches:
        for change in batch:
            if change.record is None:
                model.pop((change.kind, change.key), None)
            else:
                model[(change.kind, change.key)] = change.record
        after = effective(model)
        changed = apply(store, *batch)
        differing = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
        assert changed.namespaces == {key for kind, key in differing if kind == "Namespace"}
        assert changed.pods == {key for kind, key in differing if kind == "Pod"}
        assert changed.policies == {key for kind, key in differing if kind == "NetworkPolicy"}
        assert {("Namespace", n): ns for n, ns in store.namespaces.items()} == {
            k: v for k, v in after.items() if k[0] == "Namespace"
        }
        before = after


def effective(model: dict[tuple[str, str], Record]) -> dict[tuple[str, str], Record]:
    result = {k: v for k, v in model.items() if k[0] != "Namespace"}
    used = {key.split("/")[0] for kind, key in result}
    declared = {key for kind, key in model if kind == "Namespace"}
    for name in used | declared:
        labels = dict(model[("Namespace", name)].labels) if name in declared else {}
        result[("Namespace", name)] = Namespace(name, {**labels, NAMESPACE_NAME_LABEL: name})
    return result


# -- nodes (declared, or implied by the pods on them) and cluster-wide policies

HOST = ipaddress.ip_address("192.0.2.1")


def on_node(
    namespace: str, name: str, node: str, *host_ips: str, host_network: bool = False
) -> Pod:
    ips = tuple(ipaddress.ip_address(ip) for ip in host_ips)
    return Pod(
        namespace,
        name,
        {"app": name},
        (),
        Owner("Pod", name),
        ips=ips if host_network else (),
        node=node,
        host_network=host_network,
        host_ips=ips,
    )


def make_anp(name: str, priority: int = 1) -> ClusterPolicy:
    spec = AdminNetworkPolicySpec.model_validate(
        {"priority": priority, "subject": {"namespaces": {}}}
    )
    return ClusterPolicy("AdminNetworkPolicy", name, spec)


def test_a_node_is_what_is_declared_and_what_its_pods_report() -> None:
    store = ClusterStore()
    changed = apply(store, Change.upsert(on_node("x", "a", "n1", "192.0.2.1")))
    assert changed == Changed(namespaces={"x"}, pods={"x/a"}, nodes={"n1"})
    assert store.node("n1") == Node("n1", {HOSTNAME_LABEL: "n1"}, (HOST,))
    # Another pod there reporting the same address: the node does not change.
    assert apply(store, Change.upsert(on_node("x", "b", "n1", "192.0.2.1"))) == Changed(
        pods={"x/b"}
    )
    declared = Node("n1", {HOSTNAME_LABEL: "n1", "zone": "a"}, (ipaddress.ip_address("10.0.0.1"),))
    assert apply(store, Change.upsert(declared)) == Changed(nodes={"n1"})
    assert store.node("n1") == Node("n1", declared.labels, (*declared.addresses, HOST))
    # A host-network pod's addresses are its node's.
    host = on_node("y", "agent", "n2", "192.0.2.2", host_network=True)
    assert apply(store, Change.upsert(host)).nodes == {"n2"}
    assert store.nodes["n2"].addresses == (ipaddress.ip_address("192.0.2.2"),)
    # The pods go: n1 stays as declared, n2 goes.
    changed = apply(
        store,
        Change.delete("Pod", "x/a"),
        Change.delete("Pod", "x/b"),
        Change.delete("Pod", "y/agent"),
    )
    assert changed.nodes == {"n1", "n2"}
    assert store.nodes == {"n1": declared}
    assert apply(store, Change.delete("Node", "n1")) == Changed(nodes={"n1"})
    assert store.nodes == {}


def test_cluster_policies_are_keyed_by_kind_and_imply_no_namespace() -> None:
    store = ClusterStore()
    changed = apply(store, Change.upsert(make_anp("p")))
    assert changed == Changed(cluster_policies={"AdminNetworkPolicy/p"})
    assert store.namespaces == {}
    assert not apply(store, Change.upsert(make_anp("p")))
    assert apply(store, Change.upsert(make_anp("p", priority=2))) == Changed(
        cluster_policies={"AdminNetworkPolicy/p"}
    )
    apply(store, Change.upsert(on_node("x", "a", "n1", "192.0.2.1")))
    state = store.snapshot()
    assert state.cluster_policies == [make_anp("p", priority=2)]
    assert state.nodes == {"n1": Node("n1", {HOSTNAME_LABEL: "n1"}, (HOST,))}
    assert apply(store, Change.delete("AdminNetworkPolicy", "AdminNetworkPolicy/p")) == Changed(
        cluster_policies={"AdminNetworkPolicy/p"}
    )
    assert store.snapshot().cluster_policies == []


def test_two_admin_policies_of_one_priority_are_an_error_across_sources() -> None:
    """The API server accepts both, and each object arrives on its own: the store says it,
    naming the later one in netfence's tie-break order (kind, then name)."""
    store = ClusterStore()
    apply(store, Change.upsert(make_anp("b", priority=3)), Change.upsert(make_anp("a", 4)))
    assert [p.code for p in store.snapshot().problems] == []
    apply(store, Change.upsert(make_anp("a", priority=3)))
    [problem] = store.snapshot().problems
    assert (problem.code, problem.obj, problem.path) == (
        "duplicate-priority",
        "AdminNetworkPolicy b",
        "spec.priority",
    )
    assert "AdminNetworkPolicy a" in problem.message


def _node_change(draw: st.DrawFn) -> Change:
    """Pods moving between nodes with their addresses, and declared nodes coming and going."""
    if draw(st.booleans()):
        name = draw(st.sampled_from(["n1", "n2"]))
        if draw(st.booleans()):
            return Change.delete("Node", name)
        zone = draw(st.sampled_from(["a", "b"]))
        return Change.upsert(Node(name, {HOSTNAME_LABEL: name, "zone": zone}))
    key = draw(KEYS)
    if draw(st.booleans()):
        return Change.delete("Pod", key)
    namespace, name = key.split("/")
    node = draw(st.sampled_from(["n1", "n2"]))
    address = draw(st.sampled_from(["192.0.2.1", "192.0.2.2"]))
    return Change.upsert(on_node(namespace, name, node, address, host_network=draw(st.booleans())))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.composite(_node_change)(), max_size=6), max_size=6))
def test_changed_nodes_are_exactly_those_that_differ(batches: list[list[Change]]) -> None:
    """Against the whole-state computation `ClusterState.build` uses (`effective_nodes`)."""
    store = ClusterStore()
    declared: dict[str, Node] = {}
    pods: dict[str, Pod] = {}
    before: dict[str, Node] = {}
    for batch in batches:
        for change in batch:
            target: dict[str, Any] = declared if change.kind == "Node" else pods
            if change.record is None:
                target.pop(change.key, None)
            else:
                target[change.key] = change.record
        after = effective_nodes(declared.values(), pods.values())
        changed = apply(store, *batch)
        assert changed.nodes == {
            n for n in before.keys() | after.keys() if before.get(n) != after.get(n)
        }
        assert store.nodes == after
        assert {name: store.node(name) for name in after} == after
        before = after
