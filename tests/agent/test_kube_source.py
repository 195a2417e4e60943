"""The Kubernetes API source against a real kube-apiserver (see conftest.py)."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path
from typing import Any

import pytest

from netfence.cluster.state import NAMESPACE_NAME_LABEL, ClusterState, ContainerPort, Owner
from netfence.k8s.loader import load_text
from netfence.problems import Problem
from netfence.sources import kube
from netfence.sources.changes import Change, Kind, Record
from netfence.sources.kube import KubeSource, api_client
from tests.agent.apiserver import Api, ApiServer, Proxy
from tests.agent.follow import Follower, unique


def fast_backoff() -> kube.Backoff:
    """Retry quickly in tests: the API server comes back within seconds."""
    return kube.Backoff(initial=0.1, cap=1.0)


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


async def follow(kubeconfig: Path, **options: Any) -> tuple[Any, KubeSource]:
    client = await api_client(str(kubeconfig))
    return client, KubeSource(client, **options)


def test_lists_in_pages_and_keeps_what_policy_needs(api: Api, kubeconfig: Path) -> None:
    ns = unique("list")
    api.create_namespace(ns, {"team": "blue"})
    for i in range(7):
        api.create_pod(ns, f"p{i}", {"app": f"a{i % 2}"}, ports=(80, 443))
    api.create_pod(ns, "owned", {"app": "web"}, owner=("ReplicaSet", "web-5d8f7c9b6f"))
    api.create_pod(ns, "host", {"app": "agent"}, node="node-2", host_network=True)
    api.set_pod_ips(ns, "p0", "10.1.0.1", "fd00::1")
    api.create_policy(ns, "deny", {"podSelector": {"matchLabels": {"app": "a0"}}})

    async def scenario() -> None:
        client, source = await follow(kubeconfig, page_size=2)
        async with client, Follower(source) as follower:
            first = follower.updates[0]
            assert {f"{ns}/p{i}" for i in range(7)} <= {c.key for c in first.changes}
            assert source.stats.lists["Pod"] == 1
            assert source.stats.pages["Pod"] >= 5  # 9 pods of this test alone, 2 per page
            store = follower.store
            p0 = store.pods[f"{ns}/p0"]
            assert p0.ips == (ip("10.1.0.1"), ip("fd00::1"))
            assert (p0.node, p0.phase, p0.host_network) == ("node-1", "Running", False)
            assert p0.labels == {"app": "a0"}
            assert p0.ports == (ContainerPort(80, "TCP", "p80"), ContainerPort(443, "TCP", "p443"))
            assert p0.owner == Owner("Pod", "p0")
            assert store.pods[f"{ns}/p1"].ips == ()  # no address reported yet
            assert store.pods[f"{ns}/p1"].phase == "Pending"
            assert store.pods[f"{ns}/owned"].owner == Owner("ReplicaSet", "web-5d8f7c9b6f")
            assert store.pods[f"{ns}/host"].host_network
            assert store.pods[f"{ns}/host"].node == "node-2"
            namespace = store.namespace(ns)
            assert namespace is not None
            assert namespace.labels == {"team": "blue", NAMESPACE_NAME_LABEL: ns}
            policy = store.policies[f"{ns}/deny"].spec
            assert policy.pod_selector.match_labels == {"app": "a0"}
            assert policy.policy_types == ["Ingress"]  # the API server's default
            assert first.problems == ()

    asyncio.run(scenario())


def test_watch_follows_every_change(api: Api, kubeconfig: Path) -> None:
    ns = unique("watch")

    async def scenario() -> None:
        client, source = await follow(kubeconfig)
        async with client, Follower(source) as f:
            api.create_namespace(ns, {"env": "dev"})
            await f.until(lambda s: (n := s.namespace(ns)) is not None and "env" in n.labels, "ns")
            api.patch(f"/api/v1/namespaces/{ns}", {"metadata": {"labels": {"env": "prod"}}})
            await f.until(lambda s: s.declared[ns].labels.get("env") == "prod", "the relabel")

            api.create_pod(ns, "a", {"app": "a"})
            await f.until(lambda s: f"{ns}/a" in s.pods, "pod a")
            api.set_pod_ips(ns, "a", "10.2.0.1")
            await f.until(lambda s: s.pods[f"{ns}/a"].ips == (ip("10.2.0.1"),), "pod a's IP")
            api.patch(f"/api/v1/namespaces/{ns}/pods/a", {"metadata": {"labels": {"app": "b"}}})
            await f.until(lambda s: s.pods[f"{ns}/a"].labels == {"app": "b"}, "pod relabel")

            # A status change that policy does not care about changes no record.
            mark = f.mark()
            condition = {"type": "Ready", "status": "True"}
            api.patch(
                f"/api/v1/namespaces/{ns}/pods/a/status", {"status": {"conditions": [condition]}}
            )
            api.create_pod(ns, "marker", {"app": "marker"})  # ordered after it in the watch
            await f.until(lambda s: f"{ns}/marker" in s.pods, "the marker pod")
            assert f.changes_since(mark, f"{ns}/a") == []

            api.create_policy(ns, "p", {"podSelector": {}, "policyTypes": ["Ingress"]})
            await f.until(lambda s: f"{ns}/p" in s.policies, "the policy")
            api.patch(api.policy_path(ns, "p"), {"spec": {"policyTypes": ["Ingress", "Egress"]}})
            await f.until(
                lambda s: s.policies[f"{ns}/p"].spec.policy_types == ["Ingress", "Egress"],
                "the policy's update",
            )
            mark = f.mark()
            api.call("DELETE", api.policy_path(ns, "p"))
            await f.until(lambda s: f"{ns}/p" not in s.policies, "the policy's deletion")
            api.delete_pod(ns, "a")
            await f.until(lambda s: f"{ns}/a" not in s.pods, "pod a's deletion")
            assert Change.delete("NetworkPolicy", f"{ns}/p") in f.changes_since(mark)
            assert Change.delete("Pod", f"{ns}/a") in f.changes_since(mark)

            api.delete_pod(ns, "marker")
            api.delete_namespace(ns)
            await f.until(lambda s: s.namespace(ns) is None, "the namespace's deletion")
            assert Change.delete("Namespace", ns) in f.changes_since(mark)

    asyncio.run(scenario())


def test_a_bad_object_is_reported_and_left_out(
    api: Api, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API server has validated what it stores, but a newer server may send what this
    netfence rejects: such an object must not stop the stream, and its earlier good version
    must go. Pods labelled `corrupt` get port 70000 here, before netfence's validation."""
    ns = unique("bad")
    project = kube.project

    def corrupting(kind: Kind, raw: Any) -> tuple[str, Record | None, tuple[Problem, ...]]:
        if kind == "Pod" and raw["metadata"].get("labels", {}).get("corrupt"):
            raw["spec"]["containers"][0]["ports"][0]["containerPort"] = 70000
        return project(kind, raw)

    monkeypatch.setattr(kube, "project", corrupting)
    api.create_namespace(ns)
    api.create_pod(ns, "good", {"app": "x"})

    async def scenario() -> None:
        client, source = await follow(kubeconfig)
        async with client, Follower(source) as f:
            assert f"{ns}/good" in f.store.pods
            api.patch(
                f"/api/v1/namespaces/{ns}/pods/good", {"metadata": {"labels": {"corrupt": "1"}}}
            )
            await f.until(lambda s: f"{ns}/good" not in s.pods, "the pod turned bad to go")
            api.create_pod(ns, "after", {"app": "x"})
            await f.until(lambda s: f"{ns}/after" in s.pods, "the stream to go on")

            manifest = (
                f"kind: Pod\nmetadata: {{name: good, namespace: {ns}}}\n"
                "spec: {containers: [{name: main, ports: [{name: p80, containerPort: 70000}]}]}\n"
            )
            expected = ClusterState.build(load_text(manifest, file="")).errors
            mine = [p for p in f.store.problems if p.obj == f"Pod {ns}/good"]
            assert mine == expected and len(mine) == 1
            assert mine[0].path == "spec.containers[0].ports[0].containerPort"

            api.patch(
                f"/api/v1/namespaces/{ns}/pods/good", {"metadata": {"labels": {"corrupt": None}}}
            )
            await f.until(lambda s: f"{ns}/good" in s.pods, "the pod repaired")
            assert not [p for p in f.store.problems if p.obj == f"Pod {ns}/good"]

    asyncio.run(scenario())


