"""Agents on a real API server enforcing a lab: after every change the probes agree with the
engine (issue 4, "and, in a lab, the probed connectivity").

One `netfence agent --kubeconfig` per lab node, started in the host's namespace with
`--netns <node>` (the API server listens on the host's loopback, which a node namespace
cannot reach), through a `Proxy` that can cut the line. The test keeps the cluster twice: as
objects in the API server and as the same manifests (`Cluster`), from which the lab is
planned and each node's expected table and every probe's expectation are computed, never
from what the agents report. Pods carry the lab's addresses (set through `pods/status`, as a
kubelet would) and the lab's node names.

Each step changes the API, waits until every node's table is the one the new manifests
compile to, probes everything and requires zero mismatches, and names a connection that
must have flipped: pods and namespaces relabelled, created and deleted, policies added and
deleted, the API server restarted mid-watch, and a partition across a restart that ends in
410 Gone, where the agents must list again and apply the deletions they missed.

The module runs its own API server: the session's holds other tests' pods, some on nodes
named like the lab's, which would change the tables the manifests here predict.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from netfence.cluster.state import HOSTNAME_LABEL, ClusterState
from netfence.k8s.loader import load_paths
from netfence.lab import agents, netns
from netfence.lab.compare import compare, mismatches
from netfence.lab.probe import ProbeResult, plan_probes, run_probes
from netfence.lab.topology import LabPlan, external_spans, plan_lab
from tests.agent.apiserver import Api, ApiServer, Proxy, object_path, running
from tests.lab.conftest import lab_name as lab_name

WAIT = 30.0  # seconds for the agents to enforce a step


@pytest.fixture(scope="module")
def apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """This module's own etcd + kube-apiserver (see the module doc)."""
    with running(tmp_path_factory.mktemp("apiserver-lab")) as server:
        yield server


def namespace(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def pod(key: str, app: str, node: str, *ports: int) -> dict[str, Any]:
    ns, name = key.split("/")
    container = {
        "name": "main",
        "image": "registry.invalid/none",
        "ports": [{"containerPort": p, "protocol": "TCP"} for p in ports],
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
        "spec": {"nodeName": node, "containers": [container]},
        "status": {"phase": "Running"},
    }


def policy(key: str, app: str, peer: dict[str, Any], port: int) -> dict[str, Any]:
    """Ingress to the pods labelled `app=<app>` from `peer` on TCP `port`."""
    ns, name = key.split("/")
    spec = {
        "podSelector": {"matchLabels": {"app": app}},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [peer], "ports": [{"protocol": "TCP", "port": port}]}],
    }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def admin_deny(name: str, subject_team: str, peer_team: str) -> dict[str, Any]:
    """An AdminNetworkPolicy denying ingress into one team's namespaces from another's."""
    return {
        "apiVersion": "policy.networking.k8s.io/v1alpha1",
        "kind": "AdminNetworkPolicy",
        "metadata": {"name": name},
        "spec": {
            "priority": 10,
            "subject": {"namespaces": {"matchLabels": {"team": subject_team}}},
            "ingress": [
                {
                    "name": peer_team,
                    "action": "Deny",
                    "from": [{"namespaces": {"matchLabels": {"team": peer_team}}}],
                }
            ],
        },
    }


def pods_labelled(app: str) -> dict[str, Any]:
    return {"podSelector": {"matchLabels": {"app": app}}}


def namespaces_labelled(team: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {"team": team}}}


