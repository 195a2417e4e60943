"""Property-based tests (hypothesis) for the policy core.

Each property compares netfence against something written independently here:
- label selectors against the Kubernetes definition of matchLabels/matchExpressions;
- `Conns` algebra against Python sets of (protocol, port) over a small probe universe;
- `IPRanges.block` against `ipaddress` containment;
- the class-based `ClusterMatrix` (and the connectivity list built on it) against the naive
  pair-by-pair `Engine`, on random small valid clusters, in both hostNetwork readings;
- the `Engine` itself against an oracle that reads the generated manifests directly and
  applies the NetworkPolicy spec (so a shared mistake in the IR cannot hide);
- random garbage documents through the loader and `ClusterState.build`: problems, never
  exceptions.

Spec deviations found on the way are pinned down by small `xfail(strict=True)` tests at the
end of the file rather than by weakening the generators of the properties.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from dataclasses import field as dataclass_field
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from netfence.analysis.connlist import Peer as ListPeer
from netfence.analysis.connlist import connectivity
from netfence.cluster.state import ClusterState, Owner
from netfence.cluster.state import Pod as StatePod
from netfence.k8s.loader import load_text
from netfence.k8s.models import LabelSelector
from netfence.policy.conns import ALL_CONNS, NO_CONNS, PROTOCOLS, Conns
from netfence.policy.engine import Engine, HostNetworkMode
from netfence.policy.ipranges import FAMILY_MAX, IPRanges, Span, cut
from netfence.policy.matrix import ClusterMatrix
from netfence.policy.selectors import Selector

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
ABSENT: Any = object()  # "leave the field out", as opposed to null or []

FAST = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SLOW = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _put(target: dict[str, Any], key: str, value: Any) -> None:
    if value is not ABSENT:
        target[key] = value


# ---------------------------------------------------------------------------------------
# 1. Label selectors
# ---------------------------------------------------------------------------------------

NAME_LABEL = "kubernetes.io/metadata.name"
KEYS = ["app", "tier", "example.com/team", NAME_LABEL]
VALUES = ["a", "b", ""]
NAME_VALUES = ["default", "prod", "dev", "a"]  # for the namespace-name label
OPERATORS = ["In", "NotIn", "Exists", "DoesNotExist"]


def values_for(key: str) -> st.SearchStrategy[str]:
    return st.sampled_from(NAME_VALUES if key == NAME_LABEL else VALUES)


@st.composite
def labels(
    draw: st.DrawFn,
    *,
    written: bool = False,
    keys: list[str] = KEYS,
    min_size: int = 0,
    max_size: int = 3,
) -> dict[str, Any]:
    """A label map; `written` ones may say `null` for "" (see models._label_map)."""
    out: dict[str, Any] = {}
    for key in draw(
        st.lists(st.sampled_from(keys), unique=True, min_size=min_size, max_size=max_size)
    ):
        value = draw(values_for(key))
        out[key] = None if written and value == "" and draw(st.booleans()) else value
    return out


label_sets = labels()
written_labels = labels(written=True)


@st.composite
def requirements(draw: st.DrawFn, *, operators: st.SearchStrategy[str] | None = None) -> dict:
    op = draw(st.sampled_from(OPERATORS) if operators is None else operators)
    key = draw(st.sampled_from(KEYS))
    req: dict[str, Any] = {"key": key, "operator": op}
    if op in ("In", "NotIn"):
        req["values"] = draw(st.lists(values_for(key), min_size=1, max_size=2))
    else:
        _put(req, "values", draw(st.sampled_from([ABSENT, None, []])))
    return req


@st.composite
def selectors(draw: st.DrawFn, *, empty_weight: int = 1) -> dict:
    """A valid LabelSelector as written in a manifest ({} selects everything).

    Mostly one or two requirements: empty selectors are drawn too, but selectors that tell
    pods apart are what make verdicts differ between pods.
    """
    shapes = ["labels", "empty", "expressions", "both"]
    shape = draw(st.sampled_from(shapes + ["empty"] * (empty_weight - 1)))
    sel: dict[str, Any] = {}
    empty_forms = st.sampled_from([ABSENT, None])
    if shape in ("labels", "both"):
        sel["matchLabels"] = draw(labels(written=True, min_size=1, max_size=2))
    else:
        _put(sel, "matchLabels", draw(st.one_of(empty_forms, st.just({}))))
    if shape in ("expressions", "both"):
        sel["matchExpressions"] = draw(st.lists(requirements(), min_size=1, max_size=2))
    else:
        _put(sel, "matchExpressions", draw(st.one_of(empty_forms, st.just([]))))
    return sel


def k8s_selector_matches(sel: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """apimachinery's LabelSelectorAsSelector(...).Matches(labels), written out by hand."""
    if sel is None:
        return True
    for key, value in (sel.get("matchLabels") or {}).items():
        if key not in labels or labels[key] != (value if value is not None else ""):
            return False
    for req in sel.get("matchExpressions") or []:
        key, op, values = req["key"], req["operator"], req.get("values") or []
        present = key in labels
        if op == "In":
            ok = present and labels[key] in values
        elif op == "NotIn":
            ok = not present or labels[key] not in values
        elif op == "Exists":
            ok = present
        elif op == "DoesNotExist":
            ok = not present
        else:  # pragma: no cover - the generators only write valid operators
            raise AssertionError(op)
        if not ok:
            return False
    return True


@FAST
@given(sel=selectors(), labels=label_sets, data=st.data())
def test_selector_matches_kubernetes_definition(
    sel: dict, labels: dict[str, str], data: st.DataObject
) -> None:
    compiled = Selector.compile(LabelSelector.model_validate(sel))
    assert compiled.matches(labels) == k8s_selector_matches(sel, labels)
    str(compiled)
    # The compiled form is a cache key: the order expressions are written in must not matter.
    exprs = sel.get("matchExpressions") or []
    shuffled = {**sel, "matchExpressions": data.draw(st.permutations(exprs))}
    assert Selector.compile(LabelSelector.model_validate(shuffled)) == compiled
    # matchLabels {k: v} is the expression `k In (v)`: written either way, one cache key.
    as_exprs = [
        {"key": k, "operator": "In", "values": ["" if v is None else v]}
        for k, v in (sel.get("matchLabels") or {}).items()
    ]
    rewritten = {"matchExpressions": [*as_exprs, *exprs]}
    assert Selector.compile(LabelSelector.model_validate(rewritten)) == compiled
    # No selector, and a label map's own equality selector, select the map.
    assert Selector.compile(None).matches(labels)
    assert Selector.equals(labels).matches(labels)


@FAST
@given(
    reqs=st.lists(
        requirements(operators=st.one_of(st.sampled_from(OPERATORS), st.text(max_size=8))),
        max_size=4,
    ),
    labels=label_sets,
)
def test_selector_compile_never_crashes(reqs: list[dict], labels: dict[str, str]) -> None:
    """Even operators validation would reject compile and evaluate without exceptions."""
    selector = LabelSelector.model_validate({"matchExpressions": reqs})
    compiled = Selector.compile(selector)
    result = compiled.matches(labels)
    str(compiled)
    if all(r["operator"] in OPERATORS for r in reqs):
        assert result == k8s_selector_matches({"matchExpressions": reqs}, labels)


# ---------------------------------------------------------------------------------------
# 2. Conns algebra
# ---------------------------------------------------------------------------------------

# Range ends come from 1..40 and 65525..65535; every port in 41..65524 then behaves like
# 41, so probing these points is exhaustive for the sets generated.
PORT_PROBES = sorted({*range(1, 43), 1000, 65524, *range(65525, 65536)})
range_end = st.one_of(st.integers(1, 40), st.integers(65525, 65535))
port_ranges = st.lists(st.tuples(range_end, range_end).map(lambda t: (min(t), max(t))), max_size=4)
conn_specs = st.dictionaries(st.sampled_from(PROTOCOLS), port_ranges, max_size=3)

ConnSet = set[tuple[str, int]]


def conns_of(spec: Mapping[str, Iterable[tuple[int, int]]]) -> Conns:
    result = NO_CONNS
    for protocol, ranges in spec.items():
        result = result | Conns.of(protocol, ranges)
    return result


def model_of(spec: Mapping[str, Iterable[tuple[int, int]]]) -> ConnSet:
    return {
        (protocol, port)
        for protocol, ranges in spec.items()
        for lo, hi in ranges
        for port in PORT_PROBES
        if lo <= port <= hi
    }


def observed(conns: Conns, probes: Iterable[int] = PORT_PROBES) -> ConnSet:
    probes = list(probes)
    return {(p, port) for p in PROTOCOLS for port in probes if (p, port) in conns}


