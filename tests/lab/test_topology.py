"""Lab planning without root: names, placement, addresses, routes, outside addresses."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re

import pytest

from netfence.cluster.state import ClusterState
from netfence.k8s.loader import load_paths, load_text
from netfence.lab.topology import (
    LabError,
    LabPlan,
    check_name,
    external_spans,
    plan_lab,
    refine,
    representative,
)
from netfence.policy.engine import Engine
from netfence.policy.ipranges import FAMILY_MAX
from tests.lab.manifests import CLUSTER, POLICIES

V4_ALL = (4, 0, FAMILY_MAX[4])
V6_ALL = (6, 0, FAMILY_MAX[6])


def state_of(*texts: str, expect: tuple[str, ...] = ()) -> ClusterState:
    """The state of the manifests; problems other than the `expect`ed codes fail the test."""
    state = ClusterState.build(load_text("---\n".join(texts)))
    assert sorted(p.code for p in state.problems) == sorted(expect), state.problems
    return state


def seed() -> ClusterState:
    return ClusterState.build(load_paths(["examples/seed"]))


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def test_names_are_short_safe_and_derived_from_hashes() -> None:
    plan = plan_lab(state_of(CLUSTER), name="t1", external=[V4_ALL, V6_ALL])
    assert plan.namespaces()[:4] == ["nf-t1-net", "nf-t1-out", "nf-t1-n0", "nf-t1-n1"]
    for pod in plan.pods:
        if not pod.host_network:
            assert re.fullmatch(r"nf-t1-p[0-9a-f]{8}", pod.netns)
            assert len(pod.host_ifname) <= 15
            assert "web" not in pod.netns and "shop" not in pod.netns
    assert len({p.netns for p in plan.pods}) == len(plan.pods)


@pytest.mark.parametrize("bad", ["", "a-b", "Default", "x" * 13, "a/b", "a b"])
def test_lab_names_without_dashes_or_odd_characters(bad: str) -> None:
    with pytest.raises(LabError, match="invalid lab name"):
        check_name(bad)


def test_pods_spread_round_robin_and_keep_their_lab_node() -> None:
    pinned = CLUSTER.replace(
        "  - {name: c, image: curl}", "  - {name: c, image: curl}\n  nodeName: n1"
    )
    plan = plan_lab(state_of(pinned), nodes=2, external=[V4_ALL])
    nodes = {p.key: p.node for p in plan.pods}
    assert nodes["shop/web-0"] == nodes["shop/web-2"] == "n0"
    assert nodes["shop/web-1"] == "n1"
    assert nodes["shop/client"] == "n1"  # spec.nodeName names a lab node: kept
    assert len(set(nodes.values())) == 2


def test_allocated_addresses_live_in_the_node_range_and_are_on_link() -> None:
    plan = plan_lab(state_of(CLUSTER), external=[V4_ALL])
    web0, web2 = plan.pod("shop/web-0"), plan.pod("shop/web-2")
    node = plan.node("n0")
    for pod in (web0, web2):
        assert pod.ip4 in node.cidr4 and pod.ip6 in node.cidr6
        assert plan.on_link(pod, 4) and plan.on_link(pod, 6)
        assert int(pod.ip4) & 0xFF == int(pod.ip6) & 0xFFFF  # same host number
        assert pod.from_status == ()
    assert web0.ip4 != web2.ip4
    assert node.gateway4 == ip("10.244.0.1")
    addresses = plan.pod_addresses(web0)
    assert [a.prefix for a in addresses] == [24, 64]


def test_status_ips_are_kept_and_routed_everywhere() -> None:
    plan = plan_lab(state_of(CLUSTER), external=[V4_ALL])
    db = plan.pod("shop/db")
    assert (db.ip4, db.ip6) == (ip("10.99.0.7"), ip("fd00:99::7"))
    assert db.from_status == (4, 6)
    assert not plan.on_link(db, 4)
    assert [a.prefix for a in plan.pod_addresses(db)] == [32, 128]
    home = plan.node(db.node)
    for node in plan.nodes:
        routes = {r.dst: r for r in plan.node_routes(node)}
        if node is home:
            assert routes["10.99.0.7/32"].dev == "br0"
        else:
            assert routes["10.99.0.7/32"].via == str(home.underlay4)
            assert routes["fd00:99::7/128"].via == str(home.underlay6)
    outside = {r.dst: r.via for r in plan.outside_routes()}
    assert outside["10.99.0.7/32"] == str(home.underlay4)
    pod_routes = [r.args() for r in plan.pod_routes(db)]
    assert [str(home.gateway4) + "/32", "dev", "eth0"] in pod_routes


def test_node_ranges_avoid_status_ips() -> None:
    """The seed's pods use 10.244.1.x and 10.244.2.x: the lab nodes take other ranges."""
    plan = plan_lab(seed(), external=[V4_ALL])
    assert [str(n.cidr4) for n in plan.nodes] == ["10.244.0.0/24", "10.244.3.0/24"]
    assert [str(n.cidr6) for n in plan.nodes] == ["fd00:10:244::/64", "fd00:10:244:3::/64"]
    for pod in plan.pods:
        assert pod.from_status == (4, 6)
        assert not plan.on_link(pod, 4)


