"""NetworkPolicy semantics (networking.k8s.io/v1), one rule per test, with hand-computed verdicts.

Most tests use the e2e model of conftest: namespaces x, y, z labelled `ns: <name>`, pods
a, b, c labelled `pod: <name>` serving 80/81 on TCP/UDP/SCTP, pod addresses 192.168.N.M.
Expected values are derived from the API documentation, never from the engine's output.
"""

from __future__ import annotations

import pytest

from conftest import (
    NAMESPACES,
    PODS,
    allows,
    assert_conns,
    build,
    connlist,
    conns,
    find_pod,
)
from netfence.analysis.connlist import connectivity
from netfence.policy.matrix import ClusterMatrix

ALL = "All Connections"
NONE = "No Connections"
EXTERNAL = "8.8.8.8"
WORLD = "0.0.0.0-255.255.255.255[External]"
MODEL_PODS = [f"{ns}/{pod}" for ns in NAMESPACES for pod in PODS]


def every_pair() -> list[tuple[str, str]]:
    return [(s, d) for s in MODEL_PODS for d in MODEL_PODS if s != d]


# -- isolation and policyTypes ----------------------------------------------------------------


def test_no_policy_allows_everything() -> None:
    state = build("", model=True)
    expected = {pair: ALL for pair in every_pair()}
    expected[(EXTERNAL, "x/a")] = ALL
    expected[("z/c", EXTERNAL)] = ALL
    assert_conns(state, expected)


def test_default_deny_ingress() -> None:
    state = build(
        """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: deny-ingress, namespace: x}
        spec:
          podSelector: {}
          policyTypes: [Ingress]
        """,
        model=True,
    )
    # Every pod of x is isolated for ingress with no rule; nothing else changes.
    expected = {(s, d): NONE if d.startswith("x/") else ALL for s, d in every_pair()}
    expected[(EXTERNAL, "x/a")] = NONE
    expected[(EXTERNAL, "y/a")] = ALL
    expected[("x/a", EXTERNAL)] = ALL  # egress untouched
    assert_conns(state, expected)


def test_default_deny_egress() -> None:
    state = build(
        """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: deny-egress, namespace: x}
        spec:
          podSelector: {}
          policyTypes: [Egress]
        """,
        model=True,
    )
    expected = {(s, d): NONE if s.startswith("x/") else ALL for s, d in every_pair()}
    expected[("x/a", EXTERNAL)] = NONE
    expected[("y/a", EXTERNAL)] = ALL
    expected[(EXTERNAL, "x/a")] = ALL  # ingress untouched
    assert_conns(state, expected)


def test_policy_types_default_to_ingress_only_without_egress_rules() -> None:
    state = build(
        """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: a-from-b, namespace: x}
        spec:
          podSelector: {matchLabels: {pod: a}}
          ingress:
          - from: [{podSelector: {matchLabels: {pod: b}}}]
            ports: [{port: 80}]
        """,
        model=True,
    )
    assert_conns(
        state,
        {
            ("x/b", "x/a"): "TCP 80",
            ("x/c", "x/a"): NONE,
            ("y/b", "x/a"): NONE,
            # Not isolated for egress: x/a still reaches everything.
            ("x/a", "x/c"): ALL,
            ("x/a", "z/b"): ALL,
            ("x/a", EXTERNAL): ALL,
        },
    )


def test_empty_egress_list_does_not_add_egress_policy_type() -> None:
    state = build(
        """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: empty-egress, namespace: x}
        spec:
          podSelector: {matchLabels: {pod: a}}
          egress: []
        """,
        model=True,
    )
    # policyTypes defaults to [Ingress] (egress has no rules): ingress denied, egress open.
    assert_conns(
        state,
        {
            ("x/b", "x/a"): NONE,
            (EXTERNAL, "x/a"): NONE,
            ("x/a", "x/b"): ALL,
            ("x/a", EXTERNAL): ALL,
        },
    )


@pytest.mark.parametrize("policy_types", ["", "policyTypes: []", "policyTypes: null"])
def test_egress_rules_without_policy_types_isolate_both_directions(policy_types: str) -> None:
    state = build(
        f"""
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {{name: a-to-b, namespace: x}}
        spec:
          podSelector: {{matchLabels: {{pod: a}}}}
          {policy_types}
          egress:
          - to: [{{podSelector: {{matchLabels: {{pod: b}}}}}}]
            ports: [{{port: 80}}]
        """,
        model=True,
    )
    assert_conns(
        state,
        {
            ("x/a", "x/b"): "TCP 80",
            ("x/a", "x/c"): NONE,
            ("x/a", EXTERNAL): NONE,
            # Ingress is isolated too (defaulted policyTypes [Ingress, Egress]) with no rules.
            ("x/b", "x/a"): NONE,
            (EXTERNAL, "x/a"): NONE,
            # Other pods are not selected.
            ("x/b", "x/c"): ALL,
        },
    )


def test_ingress_rules_ignored_when_policy_types_is_egress() -> None:
    state = build(
        """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: egress-only, namespace: x}
        spec:
          podSelector: {matchLabels: {pod: a}}
          policyTypes: [Egress]
          ingress:
          - from: [{podSelector: {matchLabels: {pod: b}}}]
        """,
        model=True,
    )
    assert_conns(
        state,
        {
            # Not isolated for ingress: the ingress rule restricts nothing.
            ("x/c", "x/a"): ALL,
            ("z/c", "x/a"): ALL,
            (EXTERNAL, "x/a"): ALL,
            # Isolated for egress with no egress rules.
            ("x/a", "x/b"): NONE,
            ("x/a", EXTERNAL): NONE,
        },
    )


