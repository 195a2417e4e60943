"""The compiled table, checked without a kernel: a faithful simulation of its lookups must
give the engine's verdict for every source, destination and port, in both families."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from netfence.cluster.state import ClusterState, Pod
from netfence.dataplane.compile import render_table
from netfence.dataplane.program import CONN_TAG, NodeProgram, Side
from netfence.policy.engine import Engine
from tests.conftest import build


def _lookup_range(side: Side, ip: str) -> int:
    value = ipaddress.ip_address(ip)
    for (lo, hi), column in side.ranges.data.items():
        if ipaddress.ip_address(lo) <= value <= ipaddress.ip_address(hi):
            return int(column)
    return 0


def simulate(program: NodeProgram, family: int, src: str, dst: str, proto: str, port: int) -> bool:
    """What the forward chain decides for a new connection (see dataplane/compile.py).

    Written here from the chain's text, independently of `NodeProgram.allows` (which the
    conntrack sweep uses), and checked to agree with it."""
    verdict = _simulate(program, family, src, dst, proto, port)
    s_ip, d_ip = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    assert program.allows(s_ip, d_ip, proto, port) == verdict, (src, dst, proto, port)
    return verdict


def _simulate(program: NodeProgram, family: int, src: str, dst: str, proto: str, port: int) -> bool:

    def side(tables: Side, own_ip: str, peer_ip: str) -> bool:
        mark = tables.own.data.get(ipaddress.ip_address(own_ip), 0)
        if mark == 0:
            return True  # not isolated on this node: this side allows
        ct = tables.peer.data.get(ipaddress.ip_address(peer_ip), 0) or _lookup_range(
            tables, peer_ip
        )
        mark = tables.pairs.data.get((mark, ct), mark)
        mark = tables.default.data.get(mark, mark)  # a tag is never a row: no hit then
        return any(
            tag == mark and p == proto and lo <= port <= hi
            for tag, p, lo, hi in program.conn_ports.data
        )

    return side(program.sides[(family, "egress")], src, dst) and side(
        program.sides[(family, "ingress")], dst, src
    )


def _place(state: ClusterState, nodes: int = 2) -> ClusterState:
    """Give every pod a node and addresses in both families, as the lab does."""
    placed = []
    for i, pod in enumerate(state.pods):
        ips = pod.ips or (
            ipaddress.ip_address(f"10.244.{i % nodes}.{10 + i}"),
            ipaddress.ip_address(f"fd00:10:244:{i % nodes}::{10 + i:x}"),
        )
        if not any(ip.version == 6 for ip in ips):
            ips = (*ips, ipaddress.ip_address(f"fd00:10:244:{i % nodes}::{10 + i:x}"))
        placed.append(dataclasses.replace(pod, node=f"n{i % nodes}", ips=ips))
    state.pods = placed
    return state


def _ip(pod: Pod, family: int) -> str:
    return str(next(ip for ip in pod.ips if ip.version == family))


def assert_matches_engine(
    state: ClusterState,
    outside: dict[int, list[str]],
    programs: dict[str | None, NodeProgram] | None = None,
) -> None:
    """Every pod pair and every pod<->outside address, each port, both families: the
    table of the node that sees the packet (built afresh unless given) must agree with
    the engine."""
    rulesets = programs or {node: NodeProgram(state, node) for node in {p.node for p in state.pods}}
    for family in (4, 6):
        engine = Engine(state, family=family, host_network="node")
        pods = [p for p in state.pods if not p.host_network]
        for src in pods:
            for dst in pods:
                if src is dst:
                    continue
                for port in {(c.protocol, c.port) for c in dst.ports} | {("TCP", 80)}:
                    expected = engine.verdict(src, dst).allows(*port)
                    # egress is checked on the source's node, ingress on the destination's
                    s_ip, d_ip = _ip(src, family), _ip(dst, family)
                    got = simulate(rulesets[src.node], family, s_ip, d_ip, *port) and simulate(
                        rulesets[dst.node], family, s_ip, d_ip, *port
                    )
                    assert got == expected, (src.key, dst.key, family, port, got, expected)
            for addr in outside[family]:
                ip = ipaddress.ip_address(addr)
                for port in [("TCP", 80), ("UDP", 53), *((c.protocol, c.port) for c in src.ports)]:
                    out_ok = engine.verdict(src, ip).allows(*port)
                    in_ok = engine.verdict(ip, src).allows(*port)
                    rs = rulesets[src.node]
                    assert simulate(rs, family, _ip(src, family), addr, *port) == out_ok, (
                        src.key,
                        addr,
                        port,
                    )
                    assert simulate(rs, family, addr, _ip(src, family), *port) == in_ok, (
                        addr,
                        src.key,
                        port,
                    )


SEED_OUTSIDE = {4: ["169.254.169.254", "203.0.113.7", "10.244.9.9"], 6: ["2001:db8::7"]}


def test_seed_table_matches_engine() -> None:
    from netfence.cluster.state import ClusterState as CS
    from netfence.k8s.loader import load_paths

    state = _place(CS.build(load_paths(["examples/seed"])))
    assert_matches_engine(state, SEED_OUTSIDE)


def test_model_cases_match_engine() -> None:
    """The e2e model with stacked policies: named ports, AND/OR peers, endPort, except."""
    state = _place(
        build(
            """
            apiVersion: networking.k8s.io/v1
            kind: NetworkPolicy
            metadata: {name: deny-all, namespace: x}
            spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
            ---
            apiVersion: networking.k8s.io/v1
            kind: NetworkPolicy
            metadata: {name: a-from-y-b, namespace: x}
            spec:
              podSelector: {matchLabels: {pod: a}}
              ingress:
              - from:
                - namespaceSelector: {matchLabels: {ns: y}}
                  podSelector: {matchLabels: {pod: b}}
                - ipBlock: {cidr: 192.168.0.0/16, except: [192.168.3.0/24]}
                ports: [{port: serve-80-tcp, protocol: TCP}, {port: 81, protocol: UDP}]
            ---
            apiVersion: networking.k8s.io/v1
            kind: NetworkPolicy
            metadata: {name: b-egress, namespace: x}
            spec:
              podSelector: {matchLabels: {pod: b}}
              egress:
              - to: [{podSelector: {}}]
                ports:
                - {port: 80, endPort: 81, protocol: TCP}
                - {port: serve-81-sctp, protocol: SCTP}
              - to: [{ipBlock: {cidr: 0.0.0.0/0, except: [169.254.169.254/32]}}]
            """,
            model=True,
        )
    )
    assert_matches_engine(state, {4: ["169.254.169.254", "8.8.8.8"], 6: ["2001:db8::1"]})


def test_identifiers_are_derived_never_copied() -> None:
    state = _place(
        build(
            """
            apiVersion: v1
            kind: Namespace
            metadata: {name: evil-ns, labels: {drop: accept, chain.example.com/flush: ruleset}}
            ---
            apiVersion: v1
            kind: Pod
            metadata: {name: table.inet.filter, namespace: evil-ns, labels: {accept: drop}}
            spec: {containers: [{name: c, ports: [{name: jump, containerPort: 80}]}]}
            ---
            apiVersion: networking.k8s.io/v1
            kind: NetworkPolicy
            metadata: {name: counter-drop, namespace: evil-ns}
            spec:
              podSelector: {matchLabels: {accept: drop}}
              ingress:
              - from: [{namespaceSelector: {matchLabels: {drop: accept}}}]
                ports: [{port: jump}]
            """
        )
    )
    script = render_table(NodeProgram(state, "n0"))
    for word in ("evil", "table.inet.filter", "counter-drop", "jump ", "ruleset", "accept: "):
        if word == "jump ":
            assert all(
                line.strip().startswith("meta nfproto")
                for line in script.splitlines()
                if "jump " in line
            )
            continue
        assert word not in script
    program = NodeProgram(state, "n0")
    (tag,) = {t for t, *_ in program.conn_ports.data}
    assert tag & CONN_TAG and f"{tag:#x} . tcp . 80-80" in script  # the named port, resolved


@pytest.mark.parametrize("family", [4, 6])
def test_unisolated_pods_are_not_in_the_maps(family: int) -> None:
    state = _place(build("", model=True))
    cidrs = (ipaddress.ip_network("10.244.0.0/24"), ipaddress.ip_network("fd00:10:244::/64"))
    program = NodeProgram(state, "n0", cidrs)
    lookups = [m for side in program.sides.values() for m in (side.own, side.peer, side.ranges)]
    lookups += [m for side in program.sides.values() for m in (side.pairs, side.default)]
    lookups += [program.conn_ports]
    assert sum(len(m.data) for m in lookups) == 0  # nothing isolated: no lookup needs one
    # Known: the pods' addresses in the node's ranges (wherever the pod runs).
    held = {ip for p in state.pods for ip in p.ips if any(ip in c for c in cidrs)}
    assert held and {ip for f in (4, 6) for ip in program.known[f].data} == held
