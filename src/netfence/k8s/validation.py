"""The API server's validation rules for the objects netfence reads.

Follows `pkg/apis/networking/validation` and `pkg/apis/core/validation` of Kubernetes: an
object that fails here would have been rejected by `kubectl apply`, so netfence rejects
it too (reports it and leaves it out) and carries on with the others. Every problem names
the field path, and the message says what to write instead where that is knowable.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from netfence.k8s import names
from netfence.k8s.loader import Loaded, describe
from netfence.k8s.models import (
    AdminNetworkPolicySpec,
    AdminPort,
    BaselineAdminNetworkPolicy,
    ClusterNetworkPolicy,
    ClusterNetworkPolicySpec,
    ClusterPolicyObject,
    ClusterPolicyPeer,
    ClusterPolicyRule,
    ClusterPolicySpec,
    Container,
    DestinationPort,
    LabelSelector,
    Namespace,
    NamespacedPod,
    NetworkPolicy,
    NetworkPolicyPeer,
    NetworkPolicyPort,
    Node,
    ObjectMeta,
    Pod,
    PodSpec,
    PortRange,
    ProtocolMatch,
    Workload,
)
from netfence.problems import Problem

PROTOCOLS = ("TCP", "UDP", "SCTP")
POLICY_TYPES = ("Ingress", "Egress")
SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
INT32_MAX = 2**31 - 1
MAX_PODS = 150_000  # Kubernetes' documented scalability limit for one cluster
NODE_IP_ADDRESS_TYPES = ("InternalIP", "ExternalIP")  # Hostname, InternalDNS...: not addresses
PRIORITY_RANGE = (0, 1000)
# Per kind: the rule actions it accepts, its maximum of rules (per direction) and of peers
# and ports per rule, and whether it matches ports with `ports` (v1alpha1) or `protocols`.
ACTIONS = {
    "AdminNetworkPolicy": ("Allow", "Deny", "Pass"),
    "BaselineAdminNetworkPolicy": ("Allow", "Deny"),
    "ClusterNetworkPolicy": ("Accept", "Deny", "Pass"),
}
CLUSTER_POLICY_TIERS = ("Admin", "Baseline")


@dataclass
class _Report:
    item: Loaded
    problems: list[Problem] = field(default_factory=list)

    def error(self, path: str, message: str, code: str) -> None:
        self.problems.append(
            Problem(
                "error", message, file=self.item.file, obj=self.item.ident, path=path, code=code
            )
        )

    def warn(self, path: str, message: str, code: str) -> None:
        """Something the API server would reject that every reader of manifests accepts the
        same way: reported, and the object kept."""
        self.problems.append(
            Problem(
                "warning", message, file=self.item.file, obj=self.item.ident, path=path, code=code
            )
        )

    def each(self, path: str, reasons: Iterable[str], code: str, subject: str) -> None:
        for reason in reasons:
            self.error(path, f"{subject} {reason}", code)


def validate(item: Loaded) -> list[Problem]:
    """Every API-server rule the object breaks; empty when the server would accept it.

    Errors reject the object; warnings (see `_Report.warn`) keep it."""
    report = _Report(item)
    obj = item.obj
    if isinstance(obj, Namespace):
        _metadata(report, obj.metadata, names.dns1123_label)
    elif isinstance(obj, NetworkPolicy):
        _metadata(report, obj.metadata, names.dns1123_subdomain)
        _network_policy(report, obj)
    elif isinstance(obj, Pod):
        _metadata(report, obj.metadata, names.dns1123_subdomain)
        _pod_spec(report, obj.spec, "spec")
        _pod_ips(report, obj)
    elif isinstance(obj, Workload):
        _metadata(report, obj.metadata, names.dns1123_subdomain)
        _workload(report, obj)
    elif isinstance(obj, Node):
        _metadata(report, obj.metadata, names.dns1123_subdomain)
        _node_addresses(report, obj)
        _node_cidrs(report, obj)
    else:
        _metadata(report, obj.metadata, names.dns1123_subdomain)
        _cluster_policy(report, obj)
    return report.problems


def duplicate_names(items: Iterable[Loaded]) -> tuple[list[Problem], set[int]]:
    """Two objects of one kind with the same namespace and name: the second one is an error.

    Returns the problems and the `id()`s of the rejected items (the first of a name stays).
    """
    seen: dict[tuple[str, str, str], Loaded] = {}
    problems = []
    rejected: set[int] = set()
    for item in items:
        key = (item.kind, item.namespace, item.name)
        first = seen.setdefault(key, item)
        if first is not item:
            rejected.add(id(item))
            only_one = (
                " (a cluster has a single BaselineAdminNetworkPolicy, named `default`)"
                if item.kind == "BaselineAdminNetworkPolicy"
                else ""
            )
            problems.append(
                Problem(
                    "error",
                    f"duplicate name: {first.ident} is already defined in {first.file}{only_one}",
                    file=item.file,
                    obj=item.ident,
                    path="metadata.name",
                    code="duplicate-name",
                )
            )
    return problems, rejected


def _metadata(report: _Report, meta: ObjectMeta, name_rule: Callable[[str], list[str]]) -> None:
    if not meta.name:
        report.error("metadata.name", "is required", "missing-name")
    else:
        report.each("metadata.name", name_rule(meta.name), "invalid-name", f"{meta.name!r}")
    if meta.namespace:
        report.each(
            "metadata.namespace",
            names.dns1123_label(meta.namespace),
            "invalid-name",
            f"{meta.namespace!r}",
        )
    _labels(report, meta.labels, "metadata.labels")


def _labels(report: _Report, labels: dict[str, str], path: str) -> None:
    for key, value in labels.items():
        report.each(path, names.label_key(key), "invalid-label", f"key {key!r}:")
        report.each(f"{path}[{key!r}]", names.label_value(value), "invalid-label", f"{value!r}:")


def _selector(report: _Report, selector: LabelSelector, path: str) -> None:
    _labels(report, selector.match_labels, f"{path}.matchLabels")
    for i, req in enumerate(selector.match_expressions):
        where = f"{path}.matchExpressions[{i}]"
        report.each(f"{where}.key", names.label_key(req.key), "invalid-selector", f"{req.key!r}:")
        if req.operator in ("In", "NotIn"):
            if not req.values:
                report.error(
                    f"{where}.values",
                    f"must be specified when `operator` is {req.operator}",
                    "invalid-selector",
                )
            for j, value in enumerate(req.values):
                report.each(
                    f"{where}.values[{j}]",
                    names.label_value(value),
                    "invalid-selector",
                    f"{value!r}:",
                )
        elif req.operator in ("Exists", "DoesNotExist"):
            if req.values:
                report.error(
                    f"{where}.values",
                    f"may not be specified when `operator` is {req.operator}",
                    "invalid-selector",
                )
        else:
            report.error(
                f"{where}.operator",
                f"{req.operator!r} is not a valid selector operator; "
                f"use one of {', '.join(SELECTOR_OPERATORS)}",
                "invalid-selector",
            )


def _network_policy(report: _Report, policy: NetworkPolicy) -> None:
    spec = policy.spec
    _selector(report, spec.pod_selector, "spec.podSelector")
    for i, ingress in enumerate(spec.ingress or ()):
        for j, peer in enumerate(ingress.from_ or ()):
            _peer(report, peer, f"spec.ingress[{i}].from[{j}]")
        for j, port in enumerate(ingress.ports or ()):
            _policy_port(report, port, f"spec.ingress[{i}].ports[{j}]")
    for i, egress in enumerate(spec.egress or ()):
        for j, peer in enumerate(egress.to or ()):
            _peer(report, peer, f"spec.egress[{i}].to[{j}]")
        for j, port in enumerate(egress.ports or ()):
            _policy_port(report, port, f"spec.egress[{i}].ports[{j}]")
    types = spec.policy_types or []
    if len(types) > len(POLICY_TYPES):
        report.error(
            "spec.policyTypes", "may not specify more than two policyTypes", "invalid-type"
        )
    for i, ptype in enumerate(types):
        if ptype not in POLICY_TYPES:
            report.error(
                f"spec.policyTypes[{i}]",
                f'unsupported value {ptype!r}: supported values are "Ingress", "Egress"',
                "invalid-type",
            )


def _peer(report: _Report, peer: NetworkPolicyPeer, path: str) -> None:
    given = [
        name
        for name, value in (
            ("podSelector", peer.pod_selector),
            ("namespaceSelector", peer.namespace_selector),
            ("ipBlock", peer.ip_block),
        )
        if value is not None
    ]
    if not given:
        report.error(
            path,
            "must specify a peer: podSelector, namespaceSelector or ipBlock "
            "(to allow everyone, leave out `from`/`to` instead of listing an empty peer)",
            "empty-peer",
        )
    elif peer.ip_block is not None and len(given) > 1:
        report.error(
            path,
            f"may not specify both ipBlock and another peer ({', '.join(given)}); "
            "write them as separate list items",
            "ipblock-with-selector",
        )
    if peer.pod_selector is not None:
        _selector(report, peer.pod_selector, f"{path}.podSelector")
    if peer.namespace_selector is not None:
        _selector(report, peer.namespace_selector, f"{path}.namespaceSelector")
    if peer.ip_block is not None:
        _ip_block(report, peer.ip_block.cidr, peer.ip_block.except_, f"{path}.ipBlock")


def parse_cidr(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """A CIDR as the API server reads it: prefix required, host bits allowed, no IPv6 zone."""
    if "/" not in text or "%" in text:
        return None
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None


def _ip_block(report: _Report, cidr_text: str, excepts: list[str], path: str) -> None:
    cidr = parse_cidr(cidr_text)
    if cidr is None:
        report.error(
            f"{path}.cidr",
            f"{cidr_text!r} is not a valid CIDR (e.g. 10.0.0.0/16 or fd00::/64)",
            "invalid-cidr",
        )
        return
    for i, text in enumerate(excepts):
        hole = parse_cidr(text)
        where = f"{path}.except[{i}]"
        if hole is None:
            report.error(where, f"{text!r} is not a valid CIDR", "invalid-cidr")
        elif (
            hole.version != cidr.version
            or not cidr.supernet_of(hole)  # type: ignore[arg-type]
            or hole.prefixlen <= cidr.prefixlen
        ):
            report.error(
                where,
                f"{text} must be a strict subset of `cidr` {cidr_text}",
                "except-outside-cidr",
            )


def _policy_port(report: _Report, port: NetworkPolicyPort, path: str) -> None:
    if port.protocol is not None and port.protocol not in PROTOCOLS:
        report.error(
            f"{path}.protocol",
            f"unsupported value {port.protocol!r}: supported values are "
            + ", ".join(f'"{p}"' for p in PROTOCOLS),
            "invalid-protocol",
        )
    if isinstance(port.port, int):
        _port_number(report, port.port, f"{path}.port")
        if port.end_port is not None:
            if port.end_port < port.port:
                report.error(
                    f"{path}.endPort",
                    f"{port.end_port} must be greater than or equal to `port` ({port.port})",
                    "invalid-port",
                )
            _port_number(report, port.end_port, f"{path}.endPort")
    elif isinstance(port.port, str):
        if port.end_port is not None:
            report.error(
                f"{path}.endPort",
                f"may not be specified when `port` is a named port ({port.port!r})",
                "invalid-port",
            )
        report.each(f"{path}.port", names.port_name(port.port), "invalid-port", f"{port.port!r}:")
    elif port.end_port is not None:
        report.error(f"{path}.endPort", "may not be specified when `port` is not", "invalid-port")


def _port_number(report: _Report, number: int, path: str) -> None:
    if not 1 <= number <= 65535:
        report.error(path, f"{number} must be between 1 and 65535, inclusive", "invalid-port")


def _pod_spec(report: _Report, spec: PodSpec, path: str) -> None:
    groups = (("containers", spec.containers), ("initContainers", spec.init_containers))
    for group, containers in groups:
        for i, container in enumerate(containers):
            _container(report, container, f"{path}.{group}[{i}]")


def _container(report: _Report, container: Container, path: str) -> None:
    seen: set[str] = set()
    for i, port in enumerate(container.ports):
        where = f"{path}.ports[{i}]"
        _port_number(report, port.container_port, f"{where}.containerPort")
        if port.protocol not in PROTOCOLS:
            report.error(
                f"{where}.protocol",
                f"unsupported value {port.protocol!r}: supported values are "
                + ", ".join(f'"{p}"' for p in PROTOCOLS),
                "invalid-protocol",
            )
        if port.name:
            report.each(
                f"{where}.name", names.port_name(port.name), "invalid-port", f"{port.name!r}:"
            )
            if port.name in seen:
                report.error(f"{where}.name", f"duplicate port name {port.name!r}", "invalid-port")
            seen.add(port.name)


def _pod_ips(report: _Report, pod: Pod) -> None:
    status = pod.status
    _ip_addresses(
        report,
        [("status.podIP", status.pod_ip), ("status.hostIP", status.host_ip)]
        + [(f"status.podIPs[{i}].ip", entry.ip) for i, entry in enumerate(status.pod_ips)]
        + [(f"status.hostIPs[{i}].ip", entry.ip) for i, entry in enumerate(status.host_ips)],
    )


def _node_addresses(report: _Report, node: Node) -> None:
    """Only the IP-valued address types are addresses a packet can have."""
    _ip_addresses(
        report,
        [
            (f"status.addresses[{i}].address", entry.address)
            for i, entry in enumerate(node.status.addresses)
            if entry.type in NODE_IP_ADDRESS_TYPES
        ],
    )


def _node_cidrs(report: _Report, node: Node) -> None:
    """The node's pod ranges (where the agent refuses addresses no known pod holds)."""
    spec = node.spec
    written = [("spec.podCIDR", spec.pod_cidr)]
    written += [(f"spec.podCIDRs[{i}]", text) for i, text in enumerate(spec.pod_cidrs)]
    for path, text in written:
        if text is not None and parse_cidr(text) is None:
            report.error(path, f"{text!r} is not a valid CIDR", "invalid-cidr")


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP address as Kubernetes reads it (no IPv6 zone index, which Python accepts)."""
    if "%" in text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _ip_addresses(report: _Report, addresses: list[tuple[str, str | None]]) -> None:
    for path, text in addresses:
        if text is not None and parse_ip(text) is None:
            report.error(path, f"{text!r} is not a valid IP address", "invalid-ip")


def _workload(report: _Report, workload: Workload) -> None:
    replicas = workload.spec.replicas
    if replicas is not None and replicas < 0:
        report.error(
            "spec.replicas", f"{replicas} must be greater than or equal to 0", "invalid-replicas"
        )
    elif replicas is not None and replicas > INT32_MAX:
        report.error("spec.replicas", f"{replicas} does not fit in an int32", "invalid-replicas")
    elif replicas is not None and replicas > MAX_PODS:
        # Not an API-server rule: netfence expands replicas into pods, and no cluster runs
        # more than Kubernetes' supported maximum of pods.
        report.error(
            "spec.replicas",
            f"{replicas} is more than the {MAX_PODS:,} pods Kubernetes supports in a cluster",
            "invalid-replicas",
        )
    template = workload.spec.pod_template()
    if template is None:
        report.error(
            "spec.template", "is required: a workload needs a pod template", "missing-template"
        )
        return
    prefix = "spec.jobTemplate.spec.template" if workload.spec.job_template else "spec.template"
    _labels(report, template.metadata.labels, f"{prefix}.metadata.labels")
    _pod_spec(report, template.spec, f"{prefix}.spec")


# -- AdminNetworkPolicy, BaselineAdminNetworkPolicy (v1alpha1), ClusterNetworkPolicy (v1alpha2)
# The rules of the CRDs' OpenAPI schemas and CEL validations (network-policy-api): one field
# of several, list sizes, enums, the BANP's fixed name. One model reads all three kinds, so the
# fields a kind does not have are rejected here with a pointer to the one it does have.


def _cluster_policy(report: _Report, policy: ClusterPolicyObject) -> None:
    kind = policy.kind
    v2 = isinstance(policy, ClusterNetworkPolicy)
    spec = policy.spec
    if isinstance(policy, BaselineAdminNetworkPolicy):
        if policy.metadata.name and policy.metadata.name != "default":
            report.error(
                "metadata.name",
                f"must be `default`, not {policy.metadata.name!r}: a cluster has a single "
                "BaselineAdminNetworkPolicy, named `default`",
                "invalid-name",
            )
    else:
        low, high = PRIORITY_RANGE
        if not low <= policy.spec.priority <= high:
            report.error(
                "spec.priority",
                f"{policy.spec.priority} must be between {low} and {high}, inclusive "
                "(lower values are evaluated first)",
                "invalid-priority",
            )
    if isinstance(policy, ClusterNetworkPolicy) and policy.spec.tier not in CLUSTER_POLICY_TIERS:
        report.error(
            "spec.tier",
            f'unsupported value {policy.spec.tier!r}: supported values are "Admin", "Baseline"',
            "invalid-tier",
        )
    _subject(report, spec.subject.namespaces, spec.subject.pods, v2)
    limit = 25 if v2 else 100
    for direction, rules in (("ingress", spec.ingress), ("egress", spec.egress)):
        if len(rules) > limit:
            report.error(f"spec.{direction}", f"may hold at most {limit} rules", "too-many-rules")
        for i, rule in enumerate(rules):
            _cluster_rule(report, kind, direction, rule, f"spec.{direction}[{i}]", limit)


def _exactly_one(report: _Report, path: str, given: Mapping[str, object], what: str) -> list[str]:
    """The API's "exactly one field must be set" unions; returns the fields that are set."""
    found = [name for name, value in given.items() if value is not None]
    if len(found) != 1:
        have = f"; found {', '.join(f'`{f}`' for f in found)}" if found else ""
        report.error(
            path,
            f"{what} must set exactly one of {', '.join(f'`{f}`' for f in given)}{have}"
            + ("; write them as separate list items" if len(found) > 1 else ""),
            "not-exactly-one",
        )
    return found