def test_egress_rules_ignored_when_policy_types_is_ingress() -> None:
    state = build(
        """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: ingress-only, namespace: x}
        spec:
          podSelector: {matchLabels: {pod: a}}
          policyTypes: [Ingress]
          egress:
          - to: [{podSelector: {matchLabels: {pod: b}}}]
        """,
        model=True,
    )
    assert_conns(
        state,
        {
            ("x/a", "x/c"): ALL,
            ("x/a", "y/c"): ALL,
            ("x/a", EXTERNAL): ALL,
            ("x/b", "x/a"): NONE,
        },
    )


@pytest.mark.parametrize("ingress", ["", "ingress: []"])
def test_ingress_policy_type_without_rules_denies_all(ingress: str) -> None:
    state = build(
        f"""
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {{name: deny-a, namespace: x}}
        spec:
          podSelector: {{matchLabels: {{pod: a}}}}
          policyTypes: [Ingress]
          {ingress}
        """,
        model=True,
    )
    assert_conns(
        state,
        {
            ("x/b", "x/a"): NONE,
            ("y/a", "x/a"): NONE,
            (EXTERNAL, "x/a"): NONE,
            ("x/a", "x/b"): ALL,
            ("y/a", "x/b"): ALL,
        },
    )


# -- rules and peers --------------------------------------------------------------------------


def test_rules_are_ored_and_their_ports_add_up() -> None:
    state = build(
        """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: two-rules, namespace: x}
        spec:
          podSelector: {matchLabels: {pod: a}}
          ingress:
          - from: [{podSelector: {matchLabels: {pod: b}}}]
            ports: [{protocol: TCP, port: 80}]
          - from: [{podSelector: {}}]
            ports: [{protocol: UDP, port: 81}]
        """,
        model=True,
    )
    assert_conns(
        state,
        {
            ("x/b", "x/a"): "TCP 80,UDP 81",  # matches both rules
            ("x/c", "x/a"): "UDP 81",  # matches the second only
            ("y/b", "x/a"): NONE,  # podSelector-only peers stay in x
        },
    )


def test_peers_are_ored_within_a_rule() -> None:
    state = build(
        """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: two-peers, namespace: x}
        spec:
          podSelector: {matchLabels: {pod: a}}
          ingress:
          - from:
            - podSelector: {matchLabels: {pod: b}}
            - namespaceSelector: {matchLabels: {ns: y}}
        """,
        model=True,
    )
    assert_conns(
        state,
        {
            ("x/b", "x/a"): ALL,
            ("y/a", "x/a"): ALL,
            ("y/c", "x/a"): ALL,
            ("x/c", "x/a"): NONE,
            ("z/b", "x/a"): NONE,
            (EXTERNAL, "x/a"): NONE,
        },
    )


def test_namespace_and_pod_selector_in_one_peer_are_anded() -> None:
    state = build(
        """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: and-peer, namespace: x}
        spec:
          podSelector: {matchLabels: {pod: a}}
          ingress:
          - from:
            - namespaceSelector: {matchLabels: {ns: y}}
              podSelector: {matchLabels: {pod: b}}
        """,
        model=True,
    )
    assert_conns(
        state,
        {
            ("y/b", "x/a"): ALL,
            ("y/a", "x/a"): NONE,
            ("y/c", "x/a"): NONE,
            ("x/b", "x/a"): NONE,
            ("z/b", "x/a"): NONE,
        },
    )


def test_namespace_and_pod_selector_as_two_peers_are_ored() -> None:
    state = build(
        """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: or-peers, namespace: x}
        spec:
          podSelector: {matchLabels: {pod: a}}
          ingress:
          - from:
            - namespaceSelector: {matchLabels: {ns: y}}
            - podSelector: {matchLabels: {pod: b}}
        """,
        model=True,
    )
    assert_conns(
        state,
        {
            ("y/b", "x/a"): ALL,
            ("y/a", "x/a"): ALL,
            ("y/c", "x/a"): ALL,
            ("x/b", "x/a"): ALL,
            ("x/c", "x/a"): NONE,
            ("z/b", "x/a"): NONE,
        },
    )


def test_pod_selector_only_peer_means_policy_namespace() -> None:
    state = build(
        """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: same-ns, namespace: y}
        spec:
          podSelector: {matchLabels: {pod: a}}
          policyTypes: [Ingress, Egress]
          ingress:
          - from: [{podSelector: {matchLabels: {pod: b}}}]
          egress:
          - to: [{podSelector: {matchLabels: {pod: c}}}]
        """,
        model=True,
    )
    assert_conns(
        state,
        {
            ("y/b", "y/a"): ALL,
            ("x/b", "y/a"): NONE,
            ("z/b", "y/a"): NONE,
            ("y/a", "y/c"): ALL,
            ("y/a", "x/c"): NONE,
            ("y/a", "z/c"): NONE,
        },
    )


def test_empty_namespace_selector_means_all_namespaces() -> None:
    state = build(
        """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: all-ns, namespace: x}
        spec:
          podSelector: {matchLabels: {pod: a}}
          ingress:
          - from: [{namespaceSelector: {}}]
            ports: [{port: 80}]
          - from: [{namespaceSelector: {}, podSelector: {matchLabels: {pod: b}}}]
            ports: [{port: 81}]
        """,
        model=True,
    )
    assert_conns(
        state,
        {
            ("x/c", "x/a"): "TCP 80",
            ("y/a", "x/a"): "TCP 80",
            ("z/c", "x/a"): "TCP 80",
            ("y/b", "x/a"): "TCP 80-81",
            ("z/b", "x/a"): "TCP 80-81",
            # Every pod in every namespace, but no external address.
            (EXTERNAL, "x/a"): NONE,
        },
    )


