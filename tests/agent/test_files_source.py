"""The manifest folder source: inotify, debouncing, differences, broken files."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
from pathlib import Path

from netfence.cluster.state import ClusterState
from netfence.k8s.loader import load_paths
from netfence.sources.changes import Change
from netfence.sources.files import FilesSource
from tests.agent.follow import Follower


def pod(name: str, app: str, ip: str, namespace: str = "x") -> str:
    return (
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}, "
        f"labels: {{app: {app}}}}}\nspec: {{containers: [{{name: c, ports: "
        f"[{{containerPort: 80}}]}}]}}\nstatus: {{podIP: {ip}}}\n---\n"
    )


POLICY = (
    "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
    "metadata: {name: deny, namespace: x}\nspec: {podSelector: {matchLabels: {app: a}}}\n"
)
NAMESPACE = "apiVersion: v1\nkind: Namespace\nmetadata: {name: x, labels: {team: blue}}\n---\n"


def write(path: Path, text: str) -> None:
    """As writers should: a finished file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def test_first_update_is_what_check_sees(tmp_path: Path) -> None:
    write(tmp_path / "ns.yaml", NAMESPACE)
    write(tmp_path / "pods.yaml", pod("a", "a", "10.0.0.1") + pod("b", "b", "10.0.0.1"))
    write(tmp_path / "deep" / "er" / "policy.yml", POLICY)
    write(tmp_path / "broken.yaml", "kind: Pod\nmetadata: {name: [1]}\n")
    (tmp_path / "notes.txt").write_text("not a manifest")

    async def scenario() -> None:
        async with Follower(FilesSource(tmp_path)) as f:
            expected = ClusterState.build(load_paths([tmp_path]))
            state = f.store.snapshot()
            assert state.namespaces == expected.namespaces
            assert state.pods == expected.pods
            assert state.policies == expected.policies
            assert sorted(map(str, state.problems)) == sorted(map(str, expected.problems))
            assert any(p.code == "shared-address" for p in state.problems)

    asyncio.run(scenario())


def test_changes_are_differences(tmp_path: Path) -> None:
    write(tmp_path / "pods.yaml", pod("a", "a", "10.0.0.1") + pod("b", "b", "10.0.0.2"))

    async def scenario() -> None:
        async with Follower(FilesSource(tmp_path)) as f:
            assert set(f.store.pods) == {"x/a", "x/b"}
            mark = f.mark()
            write(tmp_path / "pods.yaml", pod("a", "a2", "10.0.0.1") + pod("b", "b", "10.0.0.2"))
            await f.until(lambda s: s.pods["x/a"].labels == {"app": "a2"}, "the relabel")
            assert [c.key for c in f.changes_since(mark)] == ["x/a"]  # b did not change

            mark = f.mark()
            write(tmp_path / "policy.yaml", POLICY)
            await f.until(lambda s: "x/deny" in s.policies, "the new file's policy")
            (tmp_path / "policy.yaml").unlink()
            await f.until(lambda s: "x/deny" not in s.policies, "the policy's removal")
            assert f.changes_since(mark)[-1] == Change.delete("NetworkPolicy", "x/deny")

            write(tmp_path / "ns.yaml", NAMESPACE)
            await f.until(lambda s: "team" in s.declared["x"].labels, "the namespace's labels")
            (tmp_path / "ns.yaml").unlink()
            # Still used by the pods, so it exists, with only its name label.
            await f.until(lambda s: "team" not in s.namespaces["x"].labels, "the undeclared ns")

            # The same content written again, and files that are not manifests: no update.
            mark = f.mark()
            write(tmp_path / "pods.yaml", (tmp_path / "pods.yaml").read_text())
            (tmp_path / "README.md").write_text("hello")
            write(tmp_path / "other.yaml", pod("z", "z", "10.0.0.9"))
            await f.until(lambda s: "x/z" in s.pods, "the marker pod")
            assert [c.key for c in f.changes_since(mark)] == ["x/z"]

    asyncio.run(scenario())


def test_a_burst_of_writes_is_one_reload(tmp_path: Path) -> None:
    write(tmp_path / "seed.yaml", pod("seed", "s", "10.0.1.1"))

    async def scenario() -> None:
        source = FilesSource(tmp_path, debounce=0.2, max_delay=2.0)
        async with Follower(source) as f:
            mark = f.mark()
            for i in range(30):
                write(tmp_path / f"p{i}.yaml", pod(f"p{i}", "burst", f"10.0.2.{i + 1}"))
            await f.until(lambda s: len(s.pods) == 31, "all 30 pods")
            assert len(f.updates) - mark == 1

    asyncio.run(scenario())


def test_a_file_that_cannot_be_parsed_keeps_its_objects(tmp_path: Path) -> None:
    write(tmp_path / "policy.yaml", POLICY)

    async def scenario() -> None:
        async with Follower(FilesSource(tmp_path)) as f:
            assert "x/deny" in f.store.policies
            (tmp_path / "policy.yaml").write_text(POLICY.replace("spec: {", "spec: {{"))
            await f.until(lambda s: bool(s.problems), "the problem")
            assert "x/deny" in f.store.policies
            assert [p.code for p in f.store.problems] == ["not-yaml", "kept-last-good"]
            # A valid file without the policy removes it; the problems go.
            write(tmp_path / "policy.yaml", pod("a", "a", "10.0.0.1"))
            await f.until(lambda s: "x/deny" not in s.policies, "the policy's removal")
            assert f.store.problems == ()

    asyncio.run(scenario())