def assert_canonical(conns: Conns) -> None:
    for protocol in PROTOCOLS:
        ranges = conns.ranges(protocol)
        for lo, hi in ranges:
            assert 1 <= lo <= hi <= 65535, ranges
        for (_, hi), (lo, _) in itertools.pairwise(ranges):
            assert hi + 1 < lo, f"not merged or not ascending: {ranges}"


def parse_conns_text(text: str) -> tuple[dict[str, list[tuple[int, int]]], list[str]]:
    """`SCTP 1-3,TCP 80,8080-8090,UDP 53` -> ranges per protocol, protocols in order."""
    if text == "All Connections":
        return {p: [(1, 65535)] for p in PROTOCOLS}, sorted(PROTOCOLS)
    if text == "No Connections":
        return {}, []
    result: dict[str, list[tuple[int, int]]] = {}
    order: list[str] = []
    protocol = ""
    for token in text.split(","):
        if " " in token:
            protocol, token = token.split(" ")
            order.append(protocol)
        lo, _, hi = token.partition("-")
        result.setdefault(protocol, []).append((int(lo), int(hi or lo)))
    return result, order


@FAST
@given(a_spec=conn_specs, b_spec=conn_specs)
def test_conns_algebra_matches_sets(a_spec: dict, b_spec: dict) -> None:
    a, b = conns_of(a_spec), conns_of(b_spec)
    ma, mb = model_of(a_spec), model_of(b_spec)
    assert observed(a) == ma
    assert observed(b) == mb
    for result, expected in ((a | b, ma | mb), (a & b, ma & mb), (a - b, ma - mb)):
        assert_canonical(result)
        assert observed(result) == expected
    assert bool(a) == bool(ma)
    assert a.issubset(b) == (ma <= mb)
    assert (a & ALL_CONNS) == a
    assert (a | NO_CONNS) == a
    assert (ALL_CONNS - (ALL_CONNS - a)) == a
    # Canonical form: equal sets are equal (and equally hashed) values, which the matrix's
    # interning of Conns relies on.
    assert (a | b) == (b | a)
    assert hash(a | b) == hash(b | a)
    assert (a & b) == (b & a)
    assert (a - (a - b)) == (a & b)
    assert ((a - b) | (a & b)) == a
    assert ((a | b) - b) == (a - b)


@FAST
@given(spec=conn_specs)
def test_conns_text_round_trip(spec: dict) -> None:
    conns = conns_of(spec)
    text = str(conns)
    parsed, order = parse_conns_text(text)
    assert (text == "All Connections") == conns.is_all
    assert (text == "No Connections") == (not conns)
    assert order == sorted(order)
    assert len(set(order)) == len(order)
    for ranges in parsed.values():
        for (_, hi), (lo, _) in itertools.pairwise(ranges):
            assert hi + 1 < lo, f"ranges not merged and ascending in {text!r}"
    assert conns_of(parsed) == conns
    written = {
        p: [f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in r] for p, r in parsed.items()
    }
    assert written == conns.as_dict()


# ---------------------------------------------------------------------------------------
# 3. IP ranges
# ---------------------------------------------------------------------------------------


@st.composite
def networks(draw: st.DrawFn, version: int | None = None) -> IPNetwork:
    version = version or draw(st.sampled_from([4, 6]))
    bits = 32 if version == 4 else 128
    prefix = draw(st.integers(0, bits))
    address = draw(st.integers(0, 2**bits - 1))
    return ipaddress.ip_network((address, prefix), strict=False)


@st.composite
def subnet_of(draw: st.DrawFn, net: IPNetwork) -> IPNetwork:
    if net.prefixlen == net.max_prefixlen:
        return net
    prefix = draw(st.integers(net.prefixlen + 1, net.max_prefixlen))
    offset = draw(st.integers(0, net.num_addresses - 1))
    return ipaddress.ip_network((int(net.network_address) + offset, prefix), strict=False)


@st.composite
def blocks(draw: st.DrawFn) -> tuple[IPNetwork, list[IPNetwork]]:
    cidr = draw(networks())
    holes = draw(st.lists(st.one_of(subnet_of(cidr), networks()), max_size=4))
    return cidr, holes


def edge_addresses(nets: Iterable[IPNetwork]) -> list[IPAddress]:
    out: list[IPAddress] = []
    for net in nets:
        top = FAMILY_MAX[net.version]
        for value in (
            int(net.network_address) - 1,
            int(net.network_address),
            int(net.broadcast_address),
            int(net.broadcast_address) + 1,
        ):
            if 0 <= value <= top:
                out.append(
                    ipaddress.ip_address(value)
                    if net.version == 4
                    else ipaddress.IPv6Address(value)
                )
    return out


@FAST
@given(block=blocks(), data=st.data())
def test_ipranges_block_matches_ipaddress(
    block: tuple[IPNetwork, list[IPNetwork]], data: st.DataObject
) -> None:
    cidr, holes = block
    ranges = IPRanges.block(cidr, holes)
    spans = ranges.spans
    assert list(spans) == sorted(spans)
    for (f1, _, hi), (f2, lo, _) in itertools.pairwise(spans):
        assert f1 != f2 or hi + 1 < lo, f"spans not merged: {spans}"
    probes = edge_addresses([cidr, *holes])
    probes += data.draw(
        st.lists(st.builds(lambda net: net.network_address, networks()), max_size=3)
    )
    probes += [
        ipaddress.ip_address(
            int(cidr.network_address) + data.draw(st.integers(0, cidr.num_addresses - 1))
        )
        if cidr.version == 4
        else ipaddress.IPv6Address(
            int(cidr.network_address) + data.draw(st.integers(0, cidr.num_addresses - 1))
        )
    ]
    for ip in probes:
        expected = ip in cidr and not any(ip in hole for hole in holes)
        assert (ip in ranges) == expected, (str(cidr), [str(h) for h in holes], str(ip))
        span: Span = (ip.version, int(ip), int(ip))
        assert ranges.covers(span) == expected
        assert ranges.intersects(span) == expected


@FAST
@given(all_blocks=st.lists(blocks(), max_size=4), family=st.sampled_from([4, 6]))
def test_cut_partitions_address_space(
    all_blocks: list[tuple[IPNetwork, list[IPNetwork]]], family: int
) -> None:
    """The matrix relies on each cut range lying wholly inside or outside every block."""
    ranges = [IPRanges.block(cidr, holes) for cidr, holes in all_blocks]
    spans = cut(family, ranges)
    assert spans[0][1] == 0
    assert spans[-1][2] == FAMILY_MAX[family]
    for (f1, _, hi), (f2, lo, _) in itertools.pairwise(spans):
        assert f1 == f2 == family
        assert hi + 1 == lo
    for block in ranges:
        for span in spans:
            assert block.covers(span) or not block.intersects(span), (block, span)


# ---------------------------------------------------------------------------------------
# 4. Random small clusters: matrix == pairwise engine == spec oracle
# ---------------------------------------------------------------------------------------

NAMESPACES = ["default", "prod", "dev"]
PORT_NUMBERS = [1, 53, 80, 81, 443, 8080, 65535]
PORT_NAMES = ["http", "dns", "metrics"]
RULE_PORT_NAMES = [*PORT_NAMES, "nope"]
PROTOCOL_CHOICES: list[Any] = [ABSENT, "TCP", "UDP", "SCTP"]
V4_PODS = [f"10.0.0.{i}" for i in range(1, 7)] + ["192.168.1.1"]
V6_PODS = [f"fd00::{i}" for i in range(1, 7)]
V4_NODES = ["172.16.0.1", "172.16.0.2"]
V6_NODES = ["fd00:1::1"]
V4_CIDRS = [
    "10.0.0.0/8",
    "10.0.0.0/24",
    "10.0.0.0/29",
    "10.0.0.4/30",
    "10.0.0.2/31",
    "10.0.0.5/32",
    "10.0.0.9/24",  # host bits set: allowed, read as 10.0.0.0/24
    "0.0.0.0/0",
    "172.16.0.0/30",
    "192.168.0.0/16",
]
V6_CIDRS = [
    "fd00::/16",
    "fd00::/125",
    "fd00::4/126",
    "fd00::2/127",
    "fd00::3/128",
    "::/0",
    "fd00:1::1/128",
]
# Narrow blocks split the pods' addresses, so ipBlocks decide more verdicts.
NARROW_CIDRS = ["10.0.0.4/30", "10.0.0.2/31", "10.0.0.5/32", "fd00::4/126", "fd00::2/127"]
POOL_ADDRESSES = [ipaddress.ip_address(a) for a in [*V4_PODS, *V6_PODS, *V4_NODES, *V6_NODES]]
EXTERNAL_PROBES = [
    ipaddress.ip_address(a)
    for a in [
        "10.0.0.3",
        "10.0.0.5",
        "10.0.0.200",
        "172.16.0.1",
        "8.8.8.8",
        "fd00::5",
        "fd00:1::1",
        "2001:db8::1",
    ]
]
POLICY_TYPES: list[Any] = [
    ABSENT,
    None,
    [],
    ["Ingress"],
    ["Egress"],
    ["Ingress", "Egress"],
    ["Egress", "Ingress"],
    ["Ingress", "Ingress"],
    # Egress-only policies more often: ingress isolation would otherwise mask most egress
    # decisions (a verdict is egress & ingress).
    ["Egress"],
    ["Egress"],
    ["Egress"],
]
WORKLOAD_KINDS = ["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"]