@pytest.mark.parametrize("rule", ["{}", "{from: []}", "{from: null}"])
def test_empty_or_missing_from_means_everyone(rule: str) -> None:
    state = build(
        f"""
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {{name: everyone, namespace: x}}
        spec:
          podSelector: {{matchLabels: {{pod: a}}}}
          ingress:
          - {rule}
        """,
        model=True,
    )
    assert_conns(
        state,
        {
            ("x/b", "x/a"): ALL,
            ("z/c", "x/a"): ALL,
            (EXTERNAL, "x/a"): ALL,
            ("2001:db8::1", "x/a"): ALL,
        },
    )


@pytest.mark.parametrize("rule", ["{}", "{to: []}"])
def test_empty_or_missing_to_means_everywhere(rule: str) -> None:
    state = build(
        f"""
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {{name: everywhere, namespace: x}}
        spec:
          podSelector: {{matchLabels: {{pod: a}}}}
          policyTypes: [Egress]
          egress:
          - {rule}
        """,
        model=True,
    )
    assert_conns(state, {("x/a", "y/b"): ALL, ("x/a", EXTERNAL): ALL})


@pytest.mark.parametrize("ports", ["", "ports: []", "ports: null"])
def test_empty_or_missing_ports_means_all_ports_and_protocols(ports: str) -> None:
    state = build(
        f"""
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {{name: all-ports, namespace: x}}
        spec:
          podSelector: {{matchLabels: {{pod: a}}}}
          ingress:
          - from: [{{podSelector: {{matchLabels: {{pod: b}}}}}}]
            {ports}
        """,
        model=True,
    )
    assert_conns(state, {("x/b", "x/a"): ALL, ("x/c", "x/a"): NONE})
    for protocol, port in [("TCP", 1), ("UDP", 53), ("SCTP", 65535), ("TCP", 5000)]:
        assert allows(state, "x/b", "x/a", port, protocol)


def test_port_entry_without_port_allows_every_port_of_its_protocol() -> None:
    state = build(
        """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: protocol-only, namespace: x}
        spec:
          podSelector: {matchLabels: {pod: a}}
          ingress:
          - ports: [{protocol: UDP}, {}]
        """,
        model=True,
    )
    # `{}` defaults to protocol TCP with no port: every TCP port.
    assert conns(state, "x/b", "x/a") == "TCP 1-65535,UDP 1-65535"
    assert not allows(state, "x/b", "x/a", 80, "SCTP")


def test_stacked_policies_union() -> None:
    state = build(
        """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: deny-all, namespace: x}
        spec:
          podSelector: {}
          policyTypes: [Ingress]
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: b-tcp-80, namespace: x}
        spec:
          podSelector: {matchLabels: {pod: a}}
          ingress:
          - from: [{podSelector: {matchLabels: {pod: b}}}]
            ports: [{port: 80}]
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: more, namespace: x}
        spec:
          podSelector: {matchExpressions: [{key: pod, operator: In, values: [a, c]}]}
          ingress:
          - from: [{podSelector: {matchLabels: {pod: b}}}]
            ports: [{protocol: UDP, port: 53}]
          - from: [{podSelector: {matchLabels: {pod: c}}}]
            ports: [{port: 80}]
        """,
        model=True,
    )
    assert_conns(
        state,
        {
            ("x/b", "x/a"): "TCP 80,UDP 53",
            ("x/c", "x/a"): "TCP 80",
            ("y/b", "x/a"): NONE,
            ("x/b", "x/c"): "UDP 53",
            ("x/a", "x/b"): NONE,  # only deny-all selects x/b
        },
    )


def test_egress_allow_all_policy_takes_precedence_over_narrower_one() -> None:
    state = build(
        """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: only-80, namespace: x}
        spec:
          podSelector: {matchLabels: {pod: a}}
          policyTypes: [Egress]
          egress:
          - ports: [{port: 80}]
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: allow-all, namespace: x}
        spec:
          podSelector: {matchLabels: {pod: a}}
          policyTypes: [Egress]
          egress:
          - {}
        """,
        model=True,
    )
    assert_conns(state, {("x/a", "y/b"): ALL, ("x/a", EXTERNAL): ALL})


def test_ip_overlapping_cidr_and_except_is_allowed_by_another_policy() -> None:
    state = build(
        """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: except-b, namespace: x}
        spec:
          podSelector: {matchLabels: {pod: a}}
          policyTypes: [Egress]
          egress:
          - to: [{ipBlock: {cidr: 192.168.2.0/24, except: [192.168.2.2/32]}}]
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: only-b, namespace: x}
        spec:
          podSelector: {matchLabels: {pod: a}}
          policyTypes: [Egress]
          egress:
          - to: [{ipBlock: {cidr: 192.168.2.2/32}}]
            ports: [{port: 80}]
        """,
        model=True,
    )
    assert_conns(
        state,
        {
            ("x/a", "y/a"): ALL,
            ("x/a", "y/b"): "TCP 80",  # excepted by one policy, allowed by the other
            ("x/a", "y/c"): ALL,
            ("x/a", "192.168.2.2"): "TCP 80",
            ("x/a", "192.168.2.200"): ALL,
            ("x/a", "z/a"): NONE,
        },
    )


def test_connection_needs_source_egress_and_destination_ingress() -> None:
    state = build(
        """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: a-egress, namespace: x}
        spec:
          podSelector: {matchLabels: {pod: a}}
          policyTypes: [Egress]
          egress:
          - to: [{namespaceSelector: {matchLabels: {ns: y}}}]
            ports: [{port: 80}, {port: 81}]
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: b-ingress, namespace: y}
        spec:
          podSelector: {matchLabels: {pod: b}}
          policyTypes: [Ingress]
          ingress:
          - from: [{namespaceSelector: {matchLabels: {ns: x}}}]
            ports: [{port: 81}, {port: 82}]
        """,
        model=True,
    )
    assert_conns(
        state,
        {
            ("x/a", "y/b"): "TCP 81",  # {80,81} & {81,82}
            ("x/a", "y/a"): "TCP 80-81",  # y/a is not isolated for ingress
            ("x/b", "y/b"): "TCP 81-82",  # x/b is not isolated for egress
            ("x/a", "z/b"): NONE,  # egress denies
            ("z/a", "y/b"): NONE,  # ingress denies
        },
    )


