"""`ClusterState`: the snapshot every consumer reads, with the indexes they need.

Sources (manifest folders today; the API and the lab later) produce validated objects;
`ClusterState.build` turns them into plain records: namespaces with their effective labels,
pods (workload templates expanded into their replicas), and policies. Records are small
frozen dataclasses rather than the wire models, so a 20,000-pod state stays cheap and the
engine never sees YAML-shaped data.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Generic, TypeVar

from netfence.k8s import models
from netfence.k8s.loader import (
    CLUSTER_POLICY_MODELS,
    BrokenClusterPolicy,
    BrokenPolicy,
    Loaded,
    Manifests,
    describe,
)
from netfence.k8s.validation import (
    CLUSTER_POLICY_TIERS,
    NODE_IP_ADDRESS_TYPES,
    duplicate_names,
    parse_cidr,
    parse_ip,
    priority_conflicts,
    validate,
)
from netfence.problems import Problem

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
K = TypeVar("K")
V = TypeVar("V")
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
HOSTNAME_LABEL = "kubernetes.io/hostname"
_TEMPLATE_HASH = re.compile(r"[a-z0-9]{6,10}")


@dataclass(frozen=True, slots=True)
class ContainerPort:
    port: int
    protocol: str
    name: str | None


@dataclass(frozen=True, slots=True)
class Owner:
    """The workload a pod belongs to: the peer that connectivity lists are written in."""

    kind: str
    name: str


@dataclass(frozen=True, slots=True)
class Namespace:
    name: str
    labels: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Pod:
    namespace: str
    name: str
    labels: Mapping[str, str]
    ports: tuple[ContainerPort, ...]
    owner: Owner
    ips: tuple[IPAddress, ...] = ()
    node: str | None = None
    host_network: bool = False
    host_ips: tuple[IPAddress, ...] = ()  # its node's addresses, as the pod's status reports
    phase: str | None = None
    file: str = ""  # where it was declared, for messages

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class Policy:
    """A validated NetworkPolicy with the file it came from."""

    namespace: str
    name: str
    spec: models.NetworkPolicySpec
    file: str = ""
    closed: bool = False  # a stand-in denying all for a rejected policy (fail closed)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class ClusterPolicy:
    """A validated AdminNetworkPolicy, BaselineAdminNetworkPolicy or ClusterNetworkPolicy.

    Cluster-scoped: the key is `Kind/name`, which no NetworkPolicy key (`namespace/name`, a
    lower-case namespace) can equal, so one map of keys serves every tier.
    """

    kind: str
    name: str
    spec: models.ClusterPolicySpec
    file: str = ""
    closed: bool = False  # a stand-in denying all for a rejected policy (fail closed)

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True, slots=True)
class Node:
    """A node as `nodes` peers see it: its labels and every IP address it answers on.

    Nodes come from `kind: Node` manifests (labels, and the InternalIP/ExternalIP entries of
    `status.addresses`, as `kubectl get node -o yaml` shows them) and from the pods scheduled on
    them: a `spec.nodeName` no manifest declares implies a node with only the
    `kubernetes.io/hostname` label the kubelet sets, and a pod's `status.hostIP(s)` (and a
    host-network pod's own addresses) are addresses of its node. Consumers (engine, matrix,
    and through them the dataplane) only ever see the addresses, resolved into the IR's
    `nodes` peers: a node is a set of IPs there.

    `pod_cidrs`: its pod ranges (`spec.podCIDR(s)`), for the agent on that node, which
    refuses addresses there that no known pod holds (pods not programmed yet).
    """

    name: str
    labels: Mapping[str, str]
    addresses: tuple[IPAddress, ...] = ()
    file: str = ""
    pod_cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()


@dataclass
class ClusterState:
    namespaces: dict[str, Namespace] = field(default_factory=dict)
    pods: list[Pod] = field(default_factory=list)
    policies: list[Policy] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    cluster_policies: list[ClusterPolicy] = field(default_factory=list)
    nodes: dict[str, Node] = field(default_factory=dict)

    @classmethod
    def build(cls, manifests: Manifests, *, fail_closed: bool = False) -> ClusterState:
        """Validate and index loaded manifests; invalid objects are reported and left out
        (`fail_closed`: rejected policies become deny-all stand-ins, see `validated`)."""
        state = cls.validated(manifests, fail_closed=fail_closed)
        state.problems.extend(shared_addresses(state.pods))
        return state

    @classmethod
    def validated(cls, manifests: Manifests, *, fail_closed: bool = False) -> ClusterState:
        """`build` without the checks that span the whole cluster (shared addresses): for
        sources whose records are merged with others' in a `ClusterStore`, which runs those
        checks on its snapshots.

        `fail_closed` (what enforcement uses; the analysis commands do not): a rejected
        NetworkPolicy still isolates, in both directions with no rule, the pods its
        selector was meant to cover (every pod of its namespace when the selector is what
        is wrong). A rejected AdminNetworkPolicy, BaselineAdminNetworkPolicy or
        ClusterNetworkPolicy becomes one of its kind, tier and priority that denies its
        subject's pods everything, both ways; if its subject is what is wrong, it cannot be
        told which pods to close, so it is left out with an error saying so. A typo must not
        open the pods it was written to protect, and one bad policy does not stop the
        others from being enforced."""
        problems = list(manifests.problems)
        valid: list[Loaded] = []
        broken = list(manifests.broken)
        for item in manifests.objects:
            found = validate(item)
            problems.extend(found)
            if all(p.severity == "warning" for p in found):
                valid.append(item)
                continue
            bad = [p.path or "" for p in found if p.severity == "error"]
            obj = item.obj
            if isinstance(obj, models.NetworkPolicy):
                touched = any(path.startswith("spec.podSelector") for path in bad)
                broken.append(
                    BrokenPolicy(
                        item.namespace,
                        item.name,
                        None if touched else obj.spec.pod_selector,
                        item.file,
                    )
                )
            elif isinstance(obj, CLUSTER_POLICY_MODELS):
                touched = any(path.startswith("spec.subject") for path in bad)
                broken.append(
                    BrokenClusterPolicy(
                        obj.kind,
                        item.name,
                        obj.spec.tier if isinstance(obj, models.ClusterNetworkPolicy) else None,
                        getattr(obj.spec, "priority", None),
                        None if touched else obj.spec.subject,
                        item.file,
                    )
                )
        duplicates, rejected = duplicate_names(valid)
        problems.extend(duplicates)
        valid = [item for item in valid if id(item) not in rejected]
        state = cls.from_objects((item.obj for item in valid), problems, files=valid)
        state.problems.extend(priority_conflicts(state.cluster_policies))
        if fail_closed:
            for policy in broken:
                if isinstance(policy, BrokenPolicy):
                    state.policies.append(_closed(policy))
                    state.problems.append(_closed_problem(policy))
                    if policy.namespace not in state.namespaces:
                        state.namespaces[policy.namespace] = namespace_record(policy.namespace, {})
                    continue
                stand_in = _closed_cluster_policy(policy)
                if stand_in is not None:
                    state.cluster_policies.append(stand_in)
                state.problems.append(_closed_cluster_problem(policy, stand_in))
        return state

    @classmethod
    def from_objects(
        cls,
        objects: Iterable[models.K8sObject],
        problems: list[Problem] | None = None,
        files: Iterable[Loaded] = (),
    ) -> ClusterState:
        origin = {id(item.obj): item.file for item in files}
        state = cls(problems=problems or [])
        declared: dict[str, Mapping[str, str]] = {}
        used: list[str] = []
        nodes: list[Node] = []
        for obj in objects:
            if isinstance(obj, models.Namespace):
                declared[obj.metadata.name or ""] = obj.metadata.labels
                continue
            if isinstance(obj, models.Node):
                nodes.append(_node_record(obj, origin.get(id(obj), "")))
                continue
            if isinstance(
                obj,
                models.AdminNetworkPolicy
                | models.BaselineAdminNetworkPolicy
                | models.ClusterNetworkPolicy,
            ):
                state.cluster_policies.append(
                    ClusterPolicy(
                        obj.kind, obj.metadata.name or "", obj.spec, origin.get(id(obj), "")
                    )
                )
                continue
            namespace = obj.metadata.namespace or "default"
            used.append(namespace)
            if isinstance(obj, models.NetworkPolicy):
                state.policies.append(
                    Policy(namespace, obj.metadata.name or "", obj.spec, origin.get(id(obj), ""))
                )
            elif isinstance(obj, models.Pod):
                state.pods.append(_pod_record(obj, namespace, origin.get(id(obj), "")))
            elif isinstance(obj, models.Workload):
                state.pods.extend(_workload_pods(obj, namespace, origin.get(id(obj), "")))
        for name in [*declared, *used]:
            if name not in state.namespaces:
                state.namespaces[name] = namespace_record(name, declared.get(name, {}))
        state.nodes = effective_nodes(nodes, state.pods)
        return state

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @cached_property
    def pods_by_namespace(self) -> dict[str, list[Pod]]:
        index: dict[str, list[Pod]] = defaultdict(list)
        for pod in self.pods:
            index[pod.namespace].append(pod)
        return dict(index)

    @cached_property
    def pods_by_ip(self) -> dict[IPAddress, list[Pod]]:
        index: dict[IPAddress, list[Pod]] = defaultdict(list)
        for pod in self.pods:
            for ip in pod.ips:
                index[ip].append(pod)
        return dict(index)

    def find_pods(self, namespace: str, name: str) -> list[Pod]:
        """Pods called `name`, or of the workload called `name`, in a namespace.

        A Deployment's pods are owned by its ReplicaSet `<deployment>-<pod-template-hash>`,
        so the Deployment's name finds them too, as it does with kubectl.
        """
        pods = self.pods_by_namespace.get(namespace, [])
        return (
            [p for p in pods if p.name == name]
            or [p for p in pods if p.owner.name == name]
            or [
                p
                for p in pods
                if p.owner.kind == "ReplicaSet"
                and _TEMPLATE_HASH.fullmatch(p.owner.name.removeprefix(f"{name}-"))
                and p.owner.name.startswith(f"{name}-")
            ]
        )


def namespace_record(name: str, labels: Mapping[str, str]) -> Namespace:
    """A namespace as the API server stores it: the name label always equals the name, whatever
    the manifest says (a namespace that is used but not declared has only that label)."""
    return Namespace(name, {**labels, NAMESPACE_NAME_LABEL: name})


def shared_addresses(pods: Iterable[Pod]) -> list[Problem]:
    """Two pods with one address cannot both be told apart by it: the dataplane keeps the
    first, and ipBlocks match both. The API server allows it, so it is a warning."""
    first: dict[IPAddress, Pod] = {}
    problems = []
    for pod in pods:
        if pod.host_network:
            continue  # hostNetwork pods share their node's address by design
        for ip in pod.ips:
            owner = first.setdefault(ip, pod)
            if owner is not pod:
                problems.append(
                    Problem(
                        "warning",
                        f"address {ip} is also the address of pod {owner.key}; "
                        "enforcement keeps the first pod for it",
                        file=pod.file,
                        obj=f"Pod {pod.key}",
                        path="status.podIPs",
                        code="shared-address",
                    )
                )
    return problems


def effective_nodes(declared: Iterable[Node], pods: Iterable[Pod]) -> dict[str, Node]:
    """Declared nodes and those pods are scheduled on, with the addresses both give."""
    labels: dict[str, Mapping[str, str]] = {}
    addresses: dict[str, list[IPAddress]] = {}
    files: dict[str, str] = {}
    ranges: dict[str, tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]] = {}
    for node in declared:
        labels[node.name] = node.labels
        addresses[node.name] = list(node.addresses)
        files[node.name] = node.file
        ranges[node.name] = node.pod_cidrs
    for pod in pods:
        if pod.node is None:
            continue
        labels.setdefault(pod.node, {HOSTNAME_LABEL: pod.node})
        addresses.setdefault(pod.node, []).extend(pod.host_ips)
        if pod.host_network:  # a host-network pod's addresses are its node's
            addresses[pod.node].extend(pod.ips)
    # In one order whatever the order of declarations and pods: a node's addresses are a set,
    # and equal nodes must compare equal (the agent rebuilds its table when a node changes).
    return {
        name: Node(
            name, labels[name], _ordered(addresses[name]), files.get(name, ""), ranges.get(name, ())
        )
        for name in labels
    }


def _ordered(addresses: Iterable[IPAddress]) -> tuple[IPAddress, ...]:
    return tuple(sorted(set(addresses), key=lambda ip: (ip.version, ip)))


def _node_record(node: models.Node, file: str) -> Node:
    """A declared node: its labels (with the hostname label the kubelet sets) and the
    InternalIP/ExternalIP entries of `status.addresses`."""
    name = node.metadata.name or ""
    addresses = (
        ip
        for entry in node.status.addresses
        if entry.type in NODE_IP_ADDRESS_TYPES
        for ip in [parse_ip(entry.address)]
        if ip is not None
    )
    spec = node.spec
    written = [spec.pod_cidr, *spec.pod_cidrs] if spec.pod_cidr else spec.pod_cidrs
    cidrs = (cidr for text in written for cidr in [parse_cidr(text)] if cidr is not None)
    return Node(
        name,
        {HOSTNAME_LABEL: name, **node.metadata.labels},
        tuple(dict.fromkeys(addresses)),
        file,
        tuple(dict.fromkeys(cidrs)),
    )


def _container_ports(spec: models.PodSpec) -> tuple[ContainerPort, ...]:
    ports = []
    for container in [*spec.containers, *spec.init_containers]:
        for port in container.ports:
            name = sys.intern(port.name) if port.name else None
            ports.append(ContainerPort(port.container_port, sys.intern(port.protocol), name))
    return tuple(ports)


def _owner(meta: models.ObjectMeta) -> Owner:
    """The controlling owner as written; static and mirror pods (owned by a Node) stand alone."""
    for ref in meta.owner_references:
        if ref.controller and ref.kind != "Node":
            return Owner(sys.intern(ref.kind or "Pod"), sys.intern(ref.name or ""))
    return Owner("Pod", meta.name or "")


def _addresses(*texts: str | None) -> tuple[IPAddress, ...]:
    return tuple(dict.fromkeys(ipaddress.ip_address(t) for t in texts if t))


class _Shared(Generic[K, V]):
    """One object for equal parts of pod records, which replicas and the pods of a node have
    in common (labels, ports, owner, node addresses): at 10,000 pods, with their strings
    interned, the records take ~6 MiB instead of ~23 MiB. Bounded: past `limit` distinct
    values it starts afresh (records keep what they hold; only later records stop sharing
    with earlier ones), so a stream of new label sets cannot grow it without end."""

    def __init__(self, limit: int = 16384) -> None:
        self._limit = limit
        self._values: dict[K, V] = {}

    def get(self, key: K, make: Callable[[], V]) -> V:
        found = self._values.get(key)
        if found is None:
            if len(self._values) >= self._limit:
                self.clear()
            found = self._values[key] = make()
        return found

    def clear(self) -> None:
        self._values.clear()


_LABELS: _Shared[tuple[str, ...], Mapping[str, str]] = _Shared()
_PORTS: _Shared[tuple[ContainerPort, ...], tuple[ContainerPort, ...]] = _Shared()
_OWNERS: _Shared[Owner, Owner] = _Shared()
_HOST_IPS: _Shared[tuple[str, ...], tuple[IPAddress, ...]] = _Shared()


def forget_shared_parts() -> None:
    """Pod records made from now on share parts with each other, not with earlier ones.

    For a source that keeps copies of the records it made (`sources/files.py` copies a parsed
    file's objects through pickle, which keeps their sharing within the copy): the originals,
    and the arenas of parse garbage they would pin, can then be freed."""
    for shared in (_LABELS, _PORTS, _OWNERS, _HOST_IPS):
        shared.clear()


def _labels(labels: Mapping[str, str]) -> Mapping[str, str]:
    """The pod's labels, shared with every pod that has the same (records never change them)."""
    flat = tuple(sys.intern(text) for item in labels.items() for text in item)
    return _LABELS.get(flat, lambda: dict(zip(flat[::2], flat[1::2], strict=True)))


def _pod_record(pod: models.Pod, namespace: str, file: str) -> Pod:
    status = pod.status
    ips = _addresses(status.pod_ip, *(entry.ip for entry in status.pod_ips))
    hosts = tuple(t for t in (status.host_ip, *(entry.ip for entry in status.host_ips)) if t)
    ports = _container_ports(pod.spec)
    owner = _owner(pod.metadata)
    return Pod(
        namespace=sys.intern(namespace),
        name=pod.metadata.name or "",
        labels=_labels(pod.metadata.labels),
        ports=_PORTS.get(ports, lambda: ports),
        owner=_OWNERS.get(owner, lambda: owner),
        ips=ips,
        node=sys.intern(pod.spec.node_name) if pod.spec.node_name else None,
        host_network=pod.spec.host_network,
        host_ips=_HOST_IPS.get(hosts, lambda: _addresses(*hosts)),
        phase=sys.intern(status.phase) if status.phase else None,
        file=file,
    )


def _workload_pods(workload: models.Workload, namespace: str, file: str) -> list[Pod]:
    """A workload's template stands in for its pods: one per replica (DaemonSet: one)."""
    template = workload.spec.pod_template()
    if template is None:
        return []
    name = workload.metadata.name or ""
    replicas = 1 if workload.spec.replicas is None else workload.spec.replicas
    if workload.kind in ("DaemonSet", "Job", "CronJob"):
        replicas = 1
    ports = _container_ports(template.spec)
    owner = Owner(workload.kind, name)
    return [
        Pod(
            namespace=namespace,
            name=name if replicas == 1 else f"{name}-{i}",
            labels=template.metadata.labels,
            ports=ports,
            owner=owner,
            host_network=template.spec.host_network,
            file=file,
        )
        for i in range(replicas)
    ]


def _closed(policy: BrokenPolicy) -> Policy:
    spec = models.NetworkPolicySpec(
        pod_selector=policy.pod_selector or models.LabelSelector(),
        policy_types=["Ingress", "Egress"],
    )
    return Policy(policy.namespace, policy.name, spec, policy.file, closed=True)


def _closed_problem(policy: BrokenPolicy) -> Problem:
    covered = (
        "the pods it selects"
        if policy.pod_selector is not None
        else f"every pod of namespace {policy.namespace} (its podSelector is unreadable)"
    )
    return Problem(
        "warning",
        f"rejected, so enforcement fails closed: {covered} get no traffic until it is fixed",
        file=policy.file,
        obj=describe("NetworkPolicy", policy.namespace, policy.name),
        code="fails-closed",
    )


# Every address of both families: with `namespaces: {}` (every pod), every peer there is.
_EVERYWHERE = [{"namespaces": {}}, {"networks": ["0.0.0.0/0", "::/0"]}]


def _closed_cluster_policy(policy: BrokenClusterPolicy) -> ClusterPolicy | None:
    """A stand-in in the rejected policy's place whose one rule per direction denies every
    peer on every port; None when its subject cannot be read or would be rejected itself.

    Peers by address are not allowed in ingress rules on the wire, but the IR reads them
    as it does NetworkPolicy ipBlocks: traffic from outside the cluster is denied too, as
    a fail-closed NetworkPolicy would deny it. An unreadable priority takes the first
    place (0) and an unknown tier the admin one: failing closed errs on the strict side."""
    if policy.subject is None:
        return None
    common: dict[str, Any] = {
        "subject": policy.subject,
        "ingress": [{"name": "fails-closed", "action": "Deny", "from": _EVERYWHERE}],
        "egress": [{"name": "fails-closed", "action": "Deny", "to": _EVERYWHERE}],
    }
    meta = {"name": policy.name}
    priority = policy.priority if policy.priority is not None else 0
    obj: models.ClusterPolicyObject
    if policy.kind == "ClusterNetworkPolicy":
        tier = policy.tier if policy.tier in CLUSTER_POLICY_TIERS else "Admin"
        obj = models.ClusterNetworkPolicy.model_validate(
            {"metadata": meta, "spec": {**common, "tier": tier, "priority": priority}}
        )
    elif policy.kind == "AdminNetworkPolicy":
        obj = models.AdminNetworkPolicy.model_validate(
            {"metadata": meta, "spec": {**common, "priority": priority}}
        )
    else:
        obj = models.BaselineAdminNetworkPolicy.model_validate({"metadata": meta, "spec": common})
    found = validate(Loaded(obj, policy.file))
    if any(p.severity == "error" and (p.path or "").startswith("spec.subject") for p in found):
        return None
    return ClusterPolicy(obj.kind, policy.name, obj.spec, policy.file, closed=True)


def _closed_cluster_problem(policy: BrokenClusterPolicy, stand_in: ClusterPolicy | None) -> Problem:
    ident = describe(policy.kind, "", policy.name)
    if stand_in is None:
        return Problem(
            "error",
            "rejected and its subject cannot be read, so enforcement ignores it: no pod is "
            "closed in its place; fix its subject",
            file=policy.file,
            obj=ident,
            path="spec.subject",
            code="fails-open",
        )
    spec = stand_in.spec
    if isinstance(spec, models.ClusterNetworkPolicySpec):
        where = f"{spec.tier} tier, priority {spec.priority}"
    elif isinstance(spec, models.AdminNetworkPolicySpec):
        where = f"priority {spec.priority}"
    else:
        where = "the baseline tier"
    if policy.priority is None and policy.kind != "BaselineAdminNetworkPolicy":
        where += " (its own priority is unreadable)"
    return Problem(
        "warning",
        "rejected, so enforcement fails closed: the pods of its subject get no traffic, "
        f"either way (a Deny of everything at {where}), until it is fixed",
        file=policy.file,
        obj=ident,
        code="fails-closed",
    )
