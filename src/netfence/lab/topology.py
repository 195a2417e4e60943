"""Planning a lab: which namespaces, addresses and routes stand for a `ClusterState`.

Pure data and arithmetic, so it is tested without root and the builder (`netns`) is a
plain transcription of the plan into `ip` commands. The shape mirrors a small kubenet-like
cluster:

- nodes `nf-<lab>-n<i>`, each with a bridge `br0` that is the gateway of its pods, IP
  forwarding on, and `ul0` on the underlay;
- the underlay `nf-<lab>-net`: one bridge that every node (and the outside) plugs into,
  172.31.0.<i+1>/24 and fd00:172:31::<i+1>/64 for node i, routes between nodes' pod ranges;
- one namespace per pod `nf-<lab>-p<hash>` (the name is a hash of namespace/name, never user
  text) holding `eth0`; the node end of its veth is `p<hash>` on the node's bridge;
- `nf-<lab>-out`, "the internet": one address per external address range that the policies
  cut, so that every ipBlock edge can be probed from a real address.

Addresses: a pod keeps its status IPs (`pod.ips`) when it has them, else gets one from its
node's ranges 10.244.<k>.0/24 and fd00:10:244:<k>::/64. A node's ranges are chosen so that
no status IP falls inside them (the seed's pods use 10.244.1.x and 10.244.2.x, so its two
lab nodes get 10.244.0.0/24 and 10.244.3.0/24): allocated pods are on-link (their same-node
traffic is bridged, as with kubenet), pods with foreign status IPs carry /32 and /128 host
addresses and are routed by their node (as with Calico), and every other node and the
outside reach them through a host route via that node. Both paths therefore exist in
every lab, and a dataplane has to handle both.

hostNetwork pods get no namespace of their own: they live in their node's namespace and
have the node's underlay addresses, which is what `Engine(host_network="node")` assumes
(their traffic is the node's). Node routes carry `src <underlay address>`, so traffic
a node sends uses that address, including towards its own pods over the bridge.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from netfence.cluster.state import HOSTNAME_LABEL, ClusterState, Node, Pod
from netfence.policy.ipranges import FAMILY_MAX, Span

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
PortSpec = tuple[str, int]  # (protocol, port), protocol upper case as in manifests

LAB_NAME = re.compile(r"[a-z0-9]{1,12}")
NS_PREFIX = "nf-"
PROTOCOLS = ("TCP", "UDP", "SCTP")
SAMPLE_PORTS: tuple[PortSpec, ...] = (("TCP", 80), ("UDP", 53))
MAX_NODES = 200
POD_SLOTS = 256  # /24 (and /64) slots in 10.244.0.0/16 (fd00:10:244::/48)
UNDERLAY4 = ipaddress.IPv4Network("172.31.0.0/24")
UNDERLAY6 = ipaddress.IPv6Network("fd00:172:31::/64")
OUTSIDE_HOST = 254
BRIDGE = "br0"
POD_IFNAME = "eth0"
UNDERLAY_IFNAME = "ul0"

# Addresses a namespace cannot sensibly own or route: "this network", loopback, multicast,
# reserved and broadcast; for IPv6 ::/8 (unspecified, loopback, mapped), link-local and
# multicast. External representatives are never taken from these.
_UNUSABLE: tuple[Span, ...] = tuple(
    (net.version, int(net.network_address), int(net.broadcast_address))
    for net in map(
        ipaddress.ip_network,
        ("0.0.0.0/8", "127.0.0.0/8", "224.0.0.0/3", "::/8", "fe80::/10", "ff00::/8"),
    )
)


class LabError(Exception):
    """A lab cannot be planned or built as asked; the message says why and what to do."""


def check_name(name: str) -> str:
    """Lab names go into namespace names and `nf-<name>-*` globs; keep them unambiguous.

    No dashes: `down` removes every `nf-<name>-*` namespace, and a dash would let lab "a"
    match the namespaces of lab "a-b".
    """
    if not LAB_NAME.fullmatch(name):
        raise LabError(f"invalid lab name {name!r}: use 1 to 12 characters from a-z and 0-9")
    return name


def namespace_prefix(lab: str) -> str:
    return f"{NS_PREFIX}{check_name(lab)}-"


def _hexish(number: int) -> str:
    """A decimal number written as an IPv6 group, so that node 12 reads `...:12::`."""
    return str(number)


def slot_networks(slot: int) -> tuple[ipaddress.IPv4Network, ipaddress.IPv6Network]:
    return (
        ipaddress.IPv4Network(f"10.244.{slot}.0/24"),
        ipaddress.IPv6Network(f"fd00:10:244:{_hexish(slot)}::/64"),
    )


def underlay_addresses(host: int) -> tuple[ipaddress.IPv4Address, ipaddress.IPv6Address]:
    return (
        UNDERLAY4.network_address + host,
        ipaddress.IPv6Address(f"fd00:172:31::{_hexish(host)}"),
    )


@dataclass(frozen=True, slots=True)
class NodePlan:
    name: str  # "n0": the node name in the lab's ClusterState
    index: int
    netns: str
    slot: int  # k in 10.244.k.0/24
    cidr4: ipaddress.IPv4Network
    cidr6: ipaddress.IPv6Network
    gateway4: ipaddress.IPv4Address  # on br0: its pods' default gateway
    gateway6: ipaddress.IPv6Address
    underlay4: ipaddress.IPv4Address  # on ul0: the node's own address
    underlay6: ipaddress.IPv6Address

    def cidr(self, family: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return self.cidr4 if family == 4 else self.cidr6

    def gateway(self, family: int) -> IPAddress:
        return self.gateway4 if family == 4 else self.gateway6

    def underlay(self, family: int) -> IPAddress:
        return self.underlay4 if family == 4 else self.underlay6


@dataclass(frozen=True, slots=True)
class PodPlan:
    key: str  # namespace/name
    node: str
    netns: str  # its own namespace, or its node's for hostNetwork pods
    tag: str  # the hash that names its namespace and interfaces
    ip4: ipaddress.IPv4Address
    ip6: ipaddress.IPv6Address
    ports: tuple[PortSpec, ...]
    host_network: bool = False
    from_status: tuple[int, ...] = ()  # families whose address came from pod.ips

    @property
    def host_ifname(self) -> str:
        """The node end of the pod's veth (≤ 15 characters, as interface names must be)."""
        return f"p{self.tag}"

    def ip(self, family: int) -> IPAddress:
        return self.ip4 if family == 4 else self.ip6


