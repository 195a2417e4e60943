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
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

from netfence.k8s import models
from netfence.k8s.loader import BrokenPolicy, Loaded, Manifests, describe
from netfence.k8s.validation import (
    NODE_IP_ADDRESS_TYPES,
    duplicate_names,
    parse_ip,
    priority_conflicts,
    validate,
)
from netfence.problems import Problem

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
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
    """

    name: str
    labels: Mapping[str, str]
    addresses: tuple[IPAddress, ...] = ()
    file: str = ""


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
        (`fail_closed`: rejected NetworkPolicies become deny-all stand-ins, see
        `validated`)."""
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
        is wrong). A typo must not open the pods it was written to protect, and one bad
        policy does not stop the others from being enforced."""
        problems = list(manifests.problems)
        valid: list[Loaded] = []
        broken = list(manifests.broken)
        for item in manifests.objects:
            found = validate(item)
            problems.extend(found)
            if all(p.severity == "warning" for p in found):
                valid.append(item)
            elif isinstance(item.obj, models.NetworkPolicy):
                bad = [p.path or "" for p in found if p.severity == "error"]
                touched = any(path.startswith("spec.podSelector") for path in bad)
                broken.append(
                    BrokenPolicy(
                        item.namespace,
                        item.name,
                        None if touched else item.obj.spec.pod_selector,
                        item.file,
                    )
                )
        duplicates, rejected = duplicate_names(valid)
        problems.extend(duplicates)
        valid = [item for item in valid if id(item) not in rejected]
        problems.extend(priority_conflicts(valid))
        state = cls.from_objects((item.obj for item in valid), problems, files=valid)
        if fail_closed:
            for policy in broken:
                state.policies.append(_closed(policy))
                state.problems.append(_closed_problem(policy))
                if policy.namespace not in state.namespaces:
                    state.namespaces[policy.namespace] = namespace_record(policy.namespace, {})
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
        nodes: list[tuple[models.Node, str]] = []
        for obj in objects:
            if isinstance(obj, models.Namespace):
                declared[obj.metadata.name or ""] = obj.metadata.labels
                continue
            if isinstance(obj, models.Node):
                nodes.append((obj, origin.get(id(obj), "")))
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
        state.nodes = _nodes(nodes, state.pods)
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


def _nodes(declared: list[tuple[models.Node, str]], pods: list[Pod]) -> dict[str, Node]:
    """Declared nodes and those pods are scheduled on, with the addresses both give."""
    labels: dict[str, Mapping[str, str]] = {}
    addresses: dict[str, list[IPAddress]] = {}
    files: dict[str, str] = {}
    for node, file in declared:
        name = node.metadata.name or ""
        labels[name] = {HOSTNAME_LABEL: name, **node.metadata.labels}
        files[name] = file
        addresses[name] = [
            ip
            for entry in node.status.addresses
            if entry.type in NODE_IP_ADDRESS_TYPES
            for ip in [parse_ip(entry.address)]
            if ip is not None
        ]
    for pod in pods:
        if pod.node is None:
            continue
        labels.setdefault(pod.node, {HOSTNAME_LABEL: pod.node})
        addresses.setdefault(pod.node, []).extend(pod.host_ips)
        if pod.host_network:  # a host-network pod's addresses are its node's
            addresses[pod.node].extend(pod.ips)
    return {
        name: Node(name, labels[name], tuple(dict.fromkeys(addresses[name])), files.get(name, ""))
        for name in labels
    }


def _container_ports(spec: models.PodSpec) -> tuple[ContainerPort, ...]:
    ports = []
    for container in [*spec.containers, *spec.init_containers]:
        for port in container.ports:
            ports.append(ContainerPort(port.container_port, port.protocol, port.name or None))
    return tuple(ports)


def _owner(meta: models.ObjectMeta) -> Owner:
    """The controlling owner as written; static and mirror pods (owned by a Node) stand alone."""
    for ref in meta.owner_references:
        if ref.controller and ref.kind != "Node":
            return Owner(ref.kind or "Pod", ref.name or "")
    return Owner("Pod", meta.name or "")


def _addresses(*texts: str | None) -> tuple[IPAddress, ...]:
    return tuple(dict.fromkeys(ipaddress.ip_address(t) for t in texts if t))


def _pod_record(pod: models.Pod, namespace: str, file: str) -> Pod:
    status = pod.status
    ips = _addresses(status.pod_ip, *(entry.ip for entry in status.pod_ips))
    return Pod(
        namespace=namespace,
        name=pod.metadata.name or "",
        labels=pod.metadata.labels,
        ports=_container_ports(pod.spec),
        owner=_owner(pod.metadata),
        ips=ips,
        node=pod.spec.node_name,
        host_network=pod.spec.host_network,
        host_ips=_addresses(status.host_ip, *(entry.ip for entry in status.host_ips)),
        phase=status.phase,
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