@dataclass(eq=False)
class GenPod:
    """A pod as generated, in plain terms, for the oracle."""

    namespace: str
    name: str
    labels: dict[str, str]
    ports: list[tuple[int, str, str | None]]  # (number, protocol, name)
    ips: list[IPAddress]
    host_network: bool
    owner: tuple[str, str]  # (kind, name)


@dataclass
class GenCluster:
    namespaces: dict[str, dict[str, str]]  # effective labels, as the API server stores them
    pods: list[GenPod]
    policies: list[tuple[str, dict[str, Any]]]  # (namespace, spec) as written
    docs: list[dict[str, Any]]
    text: str
    tier_policies: list[dict[str, Any]] = dataclass_field(default_factory=list)  # as written
    nodes: dict[str, tuple[dict[str, str], list[IPAddress]]] = dataclass_field(default_factory=dict)


def _clean_labels(labels: Mapping[str, str | None]) -> dict[str, str]:
    return {k: "" if v is None else v for k, v in labels.items()}


@st.composite
def container_ports(draw: st.DrawFn) -> list[dict[str, Any]]:
    ports = []
    names = draw(st.lists(st.sampled_from(PORT_NAMES), unique=True, max_size=3))
    for i in range(draw(st.integers(0, 3))):
        port: dict[str, Any] = {"containerPort": draw(st.sampled_from(PORT_NUMBERS))}
        if i < len(names) and draw(st.booleans()):
            port["name"] = names[i]
        _put(port, "protocol", draw(st.sampled_from(PROTOCOL_CHOICES)))
        ports.append(port)
    return ports


@st.composite
def pod_specs(draw: st.DrawFn) -> tuple[dict[str, Any], list[tuple[int, str, str | None]]]:
    containers = []
    flat: list[tuple[int, str, str | None]] = []
    for i in range(draw(st.integers(1, 2))):
        ports = draw(container_ports())
        container: dict[str, Any] = {"name": f"c{i}", "image": "nginx"}
        if ports or draw(st.booleans()):
            container["ports"] = ports
        containers.append(container)
        flat += [(p["containerPort"], p.get("protocol", "TCP"), p.get("name")) for p in ports]
    return {"containers": containers}, flat


@st.composite
def ip_blocks(draw: st.DrawFn) -> dict[str, Any]:
    text = draw(st.sampled_from([*V4_CIDRS, *V6_CIDRS, *NARROW_CIDRS]))
    net = ipaddress.ip_network(text, strict=False)
    block: dict[str, Any] = {"cidr": text}
    if net.prefixlen < net.max_prefixlen and draw(st.integers(0, 2)):
        inside = [a for a in POOL_ADDRESSES if a in net] or [net.network_address]
        excepts = []
        for _ in range(draw(st.integers(0, 2))):
            address = draw(st.sampled_from(inside))
            low = max(net.prefixlen + 1, net.max_prefixlen - 4)
            prefix = draw(
                st.one_of(st.integers(low, net.max_prefixlen), st.just(net.prefixlen + 1))
            )
            hole = ipaddress.ip_network((address, prefix), strict=False)
            # Written with host bits set now and then; the API server accepts that.
            excepts.append(f"{address}/{prefix}" if draw(st.booleans()) else str(hole))
        _put(block, "except", excepts if excepts or draw(st.booleans()) else ABSENT)
    return block


@st.composite
def peers(draw: st.DrawFn) -> dict[str, Any]:
    shape = draw(st.sampled_from(["pods", "namespaces", "both", "ipBlock", "pods"]))
    if shape == "ipBlock":
        return {"ipBlock": draw(ip_blocks())}
    peer: dict[str, Any] = {}
    if shape in ("pods", "both"):
        # `podSelector: {}` alone (every pod of the policy's namespace) is the common case.
        peer["podSelector"] = draw(selectors(empty_weight=2))
    if shape in ("namespaces", "both"):
        peer["namespaceSelector"] = draw(selectors())
    return peer


@st.composite
def policy_ports(draw: st.DrawFn) -> dict[str, Any]:
    port: dict[str, Any] = {}
    _put(port, "protocol", draw(st.sampled_from(PROTOCOL_CHOICES)))
    shape = draw(st.sampled_from(["none", "number", "range", "name"]))
    if shape == "number":
        port["port"] = draw(st.sampled_from(PORT_NUMBERS))
    elif shape == "range":
        port["port"] = draw(st.sampled_from(PORT_NUMBERS))
        port["endPort"] = draw(st.sampled_from([p for p in PORT_NUMBERS if p >= port["port"]]))
    elif shape == "name":
        port["port"] = draw(st.sampled_from(RULE_PORT_NAMES))
    return port


def _optional_list(
    strategy: st.SearchStrategy[Any], max_size: int, weight: int = 2
) -> st.SearchStrategy[Any]:
    """Absent, null or [] (for from/to/ports all three mean "everything"; for a policy's
    ingress/egress, "no rule") or, `weight` times as likely, a non-empty list."""
    listed = st.lists(strategy, min_size=1, max_size=max_size)
    return st.one_of(st.sampled_from([ABSENT, None, []]), *[listed] * weight)


@st.composite
def rules(draw: st.DrawFn, peer_field: str) -> dict[str, Any]:
    rule: dict[str, Any] = {}
    only_blocks = st.lists(st.builds(lambda b: {"ipBlock": b}, ip_blocks()), min_size=1, max_size=2)
    # Rules open to everyone make other rules moot: mostly list peers. (Weights by repeated
    # branches: hypothesis picks one_of's branches uniformly and does not flatten them.)
    listed = st.lists(peers(), min_size=1, max_size=2)
    everyone = st.sampled_from([ABSENT, None, []])
    _put(rule, peer_field, draw(st.one_of(everyone, listed, listed, listed, only_blocks)))
    _put(rule, "ports", draw(_optional_list(policy_ports(), 2)))
    return rule


@st.composite
def policies(draw: st.DrawFn, namespaces: list[str], name: str) -> dict[str, Any]:
    namespace = draw(st.sampled_from(namespaces))
    meta: dict[str, Any] = {"name": name}
    if namespace != "default" or draw(st.booleans()):
        meta["namespace"] = namespace
    spec: dict[str, Any] = {"podSelector": draw(selectors(empty_weight=4))}
    _put(spec, "policyTypes", draw(st.sampled_from(POLICY_TYPES)))
    _put(
        spec,
        "ingress",
        draw(_optional_list(rules("from"), 2, weight=3)),
    )
    _put(
        spec,
        "egress",
        draw(_optional_list(rules("to"), 2, weight=3)),
    )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta,
        "spec": spec,
    }


# Cluster-wide policies (AdminNetworkPolicy, BaselineAdminNetworkPolicy, v1alpha2
# ClusterNetworkPolicy), written in both API generations, and the Nodes `nodes` peers select.
TIER_ACTIONS = {
    "AdminNetworkPolicy": ["Allow", "Deny", "Pass"],
    "BaselineAdminNetworkPolicy": ["Allow", "Deny"],
    "ClusterNetworkPolicy": ["Accept", "Deny", "Pass"],
}
NODE_NAMES = ["n0", "n1"]


@st.composite
def namespaced_pods(draw: st.DrawFn) -> dict[str, Any]:
    return {"namespaceSelector": draw(selectors()), "podSelector": draw(selectors(empty_weight=2))}


@st.composite
def tier_peers(draw: st.DrawFn, direction: str) -> dict[str, Any]:
    shapes = ["namespaces", "pods", "pods"]
    if direction == "egress":
        shapes += ["networks", "nodes"]
    shape = draw(st.sampled_from(shapes))
    if shape == "namespaces":
        return {"namespaces": draw(selectors())}
    if shape == "pods":
        return {"pods": draw(namespaced_pods())}
    if shape == "nodes":
        return {"nodes": draw(selectors())}
    pool = [*V4_CIDRS, *V6_CIDRS, *NARROW_CIDRS]
    return {"networks": draw(st.lists(st.sampled_from(pool), min_size=1, max_size=2, unique=True))}