@dataclass(frozen=True, slots=True)
class ExternalAddress:
    ip: IPAddress
    span: Span  # the external address range it stands for


@dataclass(frozen=True, slots=True)
class OutsidePlan:
    netns: str
    underlay4: ipaddress.IPv4Address
    underlay6: ipaddress.IPv6Address
    addresses: tuple[ExternalAddress, ...]
    skipped: tuple[tuple[Span, str], ...]  # ranges with no usable representative, and why
    ports: tuple[PortSpec, ...]  # what its listeners serve and pods probe it on

    def underlay(self, family: int) -> IPAddress:
        return self.underlay4 if family == 4 else self.underlay6


@dataclass(frozen=True, slots=True)
class Route:
    """One route as `ip route` arguments; `dst` is a network or "default"."""

    family: int
    dst: str
    via: str | None = None
    dev: str | None = None
    src: str | None = None

    def args(self) -> list[str]:
        out = [self.dst]
        if self.via:
            out += ["via", self.via]
        if self.dev:
            out += ["dev", self.dev]
        if self.src:
            out += ["src", self.src]
        return out


@dataclass(frozen=True, slots=True)
class Address:
    """One address to put on an interface; `prefix_route` False adds it `noprefixroute`."""

    ip: IPAddress
    prefix: int
    dev: str
    prefix_route: bool = True

    def args(self) -> list[str]:
        out = [f"{self.ip}/{self.prefix}", "dev", self.dev]
        if self.ip.version == 6:
            out.append("nodad")  # usable at once: no 1-2 s of duplicate address detection
        if not self.prefix_route:
            out.append("noprefixroute")
        return out


