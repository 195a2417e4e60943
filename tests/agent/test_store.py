"""ClusterStore: records from changes, changed keys per batch, namespace rules, snapshots."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from netfence.cluster.state import NAMESPACE_NAME_LABEL, Namespace, Owner, Pod, Policy
from netfence.cluster.store import Changed, ClusterStore
from netfence.k8s.models import NetworkPolicySpec
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