def _subject(
    report: _Report, namespaces: LabelSelector | None, pods: NamespacedPod | None, v2: bool
) -> None:
    _exactly_one(report, "spec.subject", {"namespaces": namespaces, "pods": pods}, "a subject")
    if namespaces is not None:
        _selector(report, namespaces, "spec.subject.namespaces")
    if pods is not None:
        _namespaced_pods(report, pods, "spec.subject.pods", v2)


def _namespaced_pods(report: _Report, pods: NamespacedPod, path: str, v2: bool) -> None:
    """Both selectors are required by the v1alpha1 schema (v1alpha2 makes the namespace one
    optional). Typed clients (netpol-analyzer, the Go implementations) read a missing one as
    the empty selector, and manifests in the wild leave them out, so: a warning, and `{}`."""
    if pods.namespace_selector is None and not v2:
        report.warn(
            f"{path}.namespaceSelector",
            "missing: the API server requires it; read as `{}` (every namespace)",
            "missing-selector",
        )
    elif pods.namespace_selector is not None:
        _selector(report, pods.namespace_selector, f"{path}.namespaceSelector")
    if pods.pod_selector is None:
        report.warn(
            f"{path}.podSelector",
            "missing: the API server requires it; read as `{}` (every pod)",
            "missing-selector",
        )
    else:
        _selector(report, pods.pod_selector, f"{path}.podSelector")


