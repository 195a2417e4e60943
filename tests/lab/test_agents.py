"""The lab enforced by real agents (`netfence agent --manifests DIR`, one per node).

Probes must agree with the engine after `lab up` and after `lab apply`; a prober hammering
an isolated pod while the agents restart gets nothing through; a deleted table is back
within a second or so; a broken policy closes its pods (reported by the agent itself) and
nothing else. The first test needs no root: the folder the agents read must describe the
cluster exactly as the lab runs it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from netfence.cli import app
from netfence.cluster.state import ClusterState
from netfence.k8s.loader import load_paths
from netfence.lab import agents, netns
from netfence.lab.compare import compare, mismatches
from netfence.lab.probe import ProbeResult, plan_probes, run_probes
from netfence.lab.topology import LabPlan, external_spans, plan_lab
from tests.lab.manifests import CLUSTER, POLICIES, write

BROKEN = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: typo, namespace: shop}
spec:
  podSelector:
    matchLabels:
      app=db
  ingress:
  - ports:
    - port: 5432
"""

# Connects from inside a namespace, a new one every 4 ms, each given a second to complete
# (a SYN is retransmitted only after that), until stdin closes; prints what happened. A
# refusal counts as through too: a packet reached the destination and came back.
HAMMER = r"""
import json, select, socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
pending, attempts, through, start = {}, 0, 0, time.monotonic()
next_at = start
while True:
    now = time.monotonic()
    if now >= next_at:
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex((host, port))
        pending[s] = now + 1.0
        attempts += 1
        next_at = now + 0.004
    readable, writable, _ = select.select([sys.stdin], list(pending), [], 0.004)
    for s in writable:
        through += 1
        s.close()
        del pending[s]
    for s in [s for s, deadline in pending.items() if deadline < now]:
        s.close()
        del pending[s]
    if readable:
        break
print(json.dumps({"attempts": attempts, "through": through, "seconds": now - start}))
"""


def _up(name: str, folder: Path, *extra: str) -> tuple[LabPlan, ClusterState]:
    up = CliRunner().invoke(app, ["lab", "up", str(folder), "--name", name, *extra])
    assert up.exit_code == 0, up.output
    assert "enforced by 2 agents" in up.output
    return netns.load_plan(name), _snapshot_state(name)


def _snapshot_state(name: str) -> ClusterState:
    return ClusterState.build(load_paths([netns.manifests_dir(name)]), fail_closed=True)


def _probe(plan: LabPlan, state: ClusterState) -> tuple[list[str], list[ProbeResult]]:
    results = run_probes(plan_probes(plan))
    return [c.mismatch_line() for c in mismatches(compare(plan, state, results))], results


def _delivered(results: list[ProbeResult], src: str, dst: str, port: int) -> set[bool]:
    return {
        r.delivered for r in results if (r.probe.src, r.probe.dst, r.probe.port) == (src, dst, port)
    }


def _said(name: str, node: str, message: str) -> int:
    """How often the node's agent logged a message starting with `message`."""
    log = netns.state_dir(name) / "logs" / f"agent-{node}.log"
    return sum(f'"msg": "{message}' in line for line in log.read_text().splitlines())


def _readies(name: str, node: str) -> int:
    """How often the node's agent said it enforces its complete first view."""
    return _said(name, node, "ready")


def _running(name: str) -> dict[str, int]:
    return {node: int(e["pid"]) for node, e in agents.read_registry(name).items()}


def test_the_folder_holds_the_cluster_as_the_lab_runs_it(tmp_path: Path) -> None:
    folder = write(tmp_path / "m", CLUSTER, POLICIES + "---\n" + BROKEN)
    state = ClusterState.build(load_paths([folder]), fail_closed=True)
    plan = plan_lab(state, name="unit", external=external_spans(state))
    files = agents.lab_files(plan, state, [folder])
    out = tmp_path / "lab"
    for rel, content in files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(content)
    # Pods and workloads left the user's file; its Namespace stayed.
    assert [i.ident for i in load_paths([out / "sources/0/0.yaml"]).objects] == ["Namespace shop"]
    assert (out / "sources/0/1.yaml").read_bytes() == (folder / "1.yaml").read_bytes()
    seen = ClusterState.build(load_paths([out]), fail_closed=True)
    want = plan.cluster_state(state)

    def pods(s: ClusterState) -> list[tuple[object, ...]]:
        return [(p.key, p.labels, p.ports, p.owner, p.ips, p.node, p.host_network) for p in s.pods]

    assert pods(seen) == pods(want)
    assert {n: (v.labels, v.addresses) for n, v in seen.nodes.items()} == {
        n: (v.labels, v.addresses) for n, v in want.nodes.items()
    }
    assert seen.namespaces == want.namespaces
    assert [(p.key, p.spec, p.closed) for p in seen.policies] == [
        (p.key, p.spec, p.closed) for p in want.policies
    ]
    assert any(p.closed for p in seen.policies)  # the typo is rejected by the reader
    assert [str(p).split(": ", 1)[1] for p in seen.errors] == [
        str(p).split(": ", 1)[1] for p in state.errors
    ]
    # The pods the lab has from status IPs and those it allocated differ from the user's.
    assert {p.key: p.ips for p in seen.pods} != {p.key: p.ips for p in state.pods}


