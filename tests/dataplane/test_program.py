"""Incremental updates of a node's table: any history of pod and namespace changes must
leave exactly the elements a fresh build of the final cluster has, and the element
transaction must be one that nft accepts (no delete of a missing element, no add of a
present one)."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Hashable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from netfence.cluster.state import ClusterState, Namespace, Pod
from netfence.dataplane.program import NodeProgram
from tests.conftest import build as build_text
from tests.dataplane.test_compile import _place, assert_matches_engine
from tests.test_properties import KEYS, NAME_VALUES, VALUES, GenCluster, build, clusters

NODES = ["n0", "n1"]
ADDRESSES = [
    *(ipaddress.ip_address(f"10.244.{n}.{i}") for n in (0, 1) for i in (10, 11, 12, 200)),
    *(ipaddress.ip_address(f"fd00:10:244:{n}::{i:x}") for n in (0, 1) for i in (10, 11, 200)),
    ipaddress.ip_address("10.0.0.5"),  # inside the generator's narrow ipBlocks
]
# n0's pod ranges, so that the set of known addresses is part of what must stay exact
CIDRS = (ipaddress.ip_network("10.244.0.0/24"), ipaddress.ip_network("fd00:10:244::/64"))
label_sets = st.dictionaries(
    st.sampled_from(KEYS[:3]), st.sampled_from([*VALUES, *NAME_VALUES]), max_size=2
)


@st.composite
def changed(draw: st.DrawFn, state: ClusterState) -> ClusterState:
    """The state after a few random pod and namespace changes (policies stay)."""
    pods = list(state.pods)
    namespaces = dict(state.namespaces)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["relabel", "delete", "move", "address", "add", "namespace"]))
        if op == "namespace" and namespaces:
            name = draw(st.sampled_from(sorted(namespaces)))
            labels = {**draw(label_sets), "kubernetes.io/metadata.name": name}
            namespaces[name] = Namespace(name, labels)
            continue
        if op == "add" or not pods:
            template = draw(st.sampled_from(pods)) if pods else None
            if template is None:
                continue
            pods.append(
                dataclasses.replace(
                    template,
                    name=f"new{len(pods)}",
                    labels=draw(label_sets),
                    ips=tuple(draw(st.lists(st.sampled_from(ADDRESSES), max_size=2))),
                    node=draw(st.sampled_from(NODES)),
                )
            )
            continue
        i = draw(st.integers(0, len(pods) - 1))
        if op == "relabel":
            pods[i] = dataclasses.replace(pods[i], labels=draw(label_sets))
        elif op == "delete":
            del pods[i]
        elif op == "move":
            pods[i] = dataclasses.replace(pods[i], node=draw(st.sampled_from(NODES)))
        else:
            ips = tuple(draw(st.lists(st.sampled_from(ADDRESSES), max_size=2)))
            pods[i] = dataclasses.replace(pods[i], ips=ips)
    return dataclasses.replace(state, namespaces=namespaces, pods=pods, problems=[])


def elements(program: NodeProgram) -> dict[str, dict[Hashable, Any]]:
    return {m.name: dict(m.data) for m in program.maps()}


def apply_strictly(
    before: dict[str, dict[Hashable, Any]],
    changes: tuple[dict[str, list[Hashable]], dict[str, list[tuple[Hashable, Any]]]],
) -> dict[str, dict[Hashable, Any]]:
    """What nft does with the transaction: deletes must hit, adds must not."""
    after = {name: dict(data) for name, data in before.items()}
    deleted, added = changes
    for name, keys in deleted.items():
        for key in keys:
            assert key in after[name], (name, key)
            del after[name][key]
    for name, items in added.items():
        for key, value in items:
            assert key not in after[name], (name, key)
            after[name][key] = value
    return after


def placed(cluster: GenCluster, nodes: list[str]) -> ClusterState:
    state = _place(build(cluster))
    state.pods = [
        dataclasses.replace(p, node=nodes[i % len(nodes)]) for i, p in enumerate(state.pods)
    ]
    return state


@settings(max_examples=150, deadline=None)
@given(data=st.data(), cluster=clusters(tiers=True))
def test_any_history_ends_where_a_fresh_build_starts(
    data: st.DataObject, cluster: GenCluster
) -> None:
    state = placed(cluster, data.draw(st.permutations(NODES)))
    program = NodeProgram(state, "n0", CIDRS)
    before = elements(program)
    program.flush()
    for _ in range(data.draw(st.integers(1, 3))):
        after_state = data.draw(changed(state))
        assert program.sync(after_state)
        changes = program.flush()
        fresh = elements(NodeProgram(after_state, "n0", CIDRS))
        assert elements(program) == fresh
        assert apply_strictly(before, changes) == fresh
        before, state = fresh, after_state


@settings(max_examples=40, deadline=None)
@given(data=st.data(), cluster=clusters(tiers=True))
def test_updated_tables_match_the_engine(data: st.DataObject, cluster: GenCluster) -> None:
    """The semantics after an update, directly: simulated lookups = engine verdicts, with
    AdminNetworkPolicies and a BaselineAdminNetworkPolicy (of both API generations) among
    the policies."""
    state = placed(cluster, NODES)
    after = data.draw(changed(state))
    after.pods = [p for p in after.pods if p.node is not None]
    unique: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, Pod] = {}
    for pod in after.pods:  # the engine cannot tell pods sharing an address apart
        for ip in pod.ips:
            unique.setdefault(ip, pod)
    after.pods = [
        p
        for p in after.pods
        if all(unique[ip] is p for ip in p.ips) and {ip.version for ip in p.ips} == {4, 6}
    ]
    programs: dict[str | None, NodeProgram] = {node: NodeProgram(state, node) for node in NODES}
    for program in programs.values():
        assert program.sync(after)
    held = {str(ip) for pod in after.pods for ip in pod.ips}  # a pod's address is no outsider
    outside = {4: ["10.0.0.5", "192.0.2.1"], 6: ["2001:db8::1"]}
    assert_matches_engine(
        after,
        {f: [a for a in addresses if a not in held] for f, addresses in outside.items()},
        programs,
    )


def test_policy_change_asks_for_a_new_table() -> None:
    state = _place(build_from_seed())
    program = NodeProgram(state, "n0")
    changed_state = ClusterState(
        namespaces=state.namespaces, pods=state.pods, policies=state.policies[1:]
    )
    assert not program.sync(changed_state)


def build_from_seed() -> ClusterState:
    from netfence.k8s.loader import load_paths

    return ClusterState.build(load_paths(["examples/seed"]))


TIERED = """
apiVersion: v1
kind: Node
metadata: {name: n1, labels: {role: infra}}
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: no-infra}
spec:
  priority: 3
  subject: {namespaces: {}}
  egress: [{name: infra, action: Deny, to: [{nodes: {matchLabels: {role: infra}}}]}]