@st.composite
def tier_port_entries(draw: st.DrawFn, v2: bool) -> dict[str, Any]:
    shape = draw(st.sampled_from(["number", "range", "name", "number"]))
    if shape == "name":
        name = draw(st.sampled_from(RULE_PORT_NAMES))
        return {"destinationNamedPort": name} if v2 else {"namedPort": name}
    start = draw(st.sampled_from(PORT_NUMBERS[:-1] if v2 and shape == "range" else PORT_NUMBERS))
    protocol = draw(st.sampled_from(PROTOCOL_CHOICES))
    if v2:
        if shape == "number":
            port: dict[str, Any] = {"number": start}
        else:
            port = {
                "range": {
                    "start": start,
                    "end": draw(st.sampled_from([p for p in PORT_NUMBERS if p > start])),
                }
            }
        return {(protocol if protocol is not ABSENT else "TCP").lower(): {"destinationPort": port}}
    entry: dict[str, Any] = (
        {"port": start}
        if shape == "number"
        else {
            "start": start,
            "end": draw(st.sampled_from([p for p in PORT_NUMBERS if p >= start])),
        }
    )
    _put(entry, "protocol", protocol)
    return {"portNumber" if shape == "number" else "portRange": entry}


@st.composite
def tier_rules(draw: st.DrawFn, kind: str, direction: str) -> dict[str, Any]:
    v2 = kind == "ClusterNetworkPolicy"
    rule: dict[str, Any] = {"action": draw(st.sampled_from(TIER_ACTIONS[kind]))}
    if draw(st.booleans()):
        rule["name"] = f"r-{direction}"
    field_name = "from" if direction == "ingress" else "to"
    rule[field_name] = draw(st.lists(tier_peers(direction), min_size=1, max_size=2))
    if draw(st.integers(0, 2)):
        rule["protocols" if v2 else "ports"] = draw(
            st.lists(tier_port_entries(v2), min_size=1, max_size=2)
        )
    return rule


@st.composite
def tier_policies(
    draw: st.DrawFn, kind: str, name: str, priority: int, tier: str = "Admin"
) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if draw(st.booleans()):
        spec["subject"] = {"namespaces": draw(selectors())}
    else:
        spec["subject"] = {"pods": draw(namespaced_pods())}
    if kind != "BaselineAdminNetworkPolicy":
        spec["priority"] = priority
    if kind == "ClusterNetworkPolicy":
        spec["tier"] = tier
    for direction in ("ingress", "egress"):
        _put(spec, direction, draw(_optional_list(tier_rules(kind, direction), 3, weight=3)))
    version = "v1alpha2" if kind == "ClusterNetworkPolicy" else "v1alpha1"
    return {
        "apiVersion": f"policy.networking.k8s.io/{version}",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }


@st.composite
def tier_documents(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Up to three admin-tier policies of distinct priorities (both API generations) and
    perhaps a baseline (the BANP, or a Baseline-tier ClusterNetworkPolicy)."""
    count = draw(st.sampled_from([0, 1, 2, 3, 1, 2]))
    priorities = draw(st.lists(st.integers(0, 1000), min_size=count, max_size=count, unique=True))
    docs = [
        draw(
            tier_policies(
                draw(
                    st.sampled_from(
                        ["AdminNetworkPolicy", "AdminNetworkPolicy", "ClusterNetworkPolicy"]
                    )
                ),
                f"admin{i}",
                priority,
            )
        )
        for i, priority in enumerate(priorities)
    ]
    baseline = draw(st.sampled_from(["none", "banp", "banp", "cnp"]))
    if baseline == "banp":
        docs.append(draw(tier_policies("BaselineAdminNetworkPolicy", "default", 0)))
    elif baseline == "cnp":
        docs.append(
            draw(
                tier_policies(
                    "ClusterNetworkPolicy", "baseline", draw(st.integers(0, 9)), "Baseline"
                )
            )
        )
    return docs


@st.composite
def pod_ips(
    draw: st.DrawFn, host_network: bool, exclude: Collection[IPAddress] = ()
) -> tuple[dict[str, Any], list[IPAddress]]:
    """A pod's status addresses from the pools, none of them in `exclude`."""
    v4, v6 = (V4_NODES, V6_NODES) if host_network else (V4_PODS, V6_PODS)
    v4 = [a for a in v4 if ipaddress.ip_address(a) not in exclude]
    v6 = [a for a in v6 if ipaddress.ip_address(a) not in exclude]
    shape = draw(st.sampled_from(["v4", "none", "v6", "dual", "dual", "dual6"]))
    texts = {
        "none": [],
        "v4": [draw(st.sampled_from(v4))],
        "v6": [draw(st.sampled_from(v6))],
        "dual": [draw(st.sampled_from(v4)), draw(st.sampled_from(v6))],
        "dual6": [draw(st.sampled_from(v6)), draw(st.sampled_from(v4))],
    }[shape]
    status: dict[str, Any] = {"phase": "Running"}
    if texts:
        form = draw(
            st.sampled_from(["podIP", "both", "podIPs"] if len(texts) == 1 else ["both", "podIPs"])
        )
        if form in ("podIP", "both"):
            status["podIP"] = texts[0]
        if form in ("podIPs", "both"):
            status["podIPs"] = [{"ip": t} for t in texts]
    return status, [ipaddress.ip_address(t) for t in texts]


@st.composite
def clusters(draw: st.DrawFn, *, distinct_ips: bool = False, tiers: bool = False) -> GenCluster:
    """A small valid cluster. Pods' status addresses may coincide (the API server allows
    it) unless `distinct_ips`: then no two non-hostNetwork pods share one, as a lab needs
    (the pools hold more addresses per family than the at most 6 pods that draw them)."""
    count = draw(st.sampled_from([2, 3])) if draw(st.integers(0, 5)) else 1
    chosen = draw(st.permutations(NAMESPACES))[:count]
    docs: list[dict[str, Any]] = []
    effective: dict[str, dict[str, str]] = {}
    for name in chosen:
        # May write the namespace-name label, with the right value (as `kubectl get -o yaml`
        # shows it) or a wrong one, which the API server overwrites with the name.
        ns_labels = draw(labels(written=True))
        if draw(st.integers(0, 5)) == 0 and name == "default":
            continue  # used but never declared: only the automatic label
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": ns_labels},
            }
        )
        effective[name] = {**_clean_labels(ns_labels), NAME_LABEL: name}

    pods: list[GenPod] = []
    pod_addresses: set[IPAddress] = set()

    rotation = itertools.count(draw(st.integers(0, 2)))

    def where(meta: dict[str, Any], home: int | None = None) -> str:
        """Owned pods often in their owner's namespace; others often spread round-robin,
        so that namespace scoping decides verdicts (hypothesis' draws favour chosen[0])."""
        if home is not None and draw(st.booleans()):
            namespace = chosen[home % len(chosen)]
        elif draw(st.booleans()):
            namespace = chosen[next(rotation) % len(chosen)]
        else:
            namespace = draw(st.sampled_from(chosen))
        if namespace != "default" or draw(st.booleans()):
            meta["namespace"] = namespace
        return namespace

    for i in range(draw(st.integers(1, 6))):
        name = f"p{i}"
        meta: dict[str, Any] = {"name": name}
        # Owned pods mostly live in their owner's namespace, so that owners have several
        # pods (of different classes) and the connectivity list has unions to make.
        ref = draw(st.sampled_from(["rs0", "none", "rs1", "sts0", "rs0", "node", "loose"]))
        namespace = where(meta, {"rs0": 0, "rs1": 1, "sts0": 2}.get(ref))
        pod_labels = draw(written_labels)
        meta["labels"] = pod_labels
        owner = ("Pod", name)
        if ref in ("rs0", "rs1"):
            meta["ownerReferences"] = [{"kind": "ReplicaSet", "name": ref, "controller": True}]
            owner = ("ReplicaSet", ref)
        elif ref == "sts0":
            meta["ownerReferences"] = [{"kind": "StatefulSet", "name": ref, "controller": True}]
            owner = ("StatefulSet", ref)
        elif ref == "node":  # a static pod's mirror: stands alone
            meta["ownerReferences"] = [{"kind": "Node", "name": "n1", "controller": True}]
        elif ref == "loose":  # not a controller reference: stands alone
            meta["ownerReferences"] = [{"kind": "ReplicaSet", "name": "rs0"}]
        spec, ports = draw(pod_specs())
        host_network = draw(st.integers(0, 6)) == 0
        if host_network:
            spec["hostNetwork"] = True
        exclude = pod_addresses if distinct_ips and not host_network else ()
        status, ips = draw(pod_ips(host_network, exclude))
        if not host_network:
            pod_addresses.update(ips)
        docs.append(
            {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}
        )
        pods.append(
            GenPod(namespace, name, _clean_labels(pod_labels), ports, ips, host_network, owner)
        )

    for i in range(draw(st.integers(0, 2))):
        kind = draw(st.sampled_from(WORKLOAD_KINDS))
        name = f"w{i}"
        meta = {"name": name}
        namespace = where(meta)
        pod_labels = draw(written_labels)
        spec, ports = draw(pod_specs())
        host_network = draw(st.integers(0, 6)) == 0
        if host_network:
            spec["hostNetwork"] = True
        template = {"metadata": {"labels": pod_labels}, "spec": spec}
        replicas = draw(st.sampled_from([ABSENT, 0, 1, 2]))
        workload_spec: dict[str, Any] = {}
        _put(workload_spec, "replicas", replicas)
        if kind == "CronJob":
            workload_spec["jobTemplate"] = {"spec": {"template": template}}
        else:
            workload_spec["template"] = template
        docs.append(
            {"apiVersion": "apps/v1", "kind": kind, "metadata": meta, "spec": workload_spec}
        )
        count = 1 if replicas is ABSENT or kind in ("DaemonSet", "Job", "CronJob") else replicas
        for r in range(count):
            pods.append(
                GenPod(
                    namespace,
                    name if count == 1 else f"{name}-{r}",
                    _clean_labels(pod_labels),
                    ports,
                    [],
                    host_network,
                    (kind, name),
                )
            )

    policy_list: list[tuple[str, dict[str, Any]]] = []
    for i in range(draw(st.sampled_from([2, 0, 1, 3, 4]))):
        policy = draw(policies(chosen, f"np{i}"))
        docs.append(policy)
        policy_list.append((policy["metadata"].get("namespace", "default"), policy["spec"]))

    tier_docs: list[dict[str, Any]] = draw(tier_documents()) if tiers else []
    docs += tier_docs
    gen_nodes: dict[str, tuple[dict[str, str], list[IPAddress]]] = {}
    for name in NODE_NAMES[: draw(st.integers(0, len(NODE_NAMES)))] if tiers else []:
        node_labels = draw(written_labels)
        addresses = draw(st.lists(st.sampled_from([*V4_NODES, *V6_NODES]), unique=True, max_size=2))
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": name, "labels": node_labels},
                "status": {"addresses": [{"type": "InternalIP", "address": a} for a in addresses]},
            }
        )
        gen_nodes[name] = (
            {"kubernetes.io/hostname": name, **_clean_labels(node_labels)},
            [ipaddress.ip_address(a) for a in addresses],
        )

    used = {p.namespace for p in pods} | {ns for ns, _ in policy_list}
    for name in used - effective.keys():
        effective[name] = {NAME_LABEL: name}

    docs = draw(st.permutations(docs))
    encoding = draw(st.sampled_from(["yaml", "json", "list"]))
    if encoding == "yaml":
        text = yaml.safe_dump_all(docs)
    elif encoding == "json":
        text = "\n---\n".join(json.dumps(d, indent=1) for d in docs)
    else:
        text = yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": docs})
    return GenCluster(effective, pods, policy_list, docs, text, tier_docs, gen_nodes)


