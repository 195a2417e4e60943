"""deploy/: what `kubectl apply -f deploy/` installs.

Checked three ways: every document read as YAML and by netfence's own loader; the RBAC rules
against what the Kubernetes source actually reads (`kube.RESOURCES`), verb for verb; and
against a real API server (see conftest.py), which validates every object as `kubectl apply`
would send it and then serves the agent's list + watch to the ServiceAccount, and nothing
more.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import os
import re
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from netfence.cluster.state import ClusterState
from netfence.k8s.loader import load_paths
from netfence.sources import kube
from netfence.sources.kube import KubeSource, api_client
from tests.agent.apiserver import TOKEN, Api, ApiError, ApiServer
from tests.agent.follow import Follower, unique

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
READ_VERBS = {"get", "list", "watch"}


def documents() -> list[dict[str, Any]]:
    """Every object, in the order `kubectl apply -f deploy/` sends them: files by name
    (kubectl reads only .yaml, .yml and .json from a folder), documents in file order."""
    files = sorted(p for p in DEPLOY.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
    return [
        doc
        for path in files
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8"))
        if doc is not None
    ]


def only(kind: str) -> dict[str, Any]:
    found = [d for d in documents() if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def agent_container() -> dict[str, Any]:
    containers = only("DaemonSet")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def substituted(args: list[str], env: dict[str, str]) -> list[str]:
    """The container's args with `$(VAR)` replaced as the kubelet does."""
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m[1]], arg) for arg in args]


def test_every_document_is_an_object_netfence_reads_without_problems() -> None:
    docs = documents()
    assert docs
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= doc.keys(), doc
        assert doc["metadata"].get("name"), doc
    state = ClusterState.build(load_paths([DEPLOY]))
    assert state.problems == []
    assert set(state.namespaces) == {"netfence-system"}
    # The DaemonSet's template, as netfence sees it: one host-network pod per node.
    assert [(p.key, p.host_network) for p in state.pods] == [("netfence-system/netfence", True)]