# -- label selectors --------------------------------------------------------------------------

SELECTOR_CLUSTER = """
apiVersion: v1
kind: Pod
metadata: {name: target, namespace: x, labels: {role: target}}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: x, labels: {app: web, tier: fe}}
---
apiVersion: v1
kind: Pod
metadata: {name: p2, namespace: x, labels: {app: db}}
---
apiVersion: v1
kind: Pod
metadata: {name: p3, namespace: x}
---
apiVersion: v1
kind: Pod
metadata: {name: p4, namespace: x, labels: {app: cache, tier: be}}
"""


@pytest.mark.parametrize(
    ("expression", "allowed"),
    [
        ("{key: app, operator: In, values: [web, db]}", {"p1", "p2"}),
        # NotIn also matches pods that lack the key altogether.
        ("{key: app, operator: NotIn, values: [web]}", {"p2", "p3", "p4"}),
        ("{key: tier, operator: Exists}", {"p1", "p4"}),
        ("{key: tier, operator: DoesNotExist}", {"p2", "p3"}),
    ],
)
def test_match_expressions_in_peers(expression: str, allowed: set[str]) -> None:
    state = build(
        SELECTOR_CLUSTER
        + f"""
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: expr, namespace: x}}
spec:
  podSelector: {{matchLabels: {{role: target}}}}
  ingress:
  - from: [{{podSelector: {{matchExpressions: [{expression}]}}}}]
"""
    )
    actual = {
        src for src in ("p1", "p2", "p3", "p4") if conns(state, f"x/{src}", "x/target") == ALL
    }
    assert actual == allowed
    for src in {"p1", "p2", "p3", "p4"} - allowed:
        assert conns(state, f"x/{src}", "x/target") == NONE
    listed = connlist(state)
    assert {
        src for src in ("p1", "p2", "p3", "p4") if (f"x/{src}[Pod]", "x/target[Pod]") in listed
    } == (allowed)


def test_match_expressions_combine_with_match_labels_as_and() -> None:
    state = build(
        SELECTOR_CLUSTER
        + """
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: expr, namespace: x}
spec:
  podSelector: {matchLabels: {role: target}}
  ingress:
  - from:
    - podSelector:
        matchLabels: {tier: be}
        matchExpressions: [{key: app, operator: NotIn, values: [web, db]}]
"""
    )
    assert_conns(
        state,
        {
            ("x/p4", "x/target"): ALL,
            ("x/p1", "x/target"): NONE,
            ("x/p2", "x/target"): NONE,
            ("x/p3", "x/target"): NONE,
        },
    )


def test_not_in_pod_selector_isolates_pods_lacking_the_key() -> None:
    state = build(
        SELECTOR_CLUSTER
        + """
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: not-web, namespace: x}
spec:
  podSelector: {matchExpressions: [{key: app, operator: NotIn, values: [web]}]}
  policyTypes: [Ingress]
"""
    )
    assert_conns(
        state,
        {
            ("x/p2", "x/p1"): ALL,  # app=web: not selected
            ("x/p1", "x/p2"): NONE,
            ("x/p1", "x/p3"): NONE,  # no app label: selected
            ("x/p1", "x/target"): NONE,
            ("x/p1", "x/p4"): NONE,
        },
    )
    listed = connlist(state)
    assert {dst for src, dst in listed if src == "x/p2[Pod]"} == {
        "x/p1[Pod]",
        "0.0.0.0-255.255.255.255[External]",
    }


def test_match_expressions_in_namespace_selector() -> None:
    state = build(
        """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: not-x, namespace: x}
        spec:
          podSelector: {matchLabels: {pod: a}}
          ingress:
          - from:
            - namespaceSelector:
                matchExpressions: [{key: ns, operator: NotIn, values: [x, y]}]
        """,
        model=True,
    )
    assert_conns(
        state,
        {("z/a", "x/a"): ALL, ("z/c", "x/a"): ALL, ("x/b", "x/a"): NONE, ("y/b", "x/a"): NONE},
    )


# -- ports ------------------------------------------------------------------------------------


def test_protocols_are_isolated_from_each_other() -> None:
    state = build(
        """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: tcp-80, namespace: x}
        spec:
          podSelector: {matchLabels: {pod: a}}
          ingress:
          - ports: [{protocol: TCP, port: 80}]
        """,
        model=True,
    )
    assert conns(state, "x/b", "x/a") == "TCP 80"
    assert allows(state, "x/b", "x/a", 80, "TCP")
    assert not allows(state, "x/b", "x/a", 80, "UDP")
    assert not allows(state, "x/b", "x/a", 80, "SCTP")
    assert not allows(state, "x/b", "x/a", 81, "TCP")


def test_sctp() -> None:
    state = build(
        """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: sctp, namespace: x}
        spec:
          podSelector: {matchLabels: {pod: a}}
          ingress:
          - from: [{namespaceSelector: {matchLabels: {ns: y}}}]
            ports: [{protocol: SCTP, port: 81}]
        """,
        model=True,
    )
    assert conns(state, "y/b", "x/a") == "SCTP 81"
    assert allows(state, "y/b", "x/a", 81, "SCTP")
    assert not allows(state, "y/b", "x/a", 81, "TCP")
    assert not allows(state, "y/b", "x/a", 80, "SCTP")
    assert conns(state, "x/b", "x/a") == NONE