def build(cluster: GenCluster) -> ClusterState:
    manifests = load_text(cluster.text, "cluster.yaml")
    assert manifests.problems == [], [str(p) for p in manifests.problems]
    state = ClusterState.build(manifests)
    assert state.errors == [], [str(p) for p in state.errors]
    assert len(state.pods) == len(cluster.pods)
    assert len(state.policies) == len(cluster.policies)
    assert len(state.cluster_policies) == len(cluster.tier_policies)
    return state


def span_probes(span: Span) -> list[IPAddress]:
    fam, lo, hi = span
    make = ipaddress.IPv4Address if fam == 4 else ipaddress.IPv6Address
    return [make(v) for v in sorted({lo, (lo + hi) // 2, hi})]


def describe(state: ClusterState, *extra: object) -> str:
    lines = [
        f"{p.key} labels={dict(p.labels)} ips={[str(i) for i in p.ips]} "
        f"hostNetwork={p.host_network} ports={p.ports}"
        for p in state.pods
    ]
    lines += [
        f"policy {p.key}: {p.spec.model_dump(by_alias=True, exclude_defaults=True)}"
        for p in [*state.policies, *state.cluster_policies]
    ]
    lines += [f"node {n.name} labels={dict(n.labels)} {n.addresses}" for n in state.nodes.values()]
    return "\n".join([*map(str, extra), *lines])


def assert_ranges_partition(ranges: list[Span], only: int | None = None) -> None:
    for family in {only} if only is not None else {4, *(s[0] for s in ranges)}:
        spans = [s for s in ranges if s[0] == family]
        assert spans, f"no ranges for IPv{family}"
        assert spans[0][1] == 0
        assert spans[-1][2] == FAMILY_MAX[family]
        for (_, _, hi), (_, lo, _) in itertools.pairwise(spans):
            assert hi + 1 == lo


def union(values: Iterable[Conns]) -> Conns:
    result = NO_CONNS
    for value in values:
        result = result | value
    return result


def span_of(ranges: list[Span], ip: IPAddress) -> int | None:
    for j, (fam, lo, hi) in enumerate(ranges):
        if fam == ip.version and lo <= int(ip) <= hi:
            return j
    return None


def uses_ipv6_blocks(cluster: GenCluster, direction: str | None) -> bool:
    """An ipBlock for IPv6 in an effective rule of `direction` (None: in any rule), or an
    egress `networks` CIDR or `nodes` peer matching a node with an IPv6 address."""
    for _, spec in cluster.policies:
        for d in ("Ingress", "Egress"):
            if direction is not None and (d != direction or d not in _policy_types(spec)):
                continue
            for rule in spec.get(d.lower()) or []:
                for peer in rule.get("from" if d == "Ingress" else "to") or []:
                    if ":" in peer.get("ipBlock", {}).get("cidr", ""):
                        return True
    if direction == "Ingress":
        return False  # cluster-wide ingress peers are never addresses
    for doc in cluster.tier_policies:
        for rule in doc["spec"].get("egress") or []:
            for peer in rule["to"]:
                if any(":" in cidr for cidr in peer.get("networks", [])):
                    return True
                if "nodes" in peer and any(
                    ip.version == 6
                    for labels, addresses in cluster.nodes.values()
                    if k8s_selector_matches(peer["nodes"], labels)
                    for ip in addresses
                ):
                    return True
    return False


def check_connlist(state: ClusterState, matrix: ClusterMatrix, engine: Engine, where: str) -> None:
    """One line per pair of workloads (or workload and range) that may talk, holding the
    union over the two sides' pods of the naive verdicts (a range: its first address)."""
    lines = connectivity(state, matrix)
    table = {(line.src, line.dst): line.conns for line in lines}
    assert len(table) == len(lines), "duplicate lines"
    assert all(line.conns for line in lines), "a line with no connections"
    assert [str(line) for line in lines] == sorted(str(line) for line in lines)
    owners: dict[ListPeer, list[StatePod]] = {}
    for pod in state.pods:
        owners.setdefault(ListPeer.of_pod(pod), []).append(pod)
    expected: dict[tuple[ListPeer, ListPeer], Conns] = {}
    for a, a_pods in owners.items():
        for b, b_pods in owners.items():
            if a != b:
                expected[a, b] = union(
                    engine.verdict(s, d).conns for s in a_pods for d in b_pods if s is not d
                )
        for span in matrix.dst_ranges:
            first = span_probes(span)[0]
            expected[a, ListPeer(span=span)] = union(engine.verdict(s, first).conns for s in a_pods)
        for span in matrix.src_ranges:
            first = span_probes(span)[0]
            expected[ListPeer(span=span), a] = union(engine.verdict(first, d).conns for d in a_pods)
    assert set(table) <= set(expected), set(table) - set(expected)
    for key, want in expected.items():
        got = table.get(key, NO_CONNS)
        assert got == want, describe(
            state, where, f"{key[0]} => {key[1]}", f"listed {got}", f"union of verdicts {want}"
        )


@SLOW
@given(
    cluster=clusters(tiers=True),
    family=st.sampled_from([None, None, 4, 6]),
    regroup=st.lists(st.integers(0, 1), min_size=12, max_size=12),
    data=st.data(),
)
def test_matrix_and_connlist_equal_pairwise_engine(
    cluster: GenCluster, family: int | None, regroup: list[int], data: st.DataObject
) -> None:
    state = build(cluster)
    # The same pods grouped into at most two workloads per namespace, so that workloads
    # span several classes and the connectivity list has real unions to make.
    regrouped = ClusterState(
        namespaces=state.namespaces,
        pods=[
            replace(p, owner=Owner("ReplicaSet", f"g{regroup[i % 12]}"))
            for i, p in enumerate(state.pods)
        ],
        policies=state.policies,
        cluster_policies=state.cluster_policies,
        nodes=state.nodes,
    )
    for mode in ("pod", "node"):
        engine = Engine(state, family=family, host_network=mode)
        matrix = ClusterMatrix(state, family=family, host_network=mode)
        where = f"host_network={mode} family={family}"

        # Classes hold pods the policies cannot tell apart.
        cls = {id(p): matrix.class_of[id(p)] for p in state.pods}
        for pod in state.pods:
            c = matrix.classes[cls[id(pod)]]
            assert pod in c.pods
            assert (c.namespace, c.labels, c.ports, c.host_network) == (
                pod.namespace,
                dict(pod.labels),
                engine.named_ports(pod),  # what named ports resolve on
                pod.host_network,
            )

        p2p = matrix.pod_to_pod()
        for src in state.pods:
            for dst in state.pods:
                if src is dst:
                    continue
                expected = engine.verdict(src, dst).conns
                got = matrix.conns(int(p2p[cls[id(src)], cls[id(dst)]]))
                assert got == expected, describe(
                    state, where, f"{src.key} -> {dst.key}", f"matrix {got}", f"engine {expected}"
                )

        # External ranges: partitions of each listed family's address space. For one family
        # (the dataplane's view) exactly that family; for both (the analyzer's), IPv4
        # always, IPv6 whenever an effective ipBlock of the direction is IPv6 and never in
        # clusters without IPv6 ipBlocks. Every address of a range gets its verdict.
        for ranges, direction in ((matrix.src_ranges, "Ingress"), (matrix.dst_ranges, "Egress")):
            assert_ranges_partition(ranges, family)
            has_v6 = any(span[0] == 6 for span in ranges)
            if family is not None:
                assert {span[0] for span in ranges} == {family}
            else:
                if uses_ipv6_blocks(cluster, direction):
                    assert has_v6, f"no IPv6 ranges for {direction}"
                if not uses_ipv6_blocks(cluster, None):
                    assert not has_v6
        p2r, r2p = matrix.pod_to_range(), matrix.range_to_pod()
        assert p2r.shape == (matrix.size, len(matrix.dst_ranges))
        assert r2p.shape == (len(matrix.src_ranges), matrix.size)
        extra = [
            make(data.draw(st.integers(lo, hi), label="address in range"))
            for fam, lo, hi in (*matrix.src_ranges, *matrix.dst_ranges)
            for make in [ipaddress.IPv4Address if fam == 4 else ipaddress.IPv6Address]
        ]
        addresses = [*POOL_ADDRESSES, *EXTERNAL_PROBES, *extra]
        for pod in state.pods:
            for j, span in enumerate(matrix.dst_ranges):
                got = matrix.conns(int(p2r[cls[id(pod)], j]))
                for ip in [
                    *span_probes(span),
                    *(a for a in addresses if span_of([span], a) is not None),
                ]:
                    expected = engine.verdict(pod, ip).conns
                    assert got == expected, describe(
                        state, where, f"{pod.key} -> {ip}", f"matrix {got}", f"engine {expected}"
                    )
            for j, span in enumerate(matrix.src_ranges):
                got = matrix.conns(int(r2p[j, cls[id(pod)]]))
                for ip in [
                    *span_probes(span),
                    *(a for a in addresses if span_of([span], a) is not None),
                ]:
                    expected = engine.verdict(ip, pod).conns
                    assert got == expected, describe(
                        state, where, f"{ip} -> {pod.key}", f"matrix {got}", f"engine {expected}"
                    )

        check_connlist(state, matrix, engine, where)
        if mode == "pod" and family is None:
            assert [str(x) for x in connectivity(state)] == [
                str(x) for x in connectivity(state, matrix)
            ]
        check_connlist(
            regrouped,
            ClusterMatrix(regrouped, family=family, host_network=mode),
            Engine(regrouped, family=family, host_network=mode),
            where + " (regrouped)",
        )


# -- the spec oracle -----------------------------------------------------------------------


Endpoint = GenPod | IPAddress


class Oracle:
    """NetworkPolicy semantics read straight off the generated manifests.

    Kubernetes' own definitions: a pod is isolated in a direction iff some policy in its
    namespace selects it and has that policy type (defaulted: Ingress always, Egress iff
    `egress` is non-empty); an isolated pod allows the union of what the rules matching the
    peer allow; a connection needs the source's egress and the destination's ingress.
    ipBlocks match a pod by its addresses (netfence's documented reading). hostNetwork pods
    per `Engine`'s docstring: in "node" mode selectors neither select nor match them.

    Cluster-wide policies, per the network-policy-api, port by port: walk the admin tier's
    policies by priority and their rules in order; the first rule whose peers match and
    whose ports hold the port decides (Allow/Accept, Deny), or Pass / no match hands the port
    on: to the NetworkPolicies when one selects the pod, else to the baseline tier's first
    matching rule, else it is allowed. `networks` and `nodes` match by address, like ipBlocks.
    """

    def __init__(
        self, cluster: GenCluster, family: int | None, mode: str, probes: list[int]
    ) -> None:
        self.cluster = cluster
        self.family = family
        self.mode = mode
        self.probes = probes
        self.all: ConnSet = {(p, n) for p in PROTOCOLS for n in probes}

    def selectable(self, endpoint: Endpoint) -> bool:
        return isinstance(endpoint, GenPod) and not (endpoint.host_network and self.mode == "node")

    def named_ports_resolve(self, dst: Endpoint) -> bool:
        """A port name resolves on a pod's own ports; in "node" mode a hostNetwork pod has
        none of its own (its node's address stands for every hostNetwork pod there)."""
        return self.selectable(dst)

    def verdict(self, src: Endpoint, dst: Endpoint) -> ConnSet:
        return self.side(src, dst, "Egress", dst) & self.side(dst, src, "Ingress", dst)

    def side(self, pod: Endpoint, peer: Endpoint, direction: str, dst: Endpoint) -> ConnSet:
        if not isinstance(pod, GenPod) or not self.selectable(pod):
            return self.all
        isolated, allowed = self.np_side(pod, peer, direction, dst)
        admin = self.tier_rules(pod, peer, direction, dst, "Admin")
        baseline = self.tier_rules(pod, peer, direction, dst, "Baseline")
        result: ConnSet = set()
        for port in self.all:
            # No matching rule in a tier is a Pass; after the baseline, everything is allowed.
            decision = next((action for action, ports in admin if port in ports), "Pass")
            if decision == "Pass" and isolated:
                decision = "Allow" if port in allowed else "Deny"
            elif decision == "Pass":
                decision = next((action for action, ports in baseline if port in ports), "Pass")
            if decision != "Deny":
                result.add(port)
        return result

    def tier_rules(
        self, pod: GenPod, peer: Endpoint, direction: str, dst: Endpoint, tier: str
    ) -> list[tuple[str, ConnSet]]:
        """(action, ports) of the tier's rules that match `peer`, in evaluation order."""
        chosen = []
        for doc in self.cluster.tier_policies:
            kind, spec = doc["kind"], doc["spec"]
            doc_tier = spec.get("tier", "Baseline" if kind.startswith("Baseline") else "Admin")
            if doc_tier != tier or not spec.get(direction.lower()):
                continue
            if not self.pods_peer_matches(spec["subject"], pod):
                continue
            priority = spec.get("priority", 1001)
            chosen.append(((priority, kind, doc["metadata"]["name"]), spec[direction.lower()]))
        out = []
        for _, rules in sorted(chosen, key=lambda item: item[0]):
            for rule in rules:
                peers = rule["from" if direction == "Ingress" else "to"]
                if any(self.tier_peer_matches(p, peer) for p in peers):
                    out.append((rule["action"], self.tier_ports(rule, dst)))
        return out

    def pods_peer_matches(self, peer: dict[str, Any], endpoint: Endpoint) -> bool:
        """A subject, or a `namespaces`/`pods` peer."""
        if not isinstance(endpoint, GenPod) or not self.selectable(endpoint):
            return False
        ns_labels = self.cluster.namespaces[endpoint.namespace]
        if "namespaces" in peer:
            return k8s_selector_matches(peer["namespaces"], ns_labels)
        pods = peer["pods"]
        return k8s_selector_matches(
            pods.get("namespaceSelector"), ns_labels
        ) and k8s_selector_matches(pods.get("podSelector"), endpoint.labels)

    def addresses(self, endpoint: Endpoint) -> list[IPAddress]:
        if isinstance(endpoint, GenPod):
            return [ip for ip in endpoint.ips if self.family is None or ip.version == self.family]
        return [endpoint]

    def tier_peer_matches(self, peer: dict[str, Any], endpoint: Endpoint) -> bool:
        if "networks" in peer:
            nets = [ipaddress.ip_network(c, strict=False) for c in peer["networks"]]
            return any(a in n for a in self.addresses(endpoint) for n in nets)
        if "nodes" in peer:
            return any(
                a in addresses
                for labels, addresses in self.cluster.nodes.values()
                if k8s_selector_matches(peer["nodes"], labels)
                for a in self.addresses(endpoint)
            )
        return self.pods_peer_matches(peer, endpoint)

    def tier_ports(self, rule: dict[str, Any], dst: Endpoint) -> ConnSet:
        entries = rule.get("ports", rule.get("protocols"))
        if entries is None:
            return self.all
        out: ConnSet = set()
        for entry in entries:
            name = entry.get("namedPort", entry.get("destinationNamedPort"))
            if name is not None:
                if self.named_ports_resolve(dst):
                    assert isinstance(dst, GenPod)
                    out |= {(proto, n) for n, proto, port_name in dst.ports if port_name == name}
                continue
            if "portNumber" in entry or "portRange" in entry:
                spec = entry.get("portNumber") or entry["portRange"]
                protocol = spec.get("protocol", "TCP")
                low, high = spec.get("start", spec.get("port")), spec.get("end", spec.get("port"))
            else:
                (key, value), *_ = entry.items()
                protocol, port = key.upper(), value["destinationPort"]
                low = port.get("number", port.get("range", {}).get("start"))
                high = port.get("number", port.get("range", {}).get("end"))
            out |= {(protocol, n) for n in self.probes if low <= n <= high}
        return out

    def np_side(
        self, pod: GenPod, peer: Endpoint, direction: str, dst: Endpoint
    ) -> tuple[bool, ConnSet]:
        """Whether NetworkPolicies isolate the pod, and what their rules allow the peer."""
        isolated = False
        allowed: ConnSet = set()
        for namespace, spec in self.cluster.policies:
            if namespace != pod.namespace or direction not in _policy_types(spec):
                continue
            if not k8s_selector_matches(spec.get("podSelector"), pod.labels):
                continue
            isolated = True
            for rule in spec.get(direction.lower()) or []:
                rule_peers = rule.get("from" if direction == "Ingress" else "to") or []
                if rule_peers and not any(
                    self.peer_matches(p, peer, namespace) for p in rule_peers
                ):
                    continue
                allowed |= self.ports(rule.get("ports") or [], dst)
        return isolated, allowed

    def peer_matches(self, peer: dict[str, Any], endpoint: Endpoint, namespace: str) -> bool:
        if "ipBlock" in peer:
            cidr = ipaddress.ip_network(peer["ipBlock"]["cidr"], strict=False)
            holes = [
                ipaddress.ip_network(e, strict=False) for e in peer["ipBlock"].get("except") or []
            ]
            if isinstance(endpoint, GenPod):
                addresses = [
                    ip for ip in endpoint.ips if self.family is None or ip.version == self.family
                ]
            else:
                addresses = [endpoint]
            return any(a in cidr and not any(a in h for h in holes) for a in addresses)
        if not isinstance(endpoint, GenPod) or not self.selectable(endpoint):
            return False
        if "namespaceSelector" in peer:
            labels = self.cluster.namespaces[endpoint.namespace]
            if not k8s_selector_matches(peer["namespaceSelector"], labels):
                return False
        elif endpoint.namespace != namespace:
            return False
        return k8s_selector_matches(peer.get("podSelector"), endpoint.labels)

    def ports(self, ports: list[dict[str, Any]], dst: Endpoint) -> ConnSet:
        if not ports:
            return self.all
        out: ConnSet = set()
        for entry in ports:
            protocol = entry.get("protocol") or "TCP"
            port = entry.get("port")
            if port is None:
                out |= {(protocol, n) for n in self.probes}
            elif isinstance(port, int):
                end = entry.get("endPort") or port
                out |= {(protocol, n) for n in self.probes if port <= n <= end}
            elif self.named_ports_resolve(dst):
                assert isinstance(dst, GenPod)
                out |= {
                    (protocol, n)
                    for n, proto, name in dst.ports
                    if name == port and proto == protocol
                }
        return out


def _policy_types(spec: Mapping[str, Any]) -> set[str]:
    written = spec.get("policyTypes")
    if written:
        return set(written)
    return {"Ingress", *(["Egress"] if spec.get("egress") else [])}


def oracle_probes(cluster: GenCluster) -> list[int]:
    numbers = {*PORT_NUMBERS, *(n for pod in cluster.pods for n, _, _ in pod.ports)}
    near = {n + d for n in numbers for d in (-1, 0, 1)} | {2, 4242, 65534}
    return sorted(n for n in near if 1 <= n <= 65535)


@SLOW
@given(cluster=clusters(tiers=True))
def test_engine_matches_spec_oracle(cluster: GenCluster) -> None:
    state = build(cluster)
    generated = {(p.namespace, p.name): p for p in cluster.pods}
    assert len(generated) == len(cluster.pods)
    match = {id(p): generated[p.namespace, p.name] for p in state.pods}
    # The records the engine reads are the manifests as the API server would read them:
    # null labels are "", protocol defaults to TCP, podIP and podIPs merged, owners resolved.
    for pod in state.pods:
        gen = match[id(pod)]
        assert dict(pod.labels) == gen.labels
        assert [(p.port, p.protocol, p.name) for p in pod.ports] == gen.ports
        assert sorted(map(str, pod.ips)) == sorted(map(str, gen.ips))
        assert pod.host_network == gen.host_network
        assert (pod.owner.kind, pod.owner.name) == gen.owner
    for name, ns_labels in cluster.namespaces.items():
        assert dict(state.namespaces[name].labels) == ns_labels
    probes = oracle_probes(cluster)
    for mode, family in itertools.product(("pod", "node"), (None, 4, 6)):
        compare_with_oracle(state, cluster, match, probes, mode, family)
    # Each policy alone, too: in a full cluster, rules open to everyone and deny-all
    # policies hide most of what the other rules decide.
    for policy in state.policies:
        index = int(policy.name.removeprefix("np"))
        alone = ClusterState(state.namespaces, state.pods, [policy])
        sub = replace(cluster, policies=[cluster.policies[index]], tier_policies=[])
        for mode in ("pod", "node"):
            compare_with_oracle(alone, sub, match, probes, mode, None)
    written = {(d["kind"], d["metadata"]["name"]): d for d in cluster.tier_policies}
    for tiered in state.cluster_policies:
        doc = written[tiered.kind, tiered.name]
        alone = ClusterState(
            state.namespaces, state.pods, [], cluster_policies=[tiered], nodes=state.nodes
        )
        sub = replace(cluster, policies=[], tier_policies=[doc])
        for mode in ("pod", "node"):
            compare_with_oracle(alone, sub, match, probes, mode, None)


def compare_with_oracle(
    state: ClusterState,
    cluster: GenCluster,
    match: Mapping[int, GenPod],
    probes: list[int],
    mode: HostNetworkMode,
    family: int | None,
) -> None:
    engine = Engine(state, family=family, host_network=mode)
    oracle = Oracle(cluster, family, mode, probes)
    where = f"host_network={mode} family={family}"
    for src in state.pods:
        for dst in state.pods:
            if src is dst:
                continue
            got = observed(engine.verdict(src, dst).conns, probes)
            want = oracle.verdict(match[id(src)], match[id(dst)])
            assert got == want, describe(
                state,
                where,
                f"{src.key} -> {dst.key}",
                f"engine-only {sorted(got - want)}",
                f"oracle-only {sorted(want - got)}",
            )
        for ip in EXTERNAL_PROBES:
            got = observed(engine.verdict(src, ip).conns, probes)
            want = oracle.verdict(match[id(src)], ip)
            assert got == want, describe(state, where, f"{src.key} -> {ip}")
            got = observed(engine.verdict(ip, src).conns, probes)
            want = oracle.verdict(ip, match[id(src)])
            assert got == want, describe(state, where, f"{ip} -> {src.key}")


# ---------------------------------------------------------------------------------------
# 5. Garbage in: problems out, never an exception
# ---------------------------------------------------------------------------------------

FIELDS = [
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "namespace",
    "labels",
    "spec",
    "status",
    "podSelector",
    "namespaceSelector",
    "matchLabels",
    "matchExpressions",
    "key",
    "operator",
    "values",
    "ipBlock",
    "cidr",
    "except",
    "ingress",
    "egress",
    "from",
    "to",
    "ports",
    "port",
    "endPort",
    "protocol",
    "policyTypes",
    "containers",
    "initContainers",
    "containerPort",
    "hostNetwork",
    "nodeName",
    "podIP",
    "podIPs",
    "ip",
    "phase",
    "template",
    "jobTemplate",
    "replicas",
    "ownerReferences",
    "controller",
    "items",
    "podselector",
    "subject",
    "priority",
    "tier",
    "action",
    "namespaces",
    "pods",
    "nodes",
    "networks",
    "domainNames",
    "portNumber",
    "portRange",
    "namedPort",
    "start",
    "end",
    "protocols",
    "tcp",
    "destinationPort",
    "number",
    "addresses",
    "address",
]
STRINGS = [
    "",
    "a",
    "TCP",
    "tcp",
    "UDP",
    "SCTP",
    "ICMP",
    "In",
    "NotIn",
    "Exists",
    "Gt",
    "Allow",
    "Deny",
    "Pass",
    "Accept",
    "Admin",
    "Baseline",
    "Ingress",
    "Egress",
    "http",
    "HTTP",
    "80",
    "10.0.0.0/8",
    "10.0.0.1",
    "10.0.0.0/33",
    "::/0",
    "fd00::1",
    "fe80::1%eth0",
    "0.0.0.0/0",
    "not-an-ip",
    "app=web",
    "Bad_Name",
    "-x-",
    "x" * 70,
    "NetworkPolicy",
    "Pod",
    "Namespace",
    "Deployment",
    "List",
    "default",
    "kube-system",
]
KINDS = [
    "AdminNetworkPolicy",
    "BaselineAdminNetworkPolicy",
    "ClusterNetworkPolicy",
    "Node",
    "NetworkPolicy",
    "Pod",
    "Namespace",
    "Deployment",
    "CronJob",
    "List",
    "NetworkPolicyList",
    "Service",
]
# Small integers only: a huge `replicas` would (legitimately, for a valid count) expand into
# that many pods; the int32 limit is tested separately below.
INTEGERS = st.sampled_from([-1, 0, 1, 2, 53, 80, 65535, 65536])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    INTEGERS,
    st.floats(allow_nan=False, width=16),
    st.sampled_from(STRINGS),
    st.text(max_size=6),
)
garbage = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=4)), inner, max_size=4),
    ),
    max_leaves=20,
)


