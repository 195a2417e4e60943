"""The intermediate representation: policies normalised once, every rule with its provenance.

A `CompiledPolicy` says which pods it isolates in which direction and lists `Rule`s of
peers x ports. Defaults of the API are made explicit here (policyTypes, empty `from`/`to`
and `ports` meaning "all", a peer's namespace defaulting to the policy's own), so nothing
downstream (engine, matrix, explanations, dataplane compiler) re-derives them.

The cluster-wide tiers (AdminNetworkPolicy, BaselineAdminNetworkPolicy and v1alpha2's
ClusterNetworkPolicy) become `TierPolicy`s in the same terms: a subject (a `PodPeer`), and
rules of peers x ports that now carry an action (Allow, Deny, Pass; v1alpha2's Accept is
Allow) and are evaluated in order. Both API generations compile to this one form, so the
engine knows tiers, not API versions. `nodes` peers are resolved here into the addresses of
the nodes they select (an `IPPeer`, like an ipBlock), so every consumer, the dataplane
included, sees node traffic as addresses and needs nothing of Node objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from netfence.cluster.state import ClusterPolicy, ClusterState, ContainerPort, Node, Policy
from netfence.k8s.models import (
    AdminPort,
    ClusterNetworkPolicySpec,
    ClusterPolicyPeer,
    ClusterPolicyRule,
    NamespacedPod,
    NetworkPolicyPeer,
    NetworkPolicyPort,
    ProtocolMatch,
)
from netfence.k8s.validation import parse_cidr
from netfence.policy.conns import ALL_CONNS, NO_CONNS, Conns
from netfence.policy.ipranges import IPRanges
from netfence.policy.selectors import Selector

Direction = Literal["ingress", "egress"]
Action = Literal["Allow", "Deny", "Pass"]
Tier = Literal["admin", "networkpolicy", "baseline"]
TIERS: tuple[Tier, ...] = ("admin", "networkpolicy", "baseline")  # evaluation order


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where a rule comes from: `production/allow-web ingress[0]`."""

    policy: str  # namespace/name
    direction: Direction
    rule: int

    def __str__(self) -> str:
        return f"{self.policy} {self.direction}[{self.rule}]"


@dataclass(frozen=True, slots=True)
class PortMatch:
    """One entry of a rule's `ports`: a protocol with a number, a range, a name, or all.

    `protocol` is None only for the named ports of cluster-wide policies, which carry no
    protocol: the name matches a container port of any protocol, and that port's own protocol
    is the one matched (NetworkPolicy's named ports match name and protocol together).
    """

    protocol: str | None
    port: int | str | None = None
    end_port: int | None = None

    @property
    def is_named(self) -> bool:
        return isinstance(self.port, str)

    def resolve(self, dst_ports: Iterable[ContainerPort]) -> Conns:
        """The ports this entry allows on a destination with these container ports."""
        if isinstance(self.port, str):
            result = NO_CONNS
            for p in dst_ports:
                if p.name == self.port and self.protocol in (None, p.protocol):
                    result = result | Conns.port(p.protocol, p.port)
            return result
        assert self.protocol is not None  # only named ports leave the protocol open
        if self.port is None:
            return Conns.all_ports(self.protocol)
        return Conns.port(self.protocol, self.port, self.end_port)

    def __str__(self) -> str:
        if self.protocol is None:
            return f"named port {self.port}"
        if self.port is None:
            return f"{self.protocol} (all ports)"
        if self.end_port is not None:
            return f"{self.protocol} {self.port}-{self.end_port}"
        return f"{self.protocol} {self.port}"


