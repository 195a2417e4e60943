"""A change that revokes an allowed flow cuts its established connections too.

A client holds one TCP connection to a server pod and sends a line through it after each
change; the server echoes it. `ct state established` is accepted before any policy
lookup, so without the conntrack sweep the connection would outlive the change that
forbids it. The control case (a change that still allows the flow) shows the same
connection surviving an update, so the test can tell the two apart.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from netfence.cli import app
from netfence.lab import netns
from netfence.lab.topology import LabPlan
from tests.lab.manifests import write

PORT = 9500

CLUSTER = """\
apiVersion: v1
kind: Namespace
metadata: {name: app}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: app, labels: {app: server}}
spec: {containers: [{name: s, image: x, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: app, labels: {app: %(client)s}}
spec: {containers: [{name: c, image: x}]}
"""
EXTRA = """\
apiVersion: v1
kind: Pod
metadata: {name: extra, namespace: app, labels: {app: client}}
spec: {containers: [{name: c, image: x}]}
"""
ALLOW = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-in, namespace: app}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress: [{from: [{podSelector: {matchLabels: {app: %(allowed)s}}}]}]
"""

SERVER = f"""
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", {PORT})); s.listen(); print("ready", flush=True)
def echo(c):
    while data := c.recv(100):
        c.sendall(data)
while True:
    threading.Thread(target=echo, args=(s.accept()[0],), daemon=True).start()
"""
CLIENT = f"""
import socket, sys
c = socket.create_connection((sys.argv[1], {PORT}), timeout=2); print("connected", flush=True)
for line in sys.stdin:
    try:
        c.sendall(line.encode()); ok = c.recv(100) == line.encode()
    except OSError:
        ok = False
    print("ok" if ok else "cut", flush=True)
    if not ok:
        break
"""


class Held:
    """A server in one pod, a client in another, one connection between them."""

    def __init__(self, plan: LabPlan) -> None:
        server, client = plan.pod("app/server"), plan.pod("app/client")
        self.procs = [_start(server.netns, SERVER, [])]
        self.procs.append(_start(client.netns, CLIENT, [str(server.ip4)]))
        assert self._line(self.procs[1]) == "connected"

    @staticmethod
    def _line(proc: subprocess.Popen[str]) -> str:
        assert proc.stdout is not None
        return proc.stdout.readline().strip()

    def exchange(self) -> str:
        client = self.procs[1]
        assert client.stdin is not None
        client.stdin.write("ping\n")
        client.stdin.flush()
        return self._line(client)

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()


def _start(namespace: str, code: str, args: list[str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        ["ip", "netns", "exec", namespace, sys.executable, "-u", "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    if "bind" in code:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


@pytest.fixture
def lab(lab_name: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    folder = write(tmp_path / "m", CLUSTER % {"client": "client"}, ALLOW % {"allowed": "client"})
    up = CliRunner().invoke(app, ["lab", "up", str(folder), "--name", lab_name, "--nodes", "2"])
    assert up.exit_code == 0, up.output
    yield lab_name, folder


def _apply(lab_name: str, folder: Path, client: str, allowed: str, extra: bool) -> str:
    write(folder, CLUSTER % {"client": client}, ALLOW % {"allowed": allowed}, *[EXTRA] * extra)
    result = CliRunner().invoke(app, ["lab", "apply", str(folder), "--name", lab_name])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize(
    ("client", "allowed", "extra", "mode", "expected"),
    [
        ("client", "client", False, "unchanged", "ok"),  # control: nothing changed
        ("client", "client", True, "elements", "ok"),  # control: a pod more, still allowed
        ("other", "client", False, "elements", "cut"),  # the client relabelled out
        ("client", "nobody", False, "table", "cut"),  # the policy changed under it
    ],
)
def test_revoked_flows_are_cut_mid_stream(
    lab: tuple[str, Path], client: str, allowed: str, extra: bool, mode: str, expected: str
) -> None:
    lab_name, folder = lab
    held = Held(netns.load_plan(lab_name))
    try:
        assert held.exchange() == "ok"
        output = _apply(lab_name, folder, client, allowed, extra)
        assert f" {mode}" in output, output  # (on the server's node at least)
        assert held.exchange() == expected
    finally:
        held.close()
