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
from netfence.k8s.loader import Loaded, Manifests
from netfence.k8s.validation import duplicate_names, validate
from netfence.problems import Problem

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
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

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass
class ClusterState:
    namespaces: dict[str, Namespace] = field(default_factory=dict)
    pods: list[Pod] = field(default_factory=list)
    policies: list[Policy] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @classmethod
    def build(cls, manifests: Manifests) -> ClusterState:
        """Validate and index loaded manifests; invalid objects are reported and left out."""
        problems = list(manifests.problems)
        valid: list[Loaded] = []
        for item in manifests.objects:
            found = validate(item)
            problems.extend(found)
            if not found:
                valid.append(item)
        duplicates, rejected = duplicate_names(valid)
        problems.extend(duplicates)
        valid = [item for item in valid if id(item) not in rejected]
        state = cls.from_objects((item.obj for item in valid), problems, files=valid)
        state.problems.extend(_shared_addresses(state.pods))
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
        for obj in objects:
            if isinstance(obj, models.Namespace):
                declared[obj.metadata.name or ""] = obj.metadata.labels
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
                # The API server sets this label to the name, whatever the manifest says.
                labels = {**declared.get(name, {}), NAMESPACE_NAME_LABEL: name}
                state.namespaces[name] = Namespace(name, labels)
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


def _shared_addresses(pods: list[Pod]) -> list[Problem]:
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


def _pod_record(pod: models.Pod, namespace: str, file: str) -> Pod:
    texts = [pod.status.pod_ip] + [entry.ip for entry in pod.status.pod_ips]
    ips = tuple(dict.fromkeys(ipaddress.ip_address(t) for t in texts if t))
    return Pod(
        namespace=namespace,
        name=pod.metadata.name or "",
        labels=pod.metadata.labels,
        ports=_container_ports(pod.spec),
        owner=_owner(pod.metadata),
        ips=ips,
        node=pod.spec.node_name,
        host_network=pod.spec.host_network,
        phase=pod.status.phase,
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
