"""A pod the dataplane does not know yet gets no traffic (issue: "new pods are denied until
their rules are programmed").

A namespace is wired to a lab node's bridge with an address in the node's pod range, as a
network plugin would wire a pod before its Pod object reaches the agent. With no policy
at all every known pod talks freely, yet the stranger is refused both ways; with the
table removed, the same stranger is reachable (so the refusal is the table's doing).
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from netfence.cli import app
from netfence.lab import agents, netns
from netfence.lab.topology import LabPlan, NodePlan
from tests.lab.manifests import write

CLUSTER = """\
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: default, labels: {app: a}}
spec: {containers: [{name: a, image: x, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: default, labels: {app: b}}
spec: {containers: [{name: b, image: x, ports: [{containerPort: 80}]}]}
"""
SERVER = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80)); s.listen(); print("ready", flush=True)
while True:
    s.accept()[0].close()
"""


def _exec(namespace: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", namespace, *argv], capture_output=True, text=True, check=False
    )


def _connects(namespace: str, address: str) -> bool:
    code = (
        "import socket,sys\ntry:\n socket.create_connection((sys.argv[1], 80), timeout=1)"
        "\nexcept OSError:\n sys.exit(1)"
    )
    return _exec(namespace, sys.executable, "-c", code, address).returncode == 0


@pytest.fixture
def stranger(lab_name: str, tmp_path: Path) -> Iterator[tuple[LabPlan, str, str]]:
    """(plan, the stranger's namespace, its address) on a one-node lab."""
    folder = write(tmp_path / "m", CLUSTER)
    up = CliRunner().invoke(app, ["lab", "up", str(folder), "--name", lab_name, "--nodes", "1"])
    assert up.exit_code == 0, up.output
    plan = netns.load_plan(lab_name)
    node: NodePlan = plan.nodes[0]
    used = {p.ip4 for p in plan.pods}
    address = next(ip for ip in reversed(list(node.cidr4.hosts())) if ip not in used)
    name = f"nf-{lab_name}-stranger"
    server: subprocess.Popen[str] | None = None
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        cmds = [
            ["ip", "link", "add", "nfstr0", "type", "veth", "peer", "name", "eth0", "netns", name],
            ["ip", "link", "set", "nfstr0", "master", "br0", "up"],
        ]
        for cmd in cmds:
            assert _exec(node.netns, *cmd).returncode == 0
        prefix = ipaddress.ip_interface(f"{address}/{node.cidr4.prefixlen}")
        for cmd in (
            ["ip", "link", "set", "lo", "up"],
            ["ip", "addr", "add", str(prefix), "dev", "eth0"],
            ["ip", "link", "set", "eth0", "up"],
            ["ip", "route", "add", "default", "via", str(node.gateway4)],
        ):
            assert _exec(name, *cmd).returncode == 0, cmd
        server = subprocess.Popen(
            ["ip", "netns", "exec", name, sys.executable, "-u", "-c", SERVER],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        yield plan, name, str(address)
    finally:
        if server is not None:
            server.kill()
            server.wait()
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_a_pod_not_yet_programmed_is_refused(stranger: tuple[LabPlan, str, str]) -> None:
    plan, name, address = stranger
    a, b = plan.pod("default/a"), plan.pod("default/b")
    assert _connects(a.netns, str(b.ip4))  # no policy: known pods talk freely
    assert not _connects(a.netns, address)  # to the stranger
    assert not _connects(name, str(b.ip4))  # from the stranger
    # The control: without the table it is reachable (the node's agent stopped first, or
    # it would restore the table at once).
    assert agents.stop(plan.name)
    assert _exec(plan.nodes[0].netns, "nft", "delete", "table", "inet", "netfence").returncode == 0
    assert _connects(a.netns, address)