@dataclass(frozen=True, slots=True)
class PodPeer:
    """Pods matching `pods` in the namespace `namespace`, or in namespaces matching `namespaces`.

    Exactly one of `namespace` (a podSelector-only peer: the policy's own namespace) and
    `namespaces` (a namespaceSelector was given) is set.
    """

    pods: Selector
    namespace: str | None = None
    namespaces: Selector | None = None

    def __str__(self) -> str:
        where = (
            f"namespace {self.namespace}"
            if self.namespace is not None
            else (
                "all namespaces"
                if self.namespaces is None or self.namespaces.is_empty
                else f"namespaces {self.namespaces}"
            )
        )
        which = "all pods" if self.pods.is_empty else f"pods {self.pods}"
        return f"{which} in {where}"


@dataclass(frozen=True, slots=True)
class IPPeer:
    """A peer matched by address: a NetworkPolicy ipBlock, one CIDR of a cluster-wide policy's
    `networks`, or a `nodes` peer, resolved when compiled into the addresses of the nodes its
    selector matches (so a node is a set of IPs to every consumer, the dataplane included, and
    a host-network pod, which has its node's address, matches too).

    `cidr` is the CIDR as written; for a `nodes` peer, the selector, with `nodes` the names
    of the nodes it matched.
    """

    block: IPRanges
    cidr: str
    excepts: tuple[str, ...] = ()
    field: Literal["ipBlock", "network", "nodes"] = "ipBlock"
    nodes: tuple[str, ...] = ()

    @property
    def families(self) -> frozenset[int]:
        if self.field == "nodes":
            return frozenset(span[0] for span in self.block.spans)
        return frozenset((6 if ":" in self.cidr else 4,))

    def __str__(self) -> str:
        if self.field == "nodes":
            which = "all nodes" if self.cidr == "{}" else f"nodes {self.cidr}"
            return f"{which} ({', '.join(self.nodes) if self.nodes else 'none known'})"
        return f"{self.field} {self.cidr}" + (
            f" except {', '.join(self.excepts)}" if self.excepts else ""
        )


Peer = PodPeer | IPPeer


@dataclass(frozen=True, slots=True)
class Rule:
    """Peers (None: everyone) x ports (None: every port and protocol), and what matching
    traffic gets: NetworkPolicy rules allow; cluster-wide rules allow, deny or pass."""

    peers: tuple[Peer, ...] | None
    ports: tuple[PortMatch, ...] | None
    provenance: Provenance
    action: Action = "Allow"
    name: str = ""  # a cluster-wide rule's optional name

    @property
    def has_named_ports(self) -> bool:
        return self.ports is not None and any(p.is_named for p in self.ports)

    def conns_for(self, dst_ports: Iterable[ContainerPort]) -> Conns:
        if self.ports is None:
            return ALL_CONNS
        dst_ports = tuple(dst_ports)
        result = NO_CONNS
        for port in self.ports:
            result = result | port.resolve(dst_ports)
        return result


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    namespace: str
    name: str
    pod_selector: Selector
    isolates_ingress: bool
    isolates_egress: bool
    ingress: tuple[Rule, ...]
    egress: tuple[Rule, ...]

    tier: Tier = "networkpolicy"
    kind: str = "NetworkPolicy"

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def rank(self) -> tuple[int, int, str, str]:
        """Sort key of evaluation order. NetworkPolicies have no order among themselves (their
        union decides), so they tie: a stable sort keeps them as declared."""
        return (TIERS.index(self.tier), 0, "", "")

    def rules(self, direction: Direction) -> tuple[Rule, ...]:
        return self.ingress if direction == "ingress" else self.egress

    def isolates(self, direction: Direction) -> bool:
        return self.isolates_ingress if direction == "ingress" else self.isolates_egress