def _cluster_rule(
    report: _Report, kind: str, direction: str, rule: ClusterPolicyRule, path: str, limit: int
) -> None:
    v2 = kind == "ClusterNetworkPolicy"
    actions = ACTIONS[kind]
    if rule.action not in actions:
        other = {"Accept": "Allow", "Allow": "Accept"}.get(rule.action)
        hint = f" (`{other}` is the word for it in {kind})" if other in actions else ""
        report.error(
            f"{path}.action",
            f"unsupported value {rule.action!r}: supported values are "
            + ", ".join(f'"{a}"' for a in actions)
            + hint,
            "invalid-action",
        )
    if rule.name is not None and len(rule.name) > 100:
        report.error(f"{path}.name", "must be no more than 100 characters", "invalid-name")
    field, wrong = ("from", "to") if direction == "ingress" else ("to", "from")
    peers = rule.from_ if direction == "ingress" else rule.to
    if (rule.to if direction == "ingress" else rule.from_) is not None:
        report.error(
            f"{path}.{wrong}",
            f"unknown field: {direction} rules list their peers in `{field}`",
            "unknown-field",
        )
    if not peers:
        report.error(
            f"{path}.{field}",
            "is required and must list at least one peer (`namespaces: {}` selects every pod)",
            "missing-peers",
        )
    elif len(peers) > limit:
        report.error(f"{path}.{field}", f"may hold at most {limit} peers", "too-many-peers")
    for j, peer in enumerate(peers or ()):
        _cluster_peer(report, peer, direction, rule.action, f"{path}.{field}[{j}]", v2)
    if v2 and rule.ports is not None:
        report.error(
            f"{path}.ports",
            "unknown field: ClusterNetworkPolicy (v1alpha2) matches ports with `protocols`",
            "unknown-field",
        )
    if not v2 and rule.protocols is not None:
        report.error(
            f"{path}.protocols",
            f"unknown field: `protocols` is ClusterNetworkPolicy's (v1alpha2); {kind} "
            "(v1alpha1) matches ports with `ports`",
            "unknown-field",
        )
    name = "protocols" if v2 else "ports"
    entries: list[AdminPort | ProtocolMatch] = [*((rule.protocols if v2 else rule.ports) or [])]
    if (rule.protocols if v2 else rule.ports) == []:
        report.error(
            f"{path}.{name}",
            f"must list at least one entry (leave `{name}` out to match every port)",
            "empty-ports",
        )
    if len(entries) > limit:
        report.error(f"{path}.{name}", f"may hold at most {limit} entries", "too-many-ports")
    for k, entry in enumerate(entries):
        where = f"{path}.{name}[{k}]"
        if isinstance(entry, AdminPort):
            _admin_port(report, entry, where)
        else:
            _protocol_match(report, entry, where)


