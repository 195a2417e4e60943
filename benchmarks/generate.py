#!/usr/bin/env python3
"""Generate realistic, deterministic Kubernetes clusters for benchmarking.

Usage::

    python benchmarks/generate.py OUTDIR --pods N --policies M [--seed S]
                                  [--emit {pods,workloads,both}]

Why this exists: performance numbers for a NetworkPolicy analyzer only mean
something on inputs that look like real clusters - many namespaces, workloads
with several replicas, named ports, label selectors of every flavour, ipBlocks
with holes, default-deny baselines - and on inputs that are byte-for-byte
reproducible so that two runs (or two tools) are compared on the same data.

The output folder contains multi-document YAML files:

``namespaces.yaml``
    ``Namespace`` objects with ``team``/``env``/``kubernetes.io/metadata.name``
    labels (plus ``kube-system``, ``monitoring`` and ``logging``).
``pods.yaml`` (``--emit pods`` or ``both``)
    exactly N ``Pod`` objects, one per replica, each with an owner reference
    (``ReplicaSet`` for Deployments, ``StatefulSet``, ``DaemonSet``) with
    ``controller: true``, labels shared by all replicas of a workload and
    ``status.podIP``/``status.podIPs`` (10.x IPv4 + fd00: IPv6).
``workloads.yaml`` (``--emit workloads`` or ``both``)
    the ``Deployment``/``StatefulSet``/``DaemonSet`` objects whose replicas
    add up to N pods (DaemonSets have one pod per node).
``policies.yaml``
    exactly M ``NetworkPolicy`` objects of mixed, realistic shapes.

The default is ``--emit pods`` because tools that expand controllers into pods
(network-config-analyzer does) would otherwise see every pod twice: once as
the ``Pod`` and once synthesised from its ``Deployment``.  Use ``both`` for a
``kubectl get all``-like snapshot.

Every object is checked against the API server's validation rules that matter
here (DNS-1123 names, qualified label keys, label values, IANA port names,
NetworkPolicy port/peer/ipBlock rules, selector/template agreement) before
anything is written, so a generator bug fails loudly instead of silently
benchmarking invalid input.  Generation is a pure function of
``(pods, policies, seed)``: only a seeded :class:`random.Random` is used and no
set or hash ordering leaks into the output.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import random
import re
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Manifest = dict[str, Any]

# --------------------------------------------------------------------------
# Catalogue of realistic components
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Port:
    """A named container port, as it appears in ``spec.containers[].ports``."""

    name: str
    number: int
    protocol: str = "TCP"

    def manifest(self) -> Manifest:
        """Render as a container port entry."""
        return {"name": self.name, "containerPort": self.number, "protocol": self.protocol}


HTTP = Port("http", 8080)
HTTPS = Port("https", 8443)
METRICS = Port("metrics", 9090)
GRPC = Port("grpc", 50051)
ADMIN = Port("admin", 8081)


@dataclass(frozen=True)
class Component:
    """A kind of application that a namespace can run (e.g. ``redis``).

    ``weight`` is the relative frequency when populating namespaces; ``kind``
    is the controller used for it; ``replicas`` are the replica counts it is
    usually run with.
    """

    name: str
    tier: str
    ports: tuple[Port, ...]
    kind: str = "Deployment"
    weight: float = 1.0
    replicas: tuple[int, ...] = (1, 2, 2, 3, 3, 4, 6)
    image: str = ""


COMPONENTS: tuple[Component, ...] = (
    # web tier
    Component("frontend", "web", (HTTP, HTTPS, METRICS), weight=3, replicas=(2, 3, 3, 4, 6, 10)),
    Component("storefront", "web", (HTTP, METRICS), weight=1.5, replicas=(2, 3, 4, 6)),
    Component("admin-ui", "web", (HTTP,), weight=1, replicas=(1, 1, 2)),
    Component("gateway", "web", (HTTP, HTTPS, ADMIN, METRICS), weight=2, replicas=(2, 3, 3, 5, 8)),
    # api tier
    Component("api", "api", (HTTP, GRPC, METRICS), weight=4, replicas=(2, 3, 3, 4, 6, 12)),
    Component("auth", "api", (HTTP, GRPC, METRICS), weight=2),
    Component("cart", "api", (HTTP, GRPC, METRICS), weight=1.5),
    Component("checkout", "api", (HTTP, GRPC, METRICS), weight=1.5),
    Component("catalog", "api", (HTTP, GRPC, METRICS), weight=1.5),
    Component("search", "api", (HTTP, GRPC, METRICS), weight=1.5),
    Component("orders", "api", (HTTP, GRPC, METRICS), weight=1.5),
    Component("inventory", "api", (HTTP, GRPC, METRICS), weight=1),
    Component("payments", "api", (HTTP, GRPC, METRICS), weight=1),
    Component("users", "api", (HTTP, GRPC, METRICS), weight=1.5),
    Component("shipping", "api", (HTTP, GRPC, METRICS), weight=1),
    Component("currency", "api", (GRPC, METRICS), weight=1),
    Component("pricing", "api", (HTTP, GRPC, METRICS), weight=1),
    Component("recommendations", "api", (GRPC, METRICS), weight=1),
    Component("notifications", "api", (HTTP, METRICS), weight=1),
    Component("ledger", "api", (Port("http", 8000), Port("metrics", 8001)), weight=0.5),
    Component("reporting", "api", (Port("http", 8088), METRICS), weight=0.5),
    # workers
    Component("worker", "worker", (METRICS,), weight=3, replicas=(1, 2, 3, 4, 8, 16)),
    Component("scheduler", "worker", (METRICS,), weight=1, replicas=(1, 1, 2)),
    Component("email-sender", "worker", (METRICS,), weight=0.7, replicas=(1, 2)),
    Component("indexer", "worker", (METRICS,), weight=0.7, replicas=(1, 2, 3)),
    Component(
        "statsd",
        "worker",
        (Port("statsd", 8125, "UDP"), Port("admin", 8126)),
        weight=0.3,
        replicas=(1, 2),
    ),
    # caches
    Component(
        "redis",
        "cache",
        (Port("redis", 6379), Port("metrics", 9121)),
        kind="StatefulSet",
        weight=2,
        replicas=(1, 3, 3, 6),
    ),
    Component(
        "memcached",
        "cache",
        (Port("memcache", 11211), Port("metrics", 9150)),
        weight=0.7,
        replicas=(1, 2, 3),
    ),
    # databases
    Component(
        "postgres",
        "db",
        (Port("postgres", 5432), Port("metrics", 9187)),
        kind="StatefulSet",
        weight=2,
        replicas=(1, 2, 3),
    ),
    Component(
        "mysql",
        "db",
        (Port("mysql", 3306), Port("metrics", 9104)),
        kind="StatefulSet",
        weight=0.8,
        replicas=(1, 2, 3),
    ),
    Component(
        "mongodb",
        "db",
        (Port("mongodb", 27017), Port("metrics", 9216)),
        kind="StatefulSet",
        weight=0.6,
        replicas=(1, 3),
    ),
    Component(
        "elasticsearch",
        "db",
        (Port("http", 9200), Port("transport", 9300), Port("metrics", 9114)),
        kind="StatefulSet",
        weight=0.5,
        replicas=(3, 3, 5),
    ),
    # queues
    Component(
        "kafka",
        "queue",
        (Port("kafka", 9092), Port("metrics", 9308)),
        kind="StatefulSet",
        weight=0.8,
        replicas=(3, 3, 5),
    ),
    Component(
        "zookeeper",
        "queue",
        (Port("client", 2181), Port("peer", 2888), Port("leader", 3888)),
        kind="StatefulSet",
        weight=0.4,
        replicas=(3,),
    ),
    Component(
        "rabbitmq",
        "queue",
        (Port("amqp", 5672), Port("management", 15672), Port("metrics", 15692)),
        kind="StatefulSet",
        weight=0.6,
        replicas=(1, 3),
    ),
    Component(
        "nats",
        "queue",
        (Port("client", 4222), Port("cluster", 6222), Port("monitor", 8222)),
        kind="StatefulSet",
        weight=0.3,
        replicas=(3,),
    ),
    # telco-ish (UDP and the occasional SCTP)
    Component(
        "sip-proxy",
        "edge",
        (Port("sip", 5060, "UDP"), Port("sip-tcp", 5060), METRICS),
        weight=0.15,
        replicas=(2, 3),
    ),
    Component(
        "mme",
        "edge",
        (Port("s1ap", 36412, "SCTP"), Port("diameter", 3868, "SCTP"), METRICS),
        weight=0.1,
        replicas=(1, 2),
    ),
)
COMPONENT_BY_NAME = {c.name: c for c in COMPONENTS}

TEAMS: tuple[str, ...] = (
    "payments",
    "checkout",
    "identity",
    "search",
    "catalog",
    "platform",
    "growth",
    "ads",
    "billing",
    "logistics",
    "fraud",
    "support",
    "mobile",
    "web",
    "data",
    "ml",
    "risk",
    "orders",
    "messaging",
    "media",
    "maps",
    "partners",
    "loyalty",
    "pricing",
    "inventory",
    "reviews",
    "social",
    "security",
    "finance",
    "hr",
    "legal",
    "marketing",
    "analytics",
    "devex",
    "sre",
    "telco",
    "iot",
    "gaming",
    "video",
    "voice",
)
ENVS: tuple[str, ...] = ("prod", "staging", "dev")
ENV_WEIGHTS: tuple[float, ...] = (0.5, 0.3, 0.2)

# k8s "safe" alphabet used for generated name suffixes (no vowels, no 0/1/3).
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
# pod-template-hash values: the intersection of the safe alphabet and hex
# digits, so that tools which recognise ReplicaSet hashes by "is hex" (e.g.
# network-config-analyzer) still map pods back to their Deployment.
HASH_ALPHABET = "bcdf2456789"

PODS_PER_NODE = 50
DNS_LABELS = {"k8s-app": "kube-dns"}

# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------


@dataclass
class Namespace:
    """An application (or system) namespace and what runs in it."""

    name: str
    team: str
    env: str
    labels: dict[str, str]
    workloads: list[Workload] = field(default_factory=list)
    pending_policies: list[str] = field(default_factory=list)


@dataclass
class Workload:
    """A controller and the identical pods it owns."""

    namespace: str
    name: str
    kind: str
    component: Component
    replicas: int
    labels: dict[str, str]
    selector: dict[str, str]
    service_account: str
    template_hash: str


@dataclass
class Cluster:
    """All generated objects, grouped by the file they are written to."""

    namespaces: list[Manifest]
    workloads: list[Manifest]
    pods: list[Manifest]
    policies: list[Manifest]
    n_workloads: int = 0

    def summary(self) -> str:
        """One line describing the sizes, for logs."""
        return (
            f"{len(self.namespaces)} namespaces, {self.n_workloads} workloads, "
            f"{len(self.pods)} pods, {len(self.policies)} policies"
        )


class _Names:
    """Hands out unique names per namespace (DNS-1123 label, <= 63 chars)."""

    def __init__(self) -> None:
        self._used: dict[tuple[str, str], int] = {}

    def take(self, scope: str, base: str) -> str:
        """Return ``base`` or ``base-2``, ``base-3``... unused in ``scope``."""
        base = base[:55].rstrip("-")
        n = self._used.get((scope, base), 0) + 1
        self._used[(scope, base)] = n
        name = base if n == 1 else f"{base}-{n}"
        # a suffixed name could itself collide with a later base; register it too
        while n > 1 and (scope, name) in self._used:
            n += 1
            self._used[(scope, base)] = n
            name = f"{base}-{n}"
        if n > 1:
            self._used[(scope, name)] = 1
        return name


# --------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------


class Generator:
    """Builds one cluster; all randomness comes from ``self.rng``."""

    def __init__(self, pods: int, policies: int, seed: int) -> None:
        if pods < 1 or policies < 0:
            raise ValueError("need pods >= 1 and policies >= 0")
        self.n_pods = pods
        self.n_policies = policies
        self.rng = random.Random(seed)
        self.names = _Names()
        self.namespaces: list[Namespace] = []
        self.app_namespaces: list[Namespace] = []
        self.nodes = [f"node-{i:04d}" for i in range(max(1, math.ceil(pods / PODS_PER_NODE)))]
        self._node_pods = [0] * len(self.nodes)

    # ---- helpers -------------------------------------------------------

    def _suffix(self, n: int, alphabet: str = SAFE_ALPHABET) -> str:
        return "".join(self.rng.choice(alphabet) for _ in range(n))

    def _uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _weighted(self, items: Sequence[Any], weights: Sequence[float]) -> Any:
        return self.rng.choices(items, weights=weights, k=1)[0]

    # ---- namespaces ----------------------------------------------------

    def _add_namespace(
        self, name: str, team: str, env: str, extra: dict[str, str] | None = None, app: bool = True
    ) -> Namespace:
        labels = {"kubernetes.io/metadata.name": name}
        if team:
            labels["team"] = team
        if env:
            labels["env"] = env
        labels.update(extra or {})
        ns = Namespace(name, team, env, labels)
        self.namespaces.append(ns)
        if app:
            self.app_namespaces.append(ns)
        return ns

    def _make_namespaces(self, n_app: int) -> None:
        self._add_namespace("kube-system", "", "", app=False)
        self._add_namespace("monitoring", "sre", "prod", {"purpose": "observability"}, app=False)
        self._add_namespace("logging", "sre", "prod", {"purpose": "observability"}, app=False)
        for i in range(n_app):
            team = TEAMS[i % len(TEAMS)]
            env = self._weighted(ENVS, ENV_WEIGHTS)
            name = self.names.take("<ns>", f"{team}-{env}")
            extra: dict[str, str] = {}
            if self.rng.random() < 0.4:
                extra["istio-injection"] = "enabled"
            if self.rng.random() < 0.6:
                extra["pod-security.kubernetes.io/enforce"] = self.rng.choice(
                    ["baseline", "restricted"]
                )
            if env == "prod" and self.rng.random() < 0.3:
                extra["compliance.example.com/pci"] = "true"
            self._add_namespace(name, team, env, extra)

    # ---- workloads -----------------------------------------------------

    def _add_workload(
        self,
        ns: Namespace,
        comp: Component,
        replicas: int,
        kind: str | None = None,
        name: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> Workload:
        kind = kind or comp.kind
        name = name or self.names.take(ns.name, comp.name)
        if labels is None:
            labels = {
                "app": name,
                "app.kubernetes.io/name": comp.name,
                "app.kubernetes.io/part-of": ns.team or "platform",
                "tier": comp.tier,
                "version": self._weighted(["v1", "v2", "v3"], [0.6, 0.3, 0.1]),
            }
            if self.rng.random() < 0.1:
                labels["track"] = "canary"
        selector = {"app": labels["app"]} if "app" in labels else dict(labels)
        template_hash = self._suffix(10, HASH_ALPHABET)
        sa = name if self.rng.random() < 0.5 else "default"
        wl = Workload(ns.name, name, kind, comp, replicas, labels, selector, sa, template_hash)
        ns.workloads.append(wl)
        return wl

    def _make_workloads(self) -> list[Workload]:
        """Create workloads whose pod counts sum to exactly ``n_pods``."""
        by_name = {ns.name: ns for ns in self.namespaces}
        remaining = self.n_pods
        out: list[Workload] = []

        def take(n: int) -> int:
            nonlocal remaining
            n = max(0, min(n, remaining))
            remaining -= n
            return n

        dns = Component(
            "kube-dns",
            "system",
            (Port("dns", 53, "UDP"), Port("dns-tcp", 53, "TCP"), Port("metrics", 9153)),
            image="registry.k8s.io/coredns/coredns:v1.11.1",
        )
        out.append(
            self._add_workload(
                by_name["kube-system"], dns, take(2), name="kube-dns", labels=dict(DNS_LABELS)
            )
        )
        prom = Component(
            "prometheus",
            "monitoring",
            (Port("web", 9090),),
            image="quay.io/prometheus/prometheus:v2.51.0",
        )
        if remaining:
            out.append(
                self._add_workload(
                    by_name["monitoring"],
                    prom,
                    take(2),
                    "StatefulSet",
                    "prometheus",
                    {"app.kubernetes.io/name": "prometheus", "app": "prometheus"},
                )
            )
        if remaining >= 20:
            statsd = Component(
                "statsd-exporter",
                "monitoring",
                (Port("statsd", 8125, "UDP"), Port("metrics", 9102)),
                image="prom/statsd-exporter:v0.26.1",
            )
            out.append(
                self._add_workload(
                    by_name["monitoring"],
                    statsd,
                    take(2),
                    "Deployment",
                    "statsd-exporter",
                    {"app.kubernetes.io/name": "statsd", "app": "statsd-exporter"},
                )
            )
        # node agents only once there is room for a pod per node beside the apps
        if remaining >= 4 * len(self.nodes):
            exporter = Component(
                "node-exporter",
                "monitoring",
                (Port("metrics", 9100),),
                image="quay.io/prometheus/node-exporter:v1.7.0",
            )
            out.append(
                self._add_workload(
                    by_name["monitoring"],
                    exporter,
                    take(len(self.nodes)),
                    "DaemonSet",
                    "node-exporter",
                    {"app.kubernetes.io/name": "node-exporter", "app": "node-exporter"},
                )
            )
            fluent = Component(
                "fluent-bit", "logging", (Port("http", 2020),), image="fluent/fluent-bit:3.0.2"
            )
            out.append(
                self._add_workload(
                    by_name["logging"],
                    fluent,
                    take(len(self.nodes)),
                    "DaemonSet",
                    "fluent-bit",
                    {"app.kubernetes.io/name": "fluent-bit", "app": "fluent-bit"},
                )
            )

        # some namespaces are much busier than others
        ns_weights = [1.0 / math.sqrt(i + 1) for i in range(len(self.app_namespaces))]
        self.rng.shuffle(ns_weights)
        comp_weights = [c.weight for c in COMPONENTS]
        # every namespace gets at least one workload while pods last
        order = list(self.app_namespaces)
        while remaining:
            ns = order.pop(0) if order else self._weighted(self.app_namespaces, ns_weights)
            comp = self._weighted(COMPONENTS, comp_weights)
            out.append(self._add_workload(ns, comp, take(self.rng.choice(comp.replicas))))
        return out

    # ---- manifests: namespaces, workloads, pods -------------------------

    @staticmethod
    def _namespace_manifest(ns: Namespace) -> Manifest:
        return {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": ns.name, "labels": ns.labels},
        }

    def _pod_spec(self, wl: Workload) -> Manifest:
        comp = wl.component
        image = (
            comp.image
            or f"registry.example.com/{wl.namespace.split('-')[0]}/{comp.name}:1.{len(wl.name)}.0"
        )
        spec: Manifest = {
            "serviceAccountName": wl.service_account,
            "containers": [
                {"name": comp.name, "image": image, "ports": [p.manifest() for p in comp.ports]}
            ],
        }
        if wl.kind == "Deployment" and comp.tier in ("web", "api") and self.rng.random() < 0.3:
            spec["containers"].append(
                {
                    "name": "envoy",
                    "image": "envoyproxy/envoy:v1.29.1",
                    "ports": [{"name": "envoy-admin", "containerPort": 15000, "protocol": "TCP"}],
                }
            )
        return spec

    def _pod_labels(self, wl: Workload) -> dict[str, str]:
        labels = dict(wl.labels)
        if wl.kind == "Deployment":
            labels["pod-template-hash"] = wl.template_hash
        else:
            labels["controller-revision-hash"] = f"{wl.name}-{wl.template_hash}"
            if wl.kind == "DaemonSet":
                labels["pod-template-generation"] = "1"
        return labels

    def _workload_manifest(self, wl: Workload, spec: Manifest) -> Manifest:
        body: Manifest = {
            "selector": {"matchLabels": dict(wl.selector)},
            "template": {"metadata": {"labels": dict(wl.labels)}, "spec": spec},
        }
        if wl.kind != "DaemonSet":
            body = {"replicas": wl.replicas, **body}
        if wl.kind == "StatefulSet":
            body["serviceName"] = wl.name
        return {
            "apiVersion": "apps/v1",
            "kind": wl.kind,
            "metadata": {"name": wl.name, "namespace": wl.namespace, "labels": dict(wl.labels)},
            "spec": body,
        }

    def _pick_node(self) -> int:
        i = self.rng.randrange(len(self.nodes))
        while self._node_pods[i] >= 250:  # a /24 per node
            i = (i + 1) % len(self.nodes)
        return i

    def _node_ips(self, node: int) -> tuple[str, str]:
        """Pod IPs from the node's pod CIDRs: a /24 in 10.0-10.3/16 (more past 1024 nodes), a /64.

        Spreading nodes over four /16s makes ipBlock excepts such as 10.1.0.0/16 cut real pods out.
        """
        self._node_pods[node] += 1
        host = self._node_pods[node] + 1  # .2 upwards, like most CNIs
        v4 = ipaddress.IPv4Address(f"10.{node % 4 + 4 * (node // 1024)}.{(node // 4) % 256}.{host}")
        v6 = ipaddress.IPv6Address(f"fd00:10:{node:x}::{host:x}")
        return str(v4), str(v6)

    def _pods(self, wl: Workload, spec: Manifest, workload_uid: str) -> list[Manifest]:
        pods: list[Manifest] = []
        labels = self._pod_labels(wl)
        if wl.kind == "Deployment":
            owner = {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": f"{wl.name}-{wl.template_hash}",
                "uid": self._uid(),
                "controller": True,
                "blockOwnerDeletion": True,
            }
        else:
            owner = {
                "apiVersion": "apps/v1",
                "kind": wl.kind,
                "name": wl.name,
                "uid": workload_uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        for i in range(wl.replicas):
            if wl.kind == "StatefulSet":
                name = f"{wl.name}-{i}"
            elif wl.kind == "DaemonSet":
                name = f"{wl.name}-{self._suffix(5)}"
            else:
                name = f"{owner['name']}-{self._suffix(5)}"
            node = i if wl.kind == "DaemonSet" else self._pick_node()
            if wl.kind == "DaemonSet" and self._node_pods[node] >= 250:
                node = self._pick_node()
            v4, v6 = self._node_ips(node)
            pods.append(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": name,
                        "namespace": wl.namespace,
                        "uid": self._uid(),
                        "labels": labels,
                        "ownerReferences": [owner],
                    },
                    "spec": {**spec, "nodeName": self.nodes[node]},
                    "status": {
                        "phase": "Running",
                        "hostIP": f"192.168.{node // 250}.{node % 250 + 2}",
                        "podIP": v4,
                        "podIPs": [{"ip": v4}, {"ip": v6}],
                    },
                }
            )
        return pods

    # ---- policies ------------------------------------------------------

    def _policy(
        self,
        ns: str,
        base: str,
        pod_selector: Manifest,
        ingress: list[Manifest] | None = None,
        egress: list[Manifest] | None = None,
    ) -> Manifest:
        types = []
        spec: Manifest = {"podSelector": pod_selector}
        if ingress is not None:
            types.append("Ingress")
            spec["ingress"] = ingress
        if egress is not None:
            types.append("Egress")
            spec["egress"] = egress
        spec["policyTypes"] = types
        meta: Manifest = {"name": self.names.take(f"np:{ns}", base), "namespace": ns}
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": meta,
            "spec": spec,
        }

    @staticmethod
    def _ports(
        ports: Iterable[Port | tuple[str | int, str]], by_name: bool = True
    ) -> list[Manifest]:
        out: list[Manifest] = []
        for p in ports:
            if isinstance(p, Port):
                out.append({"protocol": p.protocol, "port": p.name if by_name else p.number})
            else:
                out.append({"protocol": p[1], "port": p[0]})
        return out

    def _app_sel(self, wl: Workload) -> Manifest:
        return {"matchLabels": {"app": wl.labels["app"]}}

    def _other_ns(self, ns: Namespace) -> Namespace:
        others = [o for o in self.app_namespaces if o is not ns and o.workloads]
        return self.rng.choice(others) if others else ns

    def _baseline(self, ns: Namespace, kind: str) -> Manifest:
        empty: Manifest = {}
        if kind == "default-deny-ingress":
            return self._policy(ns.name, kind, empty, ingress=[])
        if kind == "default-deny-egress":
            return self._policy(ns.name, kind, empty, egress=[])
        if kind == "default-deny-all":
            spec = self._policy(ns.name, kind, empty, ingress=[], egress=[])
            del spec["spec"]["ingress"], spec["spec"]["egress"]
            return spec
        if kind == "allow-dns-egress":
            return self._policy(
                ns.name,
                kind,
                empty,
                egress=[
                    {
                        "to": [
                            {
                                "namespaceSelector": {
                                    "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                                },
                                "podSelector": {"matchLabels": dict(DNS_LABELS)},
                            }
                        ],
                        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                    }
                ],
            )
        if kind == "allow-same-namespace":
            return self._policy(ns.name, kind, empty, ingress=[{"from": [{"podSelector": {}}]}])
        if kind == "allow-monitoring":
            return self._policy(
                ns.name,
                kind,
                empty,
                ingress=[
                    {
                        "from": [
                            {
                                "namespaceSelector": {
                                    "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                                },
                                "podSelector": {
                                    "matchLabels": {"app.kubernetes.io/name": "prometheus"}
                                },
                            }
                        ],
                        "ports": [{"protocol": "TCP", "port": "metrics"}],
                    }
                ],
            )
        raise ValueError(kind)

    def _plan_baselines(self, ns: Namespace) -> None:
        plan: list[str] = []
        r = self.rng.random()
        if r < 0.15:
            plan += ["default-deny-all", "allow-dns-egress"]
        elif r < 0.85:
            plan.append("default-deny-ingress")
        if "default-deny-all" not in plan and self.rng.random() < 0.35:
            plan += ["default-deny-egress", "allow-dns-egress"]
        if self.rng.random() < 0.3:
            plan.append("allow-same-namespace")
        if self.rng.random() < 0.5:
            plan.append("allow-monitoring")
        ns.pending_policies = plan

    # Each shape takes a namespace with workloads and returns one policy.

    def _shape_same_ns_named_port(self, ns: Namespace) -> Manifest:
        dst = self.rng.choice(ns.workloads)
        src = self.rng.choice(ns.workloads)
        ports = [p for p in dst.component.ports if p.name != "metrics"] or list(dst.component.ports)
        chosen = self.rng.sample(ports, k=min(len(ports), self.rng.choice([1, 1, 2])))
        return self._policy(
            ns.name,
            f"allow-{src.name}-to-{dst.name}",
            self._app_sel(dst),
            ingress=[{"from": [{"podSelector": self._app_sel(src)}], "ports": self._ports(chosen)}],
        )

    def _shape_cross_ns_and_peer(self, ns: Namespace) -> Manifest:
        dst = self.rng.choice(ns.workloads)
        other = self._other_ns(ns)
        src = self.rng.choice(other.workloads)
        if self.rng.random() < 0.5:
            ns_sel = {"matchLabels": {"team": other.team}}
        else:
            ns_sel = {"matchLabels": {"kubernetes.io/metadata.name": other.name}}
        pod_sel = (
            {"matchLabels": {"app.kubernetes.io/name": src.component.name}}
            if self.rng.random() < 0.5
            else {"matchLabels": {"tier": src.labels.get("tier", "api")}}
        )
        port = self.rng.choice(dst.component.ports)
        return self._policy(
            ns.name,
            f"allow-{other.team}-to-{dst.name}",
            self._app_sel(dst),
            ingress=[
                {
                    "from": [{"namespaceSelector": ns_sel, "podSelector": pod_sel}],
                    "ports": self._ports([port], by_name=self.rng.random() < 0.5),
                }
            ],
        )

    def _shape_match_expressions(self, ns: Namespace) -> Manifest:
        tiers = sorted({w.component.tier for w in ns.workloads})
        dst_tiers = self.rng.sample(tiers, k=min(len(tiers), self.rng.choice([1, 2])))
        pod_selector = {
            "matchExpressions": [{"key": "tier", "operator": "In", "values": dst_tiers}]
        }
        if self.rng.random() < 0.5:
            pod_selector["matchExpressions"].append({"key": "track", "operator": "DoesNotExist"})
        peer_ns = {"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}]}
        if self.rng.random() < 0.5:
            peer_ns["matchExpressions"].append({"key": "team", "operator": "Exists"})
        peer_pods: Manifest = {"matchExpressions": [{"key": "version", "operator": "Exists"}]}
        if self.rng.random() < 0.5:
            peer_pods["matchExpressions"].append(
                {
                    "key": "tier",
                    "operator": "In",
                    "values": self.rng.sample(["web", "api", "worker"], k=2),
                }
            )
        non_dev = [o for o in self.app_namespaces if o.env != "dev" and o.workloads]
        if non_dev and self.rng.random() < 0.3:
            peer_pods["matchLabels"] = {"app.kubernetes.io/part-of": self.rng.choice(non_dev).team}
        return self._policy(
            ns.name,
            f"allow-{'-'.join(dst_tiers)}-from-non-dev",
            pod_selector,
            ingress=[
                {
                    "from": [{"namespaceSelector": peer_ns, "podSelector": peer_pods}],
                    "ports": self._ports([HTTP, GRPC]),
                }
            ],
        )

    def _shape_port_range(self, ns: Namespace) -> Manifest:
        dst = self.rng.choice(ns.workloads)
        start = self.rng.choice([8000, 8080, 9000, 30000, 5000])
        end = start + self.rng.choice([10, 100, 1000])
        ports: list[Manifest] = [{"protocol": "TCP", "port": start, "endPort": end}]
        if self.rng.random() < 0.3:
            ports.append({"protocol": "UDP", "port": 5000, "endPort": 5100})
        return self._policy(
            ns.name,
            f"allow-range-{start}-{end}-to-{dst.name}",
            self._app_sel(dst),
            ingress=[
                {
                    "from": [
                        {"podSelector": {"matchLabels": {"tier": "web"}}},
                        {"namespaceSelector": {"matchLabels": {"team": ns.team}}},
                    ],
                    "ports": ports,
                }
            ],
        )

    def _shape_internet_egress(self, ns: Namespace) -> Manifest:
        src = self.rng.choice(ns.workloads)
        peer: Manifest = {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}}
        if self.rng.random() < 0.4:
            peer["ipBlock"]["except"] = [
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "169.254.169.254/32",
            ]
        to = [peer]
        if self.rng.random() < 0.3:
            to.append({"ipBlock": {"cidr": "::/0", "except": ["fd00::/8"]}})
        return self._policy(
            ns.name,
            f"allow-{src.name}-internet-egress",
            self._app_sel(src),
            egress=[
                {
                    "to": to,
                    "ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 80}],
                }
            ],
        )

    def _shape_ipblock_ingress(self, ns: Namespace) -> Manifest:
        dst = self.rng.choice(ns.workloads)
        frm: list[Manifest] = [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]
        if self.rng.random() < 0.3:
            frm.append({"ipBlock": {"cidr": "fd00:10::/32", "except": ["fd00:10:1::/48"]}})
        if self.rng.random() < 0.3:
            frm.append({"ipBlock": {"cidr": "192.168.0.0/16"}})
        port = self.rng.choice(dst.component.ports)
        return self._policy(
            ns.name,
            f"allow-cidr-to-{dst.name}",
            self._app_sel(dst),
            ingress=[{"from": frm, "ports": self._ports([port])}],
        )

    def _shape_backend_egress(self, ns: Namespace) -> Manifest:
        stores = [w for w in ns.workloads if w.component.tier in ("db", "cache", "queue")]
        callers = [w for w in ns.workloads if w.component.tier in ("api", "worker", "web")]
        if not stores or not callers:
            return self._shape_same_ns_named_port(ns)
        src = self.rng.choice(callers)
        dst = self.rng.choice(stores)
        port = dst.component.ports[0]
        to_sel = (
            {"matchLabels": {"tier": dst.component.tier}}
            if self.rng.random() < 0.4
            else self._app_sel(dst)
        )
        return self._policy(
            ns.name,
            f"{src.name}-egress-{dst.name}",
            self._app_sel(src),
            egress=[
                {
                    "to": [{"podSelector": to_sel}],
                    "ports": self._ports([port], by_name=self.rng.random() < 0.6),
                }
            ],
        )

    def _shape_allow_all_ingress(self, ns: Namespace) -> Manifest:
        web = [w for w in ns.workloads if w.component.tier == "web"] or ns.workloads
        dst = self.rng.choice(web)
        if self.rng.random() < 0.5:
            rules: list[Manifest] = [{}]
        else:
            rules = [
                {
                    "from": [{"namespaceSelector": {}}],
                    "ports": self._ports([HTTP, HTTPS], by_name=False),
                }
            ]
        return self._policy(ns.name, f"allow-all-to-{dst.name}", self._app_sel(dst), ingress=rules)

    def _shape_sctp(self, ns: Namespace) -> Manifest:
        mme = [w for w in ns.workloads if w.component.name == "mme"]
        dst = self.rng.choice(mme or ns.workloads)
        return self._policy(
            ns.name,
            f"allow-sctp-to-{dst.name}",
            self._app_sel(dst),
            ingress=[
                {
                    "from": [
                        {"namespaceSelector": {"matchLabels": {"team": "telco"}}},
                        {"podSelector": {}},
                    ],
                    "ports": [
                        {"protocol": "SCTP", "port": 36412},
                        {"protocol": "SCTP", "port": 3868},
                    ],
                }
            ],
        )

    def _shape_cross_ns_egress(self, ns: Namespace) -> Manifest:
        src = self.rng.choice(ns.workloads)
        other = self._other_ns(ns)
        dst = self.rng.choice(other.workloads)
        port = dst.component.ports[0]
        return self._policy(
            ns.name,
            f"{src.name}-egress-{other.name}",
            self._app_sel(src),
            egress=[
                {
                    "to": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": other.name}
                            },
                            "podSelector": self._app_sel(dst),
                        }
                    ],
                    "ports": self._ports([port]),
                }
            ],
        )

    def _shape_both_directions(self, ns: Namespace) -> Manifest:
        wl = self.rng.choice(ns.workloads)
        peer = self.rng.choice(ns.workloads)
        in_ports = [p for p in wl.component.ports] or [HTTP]
        return self._policy(
            ns.name,
            f"{wl.name}-isolation",
            self._app_sel(wl),
            ingress=[
                {
                    "from": [
                        {"podSelector": self._app_sel(peer)},
                        {
                            "namespaceSelector": {"matchLabels": {"env": ns.env}},
                            "podSelector": {"matchLabels": {"tier": "web"}},
                        },
                    ],
                    "ports": self._ports(in_ports[:2]),
                }
            ],
            egress=[
                {
                    "to": [
                        {
                            "podSelector": {
                                "matchExpressions": [
                                    {
                                        "key": "tier",
                                        "operator": "In",
                                        "values": ["db", "cache", "queue"],
                                    }
                                ]
                            }
                        }
                    ]
                },
                {
                    "to": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                            },
                            "podSelector": {"matchLabels": dict(DNS_LABELS)},
                        }
                    ],
                    "ports": [{"protocol": "UDP", "port": 53}],
                },
            ],
        )

    def _shape_statsd(self, ns: Namespace) -> Manifest:
        src = self.rng.choice(ns.workloads)
        return self._policy(
            ns.name,
            f"{src.name}-egress-statsd",
            self._app_sel(src),
            egress=[
                {
                    "to": [
                        {
                            "namespaceSelector": {},
                            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "statsd"}},
                        }
                    ],
                    "ports": [{"protocol": "UDP", "port": 8125}],
                }
            ],
        )

    def _app_policy(self, ns: Namespace) -> Manifest:
        shapes = (
            (self._shape_same_ns_named_port, 20),
            (self._shape_cross_ns_and_peer, 15),
            (self._shape_match_expressions, 10),
            (self._shape_backend_egress, 10),
            (self._shape_cross_ns_egress, 8),
            (self._shape_port_range, 6),
            (self._shape_internet_egress, 6),
            (self._shape_ipblock_ingress, 5),
            (self._shape_allow_all_ingress, 4),
            (self._shape_both_directions, 4),
            (self._shape_statsd, 2),
            (self._shape_sctp, 1.5),
        )
        fn = self._weighted([s[0] for s in shapes], [s[1] for s in shapes])
        return fn(ns)  # type: ignore[no-any-return]

    def _system_policies(self) -> list[Manifest]:
        """Policies protecting the system namespaces (realistic, and keeps DNS reachable)."""
        return [
            self._policy(
                "kube-system",
                "allow-dns-from-all-namespaces",
                {"matchLabels": dict(DNS_LABELS)},
                ingress=[
                    {
                        "from": [{"namespaceSelector": {}}],
                        "ports": [
                            {"protocol": "UDP", "port": "dns"},
                            {"protocol": "TCP", "port": "dns-tcp"},
                        ],
                    }
                ],
            ),
            self._policy("monitoring", "default-deny-ingress", {}, ingress=[]),
            self._policy(
                "monitoring",
                "allow-prometheus-scrape-egress",
                {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
                egress=[
                    {
                        "to": [{"namespaceSelector": {}}],
                        "ports": [
                            {"protocol": "TCP", "port": "metrics"},
                            {"protocol": "TCP", "port": 9100},
                        ],
                    }
                ],
            ),
            self._policy("logging", "default-deny-ingress", {}, ingress=[]),
        ]

    def _make_policies(self) -> list[Manifest]:
        out = self._system_policies()[: self.n_policies]
        candidates = [ns for ns in self.app_namespaces if ns.workloads]
        if not candidates:
            candidates = [ns for ns in self.namespaces if ns.workloads]
        for ns in candidates:
            self._plan_baselines(ns)
        weights = [len(ns.workloads) ** 0.8 for ns in candidates]
        while len(out) < self.n_policies:
            ns = self._weighted(candidates, weights)
            if ns.pending_policies:
                out.append(self._baseline(ns, ns.pending_policies.pop(0)))
            else:
                out.append(self._app_policy(ns))
        return out

    # ---- driver --------------------------------------------------------

    def build(self, emit: str = "pods") -> Cluster:
        """Generate the whole cluster; ``emit`` selects pods, workloads or both."""
        n_app = max(2, round(self.n_pods / 80))
        self._make_namespaces(n_app)
        workloads = self._make_workloads()
        wl_manifests: list[Manifest] = []
        pods: list[Manifest] = []
        for wl in workloads:
            if wl.replicas == 0:
                continue
            spec = self._pod_spec(wl)
            manifest = self._workload_manifest(wl, spec)
            manifest["metadata"]["uid"] = self._uid()
            wl_manifests.append(manifest)
            pods.extend(self._pods(wl, spec, manifest["metadata"]["uid"]))
        policies = self._make_policies()
        return Cluster(
            namespaces=[self._namespace_manifest(ns) for ns in self.namespaces],
            workloads=wl_manifests if emit in ("workloads", "both") else [],
            pods=pods if emit in ("pods", "both") else [],
            policies=policies,
            n_workloads=len(wl_manifests),
        )


def generate(pods: int, policies: int, seed: int = 0, emit: str = "pods") -> Cluster:
    """Build a cluster with exactly ``pods`` pods and ``policies`` policies."""
    return Generator(pods, policies, seed).build(emit)


# --------------------------------------------------------------------------
# Validation (the subset of API server rules our objects can violate)
# --------------------------------------------------------------------------

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_PROTOCOLS = ("TCP", "UDP", "SCTP")


class InvalidManifest(ValueError):
    """The generator wrote something the API server would reject: a generator bug."""


def validate(outdir: Path) -> None:
    """Check the written manifests with netfence's own loader and API-server rules."""
    from netfence.cluster.state import ClusterState
    from netfence.k8s.loader import load_paths

    problems = ClusterState.build(load_paths([outdir])).problems
    if problems:
        shown = "\n".join(str(p) for p in problems[:20])
        raise InvalidManifest(f"{len(problems)} problem(s) in {outdir}:\n{shown}")