def test_agents_enforce_up_and_apply(lab_name: str, tmp_path: Path) -> None:
    folder = write(tmp_path / "m", CLUSTER, POLICIES)
    plan, state = _up(lab_name, folder)
    bad, results = _probe(plan, state)
    assert bad == []
    assert _delivered(results, "shop/client", "shop/web-0", 80) == {True}
    assert {r.delivered for r in results} == {True, False}
    pids = _running(lab_name)
    assert sorted(pids) == ["n0", "n1"]

    # A relabel: the client loses its access to the web pods; only the folder changes.
    write(folder, CLUSTER.replace("labels: {app: client}", "labels: {app: other}"), POLICIES)
    applied = CliRunner().invoke(app, ["lab", "apply", str(folder), "--name", lab_name])
    assert applied.exit_code == 0, applied.output
    assert "(by the agents, all enforcing after" in applied.output
    assert " elements" in applied.output  # a relabel changes set elements only
    plan, state = netns.load_plan(lab_name), _snapshot_state(lab_name)
    bad, results = _probe(plan, state)
    assert bad == []
    assert _delivered(results, "shop/client", "shop/web-0", 80) == {False}
    assert _running(lab_name) == pids  # the same agents followed the folder

    netns.down(lab_name)
    assert agents.agent_pids(lab_name) == []


def _hammer(netns_name: str, host: str, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ip", "netns", "exec", netns_name, sys.executable, "-c", HAMMER, host, str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _result(proc: subprocess.Popen[str]) -> dict[str, float]:
    out, _ = proc.communicate(timeout=10)
    data: dict[str, float] = json.loads(out)
    return data


def test_agent_restart_lets_nothing_through(lab_name: str, tmp_path: Path) -> None:
    plan, state = _up(lab_name, write(tmp_path / "m", CLUSTER, POLICIES))
    client, web, db = plan.pod("shop/client"), plan.pod("shop/web-0"), plan.pod("shop/db")
    # The prober does see an allowed connection (client -> web 80)...
    control = _hammer(client.netns, str(web.ip4), 80)
    time.sleep(0.5)
    assert _result(control)["through"] > 0
    # ...and nothing of client -> db 5432, which the db policy forbids, while every agent
    # is stopped, started again and reloads.
    before = _running(lab_name)
    hammer = _hammer(client.netns, str(db.ip4), 5432)
    try:
        time.sleep(0.5)
        agents.stop(lab_name)
        time.sleep(1.0)
        restarted = time.monotonic()
        agents.sync(plan)
        # The kept tables are right already; wait until the new agents have taken over.
        while any(_readies(lab_name, n.name) < 2 for n in plan.nodes):
            assert time.monotonic() - restarted < 30, "the agents did not get ready"
            time.sleep(0.01)
        took = time.monotonic() - restarted
        agents.wait_enforced(plan, agents.expected_tables(plan, state))
        time.sleep(0.5)
    finally:
        result = _result(hammer)
    print(f"\nagents restarted, ready again after {took:.2f} s: {result}")
    assert result["through"] == 0, result
    assert result["attempts"] > 200, result
    after = _running(lab_name)
    assert sorted(after) == sorted(before) and not set(after.values()) & set(before.values())


def test_a_deleted_table_is_restored_within_a_second(lab_name: str, tmp_path: Path) -> None:
    plan, state = _up(lab_name, write(tmp_path / "m", CLUSTER, POLICIES))
    expected = agents.expected_tables(plan, state)
    node = plan.nodes[0]
    assert agents.table(node.netns) == expected[node.name]
    repaired = _said(lab_name, node.name, "table changed by someone else")
    start = time.monotonic()
    subprocess.run(
        ["ip", "netns", "exec", node.netns, "nft", "delete", "table", "inet", "netfence"],
        check=True,
    )
    # The agent hears of the deletion from the kernel (nftables events), so the table may
    # be back before this test can list it missing: its log says it was repaired.
    while (
        agents.table(node.netns) != expected[node.name]
        or _said(lab_name, node.name, "table changed by someone else") == repaired
    ):
        assert time.monotonic() - start < 5, "not restored"
        time.sleep(0.005)
    took = time.monotonic() - start
    print(f"\ntable restored after {took:.3f} s")
    assert took < 1.0
    bad, _ = _probe(plan, state)
    assert bad == []


def test_a_broken_policy_closes_only_its_pods(lab_name: str, tmp_path: Path) -> None:
    folder = tmp_path / "seed"
    shutil.copytree("examples/seed-broken", folder)
    plan, state = _up(lab_name, folder)
    assert [p.key for p in state.policies if p.closed] == ["production/allow-port-8000"]
    # The policy reached the agents as written, and they reject it themselves.
    copied = agents.folder(lab_name) / "sources/0/policies.yaml"
    assert copied.read_bytes() == (folder / "policies.yaml").read_bytes()
    logs = [netns.state_dir(lab_name) / "logs" / f"agent-{n.name}.log" for n in plan.nodes]
    for log in logs:
        problems = [json.loads(line) for line in log.read_text().splitlines()]
        assert any(
            "allow-port-8000" in str(p.get("problem")) and "fails closed" in str(p["problem"])
            for p in problems
        ), log.read_text()
    bad, results = _probe(plan, state)
    assert bad == []
    into_production = {
        (r.probe.src, r.probe.dst)
        for r in results
        if r.delivered and r.probe.dst.startswith("production/")
    }
    # Production's valid same-namespace policy still lets its pods talk; what the broken
    # policy would have opened (staging -> web-server 8000) stays shut; staging is open.
    assert into_production
    assert all(src.startswith("production/") for src, _ in into_production)
    assert _delivered(results, "staging/client", "production/web-server", 8000) == {False}
    assert any(r.delivered and r.probe.dst.startswith("staging/") for r in results)
