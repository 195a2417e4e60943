"""Cluster-wide tiers enforced in the lab: AdminNetworkPolicy, BaselineAdminNetworkPolicy and
v1alpha2 ClusterNetworkPolicy over the e2e model, probed for real.

Each case is brought up on the model (namespaces x, y, z labelled `ns`; pods a, b, c serving
80 and 81 on TCP, UDP and SCTP under named ports), every pod pair, port and protocol is
probed in both families, and the observed matrix must equal the engine's verdicts: zero
mismatches. Each case also names connections whose outcome is the point of the case (a Deny
overriding a NetworkPolicy allow, a Pass handing over to NetworkPolicy, the baseline only
where no NetworkPolicy selects...) and checks them in the lab and in the engine's
explanation (which tier decided), so a dataplane ignoring a tier cannot pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from netfence.lab.compare import Expectations
from netfence.lab.probe import ProbeResult
from netfence.policy.ir import Tier
from tests.conftest import model_yaml
from tests.lab.test_root import _disagreements, build

NP = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
ANP = "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\n"
BANP = "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: BaselineAdminNetworkPolicy\n"
CNP = "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\n"


@dataclass(frozen=True)
class Point:
    """A connection the case is about: what the lab must do, and which tier decides it
    (None: no rule decided; allowed by default or denied by NetworkPolicy isolation)."""

    src: str
    dst: str
    protocol: str
    port: int
    delivered: bool
    tier: Tier | None


CASES: dict[str, tuple[str, list[Point]]] = {
    "admin-deny-overrides-a-networkpolicy-allow": (
        NP
        + """metadata: {name: allow-all, namespace: x}
spec: {podSelector: {}, ingress: [{}]}
---
"""
        + ANP
        + """metadata: {name: no-y-on-80}
spec:
  priority: 10
  subject: {namespaces: {matchLabels: {ns: x}}}
  ingress:
  - {name: deny-y, action: Deny, from: [{namespaces: {matchLabels: {ns: y}}}],
     ports: [{portNumber: {protocol: TCP, port: 80}}]}
""",
        [
            Point("y/a", "x/a", "TCP", 80, False, "admin"),
            Point("y/a", "x/a", "TCP", 81, True, "networkpolicy"),
            Point("z/b", "x/a", "TCP", 80, True, "networkpolicy"),
        ],
    ),
    "pass-hands-over-to-networkpolicy": (
        ANP
        + """metadata: {name: pass-y}
spec:
  priority: 5
  subject: {namespaces: {matchLabels: {ns: x}}}
  ingress: [{name: pass-y, action: Pass, from: [{namespaces: {matchLabels: {ns: y}}}]}]
---
"""
        + ANP
        + """metadata: {name: deny-all-in}
spec:
  priority: 20
  subject: {namespaces: {matchLabels: {ns: x}}}
  ingress: [{name: everyone, action: Deny, from: [{namespaces: {}}]}]
---
"""
        + NP
        + """metadata: {name: only-b, namespace: x}
spec:
  podSelector: {}
  ingress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {pod: b}}}]}]
""",
        [
            Point("y/b", "x/a", "UDP", 81, True, "networkpolicy"),  # passed, then allowed
            Point("y/a", "x/a", "UDP", 81, False, None),  # passed, then NetworkPolicy denies
            Point("z/b", "x/a", "UDP", 81, False, "admin"),  # no pass: the Deny below
        ],
    ),
    "baseline-only-where-no-networkpolicy-selects": (
        BANP
        + """metadata: {name: default}
spec:
  subject: {namespaces: {}}
  ingress: [{name: no-z, action: Deny, from: [{namespaces: {matchLabels: {ns: z}}}]}]
---
"""
        + NP
        + """metadata: {name: open, namespace: y}
spec: {podSelector: {}, ingress: [{from: [{namespaceSelector: {}}]}]}
""",
        [
            Point("z/a", "x/a", "SCTP", 80, False, "baseline"),
            Point("z/a", "y/a", "SCTP", 80, True, "networkpolicy"),  # y is NP-isolated
            Point("x/a", "x/b", "SCTP", 80, True, None),
        ],
    ),
    "admin-allow-beats-a-networkpolicy-deny-on-a-named-port": (
        NP
        + """metadata: {name: deny-egress, namespace: z}
