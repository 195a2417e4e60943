"""Lint: valid policies that probably do not do what their author meant.

Each finding is a warning `Problem` naming the policy's file, the policy and the field path
of the rule or peer concerned. The checks work on the same class matrix as `list`, so they
are about this cluster's pods and namespaces, not about the YAML in the abstract.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np

from netfence.cluster.state import ClusterPolicy, ClusterState
from netfence.k8s.models import ClusterPolicyRule
from netfence.k8s.validation import parse_cidr
from netfence.policy.ir import (
    AnyPolicy,
    CompiledPolicy,
    Direction,
    IPPeer,
    PodPeer,
    Rule,
    TierPolicy,
    tier_peers,
)
from netfence.policy.matrix import NONE_ID, ClusterMatrix, IdArray
from netfence.problems import Problem

DNS_PORT = ("UDP", 53)
DNS_LABEL = ("k8s-app", "kube-dns")
_PEERS_FIELD = {"ingress": "from", "egress": "to"}
_SHOWN = 5


class _Linter:
    def __init__(self, state: ClusterState, matrix: ClusterMatrix) -> None:
        self.state = state
        self.matrix = matrix
        # policy key -> (file, object as problems name it)
        self.sources: dict[str, tuple[str, str]] = {
            p.key: (p.file, f"NetworkPolicy {p.key}") for p in state.policies
        }
        self.sources.update((p.key, (p.file, f"{p.kind} {p.name}")) for p in state.cluster_policies)
        self.records: dict[str, ClusterPolicy] = {p.key: p for p in state.cluster_policies}
        self.problems: list[Problem] = []

    def warn(
        self, policy: AnyPolicy | None, path: str, message: str, code: str, obj: str = ""
    ) -> None:
        file = ""
        if policy is not None:
            file, obj = self.sources[policy.key]
        self.problems.append(Problem("warning", message, file=file, obj=obj, path=path, code=code))

    def workloads(self, classes: Iterable[int]) -> str:
        names = sorted(
            {
                f"{pod.namespace}/{pod.owner.name}"
                for index in classes
                for pod in self.matrix.classes[index].pods
            }
        )
        more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
        return ", ".join(names[:_SHOWN]) + more

    # -- the checks ----------------------------------------------------------------------

    def run(self) -> list[Problem]:
        for policy in self.matrix.engine.policies:
            self.selects_nothing(policy)
            for direction in ("ingress", "egress"):
                for i, rule in enumerate(policy.rules(direction)):
                    self.rule_peers(policy, direction, i, rule)
                    self.named_ports(policy, direction, i, rule)
        for tiered in self.matrix.engine.tier_policies:
            self.tier_policy(tiered)
        self.redundant_rules()
        self.dns()
        self.unisolated()
        return self.problems

    def tier_policy(self, policy: TierPolicy) -> None:
        """Cluster-wide policies: subjects and peers that match nothing, what cannot be
        evaluated from manifests, named ports that can never match, and rules that earlier
        rules shadow (order decides there, so a shadowed rule is dead, not redundant)."""
        if not self.matrix.targets(policy).size:
            self.warn(
                policy,
                "spec.subject",
                f"selects no pod: no pod matches the subject ({policy.subject})",
                "selects-nothing",
            )
        spec = self.records[policy.key].spec
        for direction in ("ingress", "egress"):
            written = spec.ingress if direction == "ingress" else spec.egress
            for i, (rule, compiled) in enumerate(
                zip(written, policy.rules(direction), strict=True)
            ):
                path = f"spec.{direction}[{i}]"
                self.tier_peers(policy, rule, direction, path)
                self.tier_named_ports(policy, rule, compiled, direction, path)
                if self.matrix.tier_rule_takes.get(compiled.provenance) is False:
                    self.warn(
                        policy,
                        path,
                        "never takes effect: for every pod and peer it matches, rules evaluated "
                        "before it (earlier in this policy, or in policies of lower priority "
                        "values) already decide all of its ports",
                        "rule-shadowed",
                    )

    def tier_peers(
        self, policy: TierPolicy, rule: ClusterPolicyRule, direction: Direction, path: str
    ) -> None:
        field = _PEERS_FIELD[direction]
        for j, peer in enumerate((rule.from_ if direction == "ingress" else rule.to) or ()):
            where = f"{path}.{field}[{j}]"
            compiled = tier_peers(peer, self.state.nodes)
            if peer.domain_names is not None:
                self.warn(
                    policy,
                    f"{where}.domainNames",
                    "domain names resolve only at run time (through the cluster's DNS): "
                    "netfence matches no address with this peer",
                    "domain-names-unevaluated",
                )
            elif peer.nodes is not None and isinstance(compiled[0], IPPeer):
                self.tier_nodes_peer(policy, compiled[0], f"{where}.nodes")
            elif (
                isinstance(compiled[0], PodPeer)
                and not self.matrix.pod_peer_classes(compiled[0]).any()
            ):
                self.warn(
                    policy,
                    where,
                    f"matches no pod ({compiled[0]}): this peer matches nothing",
                    "peer-matches-nothing",
                )

    def tier_nodes_peer(self, policy: TierPolicy, nodes: IPPeer, path: str) -> None:
        if not nodes.nodes:
            self.warn(
                policy,
                path,
                f"matches no node ({nodes.cidr}): declare the nodes (kind: Node, with labels "
                "and status.addresses) or schedule pods on them (spec.nodeName)",
                "peer-matches-nothing",
            )
        elif not nodes.block:
            self.warn(
                policy,
                path,
                f"the nodes it matches ({', '.join(nodes.nodes)}) have no known address: "
                "give them status.addresses (InternalIP) or pods with status.hostIP",
                "peer-matches-nothing",
            )

    def tier_named_ports(
        self,
        policy: TierPolicy,
        rule: ClusterPolicyRule,
        compiled: Rule,
        direction: Direction,
        path: str,
    ) -> None:
        if not compiled.has_named_ports or compiled.ports is None:
            return
        v2 = rule.protocols is not None
        field = "protocols" if v2 else "ports"
        name_field = "destinationNamedPort" if v2 else "namedPort"
        by_address = [peer.networks is not None or peer.nodes is not None for peer in rule.to or ()]
        if any(by_address):
            self.warn(
                policy,
                f"{path}.{field}",
                "a named port next to networks/nodes peers matches nothing towards them (they "
                "have no container ports); the experimental CRDs reject this rule",
                "named-port-to-addresses",
            )
        if direction == "ingress":
            candidates = self.matrix.targets(policy).tolist()
        else:
            mask = self.matrix.rule_mask(compiled, "egress")[: self.matrix.size]
            candidates = np.nonzero(mask)[0].tolist()
        defined = {p.name for c in candidates for p in self.matrix.classes[c].ports}
        for k, port in enumerate(compiled.ports):
            if port.is_named and port.port not in defined:
                self.warn(
                    policy,
                    f"{path}.{field}[{k}].{name_field}",
                    f"named port {port.port!r} is not defined by any pod this rule applies to: "
                    "it matches nothing",
                    "named-port-unresolved",
                )

    def selects_nothing(self, policy: CompiledPolicy) -> None:
        if not self.matrix.targets(policy).size:
            self.warn(
                policy,
                "spec.podSelector",
                f"selects no pod: no pod in namespace {policy.namespace} matches "
                f"{policy.pod_selector}",
                "selects-nothing",
            )

    def rule_peers(self, policy: CompiledPolicy, direction: Direction, i: int, rule: Rule) -> None:
        for j, peer in enumerate(rule.peers or ()):
            path = f"spec.{direction}[{i}].{_PEERS_FIELD[direction]}[{j}]"
            if isinstance(peer, IPPeer):
                self.ip_peer(policy, path, peer)
                continue
            if peer.namespaces is not None and not any(
                peer.namespaces.matches(ns.labels) for ns in self.state.namespaces.values()
            ):
                self.warn(
                    policy,
                    f"{path}.namespaceSelector",
                    f"matches no namespace ({peer.namespaces}): this peer allows nothing",
                    "peer-matches-nothing",
                )
            elif not self.matrix.pod_peer_classes(peer).any():
                self.warn(
                    policy,
                    path,
                    f"matches no pod ({peer}): this peer allows nothing",
                    "peer-matches-nothing",
                )

    def ip_peer(self, policy: CompiledPolicy, path: str, peer: IPPeer) -> None:
        for field, text in [("cidr", peer.cidr)] + [
            (f"except[{k}]", e) for k, e in enumerate(peer.excepts)
        ]:
            net = parse_cidr(text)
            if net is not None and str(net) != text.strip():
                self.warn(
                    policy,
                    f"{path}.ipBlock.{field}",
                    f"{text} has host bits set; it is read as {net}",
                    "cidr-host-bits",
                )
        whole = parse_cidr(peer.cidr)
        if whole is not None and whole.prefixlen == 0:
            return  # "everything (except ...)": covering pods too is the point
        covered = [pod for pod in self.state.pods if any(ip in peer.block for ip in pod.ips)]
        if covered:
            names = ", ".join(p.key for p in covered[:_SHOWN])
            more = f" and {len(covered) - _SHOWN} more" if len(covered) > _SHOWN else ""
            self.warn(
                policy,
                f"{path}.ipBlock",
                f"covers the addresses of {len(covered)} pod(s) ({names}{more}); ipBlocks "
                "meant for pods break when pods move, and plugins differ on matching pod IPs: "
                "prefer podSelector/namespaceSelector",
                "ipblock-covers-pods",
            )

    def named_ports(self, policy: CompiledPolicy, direction: Direction, i: int, rule: Rule) -> None:
        if not rule.has_named_ports or rule.ports is None:
            return
        if direction == "ingress":
            candidates = self.matrix.targets(policy).tolist()
            whose = "pod this policy selects"
        else:
            mask = self.matrix.rule_mask(rule, "egress")[: self.matrix.size]
            candidates = np.nonzero(mask)[0].tolist()
            whose = "pod this rule allows egress to"
        defined = {(p.name, p.protocol) for c in candidates for p in self.matrix.classes[c].ports}
        for k, port in enumerate(rule.ports):
            if port.is_named and (port.port, port.protocol) not in defined:
                self.warn(
                    policy,
                    f"spec.{direction}[{i}].ports[{k}].port",
                    f"named port {port.port!r} ({port.protocol}) is not defined by any {whose}: "
                    "it allows nothing",
                    "named-port-unresolved",
                )

    def redundant_rules(self) -> None:
        """A rule whose every allowance, on every pod it applies to, other rules already make.

        Rules are taken in order and a rule found redundant no longer covers later ones, so
        of two identical rules only the second is reported.
        """
        matrix = self.matrix
        for direction in ("ingress", "egress"):
            by_target: dict[int, list[Rule]] = defaultdict(list)
            owner: dict[int, CompiledPolicy] = {}
            for policy in matrix.engine.policies:
                for rule in policy.rules(direction):
                    owner[id(rule)] = policy
                    for t in matrix.targets(policy).tolist():
                        by_target[t].append(rule)
            redundant: set[int] = set()
            for policy in matrix.engine.policies:
                for i, rule in enumerate(policy.rules(direction)):
                    targets = matrix.targets(policy).tolist()
                    if not targets:
                        continue
                    covering: set[str] = set()
                    if all(
                        self._covered(rule, direction, t, by_target[t], redundant, covering)
                        for t in targets
                    ):
                        redundant.add(id(rule))
                        self.warn(
                            policy,
                            f"spec.{direction}[{i}]",
                            "is redundant: everything it allows is already allowed by "
                            + ", ".join(sorted(covering)),
                            "redundant-rule",
                        )

    def _covered(
        self,
        rule: Rule,
        direction: Direction,
        target: int,
        others: list[Rule],
        redundant: set[int],
        covering: set[str],
    ) -> bool:
        mine = self.matrix.rule_vector(rule, direction, target)
        if not (mine != NONE_ID).any():
            return False  # allows nothing: reported as a peer or port problem instead
        table = self.matrix.table
        union: IdArray = np.full_like(mine, NONE_ID)
        for other in others:
            if other is rule or id(other) in redundant:
                continue
            vector = self.matrix.rule_vector(other, direction, target)
            if ((vector != NONE_ID) & (mine != NONE_ID)).any():
                covering.add(str(other.provenance))
            union = table.union_arrays(union, vector)
        return bool((table.meet_arrays(mine, union) == mine).all())

    def dns(self) -> None:
        """Egress-isolated pods that cannot resolve names: the most common default-deny slip."""
        matrix = self.matrix
        isolated = np.nonzero(matrix.isolated["egress"])[0]
        if not isolated.size:
            return
        dns = [c.index for c in matrix.classes if c.labels.get(DNS_LABEL[0]) == DNS_LABEL[1]]
        columns = np.array(dns, dtype=np.intp) if dns else np.arange(matrix.egress.shape[1])
        where = "the cluster DNS (k8s-app=kube-dns)" if dns else "any destination"
        blocked: dict[tuple[str, ...], list[int]] = defaultdict(list)
        for s in isolated.tolist():
            row = matrix.egress[s, columns]
            if not any(DNS_PORT in matrix.conns(int(v)) for v in np.unique(row)):
                blocked[self._isolating(s)].append(s)
        for policies, classes in blocked.items():
            first = matrix.engine.by_key[policies[0]]
            self.warn(
                first,
                "spec.policyTypes" if isinstance(first, CompiledPolicy) else "spec.egress",
                f"egress isolation blocks DNS: {self.workloads(classes)} cannot reach "
                f"{where} on UDP 53 (isolated by {', '.join(policies)}); allow egress to "
                "namespace kube-system, pods k8s-app=kube-dns, ports UDP 53 and TCP 53",
                "egress-blocks-dns",
            )

    def _isolating(self, class_index: int) -> tuple[str, ...]:
        pod = self.matrix.classes[class_index].pods[0]
        return tuple(p.key for p in self.matrix.engine.selecting(pod, "egress"))

    def unisolated(self) -> None:
        matrix = self.matrix
        open_classes = ~(matrix.isolated["ingress"] | matrix.isolated["egress"])
        by_namespace: dict[str, list[int]] = defaultdict(list)
        for index in np.nonzero(open_classes)[0].tolist():
            by_namespace[matrix.classes[index].namespace].append(index)
        for namespace, classes in sorted(by_namespace.items()):
            count = sum(len(matrix.classes[c].pods) for c in classes)
            self.warn(
                None,
                "",
                f"{count} pod(s) not isolated by any policy, in either direction: "
                f"{self.workloads(classes)} accept and send all traffic",
                "not-isolated",
                obj=f"Namespace {namespace}",
            )


def lint(state: ClusterState, matrix: ClusterMatrix | None = None) -> list[Problem]:
    return _Linter(state, matrix or ClusterMatrix(state)).run()