class Cluster:
    """The cluster in the API server and, alongside, as manifests in `folder`; the lab
    follows the manifests (pods added and removed as a kubelet would)."""

    def __init__(self, api: Api, lab: str, folder: Path, *docs: dict[str, Any]) -> None:
        """Build the lab for `docs` and create them (and the lab's nodes) in the API."""
        self.api = api
        self.lab = lab
        self.folder = folder
        self.docs = {_key(doc): doc for doc in docs}  # "Kind namespace/name" -> manifest
        state = self.state()
        self.plan = plan_lab(state, name=lab, external=external_spans(state))
        netns.up(self.plan, state, [folder], dataplane=None)
        for node in self.plan.nodes:
            addresses = {str(node.underlay4): "InternalIP", str(node.underlay6): "InternalIP"}
            api.create_node(node.name, {HOSTNAME_LABEL: node.name}, addresses)
        for doc in docs:
            self._create(doc)

    def state(self) -> ClusterState:
        self.folder.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump_all(list(self.docs.values()), sort_keys=False)
        (self.folder / "cluster.yaml").write_text(text)
        state = ClusterState.build(load_paths([self.folder]))
        assert not state.problems, state.problems
        return state

    def create(self, *docs: dict[str, Any]) -> None:
        for doc in docs:
            self.docs[_key(doc)] = doc
        self._follow_pods()
        for doc in docs:
            self._create(doc)

    def relabel(self, kind: str, key: str, labels: dict[str, str]) -> None:
        doc = self.docs[f"{kind} {key}"]
        doc["metadata"]["labels"] = labels
        path = object_path(kind, doc["metadata"].get("namespace"), doc["metadata"]["name"])
        self.api.patch(path, {"metadata": {"labels": labels}})

    def delete(self, kind: str, key: str) -> None:
        doc = self.docs.pop(f"{kind} {key}")
        ns, name = doc["metadata"].get("namespace"), doc["metadata"]["name"]
        if kind == "Pod":
            self.api.delete_pod(ns, name)
            self._follow_pods()
        elif kind == "Namespace":
            self.api.delete_namespace(name)
        else:
            self.api.call("DELETE", object_path(kind, ns, name))

    def _create(self, doc: dict[str, Any]) -> None:
        self.api.create(doc)
        if doc["kind"] == "Pod":
            meta = doc["metadata"]
            lab_pod = self.plan.pod(f"{meta['namespace']}/{meta['name']}")
            self.api.set_pod_ips(
                meta["namespace"], meta["name"], str(lab_pod.ip4), str(lab_pod.ip6)
            )

    def _follow_pods(self) -> None:
        """Bring the lab to the manifests' pods (`lab apply` without enforcing)."""
        state = self.state()
        old = self.plan
        new = plan_lab(state, name=self.lab, external=external_spans(state), previous=old)
        netns.update(old, new, state, [self.folder], dataplane=None)
        self.plan = new


def _key(doc: dict[str, Any]) -> str:
    meta = doc["metadata"]
    name = f"{meta['namespace']}/{meta['name']}" if "namespace" in meta else meta["name"]
    return f"{doc['kind']} {name}"


def start_agents(plan: LabPlan, kubeconfig: Path) -> None:
    for node in plan.nodes:
        source = ["--kubeconfig", str(kubeconfig), "--netns", node.netns]
        agents.start(plan.name, node, agents.command(node, source, "off"))


def enforced_and_probed(cluster: Cluster, timeout: float = WAIT) -> list[ProbeResult]:
    """Wait until every node enforces the manifests, probe the lab, require no mismatch."""
    start = time.monotonic()
    plan, state = cluster.plan, cluster.state()
    expected = agents.expected_tables(plan, state)
    agents.wait_enforced(plan, expected, agents.programs(plan, state), timeout=timeout)
    enforced = time.monotonic()
    results = run_probes(plan_probes(plan))
    bad = [c.mismatch_line() for c in mismatches(compare(plan, state, results))]
    assert bad == []
    probed = time.monotonic()
    took = f"{enforced - start:.2f} s, {len(results)} probes in {probed - enforced:.2f} s"
    print(f"enforced after {took}")
    return results


def reaches(results: list[ProbeResult], src: str, dst: str, port: int) -> bool:
    """Whether `src` reached `dst` on `port`, the same over IPv4 and IPv6."""
    seen = {
        r.probe.family: r.delivered
        for r in results
        if (r.probe.src, r.probe.dst, r.probe.port) == (src, dst, port)
    }
    assert len(seen) == 2 and seen[4] == seen[6], f"{src} -> {dst} {port}: {seen}"
    return seen[4]


def relists(plan: LabPlan) -> dict[str, int]:
    """Per node, how often its agent got 410 Gone and listed again (its log)."""
    logs = {n.name: netns.state_dir(plan.name) / "logs" / f"agent-{n.name}.log" for n in plan.nodes}
    return {node: log.read_text().count("listing again") for node, log in logs.items()}


