"""The API server's validation rules for the objects netfence reads.

Follows `pkg/apis/networking/validation` and `pkg/apis/core/validation` of Kubernetes: an
object that fails here would have been rejected by `kubectl apply`, so netfence rejects
it too (reports it and leaves it out) and carries on with the others. Every problem names
the field path, and the message says what to write instead where that is knowable.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from netfence.k8s import names
from netfence.k8s.loader import Loaded
from netfence.k8s.models import (
    Container,
    LabelSelector,
    Namespace,
    NetworkPolicy,
    NetworkPolicyPeer,
    NetworkPolicyPort,
    ObjectMeta,
    Pod,
    PodSpec,
    Workload,
)
from netfence.problems import Problem

PROTOCOLS = ("TCP", "UDP", "SCTP")
POLICY_TYPES = ("Ingress", "Egress")
SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
INT32_MAX = 2**31 - 1
MAX_PODS = 150_000  # Kubernetes' documented scalability limit for one cluster


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

    def each(self, path: str, reasons: Iterable[str], code: str, subject: str) -> None:
        for reason in reasons:
            self.error(path, f"{subject} {reason}", code)


def validate(item: Loaded) -> list[Problem]:
    """Every API-server rule the object breaks; empty when the server would accept it."""
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
            problems.append(
                Problem(
                    "error",
                    f"duplicate name: {first.ident} is already defined in {first.file}",
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
    addresses = [("status.podIP", pod.status.pod_ip)] + [
        (f"status.podIPs[{i}].ip", entry.ip) for i, entry in enumerate(pod.status.pod_ips)
    ]
    for path, text in addresses:
        if text is None:
            continue
        try:
            ipaddress.ip_address(text)
            valid = "%" not in text  # Python accepts IPv6 zone indexes, Kubernetes does not
        except ValueError:
            valid = False
        if not valid:
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