@dataclass(frozen=True)
class LabPlan:
    name: str
    nodes: tuple[NodePlan, ...]
    pods: tuple[PodPlan, ...]
    outside: OutsidePlan

    @property
    def prefix(self) -> str:
        return namespace_prefix(self.name)

    @property
    def underlay_netns(self) -> str:
        return f"{self.prefix}net"

    def namespaces(self) -> list[str]:
        """Every namespace of the lab: underlay, outside, nodes, then pods."""
        own = [p.netns for p in self.pods if not p.host_network]
        return [self.underlay_netns, self.outside.netns, *(n.netns for n in self.nodes), *own]

    def node(self, name: str) -> NodePlan:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def pod(self, key: str) -> PodPlan:
        for pod in self.pods:
            if pod.key == key:
                return pod
        raise KeyError(key)

    def on_link(self, pod: PodPlan, family: int) -> bool:
        """Whether the pod's address lies in its node's pod range (else it is routed)."""
        return pod.ip(family) in self.node(pod.node).cidr(family)

    def cluster_state(self, state: ClusterState) -> ClusterState:
        """`state` as the lab runs it: every pod with its lab addresses and lab node, and
        the lab's nodes with their underlay addresses (what a node's packets carry).

        The engine must judge the addresses packets really carry; a pod that had no status
        IP only has one in the lab. A lab node keeps the labels of a declared Node of the
        same name (so `nodes` peers of cluster-wide policies select lab nodes); declared
        nodes the lab does not have are left out: no packet carries their addresses.
        """
        planned = {p.key: p for p in self.pods}
        pods: list[Pod] = []
        for pod in state.pods:
            lab_pod = planned.get(pod.key)
            if lab_pod is None:
                raise LabError(f"pod {pod.key} is not in lab {self.name}: run `lab apply`")
            pods.append(dataclasses.replace(pod, ips=(lab_pod.ip4, lab_pod.ip6), node=lab_pod.node))
        nodes = {}
        for lab_node in self.nodes:
            name = lab_node.name
            declared = state.nodes.get(name)
            labels = declared.labels if declared else {HOSTNAME_LABEL: name}
            addresses = (lab_node.underlay4, lab_node.underlay6)
            nodes[name] = Node(name, labels, addresses, declared.file if declared else "")
        return dataclasses.replace(state, pods=pods, nodes=nodes)

    # -- what the builder writes --------------------------------------------------------

    def routed_pods(self) -> list[tuple[PodPlan, int]]:
        """(pod, family) whose address is not in its node's range: they need host routes."""
        return [
            (pod, family)
            for pod in self.pods
            if not pod.host_network
            for family in (4, 6)
            if not self.on_link(pod, family)
        ]

    def node_addresses(self, node: NodePlan) -> list[Address]:
        # The bridge addresses carry no prefix route: `node_routes` adds it with the
        # underlay address as source, so all traffic of the node has one source address.
        return [
            Address(node.gateway4, node.cidr4.prefixlen, BRIDGE, prefix_route=False),
            Address(node.gateway6, node.cidr6.prefixlen, BRIDGE, prefix_route=False),
            Address(node.underlay4, UNDERLAY4.prefixlen, UNDERLAY_IFNAME),
            Address(node.underlay6, UNDERLAY6.prefixlen, UNDERLAY_IFNAME),
        ]

    def node_routes(self, node: NodePlan) -> list[Route]:
        routes = [
            Route(4, str(node.cidr4), dev=BRIDGE, src=str(node.underlay4)),
            Route(6, str(node.cidr6), dev=BRIDGE, src=str(node.underlay6)),
        ]
        for other in self.nodes:
            if other is not node:
                routes.append(Route(4, str(other.cidr4), via=str(other.underlay4)))
                routes.append(Route(6, str(other.cidr6), via=str(other.underlay6)))
        for pod, family in self.routed_pods():
            host = _host_network(pod.ip(family))
            if pod.node == node.name:
                routes.append(Route(family, host, dev=BRIDGE, src=str(node.underlay(family))))
            else:
                via = self.node(pod.node).underlay(family)
                routes.append(Route(family, host, via=str(via)))
        routes.append(Route(4, "default", via=str(self.outside.underlay4)))
        routes.append(Route(6, "default", via=str(self.outside.underlay6)))
        return routes

    def outside_addresses(self) -> list[Address]:
        out = [
            Address(self.outside.underlay4, UNDERLAY4.prefixlen, UNDERLAY_IFNAME),
            Address(self.outside.underlay6, UNDERLAY6.prefixlen, UNDERLAY_IFNAME),
        ]
        for ext in self.outside.addresses:
            out.append(Address(ext.ip, ext.ip.max_prefixlen, UNDERLAY_IFNAME))
        return out

    def outside_routes(self) -> list[Route]:
        routes = []
        for node in self.nodes:
            routes.append(Route(4, str(node.cidr4), via=str(node.underlay4)))
            routes.append(Route(6, str(node.cidr6), via=str(node.underlay6)))
        for pod, family in self.routed_pods():
            via = self.node(pod.node).underlay(family)
            routes.append(Route(family, _host_network(pod.ip(family)), via=str(via)))
        return routes

    def pod_addresses(self, pod: PodPlan) -> list[Address]:
        node = self.node(pod.node)
        return [
            Address(
                pod.ip(f),
                node.cidr(f).prefixlen if self.on_link(pod, f) else pod.ip(f).max_prefixlen,
                POD_IFNAME,
            )
            for f in (4, 6)
        ]

    def pod_routes(self, pod: PodPlan) -> list[Route]:
        node = self.node(pod.node)
        routes = []
        for family in (4, 6):
            gateway = str(node.gateway(family))
            if not self.on_link(pod, family):  # a /32 pod reaches its gateway by device
                routes.append(Route(family, _host_network(node.gateway(family)), dev=POD_IFNAME))
            routes.append(Route(family, "default", via=gateway, dev=POD_IFNAME))
        return routes

    def listener_ports(self) -> dict[str, tuple[PortSpec, ...]]:
        """Ports to serve per namespace: pods', hostNetwork pods' (in their node), outside."""
        by_netns: dict[str, set[PortSpec]] = {}
        for pod in self.pods:
            by_netns.setdefault(pod.netns, set()).update(pod.ports)
        by_netns[self.outside.netns] = set(self.outside.ports)
        return {ns: tuple(sorted(ports)) for ns, ports in by_netns.items() if ports}

    # -- persistence --------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self))  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabPlan:
        ip = ipaddress.ip_address
        nodes = tuple(
            NodePlan(
                name=n["name"],
                index=n["index"],
                netns=n["netns"],
                slot=n["slot"],
                cidr4=ipaddress.IPv4Network(n["cidr4"]),
                cidr6=ipaddress.IPv6Network(n["cidr6"]),
                gateway4=ipaddress.IPv4Address(n["gateway4"]),
                gateway6=ipaddress.IPv6Address(n["gateway6"]),
                underlay4=ipaddress.IPv4Address(n["underlay4"]),
                underlay6=ipaddress.IPv6Address(n["underlay6"]),
            )
            for n in data["nodes"]
        )
        pods = tuple(
            PodPlan(
                key=p["key"],
                node=p["node"],
                netns=p["netns"],
                tag=p["tag"],
                ip4=ipaddress.IPv4Address(p["ip4"]),
                ip6=ipaddress.IPv6Address(p["ip6"]),
                ports=tuple((proto, int(port)) for proto, port in p["ports"]),
                host_network=bool(p["host_network"]),
                from_status=tuple(p["from_status"]),
            )
            for p in data["pods"]
        )
        o = data["outside"]
        outside = OutsidePlan(
            netns=o["netns"],
            underlay4=ipaddress.IPv4Address(o["underlay4"]),
            underlay6=ipaddress.IPv6Address(o["underlay6"]),
            addresses=tuple(ExternalAddress(ip(a["ip"]), _span(a["span"])) for a in o["addresses"]),
            skipped=tuple((_span(s), str(reason)) for s, reason in o["skipped"]),
            ports=tuple((proto, int(port)) for proto, port in o["ports"]),
        )
        plan = cls(name=check_name(data["name"]), nodes=nodes, pods=pods, outside=outside)
        _check_names(plan)
        return plan