def test_probes_follow_the_api_through_changes_restarts_and_gone(
    api: Api, apiserver: ApiServer, proxy: Proxy, lab_name: str, tmp_path: Path
) -> None:
    api.install_policy_crds()  # before the agents start: they look for them every 30 s
    cluster = Cluster(
        api,
        lab_name,
        tmp_path / "manifests",
        namespace("shop", {"team": "shop"}),
        namespace("ops", {"team": "ops"}),
        pod("shop/web", "web", "n0", 80),
        pod("shop/db", "db", "n1", 5432),
        pod("shop/client", "client", "n1"),
        pod("ops/monitor", "monitor", "n0", 9100),
        policy("shop/web-from-client", "web", pods_labelled("client"), 80),
        policy("shop/db-from-web", "db", pods_labelled("web"), 5432),
    )
    plan = cluster.plan
    kubeconfig = apiserver.kubeconfig(netns.state_dir(lab_name) / "kubeconfig", proxy.url)
    start_agents(plan, kubeconfig)
    seen = enforced_and_probed(cluster)
    assert reaches(seen, "shop/client", "shop/web", 80)
    assert reaches(seen, "shop/web", "shop/db", 5432)
    assert not reaches(seen, "shop/client", "shop/db", 5432)
    assert not reaches(seen, "ops/monitor", "shop/web", 80)
    assert reaches(seen, "shop/client", "ops/monitor", 9100)  # ops is not isolated

    # A pod relabelled: the client is no longer the web's.
    cluster.relabel("Pod", "shop/client", {"app": "other"})
    seen = enforced_and_probed(cluster)
    assert not reaches(seen, "shop/client", "shop/web", 80)

    # A policy added: namespaces of team ops may reach the web.
    cluster.create(policy("shop/web-from-ops", "web", namespaces_labelled("ops"), 80))
    seen = enforced_and_probed(cluster)
    assert reaches(seen, "ops/monitor", "shop/web", 80)

    # A namespace relabelled out of that team.
    cluster.relabel("Namespace", "ops", {"team": "none"})
    seen = enforced_and_probed(cluster)
    assert not reaches(seen, "ops/monitor", "shop/web", 80)

    # A namespace of that team created, with a pod (the lab adds its network first).
    cluster.create(namespace("batch", {"team": "ops"}), pod("batch/job", "job", "n1", 8080))
    seen = enforced_and_probed(cluster)
    assert reaches(seen, "batch/job", "shop/web", 80)
    assert not reaches(seen, "batch/job", "shop/db", 5432)

    # An admin policy overrides the namespace's: ops may not reach shop after all.
    cluster.create(admin_deny("shop-not-from-ops", "shop", "ops"))
    seen = enforced_and_probed(cluster)
    assert not reaches(seen, "batch/job", "shop/web", 80)

    # A policy deleted: the db is no longer isolated.
    cluster.delete("NetworkPolicy", "shop/db-from-web")
    seen = enforced_and_probed(cluster)
    assert reaches(seen, "shop/client", "shop/db", 5432)

    # The API server restarted under the watches; what changes afterwards still arrives.
    apiserver.restart_apiserver()
    cluster.relabel("Pod", "shop/client", {"app": "client"})
    seen = enforced_and_probed(cluster)
    assert reaches(seen, "shop/client", "shop/web", 80)

    # A partition across a restart: the agents' resourceVersions predate the new server's
    # watch cache (410 Gone), so they list again and must apply what they missed,
    # deletions included.
    before = relists(plan)
    proxy.cut()
    cluster.delete("NetworkPolicy", "shop/web-from-client")
    cluster.delete("Pod", "batch/job")
    cluster.delete("Namespace", "batch")
    cluster.delete("AdminNetworkPolicy", "shop-not-from-ops")
    cluster.relabel("Namespace", "ops", {"team": "ops"})
    cluster.create(policy("shop/db-from-web", "db", pods_labelled("web"), 5432))
    apiserver.restart_apiserver()
    proxy.resume()
    seen = enforced_and_probed(cluster)
    assert not reaches(seen, "shop/client", "shop/web", 80)
    assert reaches(seen, "ops/monitor", "shop/web", 80)
    assert not reaches(seen, "shop/client", "shop/db", 5432)
    after = relists(plan)
    assert all(after[node] > before[node] for node in after), (before, after)