def test_end_port_range_is_inclusive() -> None:
    state = build(
        """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: range, namespace: x}
        spec:
          podSelector: {matchLabels: {pod: a}}
          policyTypes: [Egress]
          egress:
          - ports: [{protocol: UDP, port: 8080, endPort: 8090}, {port: 30000, endPort: 30000}]
        """,
        model=True,
    )
    assert conns(state, "x/a", "y/b") == "TCP 30000,UDP 8080-8090"
    assert allows(state, "x/a", "y/b", 8080, "UDP")
    assert allows(state, "x/a", "y/b", 8085, "UDP")
    assert allows(state, "x/a", "y/b", 8090, "UDP")
    assert not allows(state, "x/a", "y/b", 8079, "UDP")
    assert not allows(state, "x/a", "y/b", 8091, "UDP")
    assert not allows(state, "x/a", "y/b", 8085, "TCP")
    assert allows(state, "x/a", EXTERNAL, 30000, "TCP")
    assert not allows(state, "x/a", EXTERNAL, 30001, "TCP")


def test_named_port_resolves_on_destination_pod() -> None:
    state = build(
        """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: named, namespace: x}
        spec:
          podSelector: {matchLabels: {pod: a}}
          ingress:
          - ports: [{port: serve-81-tcp}, {protocol: UDP, port: serve-80-udp}]
        """,
        model=True,
    )
    assert conns(state, "x/b", "x/a") == "TCP 81,UDP 80"
    assert conns(state, EXTERNAL, "x/a") == "TCP 81,UDP 80"


def test_named_port_with_other_protocol_allows_nothing() -> None:
    state = build(
        """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: wrong-protocol, namespace: x}
        spec:
          podSelector: {matchLabels: {pod: a}}
          ingress:
          # serve-80-udp is a UDP port; the entry's protocol defaults to TCP.
          - ports: [{port: serve-80-udp}]
          - ports: [{protocol: SCTP, port: serve-81-tcp}]
        """,
        model=True,
    )
    assert conns(state, "x/b", "x/a") == NONE
    assert not allows(state, "x/b", "x/a", 80, "UDP")
    assert not allows(state, "x/b", "x/a", 80, "TCP")


NAMED_PORT_CLUSTER = """
apiVersion: v1
kind: Pod
metadata: {name: d1, namespace: x, labels: {app: srv}}
spec:
  containers:
  - name: main
    ports: [{name: http, containerPort: 8080}, {name: dns, containerPort: 53, protocol: UDP}]
---
apiVersion: v1
kind: Pod
metadata: {name: d2, namespace: x, labels: {app: srv}}
spec:
  containers:
  - name: main
    ports: [{name: http, containerPort: 9090}]
---
apiVersion: v1
kind: Pod
metadata: {name: d3, namespace: x, labels: {app: other}}
spec:
  containers:
  - name: main
    ports: [{name: web, containerPort: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: x, labels: {app: client}}
"""


def test_same_port_name_on_different_numbers_resolves_per_pod() -> None:
    state = build(
        NAMED_PORT_CLUSTER
        + """
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: http-in, namespace: x}
spec:
  podSelector: {}
  ingress:
  - ports: [{port: http}, {protocol: UDP, port: dns}]
"""
    )
    assert_conns(
        state,
        {
            ("x/client", "x/d1"): "TCP 8080,UDP 53",
            ("x/client", "x/d2"): "TCP 9090",
            ("x/client", "x/d3"): NONE,  # no port called http or dns
        },
    )
    listed = connlist(state)
    assert listed[("x/client[Pod]", "x/d1[Pod]")] == "TCP 8080,UDP 53"
    assert listed[("x/client[Pod]", "x/d2[Pod]")] == "TCP 9090"
    assert listed[("x/d2[Pod]", "x/d1[Pod]")] == "TCP 8080,UDP 53"
    assert ("x/client[Pod]", "x/d3[Pod]") not in listed


def test_named_port_in_egress_resolves_on_destination_pod() -> None:
    state = build(
        NAMED_PORT_CLUSTER
        + """
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-out, namespace: x}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {}}]
    ports: [{port: http}]
"""
    )
    assert_conns(
        state,
        {
            ("x/client", "x/d1"): "TCP 8080",
            ("x/client", "x/d2"): "TCP 9090",
            ("x/client", "x/d3"): NONE,
            ("x/d3", "x/d1"): ALL,  # not selected
        },
    )
    listed = connlist(state)
    assert listed[("x/client[Pod]", "x/d1[Pod]")] == "TCP 8080"
    assert listed[("x/client[Pod]", "x/d2[Pod]")] == "TCP 9090"
    assert ("x/client[Pod]", "x/d3[Pod]") not in listed


# -- ipBlock ----------------------------------------------------------------------------------


def test_ip_block_with_except_ipv4() -> None:
    state = build(
        """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: ipblock, namespace: x}
        spec:
          podSelector: {matchLabels: {pod: a}}
          policyTypes: [Ingress, Egress]
          ingress:
          - from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}]
          egress:
          - to: [{ipBlock: {cidr: 172.16.0.0/12, except: [172.16.5.0/24, 172.17.0.0/16]}}]
            ports: [{port: 443}]
        """,
        model=True,
    )
    assert_conns(
        state,
        {
            ("10.0.0.0", "x/a"): ALL,
            ("10.0.255.255", "x/a"): ALL,
            ("10.1.0.0", "x/a"): NONE,
            ("10.1.255.255", "x/a"): NONE,
            ("10.2.0.0", "x/a"): ALL,
            ("10.255.255.255", "x/a"): ALL,
            ("9.255.255.255", "x/a"): NONE,
            ("11.0.0.0", "x/a"): NONE,
            ("x/a", "172.16.0.1"): "TCP 443",
            ("x/a", "172.16.5.9"): NONE,
            ("x/a", "172.16.6.0"): "TCP 443",
            ("x/a", "172.17.3.3"): NONE,
            ("x/a", "172.31.255.255"): "TCP 443",
            ("x/a", "172.32.0.0"): NONE,
            ("x/a", "10.0.0.1"): NONE,
        },
    )