@st.composite
def garbage_documents(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {"kind": draw(st.sampled_from(KINDS))}
    for field in ("metadata", "spec", "status", "items", "apiVersion"):
        if draw(st.booleans()):
            doc[field] = draw(garbage)
    if draw(st.booleans()):
        doc["metadata"] = {
            "name": draw(st.one_of(st.sampled_from(["x", "y"]), scalars)),
            "namespace": draw(st.one_of(st.just("default"), scalars)),
            "labels": draw(garbage),
        }
    return doc


def mutate(draw: st.DrawFn, node: Any, depth: int = 0) -> Any:
    """`node` with one random subtree replaced by garbage (or deleted, for map entries)."""
    if isinstance(node, dict) and node and draw(st.integers(0, 5)):
        key = draw(st.sampled_from(sorted(node)))
        copy = dict(node)
        if draw(st.integers(0, 6)) == 0 and key != "kind":
            del copy[key]
        else:
            copy[key] = mutate(draw, node[key], depth + 1)
        return copy
    if isinstance(node, list) and node and draw(st.integers(0, 5)):
        index = draw(st.integers(0, len(node) - 1))
        return [*node[:index], mutate(draw, node[index], depth + 1), *node[index + 1 :]]
    return draw(garbage)


@st.composite
def mutated_documents(draw: st.DrawFn) -> dict[str, Any]:
    cluster = draw(clusters(tiers=True))
    doc = draw(st.sampled_from(cluster.docs))
    mutated = mutate(draw, doc)
    return (
        mutated
        if isinstance(mutated, dict) and isinstance(mutated.get("kind"), str)
        else {**doc, "spec": mutated}
    )


def _dump(docs: list[Any], how: str) -> str:
    if how == "json":
        return "\n---\n".join(json.dumps(d) for d in docs)
    return yaml.safe_dump_all(docs)


def _survives(text: str) -> ClusterState:
    manifests = load_text(text, "garbage.yaml")
    state = ClusterState.build(manifests)
    for problem in state.problems:
        assert problem.severity in ("error", "warning")
        str(problem)
        problem.as_dict()
    # Whatever survived validation must be usable downstream.
    for mode in ("pod", "node"):
        matrix = ClusterMatrix(state, host_network=mode)
        for line in connectivity(state, matrix):
            str(line)
            line.as_dict()
    return state


def _check_reported(doc: dict[str, Any], how: str) -> None:
    """A single object of a kind netfence reads is either taken in or reported."""
    state = _survives(_dump([doc], how))
    kind = doc.get("kind")
    if kind == "NetworkPolicy":
        assert len(state.policies) == 1 or state.problems, doc
    elif kind == "Pod":
        assert len(state.pods) == 1 or state.problems, doc
    elif kind == "Namespace":
        assert len(state.namespaces) == 1 or state.problems, doc


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    docs=st.lists(st.one_of(garbage_documents(), garbage), min_size=1, max_size=4),
    how=st.sampled_from(["yaml", "json"]),
)
@example(docs=[{"kind": "List", "items": True}], how="yaml")  # crashed before e435292
def test_garbage_documents_give_problems_not_exceptions(docs: list[Any], how: str) -> None:
    _survives(_dump(docs, how))
    for doc in docs:
        if isinstance(doc, dict) and not str(doc.get("kind", "")).endswith("List"):
            _check_reported(doc, how)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(doc=mutated_documents(), how=st.sampled_from(["yaml", "json"]))