def _granted(rules: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, rule  # no names, no URLs
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def _read(resource: kube.Resource) -> tuple[str, str]:
    """(API group, resource) of a collection path: /api/v1/pods, /apis/GROUP/VERSION/RES."""
    parts = resource.path.strip("/").split("/")
    return ("", parts[2]) if parts[0] == "api" else (parts[1], parts[3])


def test_the_cluster_role_grants_exactly_reads_of_what_the_source_follows() -> None:
    kinds = [d["kind"] for d in documents()]
    assert "Role" not in kinds and "RoleBinding" not in kinds
    role = only("ClusterRole")
    expected = {_read(r): READ_VERBS for r in kube.RESOURCES}
    assert _granted(role["rules"]) == expected
    assert set(expected) == {
        ("", "pods"),
        ("", "namespaces"),
        ("", "nodes"),
        ("networking.k8s.io", "networkpolicies"),
        ("policy.networking.k8s.io", "adminnetworkpolicies"),
        ("policy.networking.k8s.io", "baselineadminnetworkpolicies"),
        ("policy.networking.k8s.io", "clusternetworkpolicies"),
    }

    binding = only("ClusterRoleBinding")
    account = only("ServiceAccount")["metadata"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
    ]
    pod = only("DaemonSet")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["name"]
    assert only("DaemonSet")["metadata"]["namespace"] == account["namespace"]
    assert only("Namespace")["metadata"]["name"] == account["namespace"]


def test_the_daemon_set_runs_the_agent_on_every_node_and_probes_it() -> None:
    pod = only("DaemonSet")["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert {"operator": "Exists"} in pod["tolerations"]  # no key, no effect: every taint
    container = agent_container()
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    security = container["securityContext"]
    assert security.get("privileged") or "NET_ADMIN" in security["capabilities"]["add"]

    # The probes reach the address the agent listens on.
    args = substituted(container["args"], {"HOST_IP": "192.0.2.10"})
    listen = [a.removeprefix("--listen=") for a in args if a.startswith("--listen=")]
    assert len(listen) == 1
    host, _, port = listen[0].rpartition(":")
    assert host == "192.0.2.10"  # the pod's address (the node's): where the kubelet probes
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert "host" not in get
        assert ports.get(get["port"], get["port"]) == int(port)

    resources = container["resources"]
    assert resources["requests"]["memory"] and resources["limits"]["memory"]
    request, limit = (_bytes(resources[k]["memory"]) for k in ("requests", "limits"))
    assert request <= limit

    image, _, tag = container["image"].rpartition(":")
    assert image.endswith("netfence")
    assert tag == importlib.metadata.version("netfence")


def _bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 10**3, "M": 10**6, "G": 10**9}
    number, unit = re.fullmatch(r"(\d+)([A-Za-z]*)", quantity).groups()  # type: ignore[union-attr]
    return int(number) * units.get(unit, 1)


def test_the_agent_accepts_the_daemon_sets_arguments() -> None:
    """The container's args, as the kubelet expands them, parse; outside a cluster the
    agent then stops at the in-cluster configuration, with a one-line error."""
    container = agent_container()
    args = substituted(container["args"], {"HOST_IP": "192.0.2.10"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env["NODE_NAME"] = "node-1"
    proc = subprocess.run(
        [sys.executable, "-m", "netfence.cli", "agent", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr  # 2 would be a usage error
    assert "in-cluster configuration" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- against a real API server ------------------------------------------------------------

_COLLECTIONS = {
    "Namespace": "/api/v1/namespaces",
    "ServiceAccount": "/api/v1/namespaces/{namespace}/serviceaccounts",
    "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    "DaemonSet": "/apis/apps/v1/namespaces/{namespace}/daemonsets",
}


@pytest.fixture
def applied(api: Api) -> Iterator[None]:
    """deploy/ created in the API server in kubectl's order; removed afterwards."""
    created: list[tuple[str, str]] = []
    try:
        for doc in documents():
            path = _COLLECTIONS[doc["kind"]].format(**doc["metadata"])
            api.call("POST", path, doc)
            created.append((doc["kind"], f"{path}/{doc['metadata']['name']}"))
        yield
    finally:
        for kind, path in reversed(created):
            if kind == "Namespace":  # there is no namespace controller to finalize it
                api.delete_namespace(path.rpartition("/")[2])
            else:
                api.call("DELETE", path)


def _as(apiserver: ApiServer, user: str, method: str, path: str) -> int:
    """The status of a request made as `user` (impersonated by the admin token)."""
    request = urllib.request.Request(apiserver.url + path, method=method)
    request.add_header("Authorization", f"Bearer {TOKEN}")
    request.add_header("Impersonate-User", user)
    if method != "GET":
        request.data = json.dumps({"metadata": {"name": "x"}}).encode()
        json_type = "merge-patch+json" if method == "PATCH" else "json"
        request.add_header("Content-Type", f"application/{json_type}")
    tls = ssl.create_default_context(cafile=str(apiserver.ca_file))
    try:
        with urllib.request.urlopen(request, context=tls, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_api_server_accepts_deploy_and_lets_the_agent_read_only(
    apiserver: ApiServer, api: Api, kubeconfig: Path, applied: None
) -> None:
    account = only("ServiceAccount")["metadata"]
    user = f"system:serviceaccount:{account['namespace']}:{account['name']}"
    ns = unique("deploy")
    api.create_namespace(ns)
    api.create_pod(ns, "web", {"app": "web"})
    api.set_pod_ips(ns, "web", "10.9.0.1")
    api.create_policy(ns, "deny", {"podSelector": {}})

    async def follow() -> None:
        client = await api_client(str(kubeconfig))
        client.set_default_header("Impersonate-User", user)
        async with client, Follower(KubeSource(client)) as follower:
            keys = {c.key for c in follower.updates[0].changes}
            assert {ns, f"{ns}/web", f"{ns}/deny"} <= keys
            # The watches run with the same rights: a new pod arrives.
            api.create_pod(ns, "later", {"app": "web"})
            await follower.until(lambda store: f"{ns}/later" in store.pods, "the new pod")

    try:
        asyncio.run(follow())
        assert _as(apiserver, user, "GET", f"/api/v1/namespaces/{ns}/pods/web") == 200
        assert _as(apiserver, user, "GET", "/api/v1/nodes") == 200
        forbidden = [
            ("GET", "/api/v1/secrets"),
            ("GET", "/api/v1/configmaps"),
            ("POST", "/api/v1/nodes"),
            ("PATCH", "/api/v1/nodes/x"),
            ("POST", "/apis/policy.networking.k8s.io/v1alpha1/adminnetworkpolicies"),
            ("DELETE", "/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies/x"),
            ("POST", f"/api/v1/namespaces/{ns}/pods"),
            ("DELETE", f"/api/v1/namespaces/{ns}/pods/web"),
            ("PATCH", f"/api/v1/namespaces/{ns}/pods/web/status"),
            ("POST", f"/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies"),
        ]
        assert {(m, p): _as(apiserver, user, m, p) for m, p in forbidden} == {
            request: 403 for request in forbidden
        }
    finally:
        for pod in ("web", "later"):
            with contextlib.suppress(ApiError):
                api.delete_pod(ns, pod)
        api.call("DELETE", api.policy_path(ns, "deny"))
        api.delete_namespace(ns)