def test_ip_block_with_except_ipv6() -> None:
    state = build(
        """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: ipblock6, namespace: x}
        spec:
          podSelector: {matchLabels: {pod: a}}
          policyTypes: [Ingress, Egress]
          ingress:
          - from: [{ipBlock: {cidr: "2001:db8::/32", except: ["2001:db8:1::/48"]}}]
          egress:
          - to: [{ipBlock: {cidr: "fd00::/8"}}]
        """,
        model=True,
    )
    assert_conns(
        state,
        {
            ("2001:db8::1", "x/a"): ALL,
            ("2001:db8:2::1", "x/a"): ALL,
            ("2001:db8:1::5", "x/a"): NONE,
            ("2001:db9::1", "x/a"): NONE,
            ("10.0.0.1", "x/a"): NONE,  # other family
            ("x/a", "fd12:3456::1"): ALL,
            ("x/a", "fe80::1"): NONE,
            ("x/a", "8.8.8.8"): NONE,
        },
    )


def test_ip_block_matches_pod_addresses() -> None:
    state = build(
        """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: pods-by-ip, namespace: x}
        spec:
          podSelector: {matchLabels: {pod: a}}
          policyTypes: [Ingress, Egress]
          ingress:
          # namespace y's pods are 192.168.2.1-3; y/b is 192.168.2.2.
          - from: [{ipBlock: {cidr: 192.168.2.0/24, except: [192.168.2.2/32]}}]
          egress:
          - to: [{ipBlock: {cidr: 192.168.3.3/32}}]
        """,
        model=True,
    )
    assert_conns(
        state,
        {
            ("y/a", "x/a"): ALL,
            ("y/c", "x/a"): ALL,
            ("y/b", "x/a"): NONE,  # excepted
            ("x/b", "x/a"): NONE,  # 192.168.1.2 is outside
            ("z/b", "x/a"): NONE,
            ("x/a", "z/c"): ALL,
            ("x/a", "z/b"): NONE,
        },
    )


def test_ip_block_matches_any_address_of_a_dual_stack_pod() -> None:
    state = build(
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: dual, namespace: x}
        status:
          podIP: 10.244.0.5
          podIPs: [{ip: 10.244.0.5}, {ip: "fd00:10:244::5"}]
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: v4, namespace: x}
        status: {podIP: 10.244.0.6}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: target, namespace: x, labels: {role: target}}
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: v6-only, namespace: x}
        spec:
          podSelector: {matchLabels: {role: target}}
          ingress:
          - from: [{ipBlock: {cidr: "fd00:10:244::/64"}}]
        """
    )
    assert_conns(state, {("x/dual", "x/target"): ALL, ("x/v4", "x/target"): NONE})


# -- hostNetwork ------------------------------------------------------------------------------

HOST_NETWORK_CLUSTER = """
apiVersion: v1
kind: Pod
metadata: {name: h, namespace: x, labels: {pod: h}}
spec: {hostNetwork: true, nodeName: node-1}
status: {podIP: 172.18.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {pod: a}}
status: {podIP: 10.244.0.10}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {pod: b}}
status: {podIP: 10.244.0.11}
"""


def test_host_network_pod_as_policy_target() -> None:
    state = build(
        HOST_NETWORK_CLUSTER
        + """
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress]
"""
    )
    # "pod" reading: h is selected like any pod.
    assert_conns(state, {("x/b", "x/h"): NONE, ("x/b", "x/a"): NONE, ("x/h", "x/a"): NONE})
    # "node" reading: selectors never pick h, so it is not isolated.
    assert_conns(
        state,
        {("x/b", "x/h"): ALL, (EXTERNAL, "x/h"): ALL, ("x/b", "x/a"): NONE, ("x/h", "x/a"): NONE},
        host_network="node",
    )
    listed = connlist(state)
    assert ("x/b[Pod]", "x/h[Pod]") not in listed
    node = {
        (str(c.src), str(c.dst)): str(c.conns)
        for c in connectivity(state, ClusterMatrix(state, host_network="node"))
    }
    assert node[("x/b[Pod]", "x/h[Pod]")] == ALL
    assert ("x/b[Pod]", "x/a[Pod]") not in node


def test_host_network_pod_as_policy_peer() -> None:
    state = build(
        HOST_NETWORK_CLUSTER
        + """
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-from-h, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{podSelector: {matchLabels: {pod: h}}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-from-node, namespace: x}
spec:
  podSelector: {matchLabels: {pod: b}}
  ingress:
  - from: [{ipBlock: {cidr: 172.18.0.0/16}}]
"""
    )
    assert_conns(state, {("x/h", "x/a"): ALL, ("x/b", "x/a"): NONE, ("x/h", "x/b"): ALL})
    # "node" reading: the podSelector does not see h; its node address still matches ipBlocks.
    assert_conns(
        state,
        {("x/h", "x/a"): NONE, ("x/b", "x/a"): NONE, ("x/h", "x/b"): ALL},
        host_network="node",
    )
    node = {
        (str(c.src), str(c.dst)): str(c.conns)
        for c in connectivity(state, ClusterMatrix(state, host_network="node"))
    }
    assert ("x/h[Pod]", "x/a[Pod]") not in node
    assert node[("x/h[Pod]", "x/b[Pod]")] == ALL


# -- namespaces and workloads -----------------------------------------------------------------


def test_undeclared_namespace_gets_metadata_name_label() -> None:
    state = build(
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: p, namespace: prod}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: q, namespace: staging}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: t, namespace: other}
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: from-prod, namespace: other}
        spec:
          podSelector: {}
          ingress:
          - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: prod}}}]
        """
    )
    assert state.namespaces["prod"].labels == {"kubernetes.io/metadata.name": "prod"}
    assert_conns(state, {("prod/p", "other/t"): ALL, ("staging/q", "other/t"): NONE})