def _cluster_peer(
    report: _Report, peer: ClusterPolicyPeer, direction: str, action: str, path: str, v2: bool
) -> None:
    egress_only = {
        "nodes": peer.nodes,
        "networks": peer.networks,
        "domainNames": peer.domain_names,
    }
    misplaced = [name for name, value in egress_only.items() if value is not None]
    if direction == "ingress" and misplaced:
        for name in misplaced:
            report.error(
                f"{path}.{name}",
                f"unknown field: `{name}` peers are only allowed in egress rules (`to`)",
                "unknown-field",
            )
        return
    given: dict[str, object] = {"namespaces": peer.namespaces, "pods": peer.pods}
    if direction == "egress":
        given.update(egress_only)
    _exactly_one(report, path, given, "a peer")
    if peer.namespaces is not None:
        _selector(report, peer.namespaces, f"{path}.namespaces")
    if peer.pods is not None:
        _namespaced_pods(report, peer.pods, f"{path}.pods", v2)
    if peer.nodes is not None:
        _selector(report, peer.nodes, f"{path}.nodes")
    if peer.networks is not None:
        _networks(report, peer.networks, f"{path}.networks", v2)
    if peer.domain_names is not None:
        _domain_names(report, peer.domain_names, action, f"{path}.domainNames")


