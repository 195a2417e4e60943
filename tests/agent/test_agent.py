"""`netfence agent --manifests DIR` as a process, enforcing into a throw-away namespace.

Each check compares the kernel's table with a reference: the same cluster compiled by
`compile_node` and loaded into a second namespace, both listed by nft (which sorts), so
"the agent enforces the folder" is checked element for element.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from netfence.cluster.state import ClusterState
from netfence.dataplane.apply import apply_ruleset, list_table, normalized
from netfence.dataplane.compile import compile_node
from netfence.k8s.loader import load_paths
from netfence.lab import agents
from tests.dataplane.conftest import netns as netns

CLUSTER = """\
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {nodeName: n0, containers: [{name: w, image: x, ports: [{containerPort: 80}]}]}
status: {podIPs: [{ip: 10.244.0.10}, {ip: "fd00:10:244::10"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop, labels: {app: %(client)s}}
spec: {nodeName: n1, containers: [{name: c, image: x}]}
status: {podIPs: [{ip: 10.244.1.10}, {ip: "fd00:10:244:1::10"}]}
"""
POLICY = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-in, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{podSelector: {matchLabels: {app: client}}}], ports: [{port: 80}]}]
"""


def _write(folder: Path, client: str = "client", policy: bool = True) -> None:
    """Write by renaming finished files into place, as writers of a watched folder should."""
    for name, text in (("cluster.yaml", CLUSTER % {"client": client}), ("policy.yaml", POLICY)):
        target = folder / name
        if name == "policy.yaml" and not policy:
            target.unlink(missing_ok=True)
            continue
        tmp = folder / f".{name}.tmp"
        tmp.write_text(text)
        tmp.rename(target)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Running:
    def __init__(self, folder: Path, netns: str) -> None:
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "netfence.cli",
                "agent",
                "--node-name",
                "n0",
                "--manifests",
                str(folder),
                "--netns",
                netns,
                "--listen",
                f"127.0.0.1:{self.port}",
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log: list[str] = []
        assert self.proc.stderr is not None
        stream = self.proc.stderr
        self._reader = threading.Thread(target=lambda: self.log.extend(stream), daemon=True)
        self._reader.start()

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, ""
        except OSError:
            return 0, ""

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=10)
        self._reader.join(timeout=10)


@pytest.fixture
def reference(tmp_path: Path) -> Iterator[Callable[[Path], str]]:
    """The listing of `compile_node(folder)` loaded in a namespace of its own."""
    name = f"nf-r{os.getpid() % 10000}{int(time.time() * 1000) % 100000}"
    subprocess.run(["ip", "netns", "add", name], check=True)

    def listing(folder: Path) -> str:
        state = ClusterState.build(load_paths([folder]))
        apply_ruleset(name, compile_node(state, "n0"))
        return normalized(list_table(name))

    try:
        yield listing
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _until(check: Callable[[], bool], seconds: float) -> float:
    """Seconds until `check()` held; fails after `seconds`."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < seconds, "timed out"
        time.sleep(0.01)
    return time.monotonic() - start


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(f"netfence_{name} "):
            return float(line.rpartition(" ")[2])
    return 0.0


_table = agents.table  # the node's table as two equal tables list it; None without one


def test_agent_follows_the_folder_repairs_drift_and_survives_restarts(
    tmp_path: Path,
    netns: str,
    reference: Callable[[Path], str],
) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    _write(folder)
    agent = Running(folder, netns)
    try:
        _until(lambda: agent.get("/readyz")[0] == 200, 20)
        assert agent.get("/healthz")[0] == 200
        assert _table(netns) == reference(folder)

        # A relabel is an element change, enforced within a fraction of a second.
        _write(folder, client="other")
        expected = reference(folder)
        took = _until(lambda: _table(netns) == expected, 5)
        assert took < 2, took
        # (metrics follow the conntrack sweep that comes after the load)
        elements = 'sync_duration_seconds_count{mode="elements"}'
        _until(lambda: _metric(agent.get("/metrics")[1], elements) >= 1, 2)

        # Someone deletes the table: back within a second or so.
        subprocess.run(
            ["ip", "netns", "exec", netns, "nft", "delete table inet netfence"], check=True
        )
        took = _until(lambda: _table(netns) == expected, 3)
        assert took < 1.5, took
        _until(lambda: _metric(agent.get("/metrics")[1], "drift_repairs_total") == 1, 2)

        # A policy removed: a new table.
        _write(folder, client="other", policy=False)
        expected = reference(folder)
        _until(lambda: _table(netns) == expected, 5)
    finally:
        agent.stop()
    # Stopped: the rules stay.
    assert _table(netns) == expected

    # Restarted on a changed folder: the old table stays in force until the new one
    # replaces it, never a moment without one.
    _write(folder, client="client")
    expected = reference(folder)
    seen_missing = threading.Event()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if _table(netns) is None:
                seen_missing.set()

    watcher = threading.Thread(target=watch)
    watcher.start()
    agent = Running(folder, netns)
    try:
        _until(lambda: _table(netns) == expected, 20)
        _until(lambda: agent.get("/readyz")[0] == 200, 5)
    finally:
        done.set()
        watcher.join()
        agent.stop()
    assert not seen_missing.is_set()
    assert any('"msg": "ready' in line for line in agent.log), agent.log