spec: {podSelector: {}, policyTypes: [Egress]}
---
"""
        + ANP
        + """metadata: {name: z-a-to-b-udp}
spec:
  priority: 1
  subject: {pods: {namespaceSelector: {matchLabels: {ns: z}},
                   podSelector: {matchLabels: {pod: a}}}}
  egress:
  - name: to-b
    action: Allow
    to: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {pod: b}}}}]
    ports: [{namedPort: serve-81-udp}]
""",
        [
            Point("z/a", "x/b", "UDP", 81, True, "admin"),
            Point("z/a", "x/b", "UDP", 80, False, None),
            Point("z/b", "x/b", "UDP", 81, False, None),
        ],
    ),
    "v1alpha2-admin-accept-then-deny-and-baseline": (
        CNP
        + """metadata: {name: y-to-x}
spec:
  tier: Admin
  priority: 3
  subject: {namespaces: {matchLabels: {ns: x}}}
  ingress:
  - {name: tcp-81, action: Accept, from: [{namespaces: {matchLabels: {ns: y}}}],
     protocols: [{tcp: {destinationPort: {number: 81}}}]}
  - {name: rest, action: Deny, from: [{namespaces: {matchLabels: {ns: y}}}]}
---
"""
        + CNP
        + """metadata: {name: baseline}
spec:
  tier: Baseline
  priority: 0
  subject: {namespaces: {}}
  ingress:
  - {name: no-udp-79-80, action: Deny, from: [{namespaces: {}}],
     protocols: [{udp: {destinationPort: {range: {start: 79, end: 80}}}}]}
""",
        [
            Point("y/c", "x/c", "TCP", 81, True, "admin"),
            Point("y/c", "x/c", "TCP", 80, False, "admin"),
            Point("z/c", "x/c", "UDP", 80, False, "baseline"),
            Point("z/c", "x/c", "UDP", 81, True, None),
        ],
    ),
    "egress-to-nodes-and-networks": (
        """apiVersion: v1
kind: Node
metadata: {name: n1, labels: {role: infra}}
---
apiVersion: v1
kind: Pod
metadata: {name: agent, namespace: z, labels: {app: agent}}
spec:
  nodeName: n1
  hostNetwork: true
  containers: [{name: a, ports: [{containerPort: 9100, name: metrics}]}]
---
"""
        + ANP
        + """metadata: {name: no-infra-nodes}
spec:
  priority: 7
  subject: {namespaces: {matchLabels: {ns: x}}}
  egress:
  - {name: nodes, action: Deny, to: [{nodes: {matchLabels: {role: infra}}}]}
  - {name: outside, action: Deny, to: [{networks: [0.0.0.0/1, "2000::/3"]}]}
""",
        [
            Point("x/a", "z/agent", "TCP", 9100, False, "admin"),
            Point("y/a", "z/agent", "TCP", 9100, True, None),
        ],
    ),
}


def _result(results: list[ProbeResult], point: Point) -> list[ProbeResult]:
    p = point
    return [
        r
        for r in results
        if (r.probe.src, r.probe.dst, r.probe.protocol, r.probe.port)
        == (p.src, p.dst, p.protocol, p.port)
    ]


@pytest.mark.parametrize("case", sorted(CASES))
def test_tier_case_in_the_lab(case: str, lab_name: str, tmp_path: Path) -> None:
    from netfence.lab import netns

    text, points = CASES[case]
    state, plan = build(
        lab_name, tmp_path / "m", [model_yaml(), text], dataplane=netns.load_dataplane()
    )
    assert state.cluster_policies
    bad, results = _disagreements(plan, state)
    assert bad == [], "\n".join(bad[:20])
    expectations = Expectations(plan, state)
    for point in points:
        found = _result(results, point)
        assert {r.probe.family for r in found} == {4, 6}, (point, "not probed")
        for r in found:
            assert r.delivered == point.delivered, (point, r.probe.family, r.detail)
            verdict = expectations.verdict(r.probe)
            sides = (verdict.egress, verdict.ingress)
            deciders = [d for s in sides if (d := s.decided_by(point.protocol, point.port))]
            tiers = {d.tier for d in deciders if d.action == "Deny"} or {d.tier for d in deciders}
            assert tiers == ({point.tier} if point.tier else set()), (point, deciders)