def _list_size(report: _Report, items: list[str], path: str) -> None:
    """networks and domainNames: 1 to 25 entries, no repeats (listType=set)."""
    if not items:
        report.error(path, "must list at least one entry", "empty-list")
    elif len(items) > 25:
        report.error(path, "may hold at most 25 entries", "too-many-entries")
    seen: set[str] = set()
    for i, item in enumerate(items):
        if item in seen:
            report.error(f"{path}[{i}]", f"duplicate entry {item!r}", "duplicate-entry")
        seen.add(item)


def _networks(report: _Report, networks: list[str], path: str, v2: bool) -> None:
    _list_size(report, networks, path)
    for i, text in enumerate(networks):
        where = f"{path}[{i}]"
        if len(text) > 43:
            report.error(where, "must be no more than 43 characters", "invalid-cidr")
        elif parse_cidr(text) is None:
            report.error(
                where,
                f"{text!r} is not a valid CIDR (e.g. 10.0.0.0/16 or fd00::/64)",
                "invalid-cidr",
            )
        elif not v2 and (":" in text) == ("." in text):
            report.error(
                where,
                f"{text!r}: IPv4 addresses embedded in IPv6 are not supported; "
                "write the IPv4 CIDR itself",
                "invalid-cidr",
            )


_DOMAIN_NAME = re.compile(
    r"(\*\.)?([a-zA-z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.)+[a-zA-z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.?"
)