def _span(value: Sequence[Any]) -> Span:
    fam, lo, hi = value
    return (int(fam), int(lo), int(hi))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return str(value)
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return str(value)
    return value


def _check_names(plan: LabPlan) -> None:
    """Refuse a plan (e.g. an edited plan.json) whose namespaces are not the lab's own."""
    for netns in plan.namespaces():
        if not netns.startswith(plan.prefix) or not re.fullmatch(r"[a-z0-9-]+", netns):
            raise LabError(f"namespace {netns!r} is not a {plan.prefix}* name")
    for pod in plan.pods:
        if not re.fullmatch(r"[0-9a-f]{8}", pod.tag):
            raise LabError(f"pod {pod.key}: bad tag {pod.tag!r}")


def _host_network(ip: IPAddress) -> str:
    return f"{ip}/{ip.max_prefixlen}"


# -- planning -----------------------------------------------------------------------------


def _status_ips(pod: Pod) -> dict[int, IPAddress]:
    found: dict[int, IPAddress] = {}
    for ip in pod.ips:
        found.setdefault(ip.version, ip)
    return found


def _ports(pod: Pod) -> tuple[PortSpec, ...]:
    return tuple(sorted({(p.protocol.upper(), p.port) for p in pod.ports}))


def _tag(key: str, used: set[str]) -> str:
    """8 hex digits of a hash of namespace/name: a safe, stable, short namespace name."""
    for n in itertools.count():
        text = key if n == 0 else f"{key}#{n}"
        tag = hashlib.sha256(text.encode()).hexdigest()[:8]
        if tag not in used:
            used.add(tag)
            return tag
    raise AssertionError("unreachable")