def test_mutated_valid_documents_give_problems_not_exceptions(doc: dict, how: str) -> None:
    _check_reported(doc, how)


@settings(max_examples=150, deadline=None)
@given(
    text=st.one_of(
        st.text(max_size=80),
        st.lists(
            st.sampled_from(
                [
                    "kind: Pod",
                    "kind: NetworkPolicy",
                    "---",
                    "metadata:",
                    "  name: x",
                    "spec: [",
                    "- a",
                    ": :",
                    "{",
                    "}",
                    "!!binary x",
                    "? [a]\n: b",
                    "2001-01-01",
                    "&a [*a]",
                    "\t",
                ]
            ),
            max_size=8,
        ).map("\n".join),
    )
)
def test_garbage_text_gives_problems_not_exceptions(text: str) -> None:
    _survives(text)


# ---------------------------------------------------------------------------------------
# What the properties found, pinned down minimally: regressions for what is fixed, and
# xfail(strict=True) for what is still open (so that a fix is noticed).
# ---------------------------------------------------------------------------------------


def test_namespace_name_label_is_always_the_name() -> None:
    """Regression (fixed in ecd96d2; the oracle property catches it again): the API server
    always sets `kubernetes.io/metadata.name` to the namespace's name (NamespaceDefaultLabel-
    Name, GA in 1.22), whatever the manifest says. netfence kept the manifest's value, so a
    namespaceSelector for `dev` also selected namespace `prod` written with that label."""
    text = """
apiVersion: v1
kind: Namespace
metadata: {name: prod, labels: {kubernetes.io/metadata.name: dev}}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: prod}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: dev}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-dev, namespace: dev}
spec:
  podSelector: {}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: dev}}
"""
    state = ClusterState.build(load_text(text))
    assert state.errors == []
    assert state.namespaces["prod"].labels[NAME_LABEL] == "prod"
    a, b = state.find_pods("prod", "a")[0], state.find_pods("dev", "b")[0]
    assert not Engine(state).verdict(a, b).conns


