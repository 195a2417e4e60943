"""The verdict for one source and one destination, with the rules that decide it.

This is the semantics in its plainest form: for each direction, which policies of which tier
select the pod, which of their rules match the peer, and on which ports each rule decides.
`decide_side` holds the tier logic as a pure function of those facts, so that anything that
can group pods and peers by them (the dataplane's rows and columns) decides exactly as here.
`explain` renders these records; the whole-cluster matrix (`matrix`) computes the same
answers over equivalence classes and is tested against this module.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Literal

from netfence.cluster.state import ClusterState, ContainerPort, Pod
from netfence.policy.conns import ALL_CONNS, NO_CONNS, Conns
from netfence.policy.ir import (
    Action,
    AnyPolicy,
    CompiledPolicy,
    Direction,
    IPPeer,
    Peer,
    PodPeer,
    Provenance,
    Rule,
    Tier,
    TierPolicy,
    compile_cluster_policy,
    compile_policy,
    evaluation_order,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Endpoint = Pod | IPAddress
HostNetworkMode = Literal["pod", "node"]


@dataclass(frozen=True, slots=True)
class Contribution:
    """A rule that matches the peer: what its ports cover on this destination (`conns`) and
    the part of that it decided (`decided`): the ports no earlier rule of its tier had taken
    and that its tier got to decide at all."""

    provenance: Provenance
    conns: Conns
    action: Action = "Allow"
    tier: Tier = "networkpolicy"
    decided: Conns = NO_CONNS


@dataclass(frozen=True, slots=True)
class DirectionVerdict:
    """One side of a connection: the source's egress or the destination's ingress."""

    direction: Direction
    applies: bool  # False for an IP endpoint: policies only ever govern pods
    isolating: tuple[str, ...]  # policies selecting the pod for this direction, in order
    contributions: tuple[Contribution, ...]  # rules that match the peer, in evaluation order
    allowed: Conns = ALL_CONNS
    tiers: tuple[Tier, ...] = ()  # the tier of each isolating policy

    @property
    def isolated(self) -> bool:
        return bool(self.isolating)

    @property
    def np_isolated(self) -> bool:
        """Some NetworkPolicy selects the pod: that tier decides whatever the admin tier
        passes or leaves open, and the baseline tier never gets a say."""
        return "networkpolicy" in self.tiers

    def decided_by(self, protocol: str, port: int) -> Contribution | None:
        """The rule that decided this port (a Pass only hands it on), or None: no rule did
        (NetworkPolicy isolation denies it, or else it is allowed by default)."""
        for c in self.contributions:
            if c.action != "Pass" and (protocol, port) in c.decided:
                return c
        return None


def decide_side(
    direction: Direction,
    selecting: Iterable[AnyPolicy],
    matched: Collection[Provenance],
    dst_ports: Iterable[ContainerPort],
) -> DirectionVerdict:
    """One side of a connection from what selects the pod and which rules match the peer.

    Pure: `selecting` are the policies of every tier that select the pod in `direction` (in
    any order), `matched` the provenances of their rules whose peers match the other end,
    `dst_ports` the destination's container ports (named ports resolve on them). Per port:
    1. the admin tier, policy by policy in priority order, rule by rule in written order: the
       first matching rule decides (Allow, Deny), or Pass hands the port to the next tier;
    2. if a NetworkPolicy selects the pod, it decides every port the admin tier did not: the
       union of its matching rules is allowed, the rest denied;
    3. otherwise the baseline tier, first matching rule: Allow, Deny, or (v1alpha2) Pass on
       to the default;
    4. a port no rule decided is allowed.
    """
    dst_ports = tuple(dst_ports)
    ordered = evaluation_order(selecting)
    np_isolated = any(p.tier == "networkpolicy" for p in ordered)
    # Per ordered tier: the ports no rule took yet; those Allow rules took; those neither an
    # Allow nor a Deny took (passed on to the next tier, or untaken).
    undecided = {"admin": ALL_CONNS, "baseline": ALL_CONNS}
    allowed = {"admin": NO_CONNS, "networkpolicy": NO_CONNS, "baseline": NO_CONNS}
    open_ = {"admin": ALL_CONNS, "baseline": ALL_CONNS}
    contributions = []
    for policy in ordered:
        tier = policy.tier
        for rule in policy.rules(direction):
            if rule.provenance not in matched:
                continue
            conns = rule.conns_for(dst_ports)
            if not conns:
                continue
            if tier == "networkpolicy":
                allowed[tier] = allowed[tier] | conns
                decided = conns & open_["admin"]
            else:  # first match wins, per port
                taken = conns & undecided[tier]
                undecided[tier] = undecided[tier] - conns
                if rule.action == "Allow":
                    allowed[tier] = allowed[tier] | taken
                if rule.action != "Pass":
                    open_[tier] = open_[tier] - taken
                # The baseline only sees what the admin tier left open, and only when no
                # NetworkPolicy selects the pod.
                decided = (
                    taken
                    if tier == "admin"
                    else (NO_CONNS if np_isolated else taken & open_["admin"])
                )
            contributions.append(Contribution(rule.provenance, conns, rule.action, tier, decided))
    # After the baseline comes the default: allow (ports passed there included).
    below = allowed["networkpolicy"] if np_isolated else allowed["baseline"] | open_["baseline"]
    return DirectionVerdict(
        direction,
        True,
        tuple(p.key for p in ordered),
        tuple(contributions),
        allowed["admin"] | (open_["admin"] & below),
        tuple(p.tier for p in ordered),
    )


def side_conns(
    direction: Direction,
    selecting: Iterable[AnyPolicy],
    matched: Collection[Provenance],
    dst_ports: Iterable[ContainerPort],
) -> Conns:
    """What one side allows: `decide_side`'s answer without the explanation."""
    return decide_side(direction, selecting, matched, dst_ports).allowed


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
      on their addresses only (what a plugin filtering by pod-network addresses enforces,
      and what the network-policy-api specifies for cluster-wide subjects and peers).
    """

    def __init__(
        self, state: ClusterState, family: int | None = None, host_network: HostNetworkMode = "pod"
    ) -> None:
        self.state = state
        self.family = family
        self.host_network = host_network
        self.policies = [compile_policy(p) for p in state.policies]
        # Admin then baseline tier, each in evaluation order.
        self.tier_policies: list[TierPolicy] = sorted(
            (compile_cluster_policy(p, state.nodes) for p in state.cluster_policies),
            key=lambda p: p.rank,
        )
        self._by_namespace: dict[str, list[CompiledPolicy]] = defaultdict(list)
        self.rules: dict[Provenance, Rule] = {}
        self.by_key: dict[str, AnyPolicy] = {}
        every: list[AnyPolicy] = [*self.policies, *self.tier_policies]
        for policy in every:
            self.by_key[policy.key] = policy
            if isinstance(policy, CompiledPolicy):
                self._by_namespace[policy.namespace].append(policy)
            for rule in (*policy.ingress, *policy.egress):
                self.rules[rule.provenance] = rule

    def selecting(self, pod: Pod, direction: Direction) -> list[AnyPolicy]:
        """Policies of every tier that take part in `pod`'s `direction`, in evaluation order."""
        if pod.host_network and self.host_network == "node":
            return []
        tiered = [
            p
            for p in self.tier_policies
            if p.isolates(direction) and _pod_peer_matches(self.state, p.subject, pod)
        ]
        local = [
            p
            for p in self._by_namespace.get(pod.namespace, ())
            if p.isolates(direction) and p.pod_selector.matches(pod.labels)
        ]
        return evaluation_order([*tiered, *local])

    def named_ports(self, pod: Pod) -> tuple[ContainerPort, ...]:
        """The container ports a rule's named port resolves on when `pod` is the destination.

        None for a hostNetwork pod in "node" mode: its traffic is its node's, and one node
        address stands for every hostNetwork pod there, which may name ports differently,
        so a name cannot be resolved on the address a packet carries (Calico and Cilium
        resolve named ports on pod-network endpoints only)."""
        return () if pod.host_network and self.host_network == "node" else pod.ports

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
        matched = {
            rule.provenance
            for policy in selecting
            for rule in policy.rules(direction)
            if self.rule_matches(rule, peer)
        }
        return decide_side(direction, selecting, matched, dst_ports)

    def verdict(self, src: Endpoint, dst: Endpoint) -> Verdict:
        dst_ports = self.named_ports(dst) if isinstance(dst, Pod) else ()
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