def _choose_slots(count: int, taken: Iterable[IPAddress]) -> list[int]:
    """The first `count` slots whose ranges hold no status IP, so allocated and status
    addresses never share a subnet (which would make a foreign pod look on-link)."""
    taken = list(taken)
    slots = []
    for slot in range(POD_SLOTS):
        net4, net6 = slot_networks(slot)
        if not any(ip in net4 or ip in net6 for ip in taken):
            slots.append(slot)
            if len(slots) == count:
                return slots
    raise LabError("no free pod ranges left in 10.244.0.0/16 for the lab nodes")


def make_nodes(lab: str, count: int, status_ips: Iterable[IPAddress]) -> tuple[NodePlan, ...]:
    if not 1 <= count <= MAX_NODES:
        raise LabError(f"--nodes must be between 1 and {MAX_NODES}, not {count}")
    prefix = namespace_prefix(lab)
    nodes = []
    for index, slot in enumerate(_choose_slots(count, status_ips)):
        cidr4, cidr6 = slot_networks(slot)
        underlay4, underlay6 = underlay_addresses(index + 1)
        nodes.append(
            NodePlan(
                name=f"n{index}",
                index=index,
                netns=f"{prefix}n{index}",
                slot=slot,
                cidr4=cidr4,
                cidr6=cidr6,
                gateway4=cidr4.network_address + 1,
                gateway6=cidr6.network_address + 1,
                underlay4=underlay4,
                underlay6=underlay6,
            )
        )
    return tuple(nodes)


