"""The cluster-wide tiers: AdminNetworkPolicy, BaselineAdminNetworkPolicy (v1alpha1) and
ClusterNetworkPolicy (v1alpha2), one rule per test, with hand-computed verdicts.

Expected values come from the network-policy-api documentation (tier order admin ->
NetworkPolicy -> baseline -> allow; within the admin tier lower priority first, then rule
order; the first matching rule decides each port; Pass hands the port to NetworkPolicy, and
to the baseline when no NetworkPolicy selects the pod), never from the engine's output.
The e2e model of conftest: namespaces x, y, z (`ns: <name>`), pods a, b, c (`pod: <name>`)
serving 80/81 on TCP, UDP and SCTP as `serve-<port>-<proto>`, addresses 192.168.N.M.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import assert_conns, build, connlist, conns, model_yaml
from netfence.analysis.explain import as_dict, explain, render_text
from netfence.analysis.lint import lint
from netfence.cli import app
from netfence.cluster.state import ClusterState
from netfence.k8s.loader import load_text
from netfence.policy.engine import Engine, side_conns
from netfence.policy.ir import TierPolicy
from netfence.policy.matrix import ClusterMatrix
from netfence.problems import Problem

ALL = "All Connections"
NONE = "No Connections"
ALL_BUT_TCP_80 = "SCTP 1-65535,TCP 1-79,81-65535,UDP 1-65535"
EXTERNAL = "8.8.8.8"
V1 = "apiVersion: policy.networking.k8s.io/v1alpha1"
V2 = "apiVersion: policy.networking.k8s.io/v1alpha2"


def anp(name: str, priority: int, body: str) -> str:
    return (
        f"{V1}\nkind: AdminNetworkPolicy\nmetadata: {{name: {name}}}\n"
        f"spec:\n  priority: {priority}\n"
        + (textwrap.indent(textwrap.dedent(body).strip(), "  ") + "\n")
    )


def banp(body: str, name: str = "default") -> str:
    return f"{V1}\nkind: BaselineAdminNetworkPolicy\nmetadata: {{name: {name}}}\nspec:\n" + (
        textwrap.indent(textwrap.dedent(body).strip(), "  ") + "\n"
    )


def cnp(name: str, tier: str, priority: int, body: str) -> str:
    return (
        f"{V2}\nkind: ClusterNetworkPolicy\nmetadata: {{name: {name}}}\n"
        f"spec:\n  tier: {tier}\n  priority: {priority}\n"
        + textwrap.indent(textwrap.dedent(body).strip(), "  ")
        + "\n"
    )


def np_doc(name: str, namespace: str, body: str) -> str:
    return (
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\nspec:\n"
        + textwrap.indent(textwrap.dedent(body).strip(), "  ")
        + "\n"
    )


def cluster(*docs: str) -> ClusterState:
    return build("---\n".join(docs), model=True)


SUBJECT_X = "subject: {namespaces: {matchLabels: {ns: x}}}"
FROM_Y = "from: [{namespaces: {matchLabels: {ns: y}}}]"
TO_Y = "to: [{namespaces: {matchLabels: {ns: y}}}]"
NP_X_ALLOW_FROM_Y = np_doc(
    "allow-from-y",
    "x",
    """
    podSelector: {}
    ingress:
    - from: [{namespaceSelector: {matchLabels: {ns: y}}}]
    """,
)
NP_X_DENY_INGRESS = np_doc("deny-ingress", "x", "podSelector: {}\npolicyTypes: [Ingress]")


# -- the admin tier over NetworkPolicy ------------------------------------------------------


def test_admin_deny_overrides_a_networkpolicy_allow() -> None:
    deny = anp(
        "deny-y",
        10,
        f"""
        {SUBJECT_X}
        ingress:
        - {{action: Deny, {FROM_Y}}}
        """,
    )
    assert conns(cluster(NP_X_ALLOW_FROM_Y), "y/a", "x/a") == ALL
    state = cluster(NP_X_ALLOW_FROM_Y, deny)
    assert_conns(
        state,
        {
            ("y/a", "x/a"): NONE,  # the admin tier denies before NetworkPolicy is asked
            ("z/a", "x/a"): NONE,  # not matched by the ANP: the NetworkPolicy isolates x
            ("y/a", "z/a"): ALL,  # z is no subject
            ("x/a", "y/a"): ALL,  # the ANP has no egress rules: egress untouched
        },
    )


def test_admin_allow_overrides_a_networkpolicy_deny() -> None:
    allow = anp(
        "allow-y",
        10,
        f"""
        {SUBJECT_X}
        ingress:
        - {{action: Allow, {FROM_Y}}}
        """,
    )
    state = cluster(NP_X_DENY_INGRESS, allow)
    assert_conns(state, {("y/a", "x/a"): ALL, ("z/a", "x/a"): NONE, ("x/b", "x/a"): NONE})


def test_priority_lower_value_first_and_ports_combine() -> None:
    """An Allow on TCP 80 at priority 10 and a Deny of everything at priority 20: TCP 80 is
    allowed, every other port denied (decisions are per port)."""
    allow_80 = anp(
        "allow-80",
        10,
        f"""
        {SUBJECT_X}
        ingress:
        - action: Allow
          {FROM_Y}
          ports: [{{portNumber: {{protocol: TCP, port: 80}}}}]
        """,
    )
    deny_all = anp(
        "deny-all",
        20,
        f"""
        {SUBJECT_X}
        ingress:
        - {{action: Deny, {FROM_Y}}}
        """,
    )
    assert conns(cluster(allow_80, deny_all), "y/a", "x/a") == "TCP 80"
    # Swap the priorities: the Deny comes first and takes every port.
    later = allow_80.replace("priority: 10", "priority: 30")
    assert conns(cluster(later, deny_all), "y/a", "x/a") == NONE


def test_rule_order_within_a_policy() -> None:
    ordered = anp(
        "ordered",
        10,
        f"""
        {SUBJECT_X}
        ingress:
        - action: Deny
          {FROM_Y}
          ports: [{{portNumber: {{protocol: TCP, port: 80}}}}]
        - {{action: Allow, {FROM_Y}}}
        """,
    )
    # Allowed by the ANP's second rule everywhere but TCP 80, even against the NP's deny.
    assert conns(cluster(ordered, NP_X_DENY_INGRESS), "y/a", "x/a") == ALL_BUT_TCP_80
    assert conns(cluster(ordered), "y/a", "x/a") == ALL_BUT_TCP_80


def test_ports_not_matched_by_the_admin_tier_fall_through() -> None:
    """A port no admin rule matches is decided by the next tier: NetworkPolicy if it selects
    the pod, else the baseline, else allowed."""
    deny_80 = anp(
        "deny-80",
        10,
        f"""
        {SUBJECT_X}
        ingress:
        - action: Deny
          {FROM_Y}
          ports: [{{portNumber: {{protocol: TCP, port: 80}}}}]
        """,
    )
    np_81 = np_doc(
        "allow-81",
        "x",
        """
        podSelector: {}
        ingress:
        - ports: [{port: 81}, {port: 80}]
        """,
    )
    assert conns(cluster(deny_80), "y/a", "x/a") == ALL_BUT_TCP_80
    assert conns(cluster(deny_80, np_81), "y/a", "x/a") == "TCP 81"


# -- Pass --------------------------------------------------------------------------------


PASS_Y = anp(
    "pass-y",
    10,
    f"""
    {SUBJECT_X}
    ingress:
    - {{action: Pass, {FROM_Y}}}
    """,
)
DENY_Y_LATER = anp(
    "deny-y-later",
    20,
    f"""
    {SUBJECT_X}
    ingress:
    - {{action: Deny, {FROM_Y}}}
    """,
)
BANP_DENY_ALL_INGRESS = banp(
    """
    subject: {namespaces: {}}
    ingress:
    - {action: Deny, from: [{namespaces: {}}]}
    """
)


def test_pass_skips_the_rest_of_the_admin_tier() -> None:
    # Without the Pass, the priority-20 Deny decides.
    assert conns(cluster(DENY_Y_LATER), "y/a", "x/a") == NONE
    # Passed: no NetworkPolicy, no baseline: allowed.
    assert conns(cluster(PASS_Y, DENY_Y_LATER), "y/a", "x/a") == ALL


def test_pass_hands_the_port_to_networkpolicy() -> None:
    assert conns(cluster(PASS_Y, DENY_Y_LATER, NP_X_DENY_INGRESS), "y/a", "x/a") == NONE
    assert conns(cluster(PASS_Y, DENY_Y_LATER, NP_X_ALLOW_FROM_Y), "y/a", "x/a") == ALL


def test_pass_goes_to_the_baseline_when_no_networkpolicy_selects_the_pod() -> None:
    state = cluster(PASS_Y, DENY_Y_LATER, BANP_DENY_ALL_INGRESS)
    assert_conns(state, {("y/a", "x/a"): NONE, ("y/a", "z/a"): NONE})
    # A NetworkPolicy selecting the pod takes the decision away from the baseline.
    state = cluster(PASS_Y, BANP_DENY_ALL_INGRESS, NP_X_ALLOW_FROM_Y)
    assert_conns(state, {("y/a", "x/a"): ALL, ("z/a", "x/a"): NONE, ("x/a", "z/a"): NONE})


# -- the baseline tier ---------------------------------------------------------------------


def test_baseline_applies_only_where_no_networkpolicy_selects_the_pod() -> None:
    state = cluster(BANP_DENY_ALL_INGRESS, NP_X_ALLOW_FROM_Y)
    assert_conns(
        state,
        {
            ("y/a", "x/a"): ALL,  # NetworkPolicy decides for x
            ("z/a", "x/a"): NONE,  # ... denying what it does not allow
            ("x/a", "y/a"): NONE,  # baseline decides for y and z
            ("z/a", "y/b"): NONE,
            (EXTERNAL, "y/a"): ALL,  # namespaces peers never match an address
            ("y/a", EXTERNAL): ALL,  # no egress rules
        },
    )


def test_baseline_rule_order_and_unmatched_ports() -> None:
    baseline = banp(
        """
        subject: {namespaces: {matchLabels: {ns: x}}}
        ingress:
        - action: Allow
          from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {pod: a}}}}]
          ports: [{portRange: {protocol: TCP, start: 80, end: 81}}]
        - action: Deny
          from: [{namespaces: {}}]
          ports: [{portNumber: {protocol: TCP, port: 80}}, {portNumber: {protocol: UDP, port: 53}}]
        """
    )
    state = cluster(baseline)
    assert_conns(
        state,
        {
            # TCP 80-81 allowed first, so the Deny takes only UDP 53 from a's pods...
            ("y/a", "x/b"): "SCTP 1-65535,TCP 1-65535,UDP 1-52,54-65535",
            # ... and TCP 80 and UDP 53 from the others; unmatched ports are allowed.
            ("y/b", "x/b"): "SCTP 1-65535,TCP 1-79,81-65535,UDP 1-52,54-65535",
        },
    )


def test_admin_decisions_stand_against_the_baseline() -> None:
    allow_y = anp(
        "allow-y",
        10,
        f"""
        {SUBJECT_X}
        ingress:
        - action: Allow
          {FROM_Y}
          ports: [{{portNumber: {{protocol: UDP, port: 81}}}}]
        """,
    )
    assert conns(cluster(allow_y, BANP_DENY_ALL_INGRESS), "y/a", "x/a") == "UDP 81"


# -- subjects, peers, ports ------------------------------------------------------------------


def test_subject_by_pods_and_pods_peer() -> None:
    policy = anp(
        "pods",
        5,
        """
        subject:
          pods:
            namespaceSelector: {matchLabels: {ns: x}}
            podSelector: {matchLabels: {pod: a}}
        egress:
        - action: Deny
          to:
          - pods:
              namespaceSelector: {matchExpressions: [{key: ns, operator: In, values: [y, z]}]}
              podSelector: {matchLabels: {pod: b}}
        """,
    )
    state = cluster(policy)
    assert_conns(
        state,
        {
            ("x/a", "y/b"): NONE,
            ("x/a", "z/b"): NONE,
            ("x/a", "y/a"): ALL,
            ("x/a", "x/b"): ALL,  # x is not in the peer's namespaces
            ("x/b", "y/b"): ALL,  # x/b is no subject
            ("y/b", "x/a"): ALL,  # no ingress rules
        },
    )


def test_named_port_matches_the_container_port_of_any_protocol() -> None:
    policy = anp(
        "named",
        5,
        f"""
        {SUBJECT_X}
        ingress:
        - action: Allow
          {FROM_Y}
          ports: [{{namedPort: serve-81-udp}}]
        - {{action: Deny, {FROM_Y}}}
        """,
    )
    assert conns(cluster(policy), "y/a", "x/a") == "UDP 81"
    # A name no container port has matches nothing, so the Deny takes every port.
    missing = policy.replace("serve-81-udp", "no-such-port")
    assert conns(build("---\n".join([missing]), model=True), "y/a", "x/a") == NONE


def test_named_port_in_egress_resolves_on_the_destination() -> None:
    state = build(
        textwrap.dedent(
            """
        apiVersion: v1
        kind: Pod
        metadata: {name: web, namespace: y, labels: {app: web}}
        spec:
          containers:
          - name: c
            ports:
            - {name: http, containerPort: 8080}
            - {name: dns, containerPort: 53, protocol: UDP}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: client, namespace: x}
        spec: {containers: [{name: c}]}
        ---
        """
        )
        + anp(
            "named-egress",
            5,
            """
            subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: x}}}
            egress:
            - action: Allow
              to: [{namespaces: {}}]
              ports: [{namedPort: http}, {namedPort: dns}]
            - action: Deny
              to: [{namespaces: {}}]
            """,
        )
    )
    assert conns(state, "x/client", "y/web") == "TCP 8080,UDP 53"


def test_port_ranges_and_protocol_default() -> None:
    policy = anp(
        "ranges",
        5,
        f"""
        {SUBJECT_X}
        ingress:
        - action: Allow
          {FROM_Y}
          ports:
          - portRange: {{start: 1000, end: 2000}}
          - portRange: {{protocol: SCTP, start: 81, end: 81}}
        - {{action: Deny, {FROM_Y}}}
        """,
    )
    assert conns(cluster(policy), "y/a", "x/a") == "SCTP 81,TCP 1000-2000"


def test_networks_match_external_addresses_and_pod_addresses() -> None:
    """`networks` is checked against cluster-internal traffic too (the API says so)."""
    policy = anp(
        "networks",
        5,
        """
        subject: {namespaces: {}}
        egress:
        - action: Deny
          to: [{networks: [192.168.2.0/24, 8.8.8.0/24, "fd00::/8"]}]
        """,
    )
    state = cluster(policy)
    assert_conns(
        state,
        {
            ("x/a", "y/b"): NONE,  # y's pods are 192.168.2.x
            ("x/a", "z/b"): ALL,
            ("x/a", EXTERNAL): NONE,
            ("x/a", "8.8.4.4"): ALL,
            ("x/a", "fd00::1"): NONE,
            ("x/a", "2001:db8::1"): ALL,
            (EXTERNAL, "x/a"): ALL,  # egress only
        },
    )
    # The connectivity list cuts the destination ranges at the networks' edges.
    listed = connlist(state)
    assert ("x/a[Pod]", "8.8.8.0-8.8.8.255[External]") not in listed
    assert listed[("x/a[Pod]", "8.8.9.0-192.168.1.255[External]")] == ALL
    assert ("x/a[Pod]", "y/b[Pod]") not in listed


NODES = """
apiVersion: v1
kind: Node
metadata: {name: cp1, labels: {node-role.kubernetes.io/control-plane: ""}}
status:
  addresses:
  - {type: InternalIP, address: 10.1.0.1}
  - {type: Hostname, address: cp1}
  - {type: InternalIP, address: "fd01::1"}
