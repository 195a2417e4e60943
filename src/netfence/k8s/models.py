"""Typed, immutable models of the Kubernetes objects netfence reads.

Only the wire *shape* is checked here (types, required fields); the API server's semantic
rules live in `validation`, which walks these models and can report every problem at once
with its exact field path. Unknown fields are ignored, since real manifests carry far more
than policy semantics need. `null` in YAML means "absent", as it does for the API server.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, StrictStr
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

T = TypeVar("T")


def _none_as_empty_list(value: Any) -> Any:
    return [] if value is None else value


def _none_as_empty_map(value: Any) -> Any:
    return {} if value is None else value


def _label_map(value: Any) -> Any:
    """Labels and matchLabels: a map; a string such as `app=web-server` gets the fix shown."""
    if value is None:
        return {}
    if isinstance(value, str):
        key, sep, val = value.partition("=")
        hint = f"; write it as a map: `{key.strip()}: {val.strip()}`" if sep else ""
        raise PydanticCustomError(
            "label_map",
            "must be a map of label keys to values, not the string {text}{hint}",
            {"text": repr(value), "hint": hint},
        )
    if isinstance(value, dict):
        # `app:` with no value is null, which the API server reads as the empty string.
        return {k: ("" if v is None else v) for k, v in value.items()}
    return value


def _int_or_string(value: Any) -> Any:
    """IntOrString: one clear message instead of one per union branch."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise PydanticCustomError(
            "int_or_string",
            "must be a port number or a port name, not {value}",
            {"value": repr(value)},
        )
    return value


OptList = Annotated[list[T], BeforeValidator(_none_as_empty_list)]
Labels = Annotated[dict[StrictStr, StrictStr], BeforeValidator(_label_map)]
IntOrString = Annotated[int | str, BeforeValidator(_int_or_string)]


class Wire(BaseModel):
    """Base of all wire models: camelCase aliases, frozen, unknown fields ignored."""

    model_config = ConfigDict(
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        alias_generator=to_camel,
    )


class Strict(Wire):
    """NetworkPolicy's own schema is small and fully known: an unknown field there is a typo
    (`podselector:` would otherwise silently select every pod), and kubectl's default strict
    field validation rejects it, so these models forbid extra fields."""

    model_config = ConfigDict(extra="forbid")


class OwnerReference(Wire):
    kind: StrictStr | None = None
    name: StrictStr | None = None
    controller: bool | None = None


OBJECT_META_FIELDS = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
        "clusterName",  # removed in 1.25, still in older dumps
    }
)


class ObjectMeta(Wire):
    name: StrictStr | None = None
    namespace: StrictStr | None = None
    labels: Labels = Field(default_factory=dict)
    owner_references: OptList[OwnerReference] = Field(default_factory=list)


class LabelSelectorRequirement(Strict):
    key: StrictStr
    operator: StrictStr
    values: OptList[StrictStr] = Field(default_factory=list)


class LabelSelector(Strict):
    match_labels: Labels = Field(default_factory=dict)
    match_expressions: OptList[LabelSelectorRequirement] = Field(default_factory=list)


class IPBlock(Strict):
    cidr: StrictStr
    except_: OptList[StrictStr] = Field(default_factory=list, alias="except")


class NetworkPolicyPeer(Strict):
    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None


class NetworkPolicyPort(Strict):
    protocol: StrictStr | None = None
    port: IntOrString | None = None
    end_port: StrictInt | None = None


class NetworkPolicyIngressRule(Strict):
    from_: list[NetworkPolicyPeer] | None = Field(default=None, alias="from")
    ports: list[NetworkPolicyPort] | None = None


class NetworkPolicyEgressRule(Strict):
    to: list[NetworkPolicyPeer] | None = None
    ports: list[NetworkPolicyPort] | None = None


class NetworkPolicySpec(Strict):
    # `podSelector:` with no value decodes, in the API server, to the empty selector.
    pod_selector: Annotated[LabelSelector, BeforeValidator(_none_as_empty_map)] = Field(
        default_factory=LabelSelector
    )
    # None (absent) and [] differ only for policyTypes defaulting, so keep them apart.
    ingress: list[NetworkPolicyIngressRule] | None = None
    egress: list[NetworkPolicyEgressRule] | None = None
    policy_types: list[StrictStr] | None = None


