"""Lab pieces that need no root: SCTP packets, the probe list, comparison, commands, CLI."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from netfence.cli import app
from netfence.cluster.state import ClusterState
from netfence.k8s.loader import load_paths, load_text
from netfence.lab import netns
from netfence.lab.compare import OWN_NODE, compare, mismatches, render_json, render_text
from netfence.lab.listener import parse_ports
from netfence.lab.probe import ProbeResult, plan_probes
from netfence.lab.sctp import crc32c, init_packet, parse_init
from netfence.lab.signals import held
from netfence.lab.topology import LabError, LabPlan, external_spans, plan_lab
from tests.lab.manifests import CLUSTER, POLICIES


def seed() -> tuple[ClusterState, LabPlan]:
    state = ClusterState.build(load_paths(["examples/seed"]))
    return state, plan_lab(state, external=external_spans(state))


def shop() -> tuple[ClusterState, LabPlan]:
    state = ClusterState.build(load_text(CLUSTER + "---\n" + POLICIES))
    assert not state.problems
    return state, plan_lab(state, external=external_spans(state))


def test_crc32c_check_value_and_init_packets() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    packet = init_packet(40000, 7000, 0xDEADBEEF)
    assert len(packet) == 32 and packet[12] == 1  # common header + one INIT chunk
    assert struct.unpack("!I", packet[4:8]) == (0,)  # an INIT's verification tag is 0
    assert parse_init(packet) == (40000, 7000, 0xDEADBEEF)
    broken = packet[:8] + bytes([packet[8] ^ 1]) + packet[9:]
    assert parse_init(broken) is None


def test_probe_list_of_the_seed() -> None:
    _, plan = seed()
    probes = plan_probes(plan)
    # pod to pod: 3 sources x 5 destination ports x 2 families; pods to 4 outside
    # addresses on 6 sample ports; 4 outside addresses to the 5 declared ports.
    assert len(probes) == 30 + 4 * 4 * 6 + 4 * 5
    assert not [p for p in probes if p.src == p.dst]
    outside = [p for p in probes if p.src_kind == "outside"]
    assert all(p.bind and p.src_netns == plan.outside.netns for p in outside)
    assert {p.family for p in probes} == {4, 6}


def test_probe_list_covers_every_path() -> None:
    _, plan = shop()
    probes = plan_probes(plan)
    same_node = [p for p in probes if p.src == "shop/web-0" and p.dst == "shop/web-2"]
    assert {(p.protocol, p.port) for p in same_node} == {("TCP", 80), ("UDP", 53), ("SCTP", 7000)}
    exporter = [p for p in probes if p.src == "kube/exporter"]
    assert exporter and all(p.bind for p in exporter)
    assert not [p for p in probes if p.dst == "shop/client" and p.src_kind == "pod"]


def _results(plan: LabPlan, delivered: bool) -> list[ProbeResult]:
    return [ProbeResult(p, delivered, "test") for p in plan_probes(plan)]


def test_compare_flags_every_difference() -> None:
    state, plan = seed()
    everything = compare(plan, state, _results(plan, True))
    bad = mismatches(everything)
    assert bad and all(not c.expected for c in bad)
    line = next(
        c.mismatch_line()
        for c in bad
        if c.probe.src == "staging/client" and c.probe.dst == "production/api"
    )
    assert line == (
        "MISMATCH staging/client -> production/api 8080/TCP IPv4: "
        "observed allowed (test), engine denied"
    )
    text = render_text(everything)
    assert text.rstrip().endswith(f"{len(bad)} mismatch(es) with the engine")
    assert '"mismatches"' in render_json(everything)


def test_compare_uses_lab_addresses_and_the_own_node_rule() -> None:
    state, plan = shop()
    comparisons = {
        (c.probe.src, c.probe.dst, c.probe.family, c.probe.port): c
        for c in compare(plan, state, _results(plan, True))
    }
    exporter_node = plan.pod("kube/exporter").node
    local = [p.key for p in plan.pods if p.node == exporter_node and p.key.startswith("shop/web")]
    assert local
    own = comparisons[("kube/exporter", local[0], 4, 80)]
    assert own.expected and own.reason == OWN_NODE
    # web-0 -> web-1 UDP 53: both in 10.0.0.0/8 (lab addresses), excepted by the ipBlock.
    assert not comparisons[("shop/web-0", "shop/web-1", 4, 53)].expected
    # db may only send to fd00::/8: IPv6 to web allowed, IPv4 not.
    assert comparisons[("shop/db", "shop/web-1", 6, 80)].expected is False  # web ingress
    assert comparisons[("shop/db", "shop/web-1", 6, 7000)].expected is False


def test_listener_port_syntax() -> None:
    assert parse_ports("TCP:80,udp:53,SCTP:7000") == [("TCP", 80), ("UDP", 53), ("SCTP", 7000)]
    with pytest.raises(ValueError, match="PROTO:PORT"):
        parse_ports("80")


def test_listener_stops_at_sigterm_though_spawned_with_it_held() -> None:
    """Regression: `listeners.start` runs inside `signals.held()`, and the child inherited
    the blocked SIGTERM, so every `stop` (each `lab down`, `up`, `apply`) waited its 2 s
    timeout and then SIGKILLed the listeners. No ports: nothing is bound in this namespace."""
    with held():
        proc = subprocess.Popen(
            [sys.executable, "-m", "netfence.lab.listener", "--ports", ""], stdout=subprocess.PIPE
        )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        proc.terminate()
        assert proc.wait(timeout=1) == 0
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_commands_only_ever_touch_lab_namespaces() -> None:
    _, plan = shop()
    with pytest.raises(LabError, match="refusing"):
        netns._checked("production")
    with pytest.raises(LabError, match="refusing"):
        netns._checked("nf-other-n0", plan.prefix)
    for cmd in netns._underlay_commands(plan, plan.nodes):
        if "peer" in cmd:
            assert cmd[-1].startswith(plan.prefix)  # both veth ends inside the lab
    for pod in plan.pods:
        if not pod.host_network:
            link = netns._pod_link_commands(plan, pod)[0]
            assert link[-2:] == ["netns", pod.netns]
    routes = [netns._route(r) for n in plan.nodes for r in plan.node_routes(n)]
    assert ["route", "add", "0.0.0.0/0", "via", "172.31.0.254"] in routes
    assert ["route", "add", "::/0", "via", "fd00:172:31::254"] in routes


def test_lab_commands_need_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    runner = CliRunner()
    for args in (["lab", "up", "examples/seed"], ["lab", "probe"], ["lab", "down"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 1
        assert result.output.strip().splitlines() == [
            "error: netfence lab needs root (it creates network namespaces): run it as root"
        ]


def test_bad_lab_name_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns, "require_root", lambda: None)
    result = CliRunner().invoke(app, ["lab", "down", "--name", "../etc"])
    assert result.exit_code == 1
    assert "invalid lab name" in result.output
