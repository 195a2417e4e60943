"""The verdict for one source and one destination, with the rules that decide it.

This is the semantics in its plainest form: for each direction, is the pod isolated, and
which rules of which policies select the peer and on which ports. `explain` renders these
records; the whole-cluster matrix (`matrix`) computes the same answers over equivalence
classes and is tested against this module.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from dataclasses import dataclass
from typing import Literal

from netfence.cluster.state import ClusterState, ContainerPort, Pod
from netfence.policy.conns import ALL_CONNS, NO_CONNS, Conns
from netfence.policy.ir import (
    CompiledPolicy,
    Direction,
    IPPeer,
    Peer,
    PodPeer,
    Provenance,
    Rule,
    compile_policy,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Endpoint = Pod | IPAddress
HostNetworkMode = Literal["pod", "node"]


@dataclass(frozen=True, slots=True)
class Contribution:
    provenance: Provenance
    conns: Conns


@dataclass(frozen=True, slots=True)
class DirectionVerdict:
    """One side of a connection: the source's egress or the destination's ingress."""

    direction: Direction
    applies: bool  # False for an IP endpoint: policies only ever govern pods
    isolating: tuple[str, ...]  # policies selecting the pod for this direction
    contributions: tuple[Contribution, ...]  # rules that match the peer (with what they allow)

    @property
    def isolated(self) -> bool:
        return bool(self.isolating)

    @property
    def allowed(self) -> Conns:
        if not self.applies or not self.isolating:
            return ALL_CONNS
        result = NO_CONNS
        for c in self.contributions:
            result = result | c.conns
        return result


@dataclass(frozen=True, slots=True)
class Verdict:
    src: Endpoint
    dst: Endpoint
    egress: DirectionVerdict
    ingress: DirectionVerdict

    @property
    def conns(self) -> Conns:
        return self.egress.allowed & self.ingress.allowed

    def allows(self, protocol: str, port: int) -> bool:
        return (protocol, port) in self.conns


def endpoint_name(endpoint: Endpoint) -> str:
    return endpoint.key if isinstance(endpoint, Pod) else str(endpoint)


class Engine:
    """Policies compiled once against a cluster; answers questions about pairs.

    `family` restricts the pod addresses that ipBlocks are matched against to one IP family,
    as a packet of that family would see them; None matches any of the pod's addresses.

    `host_network` picks one of the two readings Kubernetes allows for hostNetwork pods
    (their behaviour is undefined in the spec, limited to these two):
    - "pod": they are told apart from other node traffic and policies select and govern
      them like any pod (netpol-analyzer's reading, and the analyzer's default);
    - "node": selectors ignore them and their traffic is the node's, matched by ipBlocks
      on their addresses only (what a plugin filtering by pod-network addresses enforces).
    """

    def __init__(
        self, state: ClusterState, family: int | None = None, host_network: HostNetworkMode = "pod"
    ) -> None:
        self.state = state
        self.family = family
        self.host_network = host_network
        self.policies = [compile_policy(p) for p in state.policies]
        self._by_namespace: dict[str, list[CompiledPolicy]] = defaultdict(list)
        self.rules: dict[Provenance, Rule] = {}
        for policy in self.policies:
            self._by_namespace[policy.namespace].append(policy)
            for rule in (*policy.ingress, *policy.egress):
                self.rules[rule.provenance] = rule

    def selecting(self, pod: Pod, direction: Direction) -> list[CompiledPolicy]:
        """Policies that isolate `pod` in `direction`."""
        if pod.host_network and self.host_network == "node":
            return []
        return [
            p
            for p in self._by_namespace.get(pod.namespace, ())
            if p.isolates(direction) and p.pod_selector.matches(pod.labels)
        ]

    def pod_ips(self, pod: Pod) -> tuple[IPAddress, ...]:
        if self.family is None:
            return pod.ips
        return tuple(ip for ip in pod.ips if ip.version == self.family)

    def peer_matches(self, peer: Peer, endpoint: Endpoint) -> bool:
        if isinstance(peer, IPPeer):
            if isinstance(endpoint, Pod):
                return any(ip in peer.block for ip in self.pod_ips(endpoint))
            return endpoint in peer.block
        if not isinstance(endpoint, Pod) or (endpoint.host_network and self.host_network == "node"):
            return False
        return _pod_peer_matches(self.state, peer, endpoint)

    def rule_matches(self, rule: Rule, endpoint: Endpoint) -> bool:
        return rule.peers is None or any(self.peer_matches(p, endpoint) for p in rule.peers)

    def side(
        self,
        pod: Endpoint,
        peer: Endpoint,
        direction: Direction,
        dst_ports: tuple[ContainerPort, ...],
    ) -> DirectionVerdict:
        """`pod`'s `direction` side towards `peer`; named ports resolve on `dst_ports`."""
        if not isinstance(pod, Pod):
            return DirectionVerdict(direction, False, (), ())
        selecting = self.selecting(pod, direction)
        contributions = []
        for policy in selecting:
            for rule in policy.rules(direction):
                if self.rule_matches(rule, peer):
                    conns = rule.conns_for(dst_ports)
                    if conns:
                        contributions.append(Contribution(rule.provenance, conns))
        return DirectionVerdict(
            direction, True, tuple(p.key for p in selecting), tuple(contributions)
        )

    def verdict(self, src: Endpoint, dst: Endpoint) -> Verdict:
        dst_ports = dst.ports if isinstance(dst, Pod) else ()
        return Verdict(
            src,
            dst,
            self.side(src, dst, "egress", dst_ports),
            self.side(dst, src, "ingress", dst_ports),
        )


def _pod_peer_matches(state: ClusterState, peer: PodPeer, pod: Pod) -> bool:
    if peer.namespace is not None:
        if pod.namespace != peer.namespace:
            return False
    else:
        assert peer.namespaces is not None
        namespace = state.namespaces.get(pod.namespace)
        if namespace is None or not peer.namespaces.matches(namespace.labels):
            return False
    return peer.pods.matches(pod.labels)
