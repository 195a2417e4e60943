"""The decision log: the rules it adds to the table, and connections refused (or audited)
for real between namespaces, reported as JSON lines naming pods, port and policies.

The end-to-end tests wire a node namespace routing between two pod namespaces (client
10.244.0.10, web 10.244.1.10, and IPv6), all `nf-` namespaces of their own, deleted after.
"""

from __future__ import annotations

import io
import ipaddress
import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from netfence.agent.main import Options
from netfence.cli import app
from netfence.cluster.state import ClusterState
from netfence.dataplane.compile import compile_node
from netfence.dataplane.decisions import PREFIXES, WHERE, DecisionLog, DecisionReader, Resolver
from netfence.dataplane.enforcer import Enforcer
from netfence.dataplane.nflog import LoggedPacket
from netfence.dataplane.program import NodeProgram
from netfence.k8s.loader import load_paths, load_text
from tests.dataplane.conftest import netns as netns
from tests.dataplane.test_apply import seed_state

# -- the rules ------------------------------------------------------------------------------

LOG_LINE = re.compile(r'\t\tlimit rate \d+/second burst \d+ packets log prefix "([^"]+)".*\n')


def test_off_is_the_table_as_before_and_log_only_adds_lines() -> None:
    """Without the log nothing mentions it; with it, removing the added log lines and
    chains (and jumping to them) gives back exactly the table without it."""
    state = seed_state()
    off = compile_node(state, "n0")
    assert "log " not in off and "unknown_src" not in off
    on = compile_node(state, "n0", DecisionLog())
    assert sorted(m[1] for m in LOG_LINE.finditer(on)) == sorted(f"nf:drop:{w}" for w in WHERE)
    stripped = LOG_LINE.sub("", on)
    stripped = re.sub(r"\tchain unknown_(src|dst) \{\n\t\tcounter drop\n\t\}\n", "", stripped)
    assert re.sub(r"jump unknown_(src|dst)", "drop", stripped) == off


def test_audit_returns_where_the_log_drops() -> None:
    state = seed_state()
    drop = compile_node(state, "n0", DecisionLog(rate=7, burst=3, group=12))
    audit = compile_node(state, "n0", DecisionLog(audit=True, rate=7, burst=3, group=12))
    assert "counter drop" not in audit and audit.count("counter return") == len(WHERE)
    assert audit == drop.replace("counter drop", "counter return").replace(
        '"nf:drop:', '"nf:audit:'
    )
    assert 'limit rate 7/second burst 3 packets log prefix "nf:drop:egress4" group 12' in drop
    assert all(m[1] in PREFIXES for m in LOG_LINE.finditer(audit))


def test_setting_is_checked() -> None:
    with pytest.raises(ValueError, match="not in 0-65535"):
        DecisionLog(group=-1)
    with pytest.raises(ValueError, match="at least 1"):
        DecisionLog(rate=0)
    with pytest.raises(ValueError, match="no refusing rule"):
        DecisionLog().prefix('x" accept')


def test_command_line_settings() -> None:
    """`compile --audit` renders what the agent's `--audit` loads; `--audit` alone implies
    the log (on stdout), `--decision-log` alone logs drops."""
    result = CliRunner().invoke(app, ["compile", "examples/seed", "--node", "n0", "--audit"])
    assert result.exit_code == 0, result.output
    state = ClusterState.build(load_paths(["examples/seed"]), fail_closed=True)
    assert result.stdout == compile_node(state, "n0", DecisionLog(audit=True))
    assert Options(node="n0").decisions is None
    assert Options(node="n0", audit=True).decisions == DecisionLog(audit=True)
    assert Options(node="n0", decision_log="-").decisions == DecisionLog()


@pytest.mark.parametrize("setting", [DecisionLog(), DecisionLog(audit=True)])
def test_tables_with_the_log_load(netns: str, setting: DecisionLog) -> None:
    Enforcer(netns, "n0", decisions=setting).apply(seed_state(), sweep=False)
    listing = subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "list", "chain", "inet", "netfence", "ingress6"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f'log prefix "nf:{setting.action}:ingress6" group {setting.group}' in listing


