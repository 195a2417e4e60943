"""The intermediate representation: policies normalised once, every rule with its provenance.

A `CompiledPolicy` says which pods it isolates in which direction and lists `Rule`s of
peers x ports. Defaults of the API are made explicit here (policyTypes, empty `from`/`to`
and `ports` meaning "all", a peer's namespace defaulting to the policy's own), so nothing
downstream (engine, matrix, explanations, dataplane compiler) re-derives them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from netfence.cluster.state import ContainerPort, Policy
from netfence.k8s.models import NetworkPolicyPeer, NetworkPolicyPort
from netfence.k8s.validation import parse_cidr
from netfence.policy.conns import ALL_CONNS, NO_CONNS, Conns
from netfence.policy.ipranges import IPRanges
from netfence.policy.selectors import Selector

Direction = Literal["ingress", "egress"]


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
    """One entry of a rule's `ports`: a protocol with a number, a range, a name, or all."""

    protocol: str
    port: int | str | None = None
    end_port: int | None = None

    @property
    def is_named(self) -> bool:
        return isinstance(self.port, str)

    def resolve(self, dst_ports: Iterable[ContainerPort]) -> Conns:
        """The ports this entry allows on a destination with these container ports."""
        if self.port is None:
            return Conns.all_ports(self.protocol)
        if isinstance(self.port, int):
            return Conns.port(self.protocol, self.port, self.end_port)
        found = [
            (p.port, p.port)
            for p in dst_ports
            if p.name == self.port and p.protocol == self.protocol
        ]
        return Conns.of(self.protocol, found)

    def __str__(self) -> str:
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
    block: IPRanges
    cidr: str
    excepts: tuple[str, ...] = ()

    @property
    def family(self) -> int:
        return 6 if ":" in self.cidr else 4

    def __str__(self) -> str:
        return f"ipBlock {self.cidr}" + (
            f" except {', '.join(self.excepts)}" if self.excepts else ""
        )


Peer = PodPeer | IPPeer


@dataclass(frozen=True, slots=True)
class Rule:
    """Peers (None: everyone) x ports (None: every port and protocol)."""

    peers: tuple[Peer, ...] | None
    ports: tuple[PortMatch, ...] | None
    provenance: Provenance

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

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def rules(self, direction: Direction) -> tuple[Rule, ...]:
        return self.ingress if direction == "ingress" else self.egress

    def isolates(self, direction: Direction) -> bool:
        return self.isolates_ingress if direction == "ingress" else self.isolates_egress


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