@dataclass(frozen=True, slots=True)
class TierPolicy:
    """A cluster-wide policy of the admin or the baseline tier.

    It takes part in a direction only when it has rules there (a policy with no ingress rules
    leaves ingress alone: cluster-wide rules have no implicit deny). Within a tier, policies
    go by priority (lower first; the BANP has none and goes last), then kind and name, the
    tie-break for equal priorities, which validation reports as an error.
    """

    kind: str  # AdminNetworkPolicy, BaselineAdminNetworkPolicy, ClusterNetworkPolicy
    name: str
    tier: Tier
    priority: int | None
    subject: PodPeer
    ingress: tuple[Rule, ...]
    egress: tuple[Rule, ...]

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def rank(self) -> tuple[int, int, str, str]:
        priority = PRIORITY_MAX + 1 if self.priority is None else self.priority
        return (TIERS.index(self.tier), priority, self.kind, self.name)

    def rules(self, direction: Direction) -> tuple[Rule, ...]:
        return self.ingress if direction == "ingress" else self.egress

    def isolates(self, direction: Direction) -> bool:
        return bool(self.rules(direction))


AnyPolicy = CompiledPolicy | TierPolicy
PRIORITY_MAX = 1000


def evaluation_order(policies: Iterable[AnyPolicy]) -> list[AnyPolicy]:
    return sorted(policies, key=lambda p: p.rank)


def compile_policy(policy: Policy) -> CompiledPolicy:
    spec = policy.spec
    key = policy.key
    types = spec.policy_types
    if types:
        ingress_isolation, egress_isolation = "Ingress" in types, "Egress" in types
    else:  # the API server's defaulting: Ingress always, Egress when egress rules exist
        ingress_isolation, egress_isolation = True, bool(spec.egress)
    ingress = tuple(
        Rule(_peers(r.from_, policy.namespace), _ports(r.ports), Provenance(key, "ingress", i))
        for i, r in enumerate(spec.ingress or ())
    )
    egress = tuple(
        Rule(_peers(r.to, policy.namespace), _ports(r.ports), Provenance(key, "egress", i))
        for i, r in enumerate(spec.egress or ())
    )
    return CompiledPolicy(
        namespace=policy.namespace,
        name=policy.name,
        pod_selector=Selector.compile(spec.pod_selector),
        isolates_ingress=ingress_isolation,
        isolates_egress=egress_isolation,
        # Rules of a direction the policy does not isolate have no effect: a pod not
        # isolated in that direction already allows everything.
        ingress=ingress if ingress_isolation else (),
        egress=egress if egress_isolation else (),
    )


def _peers(peers: list[NetworkPolicyPeer] | None, namespace: str) -> tuple[Peer, ...] | None:
    if not peers:
        return None
    return tuple(_peer(p, namespace) for p in peers)


def _peer(peer: NetworkPolicyPeer, namespace: str) -> Peer:
    if peer.ip_block is not None:
        cidr = parse_cidr(peer.ip_block.cidr)
        holes = [h for h in (parse_cidr(e) for e in peer.ip_block.except_) if h is not None]
        if cidr is None:  # validation rejects this; an empty block matches nothing
            return IPPeer(IPRanges(), peer.ip_block.cidr)
        return IPPeer(IPRanges.block(cidr, holes), peer.ip_block.cidr, tuple(peer.ip_block.except_))
    pods = Selector.compile(peer.pod_selector)
    if peer.namespace_selector is None:
        return PodPeer(pods, namespace=namespace)
    return PodPeer(pods, namespaces=Selector.compile(peer.namespace_selector))


def _ports(ports: list[NetworkPolicyPort] | None) -> tuple[PortMatch, ...] | None:
    if not ports:
        return None
    return tuple(PortMatch(p.protocol or "TCP", p.port, p.end_port) for p in ports)


def compile_state(state: ClusterState) -> list[AnyPolicy]:
    """Every policy of a cluster, of every tier, compiled."""
    return [
        *(compile_policy(p) for p in state.policies),
        *(compile_cluster_policy(p, state.nodes) for p in state.cluster_policies),
    ]


# -- the cluster-wide tiers ------------------------------------------------------------------

_ACTIONS: dict[str, Action] = {"Allow": "Allow", "Accept": "Allow", "Deny": "Deny", "Pass": "Pass"}