"""


def test_cluster_policy_or_node_change_asks_for_a_new_table_pod_churn_does_not() -> None:
    state = _place(build_text(TIERED, model=True))
    program = NodeProgram(state, "n0")
    assert any(side.default.data for side in program.sides.values())  # ANP-only rows
    relabelled = dataclasses.replace(state.pods[0], labels={"pod": "other"})
    churn = dataclasses.replace(state, pods=[relabelled, *state.pods[1:]])
    assert program.sync(churn)
    node = state.nodes["n1"]
    moved = dataclasses.replace(
        state, nodes={**state.nodes, "n1": dataclasses.replace(node, labels={})}
    )
    assert not program.sync(moved)
    assert not program.sync(dataclasses.replace(state, cluster_policies=[]))


def test_pod_ranges_default_to_those_the_node_declares() -> None:
    """With no ranges given (the DaemonSet's case), the node's Node object says them; when
    they change, the table's sets do: a new table."""
    node = "apiVersion: v1\nkind: Node\nmetadata: {name: n0}\nspec: {podCIDRs: [%s]}\n---\n"
    state = _place(build_text(node % "192.168.0.0/16", model=True))
    program = NodeProgram(state, "n0", None)
    assert list(program.pod_cidrs[4].data) == [("192.168.0.0", "192.168.255.255")]
    assert not program.pod_cidrs[6].data
    held = {ip for p in state.pods for ip in p.ips if ip.version == 4}
    assert held and set(program.known[4].data) == held  # the model's pods are in 192.168/16
    stranger = ipaddress.ip_address("192.168.250.250")
    assert program.unknown(stranger) and not NodeProgram(state, "n0").unknown(stranger)
    assert program.sync(state)
    moved = _place(build_text(node % "192.168.0.0/17", model=True))
    assert not program.sync(moved)
