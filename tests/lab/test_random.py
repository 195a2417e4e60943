"""Random clusters and policies (hypothesis), enforced in the lab: probes equal the engine.

Each example is a cluster from `tests.test_properties.clusters` (namespaces with labels;
pods and workload replicas with TCP/UDP/SCTP container ports, named or not; policies with
pod and namespace selectors, AND/OR peers, ipBlocks with excepts, port ranges, every
policyTypes form; AdminNetworkPolicies, a BaselineAdminNetworkPolicy and v1alpha2
ClusterNetworkPolicies with Allow/Deny/Pass rules, `networks` and `nodes` peers, and Nodes
with labels) on 1 to 3 lab nodes. It is brought up with the real dataplane, every
connection is tried (`plan_probes`: each pod to each other pod on the destination's
declared ports in both families, and every pod to and from one outside address per
external range) and the observed matrix must equal the engine's verdicts: zero mismatches.
Then the same cluster churns the way `lab apply` sees it (pods relabelled, re-ported,
removed or added, namespaces relabelled; policies unchanged, so nodes update their tables
by elements), the lab is updated in place, and everything is probed and compared again.

One lab serves the whole run: `netns.up` replaces it for each example in about 0.3 s,
so reusing it through `update` from one random cluster to the next would save little;
`update` is exercised where it matters, on churn, whose element updates are the path a
real cluster takes most.

What the lab cannot reproduce, and what the test does about it (nothing is dropped
silently; the expectations always come from `LabPlan.cluster_state`, the cluster with the
addresses and nodes the lab really uses):

- Two pods with one status address: no network delivers to both, so `plan_lab` refuses
  such clusters (tests/lab/test_topology.py checks that). The generator is asked for
  distinct pod addresses (`clusters(distinct_ips=True)`); the engine-only properties still
  cover shared ones.
- Pods without status addresses, or with one family (workload replicas, `podIP` alone):
  the lab allocates the missing addresses from its nodes' ranges and the engine judges
  those. Pods with status addresses keep them, so the generated ipBlocks still split pods
  (the lab routes those pods by host routes; allocated ones are on-link). Pods that stay
  through an update keep their lab addresses, as in `lab apply`.
- hostNetwork pods live in their node's namespace with the node's address (their status
  addresses are not the lab's). Two of them on one node share a namespace and are not
  probed against each other, and a hostNetwork pod reaching a pod of its own node is always
  allowed (see `netfence.lab.compare`).
- External addresses: one representative per range the policies cut; a range whose every
  address is a lab or special address has none and is listed in the failure report, and
  the pods in it are probed directly instead.

Runs are reproducible: a fixed seed and no example database. `NETFENCE_LAB_EXAMPLES`
(default 10) and `NETFENCE_LAB_SEED` vary the run; `NETFENCE_LAB_SHRINK=1` lets hypothesis
minimise a failing cluster (slow: every step is a lab). `-s` prints what was compared.
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from netfence.cluster.state import ClusterState
from netfence.k8s.loader import load_paths
from netfence.lab import netns
from netfence.lab.compare import Comparison, compare, mismatches
from netfence.lab.probe import plan_probes, run_probes
from netfence.lab.topology import LabPlan, external_spans, plan_lab
from netfence.policy.ipranges import span_text
from tests.lab.test_root import _disagreements
from tests.lab.test_root import build as build_lab
from tests.test_properties import (
    NAMESPACES,
    GenCluster,
    build,
    clusters,
    labels,
    pod_specs,
    written_labels,
)

EXAMPLES = int(os.environ.get("NETFENCE_LAB_EXAMPLES", "10"))
SEED = int(os.environ.get("NETFENCE_LAB_SEED", "20250"))
PHASES = (Phase.generate,) + (
    (Phase.shrink,) if os.environ.get("NETFENCE_LAB_SHRINK") == "1" else ()
)


UNCHURNED = {
    "NetworkPolicy",
    "AdminNetworkPolicy",
    "BaselineAdminNetworkPolicy",
    "ClusterNetworkPolicy",
    "Node",
}


@st.composite
def churned(draw: st.DrawFn, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`docs` after pod churn: each pod or workload kept, relabelled, given other ports
    (pods) or removed; each namespace kept or relabelled; up to two new pods (addresses
    from the lab); the policies (of every tier) and nodes as they were."""
    out = []
    for doc in docs:
        kind = doc["kind"]
        if kind in UNCHURNED:
            out.append(doc)
            continue
        doc = copy.deepcopy(doc)
        change = draw(st.sampled_from(["keep", "keep", "relabel", "ports", "remove"]))
        if change == "remove" and kind != "Namespace":
            continue
        if change == "relabel" and kind == "Namespace":
            doc["metadata"]["labels"] = draw(labels(written=True))
        elif change == "relabel" and kind == "Pod":
            doc["metadata"]["labels"] = draw(written_labels)
        elif change == "relabel":
            spec = doc["spec"]["jobTemplate"]["spec"] if kind == "CronJob" else doc["spec"]
            spec["template"]["metadata"]["labels"] = draw(written_labels)
        elif change == "ports" and kind == "Pod":
            doc["spec"]["containers"] = draw(pod_specs())[0]["containers"]
        out.append(doc)
    for i in range(draw(st.integers(0, 2))):
        namespace = draw(st.sampled_from(NAMESPACES))
        meta = {"name": f"new{i}", "namespace": namespace, "labels": draw(written_labels)}
        out.append(
            {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": draw(pod_specs())[0]}
        )
    return out


@dataclass
class Tally:
    """What the run compared, to print and to check that it was not vacuous."""

    clusters: int = 0
    pods: int = 0
    policies: int = 0
    probes: int = 0
    delivered: int = 0
    outcomes: set[tuple[str, int, bool]] = field(default_factory=set)  # protocol, family
    paths: set[str] = field(default_factory=set)
    updates: Counter[str] = field(default_factory=Counter)  # how node tables changed

    def add(self, plan: LabPlan, state: ClusterState, comparisons: list[Comparison]) -> None:
        self.clusters += 1
        self.pods += len(plan.pods)
        self.policies += len(state.policies) + len(state.cluster_policies)
        self.probes += len(comparisons)
        self.delivered += sum(c.result.delivered for c in comparisons)
        for c in comparisons:
            p = c.probe
            self.outcomes.add((p.protocol, p.family, c.result.delivered))
            self.paths.update(_paths(plan, c))

    def summary(self, seconds: float) -> str:
        return (
            f"{self.clusters} lab states ({self.pods} pods, {self.policies} policies), "
            f"{self.probes} probes ({self.delivered} delivered, "
            f"{self.probes - self.delivered} blocked), 0 mismatches; node tables on churn: "
            f"{dict(self.updates)}; {seconds:.1f} s"
        )


def _paths(plan: LabPlan, c: Comparison) -> list[str]:
    p = c.probe
    if p.src_kind == "outside" or p.dst_kind == "outside":
        return ["outside"]
    src, dst = plan.pod(p.src), plan.pod(p.dst)
    out = ["same node" if src.node == dst.node else "cross node"]
    if src.host_network or dst.host_network:
        out.append("hostNetwork")
    if any(not x.host_network and not plan.on_link(x, p.family) for x in (src, dst)):
        out.append("routed pod")
    return out


def _manifests(folder: Path, text: str) -> Path:
    folder.mkdir()
    (folder / "cluster.yaml").write_text(text)
    return folder


def _probe_and_compare(
    plan: LabPlan, state: ClusterState, folder: Path, before: str
) -> list[Comparison]:
    """Probe the lab and require zero mismatches; the failure shows the lab and manifests."""
    comparisons = compare(plan, state, run_probes(plan_probes(plan)))
    bad = [c.mismatch_line() for c in mismatches(comparisons)]
    if bad:
        lines = [
            f"{p.key}: node {p.node}, {p.ip4} {p.ip6}"
            + (" hostNetwork" if p.host_network else "")
            + f", ports {' '.join(f'{n}/{proto}' for proto, n in p.ports) or '-'}"
            for p in plan.pods
        ]
        lines += [f"outside {a.ip} for {span_text(a.span)}" for a in plan.outside.addresses]
        lines += [f"not probed: {span_text(s)} ({why})" for s, why in plan.outside.skipped]
        pytest.fail(
            "\n".join(
                [
                    *bad[:40],
                    f"({len(bad)} of {len(comparisons)} probes disagree)",
                    *lines,
                    before,
                    f"manifests in {folder} (`netfence lab up {folder}`):",
                    (folder / "cluster.yaml").read_text(),
                ]
            ),
            pytrace=False,
        )
    return comparisons


def test_random_clusters_in_the_lab_agree_with_the_engine(lab_name: str, tmp_path: Path) -> None:
    dataplane = netns.load_dataplane()
    tally = Tally()
    start = time.monotonic()

    @seed(SEED)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=PHASES,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(cluster=clusters(distinct_ips=True, tiers=True), nodes=st.integers(1, 3), data=st.data())
    def in_the_lab(cluster: GenCluster, nodes: int, data: st.DataObject) -> None:
        example = Path(tempfile.mkdtemp(prefix="example", dir=tmp_path))
        state = build(cluster)
        folder = _manifests(example / "up", cluster.text)
        plan = plan_lab(state, name=lab_name, nodes=nodes, external=external_spans(state))
        netns.up(plan, state, [folder], dataplane=dataplane)
        tally.add(plan, state, _probe_and_compare(plan, state, folder, "(as brought up)"))

        churn = data.draw(churned(cluster.docs), label="churn")
        folder = _manifests(example / "apply", yaml.safe_dump_all(churn))
        new_state = ClusterState.build(load_paths([folder]))
        assert not new_state.errors, [str(p) for p in new_state.errors]
        new_plan = plan_lab(
            new_state, name=lab_name, external=external_spans(new_state), previous=plan
        )
        modes = netns.update(
            plan, new_plan, new_state, [folder], dataplane=dataplane, old_state=state
        )
        tally.updates.update(modes.values())
        before = f"(after `lab apply` from the manifests in {example / 'up'})"
        tally.add(new_plan, new_state, _probe_and_compare(new_plan, new_state, folder, before))

    in_the_lab()
    print(tally.summary(time.monotonic() - start))
    # Not vacuous: every protocol and family both delivered and blocked, every kind of
    # path, and nodes that changed their tables by elements.
    every = {(pr, f, ok) for pr in ("TCP", "UDP", "SCTP") for f in (4, 6) for ok in (True, False)}
    assert every <= tally.outcomes, sorted(every - tally.outcomes)
    wanted = {"outside", "same node", "cross node", "hostNetwork", "routed pod"}
    assert wanted <= tally.paths, sorted(wanted - tally.paths)
    assert tally.updates["elements"] > 0, tally.updates


HOST_NETWORK_NAMED_PORT = """\
apiVersion: v1
kind: Pod
metadata: {name: client, labels: {app: client}}
spec: {containers: [{name: c, image: curl}]}
---
apiVersion: v1
kind: Pod
metadata: {name: exporter}
spec:
  hostNetwork: true
  containers: [{name: e, image: node-exporter, ports: [{containerPort: 9100, name: metrics}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: scrape}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress:
  - ports: [{port: metrics}]
"""


def test_egress_named_port_to_a_host_network_pod(lab_name: str, tmp_path: Path) -> None:
    """Found while deciding how the random test treats hostNetwork pods: the engine resolved
    an egress rule's named port on a hostNetwork destination's container ports, which no
    dataplane can (one node address stands for every hostNetwork pod there). With
    `host_network="node"` a named port now resolves on pod-network destinations only, so
    `client -> exporter 9100/TCP` is denied by both, in both families."""
    state, plan = build_lab(
        lab_name, tmp_path / "m", [HOST_NETWORK_NAMED_PORT], dataplane=netns.load_dataplane()
    )
    bad, results = _disagreements(plan, state)
    to_exporter = [
        r for r in results if r.probe.dst == "default/exporter" and r.probe.src == "default/client"
    ]
    assert {r.probe.family for r in to_exporter if r.probe.port == 9100} == {4, 6}
    assert not any(r.delivered for r in to_exporter if r.probe.port == 9100)
    assert bad == []
