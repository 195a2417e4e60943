"""The Kubernetes API source with Nodes and the cluster-wide policy CRDs, against a real
kube-apiserver (see conftest.py): the CRDs missing, installed while the source runs, their
objects created, changed, rejected and deleted, and the CRDs removed again; and the agent
enforcing them into a network namespace."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from netfence.agent.loop import Agent
from netfence.cluster.state import HOSTNAME_LABEL, Node
from netfence.dataplane.enforcer import Enforcer
from netfence.k8s.models import AdminNetworkPolicySpec, ClusterNetworkPolicySpec
from netfence.sources.changes import Change
from netfence.sources.kube import KubeSource, api_client
from tests.agent.apiserver import POLICY_CRDS, Api, ApiError, policy_path
from tests.agent.follow import Follower, unique
from tests.dataplane.conftest import netns as netns


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def anp(name: str, priority: int, cidr: str = "169.254.169.254/32") -> dict[str, Any]:
    return {
        "apiVersion": "policy.networking.k8s.io/v1alpha1",
        "kind": "AdminNetworkPolicy",
        "metadata": {"name": name},
        "spec": {
            "priority": priority,
            "subject": {"namespaces": {"matchLabels": {"tier": "web"}}},
            "egress": [{"name": "metadata", "action": "Deny", "to": [{"networks": [cidr]}]}],
        },
    }


BANP = {
    "apiVersion": "policy.networking.k8s.io/v1alpha1",
    "kind": "BaselineAdminNetworkPolicy",
    "metadata": {"name": "default"},
    "spec": {
        "subject": {"namespaces": {}},
        "ingress": [{"action": "Deny", "from": [{"namespaces": {}}]}],
    },
}
CNP = {
    "apiVersion": "policy.networking.k8s.io/v1alpha2",
    "kind": "ClusterNetworkPolicy",
    "metadata": {"name": "monitoring"},
    "spec": {
        "tier": "Admin",
        "priority": 3,
        "subject": {"namespaces": {}},
        "ingress": [
            {
                "action": "Accept",
                "from": [{"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "mon"}}}],
                "protocols": [{"tcp": {"destinationPort": {"number": 9100}}}],
            }
        ],
    },
}


def test_follows_nodes_and_cluster_policies_from_the_moment_their_crds_exist(
    api: Api, kubeconfig: Path, caplog: pytest.LogCaptureFixture
) -> None:
    api.remove_policy_crds()  # none installed: the source starts without them
    caplog.set_level(logging.INFO, logger="netfence.sources.kube")
    node = unique("nf-node")
    anp_key, bad_key = "AdminNetworkPolicy/no-metadata", "AdminNetworkPolicy/bad"

    async def scenario() -> None:
        client = await api_client(str(kubeconfig))
        source = KubeSource(client, recheck=0.5)
        async with client, Follower(source) as f:
            # Ready without them: the first update came, and nothing was listed for them.
            assert not f.store.cluster_policies
            assert all(source.stats.lists[kind] == 0 for kind in POLICY_CRDS)
            assert source.stats.lists["Node"] == 1
            assert f.updates[0].problems == ()
            # Looked for again and again (every 0.5-0.75 s here), said once.
            await asyncio.sleep(2.0)
            assert all(source.stats.lists[kind] == 0 for kind in POLICY_CRDS)
            said = [r.getMessage() for r in caplog.records if "is not served" in r.getMessage()]
            assert sorted(m.partition(":")[0] for m in said) == sorted(POLICY_CRDS)

            api.install_policy_crds()
            api.call("POST", policy_path("AdminNetworkPolicy"), anp("no-metadata", 20))
            await f.until(lambda s: anp_key in s.cluster_policies, "the ANP after install", 10)
            spec = f.store.cluster_policies[anp_key].spec
            assert isinstance(spec, AdminNetworkPolicySpec) and spec.priority == 20
            assert spec.subject.namespaces is not None
            assert spec.subject.namespaces.match_labels == {"tier": "web"}
            await f.until(
                lambda _: all(source.stats.lists[kind] == 1 for kind in POLICY_CRDS),
                "every CRD listed once it is served",
                5,
            )

            api.patch(policy_path("AdminNetworkPolicy", "no-metadata"), {"spec": {"priority": 30}})
            await f.until(
                lambda s: getattr(s.cluster_policies[anp_key].spec, "priority", None) == 30,
                "the ANP's update",
            )
            api.call("POST", policy_path("BaselineAdminNetworkPolicy"), BANP)
            api.call("POST", policy_path("ClusterNetworkPolicy"), CNP)
            await f.until(
                lambda s: (
                    {
                        "BaselineAdminNetworkPolicy/default",
                        "ClusterNetworkPolicy/monitoring",
                    }
                    <= set(s.cluster_policies)
                ),
                "the BANP and the CNP",
            )
            cnp = f.store.cluster_policies["ClusterNetworkPolicy/monitoring"].spec
            assert isinstance(cnp, ClusterNetworkPolicySpec) and cnp.tier == "Admin"

            # Stored by the API server (these CRDs check nothing), rejected by netfence:
            # reported with its field path and enforced closed for its subject.
            api.call("POST", policy_path("AdminNetworkPolicy"), anp("bad", 40, "10.0.0.0/33"))
            await f.until(lambda s: bad_key in s.cluster_policies, "the bad ANP's stand-in")
            stand_in = f.store.cluster_policies[bad_key]
            assert stand_in.closed and getattr(stand_in.spec, "priority", None) == 40
            mine = [p for p in f.store.problems if p.obj == "AdminNetworkPolicy bad"]
            assert sorted((p.code, p.path) for p in mine) == [
                ("fails-closed", ""),
                ("invalid-cidr", "spec.egress[0].to[0].networks[0]"),
            ]

            # Nodes: labels and InternalIP/ExternalIP addresses, nothing else.
            api.create_node(
                node,
                {"zone": "a"},
                {"10.9.0.1": "InternalIP", "fd00:9::1": "InternalIP", "198.51.100.1": "ExternalIP"}
                | {node: "Hostname"},
            )
            await f.until(lambda s: bool((n := s.node(node)) and n.addresses), "the node", 10)
            expected = Node(
                node,
                {HOSTNAME_LABEL: node, "zone": "a"},
                (ip("10.9.0.1"), ip("198.51.100.1"), ip("fd00:9::1")),
            )
            assert f.store.declared_nodes[node] == expected
            assert f.store.snapshot().nodes[node] == expected
            api.patch(f"/api/v1/nodes/{node}", {"metadata": {"labels": {"zone": "b"}}})
            await f.until(lambda s: s.declared_nodes[node].labels.get("zone") == "b", "relabel")
            mark = f.mark()
            api.call("DELETE", f"/api/v1/nodes/{node}")
            await f.until(lambda s: node not in s.declared_nodes, "the node's deletion")
            assert Change.delete("Node", node) in f.changes_since(mark)

            api.call("DELETE", policy_path("AdminNetworkPolicy", "no-metadata"))
            await f.until(lambda s: anp_key not in s.cluster_policies, "the ANP's deletion")
            assert Change.delete("AdminNetworkPolicy", anp_key) in f.changes_since(mark)

            # The CRDs removed: what was held of them goes, and their problems with them.
            api.remove_policy_crds()
            await f.until(lambda s: not s.cluster_policies, "the policies gone with the CRDs")
            await f.until(
                lambda s: not [p for p in s.problems if p.obj == "AdminNetworkPolicy bad"],
                "the bad ANP's problems gone",
            )

    try:
        asyncio.run(scenario())
    finally:
        with contextlib.suppress(ApiError):
            api.call("DELETE", f"/api/v1/nodes/{node}")
        api.remove_policy_crds()


def test_the_agent_enforces_cluster_policies_and_nodes_from_the_api(
    api: Api, kubeconfig: Path, netns: str
) -> None:
    """The agent's loop on the API source, enforcing into a throw-away namespace: an admin
    policy and a node relabel each load a new table whose decisions follow them (the program
    is what the kernel holds; the dataplane tests check the two agree)."""
    api.install_policy_crds()
    ns, node = unique("tiers"), unique("nf-node")
    api.create_namespace(ns, {"tier": "web"})
    api.create_pod(ns, "web", {"app": "web"}, node="n0")
    api.set_pod_ips(ns, "web", "10.244.0.10")
    api.create_node(node, {"zone": "z1"}, {"192.0.2.77": "InternalIP"})
    web, metadata, host = ip("10.244.0.10"), ip("169.254.169.254"), ip("192.0.2.77")
    to_nodes = anp("nodes", 60)
    to_nodes["spec"]["egress"][0]["to"] = [{"nodes": {"matchLabels": {"zone": "z1"}}}]

    async def scenario() -> None:
        client = await api_client(str(kubeconfig))
        agent = Agent(KubeSource(client, recheck=0.5), Enforcer(netns, "n0"))
        task = asyncio.create_task(agent.run())

        async def until(check: Callable[[], bool], what: str) -> None:
            for _ in range(500):
                if check():
                    return
                await asyncio.sleep(0.02)
            raise AssertionError(f"no {what} after 10 s")

        def allows(dst: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
            program = agent.enforcer.program
            return program is not None and program.allows(web, dst, "TCP", 80)

        try:
            await until(lambda: agent.health.ready and allows(metadata), "ready, all open")
            assert allows(host)
            api.call("POST", policy_path("AdminNetworkPolicy"), anp("no-metadata", 50))
            await until(lambda: not allows(metadata), "the ANP enforced")
            api.call("POST", policy_path("AdminNetworkPolicy"), to_nodes)
            await until(lambda: not allows(host), "the node peer enforced")
            api.patch(f"/api/v1/nodes/{node}", {"metadata": {"labels": {"zone": "z2"}}})
            await until(lambda: allows(host), "the relabelled node no longer denied")
            api.call("DELETE", policy_path("AdminNetworkPolicy", "no-metadata"))
            await until(lambda: allows(metadata), "the ANP's deletion enforced")
            failures = [
                sample
                for metric in agent.metrics.registry.collect()
                if metric.name == "netfence_errors"
                for sample in metric.samples
            ]
            assert failures == []  # no failed load on the way
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await client.close()

    try:
        asyncio.run(scenario())
    finally:
        for name in ("no-metadata", "nodes"):
            with contextlib.suppress(ApiError):
                api.call("DELETE", policy_path("AdminNetworkPolicy", name))
        with contextlib.suppress(ApiError):
            api.call("DELETE", f"/api/v1/nodes/{node}")
        api.delete_pod(ns, "web")
        api.delete_namespace(ns)
        api.remove_policy_crds()