def test_resolver_names_pods_and_the_refusing_sides_policies() -> None:
    """Against a program, no kernel: the row of the refusing side gives the policies; an
    address follows the program as pods come and go; foreign prefixes are not ours."""
    state = _state(CLUSTER + EGRESS)
    program = NodeProgram(state, "n0")
    resolver = Resolver("n0", lambda: program)
    client, web = ipaddress.ip_address(CLIENT4), ipaddress.ip_address(WEB4)
    packet = LoggedPacket("nf:drop:egress4", 4, client, web, "TCP", 80)
    decision = resolver.decide(packet, 1.0)
    assert decision is not None
    assert (decision.src, decision.dst, decision.policies) == (CLIENT, WEB, ("shop/only-dns",))
    ingress = resolver.decide(replace(packet, prefix="nf:audit:ingress4"), 1.0)
    assert ingress is not None and ingress.policies == ("shop/web-in",)
    assert ingress.action == "audit" and ingress.direction == "ingress"
    reverse = resolver.decide(replace(packet, src=web, dst=client), 1.0)  # web: no egress row
    assert reverse is not None and reverse.policies == ()
    assert resolver.decide(replace(packet, prefix="nf:drop:egress4 "), 1.0) is None
    assert resolver.decide(replace(packet, prefix="ulogd"), 1.0) is None
    program.update(deleted=["shop/client"])  # within the same second
    gone = resolver.decide(packet, 1.1)
    assert gone is not None and gone.src == {"ip": CLIENT4} and gone.policies == ()
    moved = replace(next(p for p in state.pods if p.name == "client"), name="other")
    program.update(upserted=[moved])
    again = resolver.decide(packet, 1.2)
    assert again is not None and again.src == {"pod": "shop/other", "ip": CLIENT4}


# -- end to end -----------------------------------------------------------------------------

CLUSTER = """\
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop, labels: {app: intruder}}
spec: {nodeName: n0, containers: [{name: c, image: x}]}
status: {podIPs: [{ip: 10.244.0.10}, {ip: "fd00:0:0:a::10"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {nodeName: n0, containers: [{name: w, image: x, ports: [{containerPort: 80}]}]}
status: {podIPs: [{ip: 10.244.1.10}, {ip: "fd00:0:0:b::10"}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-in, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{podSelector: {matchLabels: {app: client}}}], ports: [{port: 80}]}]
"""
EGRESS = """\
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: only-dns, namespace: shop}
spec:
  podSelector: {matchLabels: {app: intruder}}
  policyTypes: [Egress]
  egress: [{ports: [{port: 53, protocol: UDP}]}]
"""
CIDRS = (ipaddress.ip_network("10.244.0.0/16"),)
CLIENT4, WEB4, WEB6 = "10.244.0.10", "10.244.1.10", "fd00:0:0:b::10"
SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", 80)); s.listen(64); print("ready", flush=True)
while True:
    s.accept()[0].close()
"""
CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], 80), timeout=float(sys.argv[2])).close()
except OSError:
    sys.exit(1)
"""
FLOOD = """
import socket, sys, time
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
start = time.monotonic()
for port in range(1000, 1000 + int(sys.argv[2])):
    u.sendto(b"x", (sys.argv[1], port))
print(time.monotonic() - start)
"""


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


@dataclass
class Pods:
    node: str
    client: str
    web: str

    def connects(self, address: str, timeout: float = 1.0) -> bool:
        argv = ("ip", "netns", "exec", self.client, sys.executable, "-c", CONNECT)
        return _run(*argv, address, str(timeout), check=False).returncode == 0