def test_survives_an_api_server_restart(api: Api, apiserver: ApiServer, kubeconfig: Path) -> None:
    ns = unique("restart")
    api.create_namespace(ns)
    api.create_pod(ns, "before", {"app": "x"})

    async def scenario() -> None:
        client, source = await follow(kubeconfig, backoff=fast_backoff)
        async with client, Follower(source) as f:
            assert f"{ns}/before" in f.store.pods
            apiserver.restart_apiserver()
            api.create_pod(ns, "after", {"app": "y"})
            api.patch(
                f"/api/v1/namespaces/{ns}/pods/before", {"metadata": {"labels": {"app": "z"}}}
            )
            await f.until(lambda s: f"{ns}/after" in s.pods, "the pod created after the restart")
            await f.until(lambda s: s.pods[f"{ns}/before"].labels == {"app": "z"}, "the relabel")
            # Every watch broke and resumed; a kind with no change to report (the policies)
            # may resume after the others, once its backoff has run.
            await f.until(
                lambda _: min(source.stats.watches.values()) >= 2, "every watch resumed", 10.0
            )

    asyncio.run(scenario())


def test_gone_relists_and_emits_the_deletions_it_missed(
    api: Api, apiserver: ApiServer, proxy: Proxy, tmp_path: Path
) -> None:
    """A partition hides some changes; the API server restarts meanwhile, so its watch cache
    starts after them and the resumed watch gets 410 Gone: the source must list again and
    emit exactly the difference, deletions included."""
    ns = unique("gone")
    api.create_namespace(ns)
    for name in ("a", "b", "c"):
        api.create_pod(ns, name, {"app": name})
    api.create_policy(ns, "p", {"podSelector": {}})
    kubeconfig = apiserver.kubeconfig(tmp_path / "kubeconfig", server=proxy.url)

    async def scenario() -> None:
        client, source = await follow(kubeconfig, backoff=fast_backoff)
        async with client, Follower(source) as f:
            assert {f"{ns}/a", f"{ns}/b", f"{ns}/c"} <= set(f.store.pods)
            proxy.cut()
            api.delete_pod(ns, "b")
            api.call("DELETE", api.policy_path(ns, "p"))
            api.patch(f"/api/v1/namespaces/{ns}/pods/c", {"metadata": {"labels": {"app": "cc"}}})
            api.create_pod(ns, "d", {"app": "d"})
            apiserver.restart_apiserver()
            mark = f.mark()
            proxy.resume()
            await f.until(lambda s: f"{ns}/d" in s.pods and f"{ns}/p" not in s.policies, "relist")
            await f.until(lambda s: f"{ns}/b" not in s.pods, "pod b's deletion")
            assert f.store.pods[f"{ns}/c"].labels == {"app": "cc"}
            assert source.stats.lists["Pod"] == 2
            assert source.stats.lists["NetworkPolicy"] == 2
            mine = [c for c in f.changes_since(mark) if c.key.startswith(f"{ns}/")]
            assert sorted((c.kind, c.action, c.key) for c in mine) == [
                ("NetworkPolicy", "delete", f"{ns}/p"),
                ("Pod", "delete", f"{ns}/b"),
                ("Pod", "upsert", f"{ns}/c"),
                ("Pod", "upsert", f"{ns}/d"),
            ]  # nothing for a: it did not change

    asyncio.run(scenario())


def test_resumes_from_the_last_resource_version(
    api: Api, apiserver: ApiServer, proxy: Proxy, tmp_path: Path
) -> None:
    """Watches that end (the server's timeout) or break (a cut line) resume where they were:
    the changes arrive without a new list."""
    ns = unique("resume")
    api.create_namespace(ns)
    kubeconfig = apiserver.kubeconfig(tmp_path / "kubeconfig", server=proxy.url)

    async def scenario() -> None:
        client, source = await follow(kubeconfig, watch_timeout=1, backoff=fast_backoff)
        async with client, Follower(source) as f:
            await asyncio.sleep(3.5)  # server timeouts of 1-2 s: every watch ended at least once
            assert source.stats.watches["Pod"] >= 2
            proxy.cut()
            api.create_pod(ns, "during", {"app": "x"})
            await asyncio.sleep(0.5)
            proxy.resume()
            await f.until(lambda s: f"{ns}/during" in s.pods, "the pod created during the cut")
            assert source.stats.errors["Pod"] >= 1
            assert source.stats.lists == {"Namespace": 1, "Pod": 1, "NetworkPolicy": 1, "Node": 1}

    asyncio.run(scenario())