def test_host_network_pods_live_in_their_node_with_its_address() -> None:
    plan = plan_lab(state_of(CLUSTER), external=[V4_ALL])
    exporter = plan.pod("kube/exporter")
    node = plan.node(exporter.node)
    assert exporter.host_network
    assert exporter.netns == node.netns
    assert (exporter.ip4, exporter.ip6) == (node.underlay4, node.underlay6)
    assert exporter.netns not in plan.namespaces()[4:]
    assert plan.listener_ports()[node.netns] == (("TCP", 9100),)


def test_duplicate_and_underlay_status_ips_are_refused() -> None:
    twin = (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: twin, namespace: shop}\n"
        "spec: {containers: [{name: x, image: x}]}\nstatus: {podIPs: [{ip: 10.99.0.7}]}\n"
    )
    with pytest.raises(LabError, match=r"both have the address 10\.99\.0\.7"):
        plan_lab(state_of(CLUSTER, twin, expect=("shared-address",)), external=[V4_ALL])
    with pytest.raises(LabError, match="underlay"):
        plan_lab(state_of(CLUSTER.replace("10.99.0.7", "172.31.0.9")), external=[V4_ALL])


def test_representatives() -> None:
    forbidden = [(4, int(ip("10.0.0.1")), int(ip("10.0.0.1")))]
    first = int(ip("10.0.0.0"))
    assert representative((4, first, first + 255), forbidden) == first
    assert representative((4, 0, int(ip("9.255.255.255"))), []) == int(ip("9.255.255.254"))
    assert representative((4, int(ip("10.0.0.1")), int(ip("10.0.0.1"))), forbidden) is None
    assert representative(V4_ALL, []) == int(ip("1.0.0.0"))
    assert representative((4, int(ip("224.0.0.0")), FAMILY_MAX[4]), []) is None
    assert representative(V6_ALL, []) == int(ip("100::"))
    # The first address collides with a pod: the last but one stands in.
    assert representative((4, int(ip("10.0.0.1")), int(ip("10.0.0.9"))), forbidden) == int(
        ip("10.0.0.8")
    )


def test_outside_addresses_for_the_seed() -> None:
    state = seed()
    spans = external_spans(state)
    assert V6_ALL in spans  # no IPv6 ipBlock: the whole IPv6 space is one range
    plan = plan_lab(state, external=spans)
    got = [str(a.ip) for a in plan.outside.addresses]
    assert got == ["169.254.169.252", "169.254.169.254", "169.254.169.255", "100::"]
    assert ("TCP", 80) in plan.outside.ports and ("UDP", 11211) in plan.outside.ports
    lab_ips = {p.ip4 for p in plan.pods} | {p.ip6 for p in plan.pods}
    assert not lab_ips & {a.ip for a in plan.outside.addresses}