def test_a_folder_that_disappears_keeps_the_state(tmp_path: Path) -> None:
    folder = tmp_path / "manifests"
    write(folder / "policy.yaml", POLICY)

    async def scenario() -> None:
        async with Follower(FilesSource(folder)) as f:
            shutil.rmtree(folder)
            await f.until(lambda s: bool(s.problems), "the problem")
            assert "x/deny" in f.store.policies
            assert [p.code for p in f.store.problems] == ["no-such-path"]
            # Back, with other contents: followed again (the old watch died with the folder).
            write(folder / "pods.yaml", pod("a", "a", "10.0.0.1"))
            await f.until(lambda s: "x/a" in s.pods and "x/deny" not in s.policies, "the new")
            write(folder / "policy.yaml", POLICY)
            await f.until(lambda s: "x/deny" in s.policies, "a change in the new folder")
            assert f.store.problems == ()

    asyncio.run(scenario())


NODE = (
    "apiVersion: v1\nkind: Node\nmetadata: {name: n1, labels: {zone: %s}}\n"
    "status: {addresses: [{type: InternalIP, address: 192.0.2.1}, {type: Hostname, "
    "address: n1}]}\n"
)
ANP = (
    "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\n"
    "metadata: {name: %s}\nspec:\n  priority: %d\n  subject: {namespaces: {}}\n"
    "  egress: [{action: Deny, to: [{networks: [%s]}]}]\n---\n"
)
TIERS = (
    ANP % ("metadata", 5, "169.254.169.254/32")
    + ANP % ("bad", 6, "10.0.0.0/33")
    + "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: BaselineAdminNetworkPolicy\n"
    "metadata: {name: default}\nspec:\n  subject: {namespaces: {}}\n"
    "  ingress: [{action: Deny, from: [{namespaces: {}}]}]\n---\n"
    "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\n"
    "metadata: {name: cnp}\nspec:\n  tier: Admin\n  priority: 1\n  subject: {namespaces: {}}\n"
    "  ingress: [{action: Accept, from: [{namespaces: {}}]}]\n"
)


def on_node(name: str, node: str, host_ip: str) -> str:
    return (
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: x}}\n"
        f"spec: {{nodeName: {node}, containers: [{{name: c}}]}}\n"
        f"status: {{podIP: 10.0.9.{name[-1]}, hostIP: {host_ip}}}\n---\n"
    )


def test_nodes_and_cluster_policies_are_what_enforcement_sees(tmp_path: Path) -> None:
    """Declared nodes, nodes implied by pods, and policies of every tier (a rejected one as
    its fail-closed stand-in): the store's snapshot equals `ClusterState.build`'s."""
    write(tmp_path / "nodes.yaml", NODE % "a")
    write(
        tmp_path / "pods.yaml", on_node("p1", "n1", "192.0.2.9") + on_node("p2", "n2", "192.0.2.2")
    )
    write(tmp_path / "tiers.yaml", TIERS)

    async def scenario() -> None:
        async with Follower(FilesSource(tmp_path)) as f:
            expected = ClusterState.build(load_paths([tmp_path]), fail_closed=True)
            state = f.store.snapshot()
            assert state.nodes == expected.nodes and set(state.nodes) == {"n1", "n2"}
            # (in another order: the store keeps records by kind; the engine sorts by tier)
            assert sorted(state.cluster_policies, key=lambda p: p.key) == sorted(
                expected.cluster_policies, key=lambda p: p.key
            )
            assert sorted(map(str, state.problems)) == sorted(map(str, expected.problems))
            closed = {p.key for p in state.cluster_policies if p.closed}
            assert closed == {"AdminNetworkPolicy/bad"}
            assert len(state.cluster_policies) == 4
            assert any(p.code == "fails-closed" for p in state.problems)

            # A node relabelled and a policy removed: exactly those changes.
            mark = f.mark()
            write(tmp_path / "nodes.yaml", NODE % "b")
            write(tmp_path / "tiers.yaml", TIERS.replace("name: metadata", "name: renamed"))
            await f.until(lambda s: "AdminNetworkPolicy/renamed" in s.cluster_policies, "rename")
            await f.until(lambda s: s.declared_nodes["n1"].labels.get("zone") == "b", "relabel")
            assert sorted((c.kind, c.action, c.key) for c in f.changes_since(mark)) == [
                ("AdminNetworkPolicy", "delete", "AdminNetworkPolicy/metadata"),
                ("AdminNetworkPolicy", "upsert", "AdminNetworkPolicy/renamed"),
                ("Node", "upsert", "n1"),
            ]
            # The node's file goes: n1 stays, implied by its pod, with the pod's host address.
            (tmp_path / "nodes.yaml").unlink()
            await f.until(lambda s: "n1" not in s.declared_nodes, "the node's removal")
            assert f.store.snapshot().nodes["n1"].addresses == (ipaddress.ip_address("192.0.2.9"),)

    asyncio.run(scenario())