def test_declared_namespace_keeps_its_labels_and_gets_metadata_name() -> None:
    state = build(
        """
        apiVersion: v1
        kind: Namespace
        metadata: {name: prod, labels: {env: production}}
        """
    )
    assert state.namespaces["prod"].labels == {
        "env": "production",
        "kubernetes.io/metadata.name": "prod",
    }


def test_metadata_name_label_is_always_the_namespace_name() -> None:
    state = build(
        """
        apiVersion: v1
        kind: Namespace
        metadata: {name: prod, labels: {kubernetes.io/metadata.name: staging}}
        """
    )
    assert state.namespaces["prod"].labels["kubernetes.io/metadata.name"] == "prod"


def test_workloads_expand_to_pods_with_template_labels() -> None:
    state = build(
        """
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web, namespace: shop, labels: {not: template}}
        spec:
          replicas: 3
          selector: {matchLabels: {app: web}}
          template:
            metadata: {labels: {app: web}}
            spec:
              containers: [{name: web, ports: [{name: http, containerPort: 8080}]}]
        ---
        apiVersion: apps/v1
        kind: StatefulSet
        metadata: {name: db, namespace: shop}
        spec:
          replicas: 2
          template:
            metadata: {labels: {app: db}}
        ---
        apiVersion: apps/v1
        kind: DaemonSet
        metadata: {name: agent, namespace: shop}
        spec:
          template:
            metadata: {labels: {app: agent}}
        ---
        apiVersion: batch/v1
        kind: CronJob
        metadata: {name: report, namespace: shop}
        spec:
          schedule: "0 * * * *"
          jobTemplate:
            spec:
              template:
                metadata: {labels: {app: report}}
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: web, namespace: shop}
        spec:
          podSelector: {matchLabels: {app: web}}
          ingress:
          - from: [{podSelector: {matchLabels: {app: agent}}}]
            ports: [{port: http}]
          - from: [{podSelector: {matchLabels: {app: report}}}]
            ports: [{port: 9000}]
        """
    )
    by_owner: dict[tuple[str, str], list[dict[str, str]]] = {}
    for pod in state.pods:
        assert pod.namespace == "shop"
        by_owner.setdefault((pod.owner.kind, pod.owner.name), []).append(dict(pod.labels))
    assert by_owner == {
        ("Deployment", "web"): [{"app": "web"}] * 3,
        ("StatefulSet", "db"): [{"app": "db"}] * 2,
        ("DaemonSet", "agent"): [{"app": "agent"}],
        ("CronJob", "report"): [{"app": "report"}],
    }
    listed = connlist(state)
    assert listed[("shop/agent[DaemonSet]", "shop/web[Deployment]")] == "TCP 8080"
    assert listed[("shop/report[CronJob]", "shop/web[Deployment]")] == "TCP 9000"
    assert ("shop/db[StatefulSet]", "shop/web[Deployment]") not in listed
    assert listed[("shop/web[Deployment]", "shop/db[StatefulSet]")] == ALL
    # Each replica is governed by the policy.
    web_pods = [p.key for p in state.pods if p.owner.name == "web"]
    db_pod = next(p.key for p in state.pods if p.owner.name == "db")
    agent_pod = next(p.key for p in state.pods if p.owner.name == "agent")
    for web in web_pods:
        assert conns(state, agent_pod, web) == "TCP 8080"
        assert conns(state, db_pod, web) == NONE


def test_replicaset_owned_pods_are_listed_as_their_owner() -> None:
    state = build(
        """
        apiVersion: v1
        kind: Pod
        metadata:
          name: web-7d4b9-abcde
          namespace: x
          labels: {app: web}
          ownerReferences:
          - {apiVersion: apps/v1, kind: ReplicaSet, name: web-7d4b9, controller: true}
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: web-7d4b9-fghij
          namespace: x
          labels: {app: web}
          ownerReferences:
          - {apiVersion: apps/v1, kind: ReplicaSet, name: web-7d4b9, controller: true}
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: etcd-node-1
          namespace: x
          labels: {component: etcd}
          ownerReferences: [{apiVersion: v1, kind: Node, name: node-1, controller: true}]
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: helper
          namespace: x
          ownerReferences:
          - {apiVersion: apps/v1, kind: ReplicaSet, name: web-7d4b9, controller: false}
        """
    )
    listed = connlist(state)
    # Only a controller reference makes a pod part of a workload.
    assert listed.pop(("x/helper[Pod]", "x/web-7d4b9[ReplicaSet]")) == ALL
    assert {pair for pair in listed if "x/helper[Pod]" in pair} == {
        ("x/helper[Pod]", "x/etcd-node-1[Pod]"),
        ("x/helper[Pod]", WORLD),
        ("x/etcd-node-1[Pod]", "x/helper[Pod]"),
        ("x/web-7d4b9[ReplicaSet]", "x/helper[Pod]"),
        (WORLD, "x/helper[Pod]"),
    }
    listed = {pair: c for pair, c in listed.items() if "x/helper[Pod]" not in pair}
    assert listed == {
        ("x/web-7d4b9[ReplicaSet]", "x/etcd-node-1[Pod]"): ALL,
        ("x/etcd-node-1[Pod]", "x/web-7d4b9[ReplicaSet]"): ALL,
        ("x/web-7d4b9[ReplicaSet]", "0.0.0.0-255.255.255.255[External]"): ALL,
        ("x/etcd-node-1[Pod]", "0.0.0.0-255.255.255.255[External]"): ALL,
        ("0.0.0.0-255.255.255.255[External]", "x/web-7d4b9[ReplicaSet]"): ALL,
        ("0.0.0.0-255.255.255.255[External]", "x/etcd-node-1[Pod]"): ALL,
    }
    # The individual pods still exist for pair questions.
    assert find_pod(state, "x/web-7d4b9-abcde").owner.kind == "ReplicaSet"