class _Dumper(yaml.CSafeDumper):
    """libyaml dumper that never emits anchors/aliases.

    Replicas share their label/spec dicts in memory; without this PyYAML would
    write ``&id001``/``*id001`` references, which are valid YAML but nothing a
    real ``kubectl get -o yaml`` produces.
    """

    def ignore_aliases(self, data: Any) -> bool:
        return True


FILES = (
    ("namespaces.yaml", "namespaces"),
    ("workloads.yaml", "workloads"),
    ("pods.yaml", "pods"),
    ("policies.yaml", "policies"),
)


def write(cluster: Cluster, outdir: Path, header: str = "") -> list[Path]:
    """Write one multi-document YAML file per non-empty object group; return the paths.

    Stale files from an earlier run with a different ``--emit`` are removed so a
    directory never mixes two generations.
    """
    outdir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for filename, attr in FILES:
        path = outdir / filename
        docs = getattr(cluster, attr)
        if not docs:
            path.unlink(missing_ok=True)
            continue
        with path.open("w", encoding="utf-8") as fh:
            if header:
                fh.write(header)
            yaml.dump_all(
                docs,
                fh,
                Dumper=_Dumper,
                sort_keys=False,
                default_flow_style=False,
                explicit_start=True,
                width=120,
            )
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("outdir", type=Path)
    parser.add_argument(
        "--pods", type=int, required=True, help="total number of pods (replicas count)"
    )
    parser.add_argument(
        "--policies", type=int, required=True, help="total number of NetworkPolicies"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--emit",
        choices=("pods", "workloads", "both"),
        default="pods",
        help="write Pod objects, controller objects, or both (default: pods)",
    )
    parser.add_argument(
        "--no-validate", action="store_true", help="skip the API validation rules check"
    )
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    cluster = generate(args.pods, args.policies, args.seed, args.emit)
    header = (
        f"# generated by benchmarks/generate.py --pods {args.pods} --policies {args.policies} "
        f"--seed {args.seed} --emit {args.emit}\n"
    )
    paths = write(cluster, args.outdir, header)
    if not args.no_validate:
        validate(args.outdir)
    print(
        f"{args.outdir}: {cluster.summary()} -> {', '.join(p.name for p in paths)} "
        f"({time.perf_counter() - t0:.1f}s)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