def plan_lab(
    state: ClusterState,
    *,
    name: str = "default",
    nodes: int = 2,
    external: Sequence[Span] = (),
    previous: LabPlan | None = None,
) -> LabPlan:
    """The lab for `state`: `external` are the address ranges to give one outside address
    each (see `external_spans`).

    With `previous` (for `lab apply`), its nodes are kept and pods that still exist keep
    their node, namespace and addresses; new pods are placed and addressed around them.
    """
    check_name(name)
    prefix = namespace_prefix(name)
    all_status = [ip for pod in state.pods if not pod.host_network for ip in pod.ips]
    for ip in all_status:
        if ip in UNDERLAY4 or ip in UNDERLAY6:
            raise LabError(f"pod address {ip} lies in the lab's underlay {UNDERLAY4}/{UNDERLAY6}")
    node_plans = previous.nodes if previous is not None else make_nodes(name, nodes, all_status)
    by_name = {n.name: n for n in node_plans}
    kept = {p.key: p for p in previous.pods} if previous is not None else {}

    used_tags: set[str] = {p.tag for p in kept.values() if p.key in _keys(state)}
    taken: set[IPAddress] = set()
    for node in node_plans:
        taken.update((node.gateway4, node.gateway6, node.underlay4, node.underlay6))
    taken.update(underlay_addresses(OUTSIDE_HOST))

    planned: dict[str, PodPlan] = {}
    # Pods that exist in the previous plan first: they keep what they have.
    for pod in state.pods:
        old = kept.get(pod.key)
        if old is not None and old.host_network == pod.host_network:
            planned[pod.key] = dataclasses.replace(old, ports=_ports(pod))
            if not old.host_network:
                taken.update((old.ip4, old.ip6))
    # Allocation never hands out a removed pod's address again during the lab's life (a
    # status IP may reuse one, as in a cluster; `update` flushes neighbour entries then).
    retired = {ip for p in kept.values() if not p.host_network for ip in (p.ip4, p.ip6)}

    seen_status: dict[IPAddress, str] = {}
    for pod in state.pods:
        if pod.host_network:
            continue
        for ip in pod.ips:
            other = seen_status.setdefault(ip, pod.key)
            if other != pod.key:
                raise LabError(f"pods {other} and {pod.key} both have the address {ip}")
            if pod.key not in planned and ip in taken:
                raise LabError(f"pod {pod.key}: address {ip} is already used in the lab")
    taken.update(seen_status)
    taken.update(retired)

    start = len(kept) % len(node_plans)  # continue the round-robin where `up` left it
    robin = itertools.cycle(node_plans[start:] + node_plans[:start])
    for pod in state.pods:
        if pod.key in planned:
            continue
        status = {} if pod.host_network else _status_ips(pod)
        node = _place(pod, status, by_name, robin)
        tag = _tag(pod.key, used_tags)
        if pod.host_network:
            planned[pod.key] = PodPlan(
                key=pod.key,
                node=node.name,
                netns=node.netns,
                tag=tag,
                ip4=node.underlay4,
                ip6=node.underlay6,
                ports=_ports(pod),
                host_network=True,
            )
            continue
        ip4, ip6 = _allocate(node, status, taken)
        planned[pod.key] = PodPlan(
            key=pod.key,
            node=node.name,
            netns=f"{prefix}p{tag}",
            tag=tag,
            ip4=ip4,
            ip6=ip6,
            ports=_ports(pod),
            from_status=tuple(sorted(status)),
        )

    pods = tuple(planned[pod.key] for pod in state.pods)
    outside = _outside(prefix, node_plans, pods, external)
    plan = LabPlan(name=name, nodes=node_plans, pods=pods, outside=outside)
    _check_names(plan)
    return plan


def _keys(state: ClusterState) -> set[str]:
    return {pod.key for pod in state.pods}


def _place(
    pod: Pod,
    status: Mapping[int, IPAddress],
    nodes: Mapping[str, NodePlan],
    robin: Iterable[NodePlan],
) -> NodePlan:
    """A pod's lab node: the one whose pod range holds its status IP (only possible for
    pods added by `lab apply`), else the one it names, else the next in round-robin."""
    home = {n.name for n in nodes.values() for ip in status.values() if ip in n.cidr(ip.version)}
    if len(home) > 1:
        raise LabError(f"pod {pod.key}: its addresses lie in the ranges of nodes {sorted(home)}")
    if home:
        (name,) = home
        if pod.node in nodes and pod.node != name:
            raise LabError(
                f"pod {pod.key}: on node {pod.node} but its address lies in node {name}'s range"
            )
        return nodes[name]
    if pod.node is not None and pod.node in nodes:
        return nodes[pod.node]
    return next(iter(robin))


def _allocate(
    node: NodePlan, status: Mapping[int, IPAddress], taken: set[IPAddress]
) -> tuple[ipaddress.IPv4Address, ipaddress.IPv6Address]:
    """Status IPs where given; the rest from the node's ranges, the same host number in
    both families where possible (10.244.0.5 and fd00:10:244:0::5) to ease reading."""
    for host in range(2, 254):
        ip4 = status[4] if 4 in status else node.cidr4.network_address + host
        ip6 = status[6] if 6 in status else node.cidr6.network_address + host
        fresh = [ip for f, ip in ((4, ip4), (6, ip6)) if f not in status]
        if not any(ip in taken for ip in fresh):
            taken.update(fresh)
            assert isinstance(ip4, ipaddress.IPv4Address)
            assert isinstance(ip6, ipaddress.IPv6Address)
            return ip4, ip6
    raise LabError(f"node {node.name} is full (252 pods): use more --nodes")