# -- the connectivity list --------------------------------------------------------------------

TWO_PODS = """
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {pod: a}}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {pod: b}}
"""


def test_connlist_without_policies() -> None:
    assert connlist(build(TWO_PODS)) == {
        ("x/a[Pod]", "x/b[Pod]"): ALL,
        ("x/b[Pod]", "x/a[Pod]"): ALL,
        ("x/a[Pod]", WORLD): ALL,
        ("x/b[Pod]", WORLD): ALL,
        (WORLD, "x/a[Pod]"): ALL,
        (WORLD, "x/b[Pod]"): ALL,
    }


def test_connlist_protocol_order_and_port_ranges() -> None:
    state = build(
        TWO_PODS
        + """
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: ports, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{podSelector: {}}]
    ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 8080, endPort: 8090}
    - {protocol: TCP, port: 80}
    - {protocol: SCTP, port: 9000}
  - from: [{ipBlock: {cidr: 0.0.0.0/0}}]
    ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 80}]
"""
    )
    assert connlist(state) == {
        ("x/b[Pod]", "x/a[Pod]"): "SCTP 9000,TCP 80,8080-8090,UDP 53",
        ("x/a[Pod]", "x/b[Pod]"): ALL,
        ("x/a[Pod]", WORLD): ALL,
        ("x/b[Pod]", WORLD): ALL,
        (WORLD, "x/a[Pod]"): "TCP 80,UDP 53",
        (WORLD, "x/b[Pod]"): ALL,
    }


def test_connlist_cuts_external_ranges_at_ip_block_boundaries() -> None:
    state = build(
        TWO_PODS
        + """
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: ipblock, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}]
"""
    )
    assert connlist(state) == {
        ("x/a[Pod]", "x/b[Pod]"): ALL,
        ("x/a[Pod]", WORLD): ALL,
        ("x/b[Pod]", WORLD): ALL,
        ("10.0.0.0-10.0.255.255[External]", "x/a[Pod]"): ALL,
        ("10.2.0.0-10.255.255.255[External]", "x/a[Pod]"): ALL,
        ("0.0.0.0-9.255.255.255[External]", "x/b[Pod]"): ALL,
        ("10.0.0.0-10.0.255.255[External]", "x/b[Pod]"): ALL,
        ("10.1.0.0-10.1.255.255[External]", "x/b[Pod]"): ALL,
        ("10.2.0.0-10.255.255.255[External]", "x/b[Pod]"): ALL,
        ("11.0.0.0-255.255.255.255[External]", "x/b[Pod]"): ALL,
    }


def test_connlist_egress_ip_blocks_cut_destination_ranges() -> None:
    state = build(
        TWO_PODS
        + """
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: egress, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 192.168.0.0/16}}]
    ports: [{protocol: UDP, port: 53}]
  - to: [{ipBlock: {cidr: "fd00::/16"}}]
"""
    )
    assert connlist(state) == {
        ("x/b[Pod]", "x/a[Pod]"): ALL,
        (WORLD, "x/a[Pod]"): ALL,
        (WORLD, "x/b[Pod]"): ALL,
        ("x/a[Pod]", "192.168.0.0-192.168.255.255[External]"): "UDP 53",
        ("x/a[Pod]", "fd00::-fd00:ffff:ffff:ffff:ffff:ffff:ffff:ffff[External]"): ALL,
        ("x/b[Pod]", "0.0.0.0-192.167.255.255[External]"): ALL,
        ("x/b[Pod]", "192.168.0.0-192.168.255.255[External]"): ALL,
        ("x/b[Pod]", "192.169.0.0-255.255.255.255[External]"): ALL,
        ("x/b[Pod]", "::-fcff:ffff:ffff:ffff:ffff:ffff:ffff:ffff[External]"): ALL,
        ("x/b[Pod]", "fd00::-fd00:ffff:ffff:ffff:ffff:ffff:ffff:ffff[External]"): ALL,
        ("x/b[Pod]", "fd01::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff[External]"): ALL,
    }


def test_connlist_agrees_with_pair_verdicts_on_the_model() -> None:
    """The e2e model under a mixed policy set: the list equals the pair verdicts."""
    state = build(
        """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: mixed, namespace: x}
        spec:
          podSelector: {matchLabels: {pod: a}}
          policyTypes: [Ingress, Egress]
          ingress:
          - from:
            - namespaceSelector: {matchLabels: {ns: y}}
              podSelector: {matchLabels: {pod: b}}
            ports: [{port: serve-80-tcp}, {protocol: UDP, port: 81}]
          egress:
          - to: [{podSelector: {matchLabels: {pod: c}}}]
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: deny-z, namespace: z}
        spec:
          podSelector: {}
          policyTypes: [Ingress]
        """,
        model=True,
    )
    listed = connlist(state)
    for s, d in every_pair():
        assert listed.get((f"{s}[Pod]", f"{d}[Pod]"), NONE) == conns(state, s, d), (s, d)
    # Spot checks computed by hand.
    assert listed[("y/b[Pod]", "x/a[Pod]")] == "TCP 80,UDP 81"
    assert listed[("x/a[Pod]", "x/c[Pod]")] == ALL
    assert ("x/a[Pod]", "y/c[Pod]") not in listed
    assert ("x/b[Pod]", "z/a[Pod]") not in listed