def test_outside_skips_ranges_made_only_of_lab_addresses() -> None:
    state = state_of(CLUSTER)
    db = [(4, int(ip("10.99.0.7")), int(ip("10.99.0.7")))]
    plan = plan_lab(state, external=refine([V4_ALL, *db]))
    assert [s for s, _ in plan.outside.skipped] == db


def test_refine_merges_two_cuttings() -> None:
    a = [(4, 0, 9), (4, 10, FAMILY_MAX[4])]
    b = [(4, 0, 4), (4, 5, FAMILY_MAX[4]), V6_ALL]
    assert refine([*a, *b]) == [(4, 0, 4), (4, 5, 9), (4, 10, FAMILY_MAX[4]), V6_ALL]


def test_cluster_state_carries_lab_addresses_and_nodes() -> None:
    state = state_of(CLUSTER, POLICIES)
    plan = plan_lab(state, external=[V4_ALL])
    lab = plan.cluster_state(state)
    assert state.pods[0].ips == ()  # the input is not changed
    for pod in lab.pods:
        planned = plan.pod(pod.key)
        assert pod.ips == (planned.ip4, planned.ip6)
        assert pod.node == planned.node
    # The engine now sees web pods' addresses inside the excepted 10.0.0.0/8: a web pod
    # may not reach another one's UDP 53 through the ipBlock rule.
    by_key = {p.key: p for p in lab.pods}
    verdict = Engine(lab, family=4, host_network="node").verdict(
        by_key["shop/web-0"], by_key["shop/web-1"]
    )
    assert not verdict.allows("UDP", 53)
    assert (
        Engine(lab, family=4, host_network="node")
        .verdict(ip("8.8.8.8"), by_key["shop/web-1"])
        .allows("UDP", 53)
    )


def test_plan_round_trips_through_json_and_refuses_foreign_namespaces() -> None:
    plan = plan_lab(state_of(CLUSTER), external=[V4_ALL, V6_ALL])
    data = json.loads(json.dumps(plan.to_dict()))
    assert LabPlan.from_dict(data) == plan
    data["pods"][0]["netns"] = "production"
    with pytest.raises(LabError, match="not a nf-default-"):
        LabPlan.from_dict(data)


def test_replan_keeps_existing_pods_and_places_new_ones() -> None:
    old_state = state_of(CLUSTER)
    old = plan_lab(old_state, external=[V4_ALL])
    grown = CLUSTER.replace("replicas: 3", "replicas: 4").replace(
        "name: client, namespace: shop", "name: client2, namespace: shop"
    )
    new = plan_lab(state_of(grown), external=[V4_ALL], previous=old)
    assert new.nodes == old.nodes
    for key in ("shop/web-0", "shop/web-1", "shop/web-2", "shop/db", "kube/exporter"):
        assert new.pod(key) == old.pod(key)
    added = new.pod("shop/web-3")
    assert added.ip4 not in {p.ip4 for p in old.pods}
    assert added.netns not in old.namespaces()
    assert "shop/client" not in {p.key for p in new.pods}
    assert new.pod("shop/client2").netns != old.pod("shop/client").netns


def test_new_pod_with_an_address_in_a_node_range_goes_to_that_node() -> None:
    old = plan_lab(state_of(CLUSTER), external=[V4_ALL])
    extra = (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: late, namespace: shop}\n"
        "spec: {containers: [{name: x, image: x}]}\nstatus: {podIPs: [{ip: 10.244.1.77}]}\n"
    )
    new = plan_lab(state_of(CLUSTER, extra), external=[V4_ALL], previous=old)
    late = new.pod("shop/late")
    assert late.node == "n1" and new.on_link(late, 4)
    assert dataclasses.replace(late, tag="x").ip4 == ip("10.244.1.77")