@pytest.mark.parametrize("text", ["{kind: List, items: true}", "{kind: PodList, items: 1}"])
def test_list_with_non_list_items_is_reported(text: str) -> None:
    """Regression (found by the garbage property, fixed in e435292): `_flatten` iterated
    `items` as given, so a truthy scalar raised TypeError out of `load_text`."""
    assert _survives(text).problems


def test_replicas_beyond_int32_are_rejected() -> None:
    """Regression (fixed in e435292): `replicas` is an int32 on the API server; larger
    values were accepted and then expanded into that many pod records (a hang)."""
    from netfence.k8s.validation import validate

    text = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec: {replicas: 2147483648, template: {metadata: {labels: {app: web}}}}
"""
    manifests = load_text(text)
    # validate() only: were it accepted, ClusterState.build would create 2**31 pods.
    problems = manifests.problems + [p for o in manifests.objects for p in validate(o)]
    assert any(p.severity == "error" for p in problems)


def test_ipv6_zone_index_is_rejected() -> None:
    text = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: zoned}
spec:
  podSelector: {}
  ingress:
  - from:
    - ipBlock: {cidr: "fe80::%eth0/64"}
"""
    state = ClusterState.build(load_text(text))
    assert state.errors, "an ipBlock the API server rejects was accepted"