def compile_cluster_policy(policy: ClusterPolicy, nodes: Mapping[str, Node]) -> TierPolicy:
    """An AdminNetworkPolicy, BaselineAdminNetworkPolicy or ClusterNetworkPolicy, validated."""
    spec = policy.spec
    if isinstance(spec, ClusterNetworkPolicySpec):
        tier: Tier = "admin" if spec.tier == "Admin" else "baseline"
    else:
        tier = "baseline" if policy.kind == "BaselineAdminNetworkPolicy" else "admin"
    subject = spec.subject
    if subject.pods is not None:
        target = _namespaced_pods(subject.pods)
    else:
        target = PodPeer(Selector(), namespaces=Selector.compile(subject.namespaces))
    key = policy.key
    return TierPolicy(
        kind=policy.kind,
        name=policy.name,
        tier=tier,
        priority=getattr(spec, "priority", None),
        subject=target,
        ingress=_tier_rules(spec.ingress, key, "ingress", nodes),
        egress=_tier_rules(spec.egress, key, "egress", nodes),
    )


def _namespaced_pods(pods: NamespacedPod) -> PodPeer:
    return PodPeer(
        Selector.compile(pods.pod_selector), namespaces=Selector.compile(pods.namespace_selector)
    )


def _tier_rules(
    rules: Sequence[ClusterPolicyRule], key: str, direction: Direction, nodes: Mapping[str, Node]
) -> tuple[Rule, ...]:
    return tuple(
        Rule(
            peers=tuple(
                p
                for peer in (rule.from_ if direction == "ingress" else rule.to) or ()
                for p in tier_peers(peer, nodes)
            ),
            ports=_tier_ports(rule.ports, rule.protocols),
            provenance=Provenance(key, direction, i),
            action=_ACTIONS.get(rule.action, "Deny"),  # validated: never the fallback
            name=rule.name or "",
        )
        for i, rule in enumerate(rules)
    )


def tier_peers(peer: ClusterPolicyPeer, nodes: Mapping[str, Node]) -> list[Peer]:
    """One validated peer (exactly one field). `domainNames` cannot be resolved without the
    cluster's DNS: such a peer matches no address (lint says so), which for the Allow rules
    that alone may use it is the safe reading."""
    if peer.namespaces is not None:
        return [PodPeer(Selector(), namespaces=Selector.compile(peer.namespaces))]
    if peer.pods is not None:
        return [_namespaced_pods(peer.pods)]
    if peer.nodes is not None:
        selector = Selector.compile(peer.nodes)
        chosen = sorted((n for n in nodes.values() if selector.matches(n.labels)), key=str)
        block = IPRanges.addresses(ip for n in chosen for ip in n.addresses)
        return [IPPeer(block, str(selector), field="nodes", nodes=tuple(n.name for n in chosen))]
    out: list[Peer] = []
    for cidr in peer.networks or ():
        network = parse_cidr(cidr)
        if network is not None:
            out.append(IPPeer(IPRanges.block(network), cidr, field="network"))
    return out


def _tier_ports(
    ports: list[AdminPort] | None, protocols: list[ProtocolMatch] | None
) -> tuple[PortMatch, ...] | None:
    if ports is None and protocols is None:
        return None
    out: list[PortMatch] = []
    for port in ports or ():
        if port.port_number is not None:
            out.append(PortMatch(port.port_number.protocol, port.port_number.port))
        elif port.port_range is not None:
            r = port.port_range
            out.append(PortMatch(r.protocol, r.start, r.end))
        elif port.named_port is not None:
            out.append(PortMatch(None, port.named_port))
    for match in protocols or ():
        if match.destination_named_port is not None:
            out.append(PortMatch(None, match.destination_named_port))
        for protocol, entry in (("TCP", match.tcp), ("UDP", match.udp), ("SCTP", match.sctp)):
            dest = entry.destination_port if entry is not None else None
            if dest is not None and dest.number is not None:
                out.append(PortMatch(protocol, dest.number))
            elif dest is not None and dest.range is not None:
                out.append(PortMatch(protocol, dest.range.start, dest.range.end))
    return tuple(out)
