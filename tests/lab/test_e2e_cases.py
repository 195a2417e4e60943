"""Kubernetes e2e network policy cases, enforced in the lab: probes must equal the engine.

The model of the upstream suite (tests/conftest.py): namespaces x, y, z, pods a, b, c, each
serving 80 and 81 on TCP, UDP and SCTP under named ports. Each case loads one policy set
into a fresh lab, probes every pod pair, port and protocol in both families (plus the
outside addresses) and requires zero disagreement with the engine, and that the case
really blocks something, so a permissive dataplane cannot pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import model_yaml
from tests.lab.test_root import _disagreements, build

NP = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"

CASES = {
    "default-deny-ingress": NP + "metadata: {name: deny, namespace: x}\nspec: {podSelector: {}}\n",
    "default-deny-egress": NP
    + "metadata: {name: deny, namespace: x}\nspec: {podSelector: {}, policyTypes: [Egress]}\n",
    "ns-and-pod-selector-and": NP
    + """metadata: {name: and, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: b}}}]
""",
    "ns-or-pod-selector": NP
    + """metadata: {name: or, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: y}}}, {podSelector: {matchLabels: {pod: b}}}]
""",
    "named-port-and-protocol-isolation": NP
    + """metadata: {name: named, namespace: x}
spec:
  podSelector: {}
  ingress:
  - ports: [{port: serve-81-udp, protocol: UDP}, {port: serve-80-sctp, protocol: SCTP}]
""",
    "stacked-and-egress-to-ipblock-except": NP
    + """metadata: {name: egress, namespace: y}
spec:
  podSelector: {matchLabels: {pod: b}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 192.168.0.0/16, except: [192.168.1.0/24]}}]
    ports: [{port: 80, protocol: TCP}]
  - to: [{podSelector: {matchLabels: {pod: c}}}]
---
"""
    + NP
    + """metadata: {name: ingress, namespace: y}
spec:
  podSelector: {}
  ingress: [{from: [{podSelector: {}}]}]
""",
    "end-port-range": NP
    + """metadata: {name: range, namespace: z}
spec:
  podSelector: {}
  ingress:
  - ports: [{port: 79, endPort: 80, protocol: TCP}, {port: 81, endPort: 81, protocol: UDP}]
""",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_e2e_case_in_the_lab(case: str, lab_name: str, tmp_path: Path) -> None:
    from netfence.lab import netns

    state, plan = build(
        lab_name, tmp_path / "m", [model_yaml(), CASES[case]], dataplane=netns.load_dataplane()
    )
    bad, results = _disagreements(plan, state)
    assert bad == [], "\n".join(bad[:20])
    assert any(not r.delivered for r in results), "the case blocked nothing"
    assert any(r.delivered for r in results)