def _domain_names(report: _Report, domains: list[str], action: str, path: str) -> None:
    _list_size(report, domains, path)
    if action not in ("Allow", "Accept"):
        report.error(
            path,
            f"domainNames peers are only allowed in Allow/Accept rules, not {action}: "
            "allow the domains and deny the rest in a later rule",
            "domain-names-not-allowed",
        )
    for i, domain in enumerate(domains):
        if not _DOMAIN_NAME.fullmatch(domain):
            report.error(
                f"{path}[{i}]",
                f"{domain!r} is not a domain name (e.g. example.com or *.example.com)",
                "invalid-domain-name",
            )


def _admin_port(report: _Report, port: AdminPort, path: str) -> None:
    given = {
        "portNumber": port.port_number,
        "namedPort": port.named_port,
        "portRange": port.port_range,
    }
    if len(_exactly_one(report, path, given, "a port")) != 1:
        return
    if port.port_number is not None:
        _protocol(report, port.port_number.protocol, f"{path}.portNumber.protocol")
        _port_number(report, port.port_number.port, f"{path}.portNumber.port")
    elif port.named_port is not None:
        report.each(
            f"{path}.namedPort",
            names.port_name(port.named_port),
            "invalid-port",
            f"{port.named_port!r}:",
        )
    elif port.port_range is not None:
        _protocol(report, port.port_range.protocol, f"{path}.portRange.protocol")
        _port_range(report, port.port_range, f"{path}.portRange", strict=False)


