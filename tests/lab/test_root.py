"""The lab for real (root): build, probe, enforce, update and remove it.

Without policies every probe must get through: that validates the topology (bridged and
routed same-node paths, cross-node, outside, hostNetwork, TCP, UDP and raw SCTP, both
families) independently of the dataplane. With the real dataplane the probes must agree
with the engine.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from netfence.cli import app
from netfence.cluster.state import ClusterState
from netfence.k8s.loader import load_paths
from netfence.lab import listeners, netns
from netfence.lab.compare import compare, mismatches
from netfence.lab.probe import ProbeResult, plan_probes, run_probes
from netfence.lab.signals import Interrupted
from netfence.lab.topology import LabPlan, NodePlan, external_spans, plan_lab
from tests.lab.conftest import leftovers
from tests.lab.manifests import CLUSTER, POLICIES, write


def build(
    name: str, folder: Path, texts: Sequence[str], dataplane: netns.Dataplane | None = None
) -> tuple[ClusterState, LabPlan]:
    write(folder, *texts)
    state = ClusterState.build(load_paths([folder]))
    assert not state.problems, state.problems
    plan = plan_lab(state, name=name, external=external_spans(state))
    netns.up(plan, state, [folder], dataplane=dataplane)
    return state, plan


def running_listeners(name: str) -> list[int]:
    pids = [int(e["pid"]) for e in listeners.read_registry(netns.state_dir(name)).values()]
    return [pid for pid in pids if listeners._is_listener(pid)]


def test_without_policies_every_probe_gets_through(lab_name: str, tmp_path: Path) -> None:
    _, plan = build(lab_name, tmp_path / "m", [CLUSTER], dataplane=None)
    probes = plan_probes(plan)
    start = time.monotonic()
    results = run_probes(probes)
    elapsed = time.monotonic() - start
    failed = [f"{r.probe.label}: {r.detail}" for r in results if not r.delivered]
    assert failed == []
    assert elapsed < 5
    seen = {(r.probe.protocol, r.probe.family) for r in results}
    assert seen == {(p, f) for p in ("TCP", "UDP", "SCTP") for f in (4, 6)}
    node = {p.key: p.node for p in plan.pods}
    pairs = {(r.probe.src, r.probe.dst) for r in results}
    assert ("shop/web-0", "shop/web-2") in pairs and node["shop/web-0"] == node["shop/web-2"]
    assert any(node.get(s) != node.get(d) for s, d in pairs if s in node and d in node)
    assert any(r.probe.dst_kind == "outside" for r in results)
    assert any(r.probe.src_kind == "outside" and r.probe.protocol == "SCTP" for r in results)
    assert any(r.probe.src == "kube/exporter" for r in results)
    assert any(r.probe.dst == "kube/exporter" for r in results)
    assert any(r.probe.dst == "shop/db" and r.probe.family == 6 for r in results)


def test_down_removes_namespaces_listeners_and_state(lab_name: str, tmp_path: Path) -> None:
    _, plan = build(lab_name, tmp_path / "m", [CLUSTER])
    pids = running_listeners(lab_name)
    assert len(pids) == len(plan.listener_ports())
    removed = netns.down(lab_name)
    assert sorted(removed) == sorted(plan.namespaces())
    assert leftovers(lab_name) == []
    assert not [pid for pid in pids if listeners._is_listener(pid)]
    assert netns.down(lab_name) == []  # removing a removed lab is fine


def test_up_replaces_a_lab_of_the_same_name(lab_name: str, tmp_path: Path) -> None:
    _, first = build(lab_name, tmp_path / "a", [CLUSTER])
    old_pids = running_listeners(lab_name)
    _, second = build(lab_name, tmp_path / "b", [CLUSTER.replace("replicas: 3", "replicas: 1")])
    assert sorted(netns.lab_namespaces(lab_name)) == sorted(second.namespaces())
    assert not [pid for pid in old_pids if listeners._is_listener(pid)]
    assert len(second.pods) == len(first.pods) - 2


def test_failure_mid_build_leaves_nothing(
    lab_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = netns._add_pods

    def half_then_fail(plan: LabPlan, pods: Sequence[object], created: list[str]) -> None:
        real(plan, pods[:2], created)  # type: ignore[arg-type]
        assert netns.lab_namespaces(lab_name)
        raise RuntimeError("boom")

    monkeypatch.setattr(netns, "_add_pods", half_then_fail)
    with pytest.raises(RuntimeError, match="boom"):
        build(lab_name, tmp_path / "m", [CLUSTER])
    assert leftovers(lab_name) == []


def test_signal_while_starting_listeners_leaves_nothing(
    lab_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = listeners.start_all

    def start_then_signal(*args: object) -> None:
        real(*args)  # type: ignore[arg-type]
        assert running_listeners(lab_name)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)  # the handler raises before this ends

    monkeypatch.setattr(listeners, "start_all", start_then_signal)
    with pytest.raises(Interrupted):
        build(lab_name, tmp_path / "m", [CLUSTER])
    assert leftovers(lab_name) == []


class RecordingDataplane:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, NodePlan, ClusterState, ClusterState | None]] = []
        self.fail = fail

    def enforce(
        self, netns: str, node: NodePlan, state: ClusterState, previous: ClusterState | None
    ) -> str:
        if self.fail:
            raise RuntimeError("nft said no")
        self.calls.append((netns, node, state, previous))
        return "table"


def test_rulesets_are_compiled_from_the_lab_state_per_node(lab_name: str, tmp_path: Path) -> None:
    dataplane = RecordingDataplane()
    _, plan = build(lab_name, tmp_path / "m", [CLUSTER], dataplane=dataplane)
    assert [node.name for _, node, _, _ in dataplane.calls] == [n.name for n in plan.nodes]
    assert [netns for netns, *_ in dataplane.calls] == [n.netns for n in plan.nodes]
    assert all(previous is None for *_, previous in dataplane.calls)  # a new lab: new tables
    lab_state = dataplane.calls[0][2]
    for pod in lab_state.pods:
        assert pod.ips == (plan.pod(pod.key).ip4, plan.pod(pod.key).ip6)
        assert pod.node in {"n0", "n1"}


def test_a_ruleset_that_fails_to_load_removes_the_lab(lab_name: str, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="nft said no"):
        build(lab_name, tmp_path / "m", [CLUSTER], dataplane=RecordingDataplane(fail=True))
    assert leftovers(lab_name) == []


def _disagreements(plan: LabPlan, state: ClusterState) -> tuple[list[str], list[ProbeResult]]:
    results = run_probes(plan_probes(plan))
    return [c.mismatch_line() for c in mismatches(compare(plan, state, results))], results


def test_enforced_lab_agrees_with_the_engine_then_follows_apply(
    lab_name: str, tmp_path: Path
) -> None:
    dataplane = netns.load_dataplane()
    state, plan = build(lab_name, tmp_path / "m", [CLUSTER, POLICIES], dataplane=dataplane)
    bad, results = _disagreements(plan, state)
    assert bad == []
    blocked = {(r.probe.protocol, r.delivered) for r in results}
    assert blocked == {(p, d) for p in ("TCP", "UDP", "SCTP") for d in (True, False)}
    if shutil.which("conntrack"):  # netfilter tracks the raw INITs as SCTP flows
        tracked = subprocess.run(
            ["ip", "netns", "exec", plan.nodes[0].netns, "conntrack", "-L", "-p", "sctp"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "sctp" in tracked and "dport=7000" in tracked

    # `lab apply`: one web pod more, the client gone, a new pod, the db policy dropped.
    late = (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: late, namespace: shop, labels: "
        "{app: client}}\nspec: {containers: [{name: x, image: x, ports: "
        "[{containerPort: 8443}]}]}\nstatus: {podIPs: [{ip: 10.98.0.1}]}\n"
    )
    cluster = CLUSTER.replace("replicas: 3", "replicas: 4")
    cluster = cluster.replace("name: client, namespace: shop", "name: gone, namespace: away")
    web_policy = POLICIES.split("---")[0]
    folder = write(tmp_path / "m2", cluster, web_policy, late)
    new_state = ClusterState.build(load_paths([folder]))
    assert not new_state.problems
    new_plan = plan_lab(new_state, name=lab_name, external=external_spans(new_state), previous=plan)
    modes = netns.update(plan, new_plan, new_state, [folder], dataplane=dataplane, old_state=state)
    assert set(modes.values()) == {"table"}  # a policy went: new tables
    assert sorted(netns.lab_namespaces(lab_name)) == sorted(new_plan.namespaces())
    assert new_plan.pod("shop/db") == plan.pod("shop/db")
    assert len(running_listeners(lab_name)) == len(new_plan.listener_ports())
    bad, _ = _disagreements(new_plan, new_state)
    assert bad == []


def test_cli_up_probe_down_on_the_seed(lab_name: str) -> None:
    runner = CliRunner()
    up = runner.invoke(app, ["lab", "up", "examples/seed", "--name", lab_name])
    assert up.exit_code == 0, up.output
    probe = runner.invoke(app, ["lab", "probe", "--name", lab_name])
    assert probe.exit_code == 0, probe.output
    assert "146 probes: 81 delivered, 65 blocked, 0 mismatch(es) with the engine" in probe.output
    down = runner.invoke(app, ["lab", "down", "--name", lab_name])
    assert down.exit_code == 0, down.output
    assert leftovers(lab_name) == []