def _wire(node: str, pod: str, side: str, v4: str, v6: str) -> None:
    """A veth from the node to the pod, the node's end the pod's gateway."""
    _run("ip", "-n", node, "link", "add", f"v{side}", "type", "veth", "peer", "eth0", "netns", pod)
    _run("ip", "-n", node, "addr", "add", f"{v4}.1/24", "dev", f"v{side}")
    _run("ip", "-n", node, "addr", "add", f"{v6}::1/64", "dev", f"v{side}", "nodad")
    _run("ip", "-n", node, "link", "set", f"v{side}", "up")
    _run("ip", "-n", pod, "addr", "add", f"{v4}.10/24", "dev", "eth0")
    _run("ip", "-n", pod, "addr", "add", f"{v6}::10/64", "dev", "eth0", "nodad")
    for link in ("lo", "eth0"):
        _run("ip", "-n", pod, "link", "set", link, "up")
    _run("ip", "-n", pod, "route", "add", "default", "via", f"{v4}.1")
    _run("ip", "-n", pod, "-6", "route", "add", "default", "via", f"{v6}::1")


@pytest.fixture
def pods(netns: str) -> Iterator[Pods]:
    """The node (`netns`), client and web namespaces, a server on web's port 80; all
    removed after."""
    names = Pods(netns, f"{netns}-c", f"{netns}-w")
    server: subprocess.Popen[str] | None = None
    try:
        for name in (names.client, names.web):
            _run("ip", "netns", "add", name)
        for name in (names.node, names.client, names.web):  # no wait for link-local DAD
            _run("ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0")
        _wire(names.node, names.client, "c", "10.244.0", "fd00:0:0:a")
        _wire(names.node, names.web, "w", "10.244.1", "fd00:0:0:b")
        for key in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"):
            _run("ip", "netns", "exec", names.node, "sysctl", "-qw", f"{key}=1")
        argv = ["ip", "netns", "exec", names.web, sys.executable, "-c", SERVER]
        server = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None and server.stdout.readline() == "ready\n"
        assert names.connects(WEB4) and names.connects(WEB6)  # open before any table
        yield names
    finally:
        if server is not None:
            server.kill()
            server.wait()
        for name in (names.client, names.web):
            _run("ip", "netns", "del", name, check=False)


def _state(text: str) -> ClusterState:
    state = ClusterState.build(load_text(text, "test.yaml"))
    assert state.problems == []
    return state


def _lines(output: io.StringIO, count: int, seconds: float = 5.0) -> list[dict[str, object]]:
    """The first `count` JSON lines written (fails after `seconds`)."""
    deadline = time.monotonic() + seconds
    while output.getvalue().count("\n") < count:
        assert time.monotonic() < deadline, f"only {output.getvalue()!r}"
        time.sleep(0.02)
    return [json.loads(line) for line in output.getvalue().splitlines()[:count]]


@pytest.fixture
def enforce(pods: Pods) -> Iterator[Callable[[str, DecisionLog], io.StringIO]]:
    """Enforce a cluster in the node with a decision log read in-process into a buffer."""
    readers: list[DecisionReader] = []

    def start(text: str, setting: DecisionLog) -> io.StringIO:
        enforcer = Enforcer(pods.node, "n0", pod_cidrs=CIDRS, decisions=setting)
        enforcer.apply(_state(text), sweep=False)
        output = io.StringIO()
        resolver = Resolver("n0", lambda: enforcer.program)
        readers.append(DecisionReader(setting, pods.node, resolver, output))
        readers[-1].start()
        return output

    try:
        yield start
    finally:
        for reader in readers:
            reader.stop()


CLIENT = {"pod": "shop/client", "ip": CLIENT4}
WEB = {"pod": "shop/web", "ip": WEB4}


def test_audit_lets_the_connection_through_and_reports_both_sides(
    pods: Pods, enforce: Callable[[str, DecisionLog], io.StringIO]
) -> None:
    output = enforce(CLUSTER + EGRESS, DecisionLog(audit=True))
    assert pods.connects(WEB4)
    egress, ingress = _lines(output, 2)
    common = {"node": "n0", "action": "audit", "family": 4, "protocol": "TCP", "port": 80}
    assert egress == {
        **common,
        "time": egress["time"],
        "direction": "egress",
        "reason": "policy",
        "src": CLIENT,
        "dst": WEB,
        "policies": ["shop/only-dns"],
    }
    assert ingress == {**egress, "time": ingress["time"], "direction": "ingress"} | {
        "policies": ["shop/web-in"]
    }
    assert abs(float(str(egress["time"])) - time.time()) < 10