# -- the outside --------------------------------------------------------------------------


def external_spans(state: ClusterState) -> list[Span]:
    """The external ranges to represent: the engine's source and destination ranges (the
    address space cut at every ipBlock edge of either direction) merged into one partition,
    and the whole IPv6 space when no policy mentions IPv6 (pods still talk IPv6)."""
    from netfence.policy.matrix import ClusterMatrix

    matrix = ClusterMatrix(state, host_network="node")
    spans = refine([*matrix.src_ranges, *matrix.dst_ranges])
    for family in (4, 6):
        if not any(s[0] == family for s in spans):
            spans.append((family, 0, FAMILY_MAX[family]))
    return sorted(spans)


def refine(spans: Iterable[Span]) -> list[Span]:
    """The coarsest partition of the spans' union that every span is a union of."""
    spans = list(spans)
    out: list[Span] = []
    for family in (4, 6):
        mine = [s for s in spans if s[0] == family]
        points = sorted({p for _, lo, hi in mine for p in (lo, hi + 1)})
        for lo, nxt in itertools.pairwise(points):
            if any(a <= lo <= b for _, a, b in mine):
                out.append((family, lo, nxt - 1))
    return out


def _subtract(span: Span, holes: Iterable[Span]) -> list[Span]:
    fam, lo, hi = span
    pieces = [(lo, hi)]
    for f, hlo, hhi in holes:
        if f != fam:
            continue
        nxt = []
        for a, b in pieces:
            if hhi < a or hlo > b:
                nxt.append((a, b))
                continue
            if a < hlo:
                nxt.append((a, hlo - 1))
            if hhi < b:
                nxt.append((hhi + 1, b))
        pieces = nxt
    return [(fam, a, b) for a, b in sorted(pieces)]


def representative(span: Span, forbidden: Iterable[Span]) -> int | None:
    """One address to stand for an external range, or None when it has no usable one.

    The range's first address when usable (ranges start at ipBlock edges, where an
    off-by-one would show), else its last but one (0.0.0.0-9.255.255.255 gives
    9.255.255.254), else its last, else the first usable address inside it.
    """
    allowed = _subtract(span, [*_UNUSABLE, *forbidden])
    if not allowed:
        return None
    _, lo, hi = span
    for candidate in (lo, hi - 1, hi):
        if lo <= candidate <= hi and any(a <= candidate <= b for _, a, b in allowed):
            return candidate
    return allowed[0][1]


def _outside(
    prefix: str, nodes: Sequence[NodePlan], pods: Sequence[PodPlan], external: Sequence[Span]
) -> OutsidePlan:
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = [UNDERLAY4, UNDERLAY6]
    nets += [n.cidr(f) for n in nodes for f in (4, 6)]
    forbidden: list[Span] = [
        (net.version, int(net.network_address), int(net.broadcast_address)) for net in nets
    ]
    forbidden += [(ip.version, int(ip), int(ip)) for p in pods for ip in (p.ip4, p.ip6)]
    addresses = []
    skipped = []
    for span in external:
        value = representative(span, forbidden)
        if value is None:
            skipped.append((span, "every address in it is a lab, special or reserved address"))
            continue
        ip: IPAddress = (
            ipaddress.IPv4Address(value) if span[0] == 4 else ipaddress.IPv6Address(value)
        )
        addresses.append(ExternalAddress(ip, span))
    ports = set(SAMPLE_PORTS)
    for pod in pods:
        ports.update(pod.ports)
    underlay4, underlay6 = underlay_addresses(OUTSIDE_HOST)
    return OutsidePlan(
        netns=f"{prefix}out",
        underlay4=underlay4,
        underlay6=underlay6,
        addresses=tuple(addresses),
        skipped=tuple(skipped),
        ports=tuple(sorted(ports)),
    )