---
apiVersion: v1
kind: Node
metadata: {name: w1}
status: {addresses: [{type: InternalIP, address: 10.1.0.2}]}
---
apiVersion: v1
kind: Pod
metadata: {name: agent, namespace: z}
spec: {nodeName: w2, containers: [{name: c}]}
status: {podIP: 192.168.3.9, hostIP: 10.1.0.3}
"""


def test_nodes_peer_matches_the_selected_nodes_addresses() -> None:
    policy = anp(
        "no-control-plane",
        5,
        """
        subject: {namespaces: {}}
        egress:
        - action: Deny
          to:
          - nodes:
              matchExpressions: [{key: node-role.kubernetes.io/control-plane, operator: Exists}]
          ports: [{portNumber: {protocol: TCP, port: 6443}}]
        - action: Deny
          to: [{nodes: {matchLabels: {kubernetes.io/hostname: w2}}}]
        """,
    )
    state = cluster(NODES, policy)
    assert sorted(state.nodes) == ["cp1", "w1", "w2"]
    assert [str(a) for a in state.nodes["w2"].addresses] == ["10.1.0.3"]  # from the hostIP
    assert_conns(
        state,
        {
            ("x/a", "10.1.0.1"): "SCTP 1-65535,TCP 1-6442,6444-65535,UDP 1-65535",
            ("x/a", "fd01::1"): "SCTP 1-65535,TCP 1-6442,6444-65535,UDP 1-65535",
            ("x/a", "10.1.0.2"): ALL,  # w1 is no control-plane node
            ("x/a", "10.1.0.3"): NONE,  # w2, known from its pod, by the implied hostname label
            ("x/a", "y/a"): ALL,
        },
    )


# -- v1alpha2 ClusterNetworkPolicy ---------------------------------------------------------


def test_cluster_network_policy_tiers_actions_and_protocols() -> None:
    admin = cnp(
        "admin",
        "Admin",
        10,
        f"""
        {SUBJECT_X}
        ingress:
        - action: Accept
          {FROM_Y}
          protocols:
          - tcp: {{destinationPort: {{number: 80}}}}
          - udp: {{destinationPort: {{range: {{start: 80, end: 81}}}}}}
          - destinationNamedPort: serve-81-sctp
        - action: Pass
          from: [{{namespaces: {{matchLabels: {{ns: z}}}}}}]
        - {{action: Deny, {FROM_Y}}}
        """,
    )
    baseline = cnp(
        "baseline",
        "Baseline",
        10,
        """
        subject: {namespaces: {}}
        ingress:
        - action: Deny
          from: [{namespaces: {matchLabels: {ns: z}}}]
          protocols: [{tcp: {destinationPort: {number: 81}}}]
        """,
    )
    state = cluster(admin, baseline)
    assert_conns(
        state,
        {
            ("y/a", "x/a"): "SCTP 81,TCP 80,UDP 80-81",
            # Passed, then the baseline denies TCP 81 only.
            ("z/a", "x/a"): "SCTP 1-65535,TCP 1-80,82-65535,UDP 1-65535",
            ("z/a", "y/a"): "SCTP 1-65535,TCP 1-80,82-65535,UDP 1-65535",
            ("y/a", "z/a"): ALL,
        },
    )


def test_pass_in_the_baseline_tier_hands_the_port_to_the_default_allow() -> None:
    baseline = cnp(
        "baseline",
        "Baseline",
        5,
        f"""
        {SUBJECT_X}
        ingress:
        - action: Pass
          {FROM_Y}
          protocols: [{{tcp: {{destinationPort: {{number: 80}}}}}}]
        - {{action: Deny, from: [{EVERYONE}]}}
        """,
    )
    state = cluster(baseline)
    assert_conns(state, {("y/a", "x/a"): "TCP 80", ("z/a", "x/a"): NONE, ("x/a", "y/a"): ALL})
    text, _ = _explain(state, "y/a", "x/a", "80/TCP")
    assert "80/TCP: allowed: no rule decides it (allowed by default), passed on by" in text


def test_admin_network_policy_and_cluster_network_policy_share_the_admin_tier() -> None:
    old = anp("old", 20, f"{SUBJECT_X}\ningress:\n- {{action: Allow, {FROM_Y}}}")
    new = cnp("new", "Admin", 10, f"{SUBJECT_X}\ningress:\n- {{action: Deny, {FROM_Y}}}")
    assert conns(cluster(old, new), "y/a", "x/a") == NONE
    later = new.replace("priority: 10", "priority: 30")
    assert conns(cluster(old, later), "y/a", "x/a") == ALL


# -- host-network pods, and the two directions --------------------------------------------


def test_a_connection_needs_both_sides() -> None:
    egress_deny = anp(
        "egress-deny",
        10,
        """
        subject: {namespaces: {matchLabels: {ns: y}}}
        egress:
        - action: Deny
          to: [{namespaces: {matchLabels: {ns: x}}}]
          ports: [{portNumber: {protocol: UDP, port: 80}}]
        """,
    )
    ingress_allow = anp(
        "ingress-allow", 20, f"{SUBJECT_X}\ningress:\n- {{action: Allow, {FROM_Y}}}"
    )
    assert conns(cluster(egress_deny, ingress_allow), "y/a", "x/a") == (
        "SCTP 1-65535,TCP 1-65535,UDP 1-79,81-65535"
    )


def test_host_network_pods_are_not_subjects_in_node_mode() -> None:
    state = build(
        textwrap.dedent(
            """
        apiVersion: v1
        kind: Pod
        metadata: {name: host, namespace: x, labels: {pod: a}}
        spec: {hostNetwork: true, containers: [{name: c}]}
        status: {podIP: 10.1.0.5}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: p, namespace: y}
        spec: {containers: [{name: c}]}
        ---
        """
        )
        + anp(
            "deny",
            1,
            "subject: {namespaces: {}}\ningress:\n- {action: Deny, from: [{namespaces: {}}]}",
        )
    )
    assert conns(state, "y/p", "x/host", host_network="pod") == NONE
    assert conns(state, "y/p", "x/host", host_network="node") == ALL


# -- the pure side function and the class matrix ----------------------------------------------


def test_side_conns_decides_from_selecting_policies_and_matched_rules() -> None:
    state = cluster(PASS_Y, DENY_Y_LATER, NP_X_ALLOW_FROM_Y, BANP_DENY_ALL_INGRESS)
    engine = Engine(state)
    x_a = next(p for p in state.pods if p.key == "x/a")
    selecting = engine.selecting(x_a, "ingress")
    assert [p.key for p in selecting] == [
        "AdminNetworkPolicy/pass-y",
        "AdminNetworkPolicy/deny-y-later",
        "x/allow-from-y",
        "BaselineAdminNetworkPolicy/default",
    ]
    rules = {str(r.provenance): r.provenance for p in selecting for r in p.rules("ingress")}
    # The order of `selecting` does not matter; `matched` says which rules match the peer.
    shuffled = list(reversed(selecting))
    everything = set(rules.values())
    assert str(side_conns("ingress", shuffled, everything, x_a.ports)) == ALL  # passed, NP allows
    no_pass = everything - {rules["AdminNetworkPolicy/pass-y ingress[0]"]}
    assert str(side_conns("ingress", shuffled, no_pass, x_a.ports)) == NONE  # denied at 20
    only_baseline = {rules["BaselineAdminNetworkPolicy/default ingress[0]"]}
    assert str(side_conns("ingress", shuffled, only_baseline, x_a.ports)) == NONE  # NP isolates
    without_np = [p for p in shuffled if isinstance(p, TierPolicy)]
    assert str(side_conns("ingress", without_np, only_baseline, x_a.ports)) == NONE  # baseline
    assert str(side_conns("ingress", without_np, set(), x_a.ports)) == ALL


@pytest.mark.parametrize("chunk", [1, 512])
def test_matrix_equals_engine_and_marks_tier_subjects_isolated(
    chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("netfence.policy.matrix._CHUNK_ROWS", chunk)  # rows finished in parts
    state = cluster(PASS_Y, DENY_Y_LATER, NP_X_ALLOW_FROM_Y, BANP_DENY_ALL_INGRESS)
    matrix = ClusterMatrix(state)
    engine = Engine(state)
    p2p = matrix.pod_to_pod()
    for src in state.pods:
        for dst in state.pods:
            if src is not dst:
                got = matrix.conns(int(p2p[matrix.class_of[id(src)], matrix.class_of[id(dst)]]))
                assert got == engine.verdict(src, dst).conns, (src.key, dst.key)
    # The BANP's subject is every pod; it has no egress rules.
    assert matrix.isolated["ingress"].all()
    assert not matrix.isolated["egress"].any()


# -- explanations ------------------------------------------------------------------------


def _explain(state: ClusterState, src: str, dst: str, port: str) -> tuple[str, dict[str, object]]:
    protocol_port = (port.split("/")[1], int(port.split("/")[0]))
    result = explain(Engine(state), src, dst, protocol_port)
    return render_text(result), as_dict(result)


def test_explain_names_the_deciding_tier_policy_and_rule() -> None:
    deny_80 = anp(
        "deny-80",
        10,
        f"""
        {SUBJECT_X}
        ingress:
        - name: no-web-from-y
          action: Deny
          {FROM_Y}
          ports: [{{portNumber: {{protocol: TCP, port: 80}}}}]
        - {{name: hand-over, action: Pass, {FROM_Y}}}
        """,
    )
    state = cluster(deny_80, NP_X_ALLOW_FROM_Y)
    text, data = _explain(state, "y/a", "x/a", "80/TCP")
    assert "verdict: DENIED on 80/TCP" in text
    assert 'AdminNetworkPolicy/deny-80 ingress[0] "no-web-from-y": Deny TCP 80  <- denies' in text
    assert "denied by AdminNetworkPolicy/deny-80 ingress[0] (admin tier, Deny)" in text
    ingress = data["ingress"]
    assert isinstance(ingress, dict)
    assert (
        ingress["decision"] == "denied by AdminNetworkPolicy/deny-80 ingress[0] (admin tier, Deny)"
    )
    text, data = _explain(state, "y/a", "x/a", "81/TCP")
    assert "verdict: ALLOWED on 81/TCP" in text
    assert (
        "81/TCP: allowed by x/allow-from-y ingress[0] (NetworkPolicy tier), "
        "passed on by AdminNetworkPolicy/deny-80 ingress[1]"
    ) in text
    text, _ = _explain(cluster(deny_80, BANP_DENY_ALL_INGRESS), "y/a", "x/a", "81/TCP")
    assert "denied by BaselineAdminNetworkPolicy/default ingress[0] (baseline tier, Deny)" in text
    text, _ = _explain(cluster(deny_80), "y/a", "x/a", "81/TCP")
    assert "81/TCP: allowed: no rule decides it (allowed by default)" in text


# -- validation: file, object and field path of every problem ---------------------------------


def problems(text: str) -> list[Problem]:
    return ClusterState.build(load_text(textwrap.dedent(text), "bad.yaml")).problems


def only_error(text: str, obj: str, path: str, *words: str) -> Problem:
    found = [p for p in problems(text) if p.severity == "error"]
    assert len(found) == 1, [str(p) for p in found]
    problem = found[0]
    assert (problem.file, problem.obj, problem.path) == ("bad.yaml", obj, path), str(problem)
    for word in words:
        assert word in problem.message, (word, problem.message)
    assert str(problem).startswith(f"bad.yaml: {obj}: {path}: error: ")
    return problem


EVERYONE = "{namespaces: {}}"


def one_rule(rule: str, subject: str = f"subject: {EVERYONE}", direction: str = "ingress") -> str:
    return f"{subject}\n{direction}:\n- {rule}"


DENY_ALL_BODY = one_rule(f"{{action: Deny, from: [{EVERYONE}]}}")


def test_duplicate_priority_is_an_error_naming_both_policies() -> None:
    text = "---\n".join([anp("first", 7, DENY_ALL_BODY), anp("second", 7, DENY_ALL_BODY)])
    only_error(
        text,
        "AdminNetworkPolicy second",
        "spec.priority",
        "priority 7",
        "AdminNetworkPolicy first",
        "undefined",
    )
    # Both stay in the analysis, in name order.
    state = ClusterState.build(load_text(text, "bad.yaml"))
    assert [p.name for p in state.cluster_policies] == ["first", "second"]
    # Across the two API generations (one admin tier), too; another tier may reuse it.
    admin = cnp("third", "Admin", 7, DENY_ALL_BODY)
    only_error(
        "---\n".join([anp("first", 7, DENY_ALL_BODY), admin]),
        "ClusterNetworkPolicy third",
        "spec.priority",
        "priority 7",
    )
    baseline = cnp("fourth", "Baseline", 7, DENY_ALL_BODY)
    assert problems("---\n".join([anp("first", 7, DENY_ALL_BODY), baseline])) == []


@pytest.mark.parametrize("priority", [-1, 1001])
def test_priority_out_of_range(priority: int) -> None:
    only_error(
        anp("p", priority, DENY_ALL_BODY),
        "AdminNetworkPolicy p",
        "spec.priority",
        str(priority),
        "between 0 and 1000",
    )


def test_baseline_must_be_named_default_and_single() -> None:
    only_error(
        banp(DENY_ALL_BODY, name="baseline"),
        "BaselineAdminNetworkPolicy baseline",
        "metadata.name",
        "must be `default`",
    )
    two = "---\n".join([banp(DENY_ALL_BODY), banp(DENY_ALL_BODY)])
    only_error(
        two,
        "BaselineAdminNetworkPolicy default",
        "metadata.name",
        "duplicate name",
        "a single BaselineAdminNetworkPolicy",
    )


@pytest.mark.parametrize(
    ("peer", "path", "words"),
    [
        ("{networks: [10.0.0.0/33]}", "spec.egress[0].to[0].networks[0]", ["not a valid CIDR"]),
        ("{networks: [not-a-cidr]}", "spec.egress[0].to[0].networks[0]", ["not a valid CIDR"]),
        ("{networks: ['::ffff:10.0.0.0/104']}", "spec.egress[0].to[0].networks[0]", ["embedded"]),
        ("{networks: [10.0.0.0/8, 10.0.0.0/8]}", "spec.egress[0].to[0].networks[1]", ["duplicate"]),
        ("{networks: []}", "spec.egress[0].to[0].networks", ["at least one"]),
        (
            "{namespaces: {}, networks: [10.0.0.0/8]}",
            "spec.egress[0].to[0]",
            ["exactly one", "`namespaces`, `networks`"],
        ),
        ("{}", "spec.egress[0].to[0]", ["exactly one of `namespaces`, `pods`, `nodes`"]),
        (
            "{nodes: {matchLabels: {'-bad': x}}}",
            "spec.egress[0].to[0].nodes.matchLabels",
            ["'-bad'"],
        ),
        (
            "{domainNames: ['*.example.com']}",
            "spec.egress[0].to[0].domainNames",
            ["only allowed in Allow"],
        ),
    ],
)
def test_invalid_egress_peers(peer: str, path: str, words: list[str]) -> None:
    body = f"subject: {{namespaces: {{}}}}\negress:\n- {{action: Deny, to: [{peer}]}}"
    only_error(anp("p", 1, body), "AdminNetworkPolicy p", path, *words)


def test_ingress_peers_are_namespaces_or_pods_only() -> None:
    body = "subject: {namespaces: {}}\ningress:\n- {action: Deny, from: [{networks: [10.0.0.0/8]}]}"
    only_error(
        anp("p", 1, body),
        "AdminNetworkPolicy p",
        "spec.ingress[0].from[0].networks",
        "only allowed in egress",
    )
    body = "subject: {namespaces: {}}\ningress:\n- {action: Deny, to: [{namespaces: {}}]}"
    found = [p for p in problems(anp("p", 1, body)) if p.severity == "error"]
    assert {p.path for p in found} == {"spec.ingress[0].to", "spec.ingress[0].from"}


@pytest.mark.parametrize(
    ("kind_doc", "action", "obj", "words"),
    [
        (
            "anp",
            "Accept",
            "AdminNetworkPolicy p",
            ['"Allow", "Deny", "Pass"', "`Allow` is the word"],
        ),
        ("banp", "Pass", "BaselineAdminNetworkPolicy default", ['"Allow", "Deny"']),
        ("cnp", "Allow", "ClusterNetworkPolicy p", ["`Accept` is the word"]),
    ],
)
def test_actions_per_kind(kind_doc: str, action: str, obj: str, words: list[str]) -> None:
    body = one_rule(f"{{action: {action}, from: [{EVERYONE}]}}")
    doc = {"anp": anp("p", 1, body), "banp": banp(body), "cnp": cnp("p", "Admin", 1, body)}[
        kind_doc
    ]
    only_error(doc, obj, "spec.ingress[0].action", *words)


@pytest.mark.parametrize(
    ("ports", "path", "words"),
    [
        (
            "[{portNumber: {port: 80}, namedPort: http}]",
            "spec.ingress[0].ports[0]",
            ["exactly one"],
        ),
        (
            "[{portNumber: {protocol: ICMP, port: 80}}]",
            "spec.ingress[0].ports[0].portNumber.protocol",
            ["ICMP"],
        ),
        ("[{portNumber: {port: 65536}}]", "spec.ingress[0].ports[0].portNumber.port", ["65536"]),
        (
            "[{portRange: {start: 0, end: 10}}]",
            "spec.ingress[0].ports[0].portRange.start",
            ["0 must be"],
        ),
        ("[{namedPort: Not_A_Name}]", "spec.ingress[0].ports[0].namedPort", ["Not_A_Name"]),
        ("[]", "spec.ingress[0].ports", ["at least one"]),
        ("[{tcp: {destinationPort: {number: 80}}}]", "spec.ingress[0].ports[0].tcp", ["unknown"]),
    ],
)
def test_invalid_ports(ports: str, path: str, words: list[str]) -> None:
    body = one_rule(f"{{action: Deny, from: [{EVERYONE}], ports: {ports}}}")
    only_error(anp("p", 1, body), "AdminNetworkPolicy p", path, *words)


def test_reversed_v1alpha1_range_is_a_warning_and_matches_nothing() -> None:
    body = one_rule(
        f"{{action: Deny, {FROM_Y}, ports: [{{portRange: {{start: 90, end: 80}}}}]}}", SUBJECT_X
    )
    found = problems(model_yaml() + "---\n" + anp("p", 1, body))
    assert [(p.severity, p.path) for p in found] == [
        ("warning", "spec.ingress[0].ports[0].portRange.end")
    ]
    state = ClusterState.build(load_text(model_yaml() + "---\n" + anp("p", 1, body), "t.yaml"))
    assert conns(state, "y/a", "x/a") == ALL


@pytest.mark.parametrize(
    ("protocols", "path", "words"),
    [
        (
            "[{tcp: {destinationPort: {range: {start: 80, end: 80}}}}]",
            "spec.ingress[0].protocols[0].tcp.destinationPort.range.end",
            ["greater than"],
        ),
        ("[{tcp: {}}]", "spec.ingress[0].protocols[0].tcp.destinationPort", ["is required"]),
        (
            "[{tcp: {destinationPort: {number: 80}}, udp: {destinationPort: {number: 80}}}]",
            "spec.ingress[0].protocols[0]",
            ["exactly one"],
        ),
        (
            "[{udp: {destinationPort: {number: 80, range: {start: 1, end: 2}}}}]",
            "spec.ingress[0].protocols[0].udp.destinationPort",
            ["exactly one"],
        ),
        (
            "[{destinationNamedPort: x--y}]",
            "spec.ingress[0].protocols[0].destinationNamedPort",
            ["consecutive"],
        ),
    ],
)
def test_invalid_v1alpha2_protocols(protocols: str, path: str, words: list[str]) -> None:
    body = one_rule(f"{{action: Deny, from: [{EVERYONE}], protocols: {protocols}}}")
    only_error(cnp("p", "Admin", 1, body), "ClusterNetworkPolicy p", path, *words)


def test_v1alpha2_has_no_ports_and_a_tier() -> None:
    body = one_rule(f"{{action: Deny, from: [{EVERYONE}], ports: [{{namedPort: http}}]}}")
    only_error(
        cnp("p", "Admin", 1, body), "ClusterNetworkPolicy p", "spec.ingress[0].ports", "`protocols`"
    )
    only_error(
        cnp("p", "Middle", 1, DENY_ALL_BODY),
        "ClusterNetworkPolicy p",
        "spec.tier",
        '"Admin", "Baseline"',
    )


def test_subject_needs_exactly_one_field() -> None:
    both = "subject: {namespaces: {}, pods: {namespaceSelector: {}, podSelector: {}}}"
    body = one_rule(f"{{action: Deny, from: [{EVERYONE}]}}", both)
    only_error(anp("p", 1, body), "AdminNetworkPolicy p", "spec.subject", "exactly one")
    only_error(anp("p", 1, "subject: {}"), "AdminNetworkPolicy p", "spec.subject", "exactly one")


def test_missing_selector_of_a_pods_peer_is_a_warning_read_as_empty() -> None:
    body = one_rule(
        "{action: Deny, from: [{pods: {namespaceSelector: {matchLabels: {ns: y}}}}]}", SUBJECT_X
    )
    text = model_yaml() + "---\n" + anp("p", 1, body)
    state = ClusterState.build(load_text(text, "t.yaml"))
    assert [(p.severity, p.path) for p in state.problems] == [
        ("warning", "spec.ingress[0].from[0].pods.podSelector")
    ]
    assert conns(state, "y/b", "x/a") == NONE


def test_shape_errors_name_the_field() -> None:
    only_error(
        f"{V1}\nkind: AdminNetworkPolicy\nmetadata: {{name: p}}\n"
        f"spec: {{subject: {EVERYONE}, priority: high}}",
        "AdminNetworkPolicy p",
        "spec.priority",
        "integer",
    )
    typo = (
        f"{V1}\nkind: AdminNetworkPolicy\nmetadata: {{name: p}}\n"
        f"spec: {{subject: {EVERYONE}, priorty: 1}}"
    )
    found = {(p.path, p.message) for p in problems(typo)}
    assert ("spec.priorty", "unknown field; did you mean `priority`?") in found
    assert (
        "spec.priority",
        "is required (the field is spelled `priority`, not `priorty`)",
    ) in found


def test_node_addresses_are_validated() -> None:
    text = (
        "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nstatus: {addresses: "
        "[{type: InternalIP, address: 10.0.0.300}, {type: Hostname, address: n1}]}"
    )
    only_error(text, "Node n1", "status.addresses[0].address", "not a valid IP")


def test_node_pod_ranges_are_read_and_validated() -> None:
    good = "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nspec: {podCIDR: 10.244.1.0/24, "
    state = build(good + 'podCIDRs: [10.244.1.0/24, "fd00:10:244:1::/64"]}', allow_problems=False)
    assert [str(c) for c in state.nodes["n1"].pod_cidrs] == ["10.244.1.0/24", "fd00:10:244:1::/64"]
    bad = "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nspec: {podCIDRs: [10.244.1.0]}"
    only_error(bad, "Node n1", "spec.podCIDRs[0]", "not a valid CIDR")


# -- lint, check, diff ---------------------------------------------------------------------


def test_lint_reports_what_cannot_match() -> None:
    policy = anp(
        "lintme",
        3,
        """
        subject: {namespaces: {matchLabels: {ns: nowhere}}}
        egress:
        - action: Allow
          to:
          - domainNames: [example.com]
          - nodes: {matchLabels: {role: gpu}}
          - networks: [10.0.0.0/8]
          - namespaces: {matchLabels: {ns: nowhere}}
          ports: [{namedPort: serve-80-tcp}]
        """,
    )
    state = cluster(policy)
    found = {(p.code, p.path) for p in lint(state)}
    assert ("selects-nothing", "spec.subject") in found
    assert ("domain-names-unevaluated", "spec.egress[0].to[0].domainNames") in found
    assert ("peer-matches-nothing", "spec.egress[0].to[1].nodes") in found
    assert ("peer-matches-nothing", "spec.egress[0].to[3]") in found
    assert ("named-port-to-addresses", "spec.egress[0].ports") in found
    for problem in lint(state):
        if problem.path.startswith("spec."):
            assert problem.obj == "AdminNetworkPolicy lintme"
            assert problem.file == "test.yaml"


def test_lint_reports_shadowed_rules() -> None:
    allow_80 = f"{{action: Allow, {FROM_Y}, ports: [{{portNumber: {{protocol: TCP, port: 80}}}}]}}"
    first = anp(
        "first",
        10,
        f"""
        {SUBJECT_X}
        ingress:
        - {{action: Deny, {FROM_Y}}}
        - {allow_80}
        - {{action: Allow, from: [{{namespaces: {{matchLabels: {{ns: z}}}}}}]}}
        """,
    )
    later = anp("later", 20, one_rule(allow_80, SUBJECT_X))
    found = {(p.obj, p.path) for p in lint(cluster(first, later)) if p.code == "rule-shadowed"}
    assert found == {
        ("AdminNetworkPolicy first", "spec.ingress[1]"),  # after the Deny of everything from y
        ("AdminNetworkPolicy later", "spec.ingress[0]"),  # after the priority-10 policy
    }
    # With the Deny on UDP only, both Allow rules take TCP 80 somewhere: nothing to report.
    narrower = first.replace(
        f"{{action: Deny, {FROM_Y}}}",
        f"{{action: Deny, {FROM_Y}, ports: [{{portNumber: {{protocol: UDP, port: 80}}}}]}}",
    )
    assert not [p for p in lint(cluster(narrower)) if p.code == "rule-shadowed"]


def _write(folder: Path, *docs: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.yaml").write_text(model_yaml())
    (folder / "policies.yaml").write_text("---\n".join(docs))
    return folder


def test_cli_check_fails_on_duplicate_priority(tmp_path: Path) -> None:
    folder = _write(tmp_path, anp("first", 7, DENY_ALL_BODY), anp("second", 7, DENY_ALL_BODY))
    result = CliRunner().invoke(app, ["check", str(folder), "-o", "json"])
    assert result.exit_code == 1
    codes = [p["code"] for p in json.loads(result.stdout)]
    assert "duplicate-priority" in codes


def test_cli_list_diff_and_explain_with_tiers(tmp_path: Path) -> None:
    before = _write(tmp_path / "before", NP_X_ALLOW_FROM_Y)
    deny = anp(
        "deny-y",
        10,
        one_rule(
            f"{{action: Deny, {FROM_Y}, ports: [{{portNumber: {{protocol: UDP, port: 80}}}}]}}",
            SUBJECT_X,
        ),
    )
    after = _write(tmp_path / "after", NP_X_ALLOW_FROM_Y, deny)
    result = CliRunner().invoke(app, ["list", str(after)])
    assert result.exit_code == 0, result.stderr
    assert "y/a[Pod] => x/a[Pod] : SCTP 1-65535,TCP 1-65535,UDP 1-79,81-65535" in result.stdout
    result = CliRunner().invoke(app, ["diff", str(before), str(after), "-o", "json"])
    assert result.exit_code == 0, result.stderr
    changes = json.loads(result.stdout)
    changed = {(d["src"], d["dst"]): (d["diff-type"], d["new"]) for d in changes}
    assert changed[("y/a[Pod]", "x/a[Pod]")] == (
        "changed",
        "SCTP 1-65535,TCP 1-65535,UDP 1-79,81-65535",
    )
    assert len(changes) == 9  # y's three pods to x's three pods
    result = CliRunner().invoke(
        app, ["explain", str(after), "--from", "y/a", "--to", "x/a", "--port", "80/UDP"]
    )
    assert result.exit_code == 1
    assert "denied by AdminNetworkPolicy/deny-y ingress[0] (admin tier, Deny)" in result.stdout