def test_unknown_pods_are_reported_without_a_pod(
    pods: Pods, enforce: Callable[[str, DecisionLog], io.StringIO]
) -> None:
    """The client's address is in the node's pod range but no pod holds it (yet)."""
    web_only = CLUSTER.split("---\n", 1)[1]
    output = enforce(web_only, DecisionLog())
    assert not pods.connects(WEB4, timeout=0.5)
    (line,) = _lines(output, 1)
    assert (line["action"], line["direction"], line["reason"]) == ("drop", "egress", "unknown-pod")
    assert (line["src"], line["dst"], line["policies"]) == ({"ip": CLIENT4}, WEB, [])


def _chain_counter(netns: str, chain: str) -> int:
    listing = _run("ip", "netns", "exec", netns, "nft", "list", "chain", "inet", "netfence", chain)
    return int(re.findall(r"counter packets (\d+)", listing.stdout)[-1])


def test_the_rate_limit_caps_a_flood_and_every_packet_is_still_dropped(
    pods: Pods, enforce: Callable[[str, DecisionLog], io.StringIO]
) -> None:
    """2,000 refused new connections (UDP to as many ports) in well under a second: the
    log holds about `burst` lines plus `rate` per second, yet the drop counts them all."""
    output = enforce(CLUSTER, DecisionLog(rate=20, burst=10))
    argv = ("ip", "netns", "exec", pods.client, sys.executable, "-c", FLOOD, WEB4, "2000")
    start = time.monotonic()
    _run(*argv)
    time.sleep(0.3)  # the kernel's batch timeout is 50 ms
    elapsed = time.monotonic() - start
    lines = _lines(output, 10)
    assert _chain_counter(pods.node, "ingress4") == 2000
    logged = output.getvalue().count("\n")
    assert 10 <= logged <= 10 + 20 * elapsed + 1, (logged, elapsed)
    assert {(d["protocol"], d["direction"]) for d in lines} == {("UDP", "ingress")}
    assert all(1000 <= int(str(d["port"])) < 3000 for d in lines)


# -- the agent --------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def test_agent_writes_the_decision_log(pods: Pods, tmp_path: Path) -> None:
    """`netfence agent --decision-log FILE`: an IPv6 connection web-in refuses is dropped,
    logged with both pods, the port and the policy, and counted in /metrics."""
    folder, log = tmp_path / "manifests", tmp_path / "decisions.jsonl"
    folder.mkdir()
    (folder / "cluster.yaml").write_text(CLUSTER)
    port = _free_port()
    argv = [sys.executable, "-m", "netfence.cli", "agent", "--node-name", "n0"]
    argv += ["--manifests", str(folder), "--netns", pods.node, "--listen", f"127.0.0.1:{port}"]
    agent = subprocess.Popen([*argv, "--decision-log", str(log)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while "ready" not in _get(port, "/readyz"):
            assert agent.poll() is None and time.monotonic() < deadline, "agent not ready"
            time.sleep(0.05)
        assert not pods.connects(WEB6, timeout=0.5)
        deadline = time.monotonic() + 5
        while not log.exists() or not log.read_text():
            assert time.monotonic() < deadline, "nothing logged"
            time.sleep(0.02)
        line = json.loads(log.read_text().splitlines()[0])
        assert line["action"] == "drop" and line["direction"] == "ingress"
        assert (line["family"], line["protocol"], line["port"]) == (6, "TCP", 80)
        assert line["src"] == {"pod": "shop/client", "ip": "fd00:0:0:a::10"}
        assert line["dst"] == {"pod": "shop/web", "ip": WEB6}
        assert line["policies"] == ["shop/web-in"]
        metrics = _get(port, "/metrics")
        wanted = 'netfence_decisions_logged_total{action="drop",direction="ingress"} '
        assert any(m.startswith(wanted) and float(m.split()[-1]) >= 1 for m in metrics.split("\n"))
        assert "netfence_drift_repairs_total 0.0" in metrics  # the log rules list as loaded
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=10)