class NetworkPolicy(Strict):
    api_version: StrictStr | None = None
    kind: Literal["NetworkPolicy"] = "NetworkPolicy"
    metadata: ObjectMeta
    spec: NetworkPolicySpec = Field(default_factory=NetworkPolicySpec)
    status: dict[str, Any] | None = None  # deprecated in v1.24, ignored


class ContainerPort(Wire):
    name: StrictStr | None = None
    container_port: StrictInt
    protocol: StrictStr = "TCP"


class Container(Wire):
    name: StrictStr = ""
    ports: OptList[ContainerPort] = Field(default_factory=list)


class PodSpec(Wire):
    containers: OptList[Container] = Field(default_factory=list)
    init_containers: OptList[Container] = Field(default_factory=list)
    host_network: bool = False
    node_name: StrictStr | None = None


class PodIP(Wire):
    ip: StrictStr


class PodStatus(Wire):
    pod_ip: StrictStr | None = Field(default=None, alias="podIP")
    pod_ips: OptList[PodIP] = Field(default_factory=list, alias="podIPs")
    host_ip: StrictStr | None = Field(default=None, alias="hostIP")
    host_ips: OptList[PodIP] = Field(default_factory=list, alias="hostIPs")
    phase: StrictStr | None = None


class Pod(Wire):
    kind: Literal["Pod"] = "Pod"
    metadata: ObjectMeta
    spec: PodSpec = Field(default_factory=PodSpec)
    status: PodStatus = Field(default_factory=PodStatus)


class PodTemplate(Wire):
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: PodSpec = Field(default_factory=PodSpec)


class JobSpec(Wire):
    template: PodTemplate = Field(default_factory=PodTemplate)


class JobTemplate(Wire):
    spec: JobSpec = Field(default_factory=JobSpec)


class WorkloadSpec(Wire):
    replicas: StrictInt | None = None
    template: PodTemplate | None = None
    job_template: JobTemplate | None = None  # CronJob

    def pod_template(self) -> PodTemplate | None:
        if self.job_template is not None:
            return self.job_template.spec.template
        return self.template


WORKLOAD_KINDS = frozenset(
    {
        "Deployment",
        "StatefulSet",
        "DaemonSet",
        "ReplicaSet",
        "ReplicationController",
        "Job",
        "CronJob",
    }
)


class Workload(Wire):
    kind: StrictStr
    metadata: ObjectMeta
    spec: WorkloadSpec = Field(default_factory=WorkloadSpec)


class Namespace(Wire):
    kind: Literal["Namespace"] = "Namespace"
    metadata: ObjectMeta


# -- the cluster-wide tiers: policy.networking.k8s.io --------------------------------------
#
# AdminNetworkPolicy and BaselineAdminNetworkPolicy (v1alpha1) and ClusterNetworkPolicy
# (v1alpha2) share their subject, peer and rule shapes, so one set of models reads all three;
# which fields a given kind and version may use (`ports` in v1alpha1, `protocols` in v1alpha2,
# `nodes`/`networks` only towards egress, ...) is checked in `validation`, where the message
# can say what to write instead. These are CRDs with a structural schema, which the API server
# applies with strict field validation: unknown fields are errors here too.


class NamespacedPod(Strict):
    """Pods matching `podSelector` in namespaces matching `namespaceSelector`."""

    namespace_selector: LabelSelector | None = None
    pod_selector: LabelSelector | None = None


class ClusterPolicySubject(Strict):
    namespaces: LabelSelector | None = None
    pods: NamespacedPod | None = None


class ClusterPolicyPeer(Strict):
    namespaces: LabelSelector | None = None
    pods: NamespacedPod | None = None
    nodes: LabelSelector | None = None  # egress only
    networks: list[StrictStr] | None = None  # egress only
    domain_names: list[StrictStr] | None = None  # egress only, Allow/Accept rules only


class PortNumber(Strict):
    """v1alpha1 `portNumber`; the protocol defaults to TCP (a CRD default)."""

    protocol: StrictStr = "TCP"
    port: StrictInt