def _protocol_match(report: _Report, match: ProtocolMatch, path: str) -> None:
    given = {
        "tcp": match.tcp,
        "udp": match.udp,
        "sctp": match.sctp,
        "destinationNamedPort": match.destination_named_port,
    }
    found = _exactly_one(report, path, given, "a protocol match")
    if len(found) != 1:
        return
    if match.destination_named_port is not None:
        report.each(
            f"{path}.destinationNamedPort",
            names.port_name(match.destination_named_port),
            "invalid-port",
            f"{match.destination_named_port!r}:",
        )
        return
    ports = match.tcp or match.udp or match.sctp
    assert ports is not None
    where = f"{path}.{found[0]}.destinationPort"
    if ports.destination_port is None:
        report.error(
            where,
            "is required: a `number` or a `range` (all ports: range start 1, end 65535)",
            "missing-port",
        )
        return
    _destination_port(report, ports.destination_port, where)


def _destination_port(report: _Report, port: DestinationPort, path: str) -> None:
    given = {"number": port.number, "range": port.range}
    if len(_exactly_one(report, path, given, "a destination port")) != 1:
        return
    if port.number is not None:
        _port_number(report, port.number, f"{path}.number")
    elif port.range is not None:
        if "protocol" in port.range.model_fields_set:
            report.error(
                f"{path}.range.protocol",
                "unknown field: in v1alpha2 the protocol is the key above (tcp, udp, sctp)",
                "unknown-field",
            )
        _port_range(report, port.range, f"{path}.range", strict=True)


def _port_range(report: _Report, port_range: PortRange, path: str, *, strict: bool) -> None:
    """v1alpha2 enforces start < end. v1alpha1 only documents it: the API server stores a
    reversed range, which matches nothing (a warning); a one-port range works as written."""
    _port_number(report, port_range.start, f"{path}.start")
    _port_number(report, port_range.end, f"{path}.end")
    if strict and port_range.end <= port_range.start:
        report.error(
            f"{path}.end",
            f"{port_range.end} must be greater than `start` ({port_range.start})",
            "invalid-port",
        )
    elif port_range.end < port_range.start:
        report.warn(
            f"{path}.end",
            f"{port_range.end} is below `start` ({port_range.start}): the range is empty and "
            "this entry matches no port",
            "empty-port-range",
        )


def _protocol(report: _Report, protocol: str, path: str) -> None:
    if protocol not in PROTOCOLS:
        report.error(
            path,
            f"unsupported value {protocol!r}: supported values are "
            + ", ".join(f'"{p}"' for p in PROTOCOLS),
            "invalid-protocol",
        )


class Ranked(Protocol):
    """A cluster-wide policy as the priority check sees it (`cluster.state.ClusterPolicy`)."""

    @property
    def kind(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def spec(self) -> ClusterPolicySpec: ...
    @property
    def file(self) -> str: ...


def priority_conflicts(policies: Iterable[Ranked]) -> list[Problem]:
    """Two policies of one tier with one priority: their relative order is undefined.

    The API server accepts both; Kubernetes leaves their order to the implementation, so the
    answer would depend on the plugin. Both stay in the analysis (in name order, netfence's
    tie-break) and each later one gets an error naming the first.
    """
    seen: dict[tuple[str, int], Ranked] = {}
    problems = []
    for policy in policies:
        spec = policy.spec
        if isinstance(spec, ClusterNetworkPolicySpec):
            tier, priority = spec.tier, spec.priority
        elif isinstance(spec, AdminNetworkPolicySpec):
            tier, priority = "Admin", spec.priority
        else:
            continue
        first = seen.setdefault((tier, priority), policy)
        if first is not policy:
            problems.append(
                Problem(
                    "error",
                    f"priority {priority} is also the priority of "
                    f"{describe(first.kind, '', first.name)} ({first.file}): the order of two "
                    f"{tier}-tier policies with one priority is undefined, so their verdicts "
                    "depend on the network plugin; give each its own priority",
                    file=policy.file,
                    obj=describe(policy.kind, "", policy.name),
                    path="spec.priority",
                    code="duplicate-priority",
                )
            )
    return problems
