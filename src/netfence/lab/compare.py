"""What the lab let through, against what the engine says should.

For each probe the expectation is `Engine(lab_state, family, host_network="node")
.verdict(src, dst).allows(protocol, port)`, where `lab_state` carries the addresses and
nodes the lab really uses (`LabPlan.cluster_state`): ipBlocks must be judged on the
addresses packets carry. Outside endpoints are plain addresses.

One expectation is not the engine's: traffic from a node to its own pods is always
allowed (kubelet probes; see ARCHITECTURE.md), and with `host_network="node"` a
hostNetwork pod's traffic *is* its node's. So a hostNetwork source towards a pod of its
own node is expected delivered whatever the policies, and the comparison says so.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from netfence.cluster.state import ClusterState, Pod
from netfence.lab.probe import Probe, ProbeResult
from netfence.lab.topology import LabPlan
from netfence.policy.engine import Endpoint, Engine, Verdict

OWN_NODE = "traffic from a pod's own node is always allowed"


@dataclass(frozen=True, slots=True)
class Comparison:
    result: ProbeResult
    expected: bool
    reason: str = ""  # set when the expectation is not the engine's verdict

    @property
    def probe(self) -> Probe:
        return self.result.probe

    @property
    def matches(self) -> bool:
        return self.result.delivered == self.expected

    def mismatch_line(self) -> str:
        p = self.probe
        line = (
            f"MISMATCH {p.src} -> {p.dst} {p.port}/{p.protocol} IPv{p.family}: "
            f"observed {_word(self.result.delivered)} ({self.result.detail}), "
            f"engine {_word(self.expected)}"
        )
        return f"{line} [{self.reason}]" if self.reason else line


def _word(allowed: bool) -> str:
    return "allowed" if allowed else "denied"


class Expectations:
    """Engine verdicts for lab endpoints, one engine per family, verdicts cached per pair."""

    def __init__(self, plan: LabPlan, state: ClusterState) -> None:
        self.plan = plan
        self.state = plan.cluster_state(state)
        self.pods = {pod.key: pod for pod in self.state.pods}
        self.engines = {f: Engine(self.state, family=f, host_network="node") for f in (4, 6)}
        self._verdicts: dict[tuple[int, str, str], Verdict] = {}

    def endpoint(self, name: str, kind: str) -> Endpoint:
        if kind == "pod":
            return self.pods[name]
        return ipaddress.ip_address(name)

    def verdict(self, probe: Probe) -> Verdict:
        key = (probe.family, probe.src, probe.dst)
        found = self._verdicts.get(key)
        if found is None:
            src = self.endpoint(probe.src, probe.src_kind)
            dst = self.endpoint(probe.dst, probe.dst_kind)
            found = self._verdicts[key] = self.engines[probe.family].verdict(src, dst)
        return found

    def expect(self, probe: Probe) -> tuple[bool, str]:
        src = self.pods.get(probe.src) if probe.src_kind == "pod" else None
        dst = self.pods.get(probe.dst) if probe.dst_kind == "pod" else None
        if _own_node(src, dst):
            return True, OWN_NODE
        return self.verdict(probe).allows(probe.protocol, probe.port), ""


def _own_node(src: Pod | None, dst: Pod | None) -> bool:
    return (
        src is not None
        and dst is not None
        and src.host_network
        and not dst.host_network
        and src.node == dst.node
    )


def compare(plan: LabPlan, state: ClusterState, results: Iterable[ProbeResult]) -> list[Comparison]:
    expectations = Expectations(plan, state)
    out = []
    for result in results:
        expected, reason = expectations.expect(result.probe)
        out.append(Comparison(result, expected, reason))
    return out


def mismatches(comparisons: Iterable[Comparison]) -> list[Comparison]:
    return [c for c in comparisons if not c.matches]


# -- rendering ----------------------------------------------------------------------------


def render_text(comparisons: Sequence[Comparison]) -> str:
    """The observed matrix, one probe per line, then the mismatches and a summary."""
    lines = []
    for c in comparisons:
        p, r = c.probe, c.result
        mark = "" if c.matches else "  <-- engine says " + _word(c.expected)
        lines.append(
            f"{p.src} -> {p.dst} {p.port}/{p.protocol} IPv{p.family}: "
            f"{'delivered' if r.delivered else 'blocked'} ({r.detail}){mark}"
        )
    bad = mismatches(comparisons)
    lines += [c.mismatch_line() for c in bad]
    delivered = sum(c.result.delivered for c in comparisons)
    lines.append(
        f"{len(comparisons)} probes: {delivered} delivered, {len(comparisons) - delivered} "
        f"blocked, {len(bad)} mismatch(es) with the engine"
    )
    return "\n".join(lines) + "\n"


def render_json(comparisons: Sequence[Comparison], extra: dict[str, Any] | None = None) -> str:
    probes = [
        {**c.result.as_dict(), "expected": c.expected, "match": c.matches, "reason": c.reason}
        for c in comparisons
    ]
    data = {
        **(extra or {}),
        "probes": probes,
        "mismatches": [c.mismatch_line() for c in mismatches(comparisons)],
    }
    return json.dumps(data, indent=2) + "\n"