class PortRange(Strict):
    """v1alpha1 `portRange` (with its protocol) and v1alpha2 `range` (without)."""

    protocol: StrictStr = "TCP"
    start: StrictInt
    end: StrictInt


class AdminPort(Strict):
    """v1alpha1: exactly one of a number, a container port name or a range."""

    port_number: PortNumber | None = None
    named_port: StrictStr | None = None
    port_range: PortRange | None = None


class DestinationPort(Strict):
    """v1alpha2: exactly one of a number or a range."""

    number: StrictInt | None = None
    range: PortRange | None = None


class ProtocolPorts(Strict):
    destination_port: DestinationPort | None = None


class ProtocolMatch(Strict):
    """v1alpha2 `protocols` entry: exactly one of tcp, udp, sctp, destinationNamedPort."""

    tcp: ProtocolPorts | None = None
    udp: ProtocolPorts | None = None
    sctp: ProtocolPorts | None = None
    destination_named_port: StrictStr | None = None


class ClusterPolicyRule(Strict):
    """An ingress (`from`) or egress (`to`) rule; validation keeps each to its side."""

    name: StrictStr | None = None
    action: StrictStr
    from_: list[ClusterPolicyPeer] | None = Field(default=None, alias="from")
    to: list[ClusterPolicyPeer] | None = None
    ports: list[AdminPort] | None = None  # v1alpha1
    protocols: list[ProtocolMatch] | None = None  # v1alpha2


class ClusterPolicySpec(Strict):
    subject: ClusterPolicySubject
    ingress: OptList[ClusterPolicyRule] = Field(default_factory=list)
    egress: OptList[ClusterPolicyRule] = Field(default_factory=list)


class AdminNetworkPolicySpec(ClusterPolicySpec):
    priority: StrictInt


class BaselineAdminNetworkPolicySpec(ClusterPolicySpec):
    pass


class ClusterNetworkPolicySpec(ClusterPolicySpec):
    tier: StrictStr
    priority: StrictInt


class AdminNetworkPolicy(Strict):
    api_version: StrictStr | None = None
    kind: Literal["AdminNetworkPolicy"] = "AdminNetworkPolicy"
    metadata: ObjectMeta
    spec: AdminNetworkPolicySpec
    status: dict[str, Any] | None = None


class BaselineAdminNetworkPolicy(Strict):
    api_version: StrictStr | None = None
    kind: Literal["BaselineAdminNetworkPolicy"] = "BaselineAdminNetworkPolicy"
    metadata: ObjectMeta
    spec: BaselineAdminNetworkPolicySpec
    status: dict[str, Any] | None = None


class ClusterNetworkPolicy(Strict):
    api_version: StrictStr | None = None
    kind: Literal["ClusterNetworkPolicy"] = "ClusterNetworkPolicy"
    metadata: ObjectMeta
    spec: ClusterNetworkPolicySpec
    status: dict[str, Any] | None = None


ClusterPolicyObject = AdminNetworkPolicy | BaselineAdminNetworkPolicy | ClusterNetworkPolicy


# -- nodes: the `nodes` peer of egress rules selects them by label and matches their addresses


class NodeAddress(Wire):
    type: StrictStr | None = None
    address: StrictStr


class NodeStatus(Wire):
    addresses: OptList[NodeAddress] = Field(default_factory=list)


class NodeSpec(Wire):
    pod_cidr: StrictStr | None = Field(default=None, alias="podCIDR")
    pod_cidrs: OptList[StrictStr] = Field(default_factory=list, alias="podCIDRs")


class Node(Wire):
    kind: Literal["Node"] = "Node"
    metadata: ObjectMeta
    spec: NodeSpec = Field(default_factory=NodeSpec)
    status: NodeStatus = Field(default_factory=NodeStatus)


CLUSTER_SCOPED_KINDS = frozenset(
    {
        "Namespace",
        "Node",
        "AdminNetworkPolicy",
        "BaselineAdminNetworkPolicy",
        "ClusterNetworkPolicy",
    }
)

K8sObject = NetworkPolicy | Pod | Namespace | Workload | Node | ClusterPolicyObject
