"""API-server validation: every rule gives an error naming file, object and field path.

Rules follow pkg/apis/networking/validation and pkg/apis/core/validation of Kubernetes;
an object breaking one is left out, and the others still count.
"""

from __future__ import annotations

import textwrap

import pytest

from conftest import assert_conns, build, model_yaml
from netfence.cluster.state import ClusterState
from netfence.k8s.loader import load_text
from netfence.problems import Problem

ALL = "All Connections"
NONE = "No Connections"


def policy_doc(spec: str, name: str = "p", namespace: str = "x") -> str:
    body = textwrap.indent(textwrap.dedent(spec).strip(), "  ")
    return (
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{body}\n"
    )


def problems(text: str, file: str = "bad.yaml") -> list[Problem]:
    return ClusterState.build(load_text(textwrap.dedent(text), file)).problems


def only_problem(text: str) -> Problem:
    found = problems(text)
    assert len(found) == 1, [str(p) for p in found]
    return found[0]


def check(problem: Problem, obj: str, path: str, *words: str) -> None:
    assert problem.severity == "error"
    assert problem.file == "bad.yaml"
    assert problem.obj == obj
    assert problem.path == path
    for word in words:
        assert word in problem.message, (word, problem.message)
    # The one-line rendering carries all of it.
    assert str(problem).startswith(f"bad.yaml: {obj}: {path}: error: ")


POLICY = "NetworkPolicy x/p"


# -- labels -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("-app", ["'-app'", "name part", "alphanumeric"]),
        ("app-", ["'app-'", "name part"]),
        ("my app", ["'my app'", "name part"]),
        ("a" * 64, ["name part", "63 characters"]),
        ("/app", ["'/app'", "prefix part must be non-empty"]),
        ("example.com/", ["name part must be non-empty"]),
        ("Example.com/app", ["'Example.com/app'", "prefix part", "lower case"]),
        ("a/b/c", ["'a/b/c'", "prefix part"]),
    ],
)
def test_invalid_label_key(key: str, words: list[str]) -> None:
    problem = only_problem(
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: a, namespace: x, labels: {{"{key}": v}}}}
        """
    )
    check(problem, "Pod x/a", "metadata.labels", "key", *words)


@pytest.mark.parametrize("value", ["web server", "-web", "web-", "a" * 64, "web/server", "ünïcode"])
def test_invalid_label_value(value: str) -> None:
    problem = only_problem(
        f"""
        apiVersion: v1
        kind: Namespace
        metadata: {{name: prod, labels: {{app: "{value}"}}}}
        """
    )
    assert problem.obj == "Namespace prod"
    assert problem.path.startswith("metadata.labels")
    assert "app" in problem.path
    assert repr(value) in problem.message
    assert ("63 characters" if len(value) > 63 else "valid label value") in problem.message


def test_valid_labels_give_no_problem() -> None:
    assert (
        problems(
            """
            apiVersion: v1
            kind: Pod
            metadata:
              name: a
              namespace: x
              labels:
                app: web
                app.kubernetes.io/name: web_1.2-x
                example.com/empty: ""
                A: B
                k8s.io/x: Z9
            """
        )
        == []
    )


def test_invalid_label_in_selector_and_workload_template() -> None:
    found = problems(
        policy_doc("podSelector: {matchLabels: {app: web server}}")
        + "---\n"
        + """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: x}
spec:
  template:
    metadata: {labels: {"bad key": web}}
"""
    )
    assert [(p.obj, p.path) for p in found] == [
        (POLICY, "spec.podSelector.matchLabels['app']"),
        ("Deployment x/web", "spec.template.metadata.labels"),
    ]
    assert "'web server'" in found[0].message
    assert "'bad key'" in found[1].message


def test_label_map_written_as_string_shows_the_map_form() -> None:
    problem = only_problem(policy_doc("podSelector: {matchLabels: app=web-server}"))
    check(problem, POLICY, "spec.podSelector.matchLabels", "app: web-server", "map")
    problem = only_problem("kind: Pod\nmetadata: {name: a, namespace: x, labels: tier=db}\n")
    check(problem, "Pod x/a", "metadata.labels", "tier: db")


def test_label_value_that_is_not_a_string() -> None:
    problem = only_problem("kind: Pod\nmetadata: {name: a, namespace: x, labels: {version: 1}}\n")
    check(problem, "Pod x/a", "metadata.labels.version", "must be a string", '"1"')


# -- selectors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "field", "words"),
    [
        ("{key: app, operator: in, values: [a]}", "operator", ["'in'", "In, NotIn"]),
        ("{key: app, operator: Equals, values: [a]}", "operator", ["'Equals'", "Exists"]),
        ("{key: app, operator: In}", "values", ["must be specified", "In"]),
        ("{key: app, operator: NotIn, values: []}", "values", ["must be specified", "NotIn"]),
        ("{key: app, operator: Exists, values: [a]}", "values", ["may not be specified"]),
        ("{key: app, operator: DoesNotExist, values: [a]}", "values", ["DoesNotExist"]),
        ("{key: app, operator: In, values: [ok, 'not ok']}", "values[1]", ["'not ok'"]),
        ("{key: 'bad key', operator: Exists}", "key", ["'bad key'"]),
    ],
)
def test_invalid_selector_requirement(expression: str, field: str, words: list[str]) -> None:
    problem = only_problem(policy_doc(f"podSelector: {{matchExpressions: [{expression}]}}"))
    check(problem, POLICY, f"spec.podSelector.matchExpressions[0].{field}", *words)


def test_invalid_selector_in_peers() -> None:
    found = problems(
        policy_doc(
            """
            ingress:
            - from:
              - namespaceSelector: {matchExpressions: [{key: ns, operator: exists}]}
            egress:
            - to:
              - podSelector: {matchExpressions: [{key: app, operator: In, values: []}]}
            """
        )
    )
    assert [p.path for p in found] == [
        "spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].operator",
        "spec.egress[0].to[0].podSelector.matchExpressions[0].values",
    ]
    assert all(p.obj == POLICY and p.file == "bad.yaml" for p in found)


def test_valid_selectors_give_no_problem() -> None:
    assert (
        problems(
            policy_doc(
                """
                podSelector:
                  matchLabels: {app: web}
                  matchExpressions:
                  - {key: tier, operator: In, values: [fe, be]}
                  - {key: env, operator: NotIn, values: [dev]}
                  - {key: team, operator: Exists}
                  - {key: legacy, operator: DoesNotExist}
                """
            )
        )
        == []
    )


# -- peers and ipBlocks -----------------------------------------------------------------------


@pytest.mark.parametrize("other", ["podSelector", "namespaceSelector"])
def test_ip_block_with_selector_in_one_peer(other: str) -> None:
    problem = only_problem(
        policy_doc(f"ingress:\n- from: [{{ipBlock: {{cidr: 10.0.0.0/8}}, {other}: {{}}}}]")
    )
    check(problem, POLICY, "spec.ingress[0].from[0]", "ipBlock", other)


def test_ip_block_with_selector_in_egress_peer() -> None:
    problem = only_problem(
        policy_doc("egress:\n- to: [{podSelector: {}}, {ipBlock: {cidr: '::/0'}, podSelector: {}}]")
    )
    check(problem, POLICY, "spec.egress[0].to[1]", "ipBlock", "podSelector")


def test_empty_peer() -> None:
    problem = only_problem(policy_doc("ingress:\n- from: [{podSelector: {}}, {}]"))
    check(problem, POLICY, "spec.ingress[0].from[1]", "must specify a peer")


@pytest.mark.parametrize(
    "cidr", ["10.0.0.0", "10.0.0.0/33", "300.0.0.0/8", "fd00::/129", "not-an-ip/8", "10.0.0.0/"]
)
def test_invalid_cidr(cidr: str) -> None:
    problem = only_problem(policy_doc(f'ingress:\n- from: [{{ipBlock: {{cidr: "{cidr}"}}}}]'))
    check(problem, POLICY, "spec.ingress[0].from[0].ipBlock.cidr", repr(cidr), "not a valid CIDR")


@pytest.mark.parametrize(
    "hole",
    [
        "10.1.0.0/24",  # outside
        "10.0.0.0/16",  # equal to cidr
        "10.0.0.0/8",  # wider
        "fd00::/64",  # other family
    ],
)
def test_except_outside_cidr(hole: str) -> None:
    problem = only_problem(
        policy_doc(
            f'egress:\n- to: [{{ipBlock: {{cidr: 10.0.0.0/16, except: [10.0.1.0/24, "{hole}"]}}}}]'
        )
    )
    check(
        problem,
        POLICY,
        "spec.egress[0].to[0].ipBlock.except[1]",
        hole,
        "strict subset",
        "10.0.0.0/16",
    )


def test_except_not_a_cidr() -> None:
    problem = only_problem(
        policy_doc("ingress:\n- from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.2.3]}}]")
    )
    check(problem, POLICY, "spec.ingress[0].from[0].ipBlock.except[0]", "'10.1.2.3'", "CIDR")


def test_valid_ip_blocks_give_no_problem() -> None:
    assert (
        problems(
            policy_doc(
                """
                ingress:
                - from:
                  - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16, 10.2.3.4/32]}
                  - ipBlock: {cidr: "fd00::/8", except: ["fd00:1::/32"]}
                  - ipBlock: {cidr: 0.0.0.0/0}
                """
            )
        )
        == []
    )


# -- ports ------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["tcp", "ICMP", "Udp", "HTTP"])
def test_invalid_protocol(protocol: str) -> None:
    problem = only_problem(
        policy_doc(f"ingress:\n- ports: [{{port: 80}}, {{protocol: {protocol}, port: 80}}]")
    )
    check(problem, POLICY, "spec.ingress[0].ports[1].protocol", repr(protocol), "TCP")


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_port_number_out_of_range(port: int) -> None:
    problem = only_problem(policy_doc(f"egress:\n- ports: [{{port: {port}}}]"))
    check(problem, POLICY, "spec.egress[0].ports[0].port", str(port), "between 1 and 65535")


def test_end_port_out_of_range() -> None:
    problem = only_problem(policy_doc("ingress:\n- ports: [{port: 80, endPort: 65536}]"))
    check(problem, POLICY, "spec.ingress[0].ports[0].endPort", "65536", "between 1 and 65535")


def test_end_port_with_named_port() -> None:
    problem = only_problem(policy_doc("ingress:\n- ports: [{port: http, endPort: 90}]"))
    check(problem, POLICY, "spec.ingress[0].ports[0].endPort", "named port", "'http'")


def test_end_port_below_port() -> None:
    problem = only_problem(policy_doc("ingress:\n- ports: [{port: 80, endPort: 79}]"))
    check(problem, POLICY, "spec.ingress[0].ports[0].endPort", "79", "greater than or equal", "80")


def test_end_port_without_port() -> None:
    problem = only_problem(policy_doc("egress:\n- ports: [{protocol: UDP, endPort: 80}]"))
    check(problem, POLICY, "spec.egress[0].ports[0].endPort", "may not be specified")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("HTTP", "lower-case"),
        ("http_alt", "lower-case"),
        ("http.alt", "lower-case"),
        ("a-very-long-port-name", "15 characters"),
        ("123", "at least one letter"),
        ("-http", "begin or end with a hyphen"),
        ("http-", "begin or end with a hyphen"),
        ("ht--tp", "consecutive hyphens"),
    ],
)
def test_invalid_named_port(name: str, reason: str) -> None:
    found = problems(policy_doc(f'ingress:\n- ports: [{{port: "{name}"}}]'))
    assert found, name
    for problem in found:
        check(problem, POLICY, "spec.ingress[0].ports[0].port", repr(name))
    assert any(reason in p.message for p in found), [p.message for p in found]


def test_port_of_wrong_type() -> None:
    problem = only_problem(policy_doc("ingress:\n- ports: [{port: true}]"))
    check(problem, POLICY, "spec.ingress[0].ports[0].port", "port number or a port name")
    problem = only_problem(policy_doc("ingress:\n- ports: [{port: 80, endPort: '90'}]"))
    check(problem, POLICY, "spec.ingress[0].ports[0].endPort", "integer")


def test_valid_ports_give_no_problem() -> None:
    assert (
        problems(
            policy_doc(
                """
                ingress:
                - ports:
                  - {port: 1}
                  - {port: 65535, protocol: SCTP}
                  - {port: 80, endPort: 80}
                  - {port: 8080, endPort: 65535, protocol: UDP}
                  - {port: http}
                  - {port: dns-tcp1, protocol: TCP}
                  - {port: a23456789012345}
                  - {protocol: UDP}
                """
            )
        )
        == []
    )


def test_invalid_container_ports() -> None:
    found = problems(
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: a, namespace: x}
        spec:
          containers:
          - name: main
            ports:
            - {containerPort: 0}
            - {containerPort: 80, protocol: tcp}
            - {containerPort: 81, name: Web}
            - {containerPort: 82, name: web}
            - {containerPort: 83, name: web}
        """
    )
    assert [p.path for p in found] == [
        "spec.containers[0].ports[0].containerPort",
        "spec.containers[0].ports[1].protocol",
        "spec.containers[0].ports[2].name",
        "spec.containers[0].ports[4].name",
    ]
    assert all(p.obj == "Pod x/a" and p.file == "bad.yaml" for p in found)
    assert "between 1 and 65535" in found[0].message
    assert "'tcp'" in found[1].message
    assert "'Web'" in found[2].message
    assert "duplicate" in found[3].message and "'web'" in found[3].message


# -- policyTypes, names, unknown fields -------------------------------------------------------


@pytest.mark.parametrize("value", ["ingress", "Both", "EGRESS"])
def test_policy_types_bad_value(value: str) -> None:
    problem = only_problem(policy_doc(f"podSelector: {{}}\npolicyTypes: [Egress, {value}]"))
    check(problem, POLICY, "spec.policyTypes[1]", repr(value), "Ingress", "Egress")


def test_policy_types_too_many() -> None:
    problem = only_problem(policy_doc("policyTypes: [Ingress, Egress, Ingress]"))
    check(problem, POLICY, "spec.policyTypes", "two")


@pytest.mark.parametrize(
    ("field", "path", "suggestion"),
    [
        ("podselector: {}", "spec.podselector", "podSelector"),
        ("policytypes: [Ingress]", "spec.policytypes", "policyTypes"),
        ("ingres: []", "spec.ingres", "ingress"),
        ("podSelector: {matchlabels: {a: b}}", "spec.podSelector.matchlabels", "matchLabels"),
    ],
)
def test_unknown_field_suggests_the_right_one(field: str, path: str, suggestion: str) -> None:
    problem = only_problem(policy_doc(field))
    check(problem, POLICY, path, "unknown field", f"`{suggestion}`")


def test_unknown_podselector_field_does_not_select_every_pod() -> None:
    state = build(
        model_yaml()
        + "---\n"
        + policy_doc("podselector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]"),
        allow_problems=True,
    )
    assert [p.path for p in state.problems] == ["spec.podselector"]
    assert state.policies == []
    assert_conns(state, {("x/a", "x/b"): ALL, ("x/b", "x/a"): ALL})


def test_misspelt_spec_is_an_error_not_a_default_deny() -> None:
    state = build(
        model_yaml()
        + "---\n"
        + policy_doc("podSelector: {matchLabels: {pod: a}}").replace("spec:", "sepc:"),
        allow_problems=True,
    )
    assert [(p.severity, p.obj) for p in state.problems] == [("error", POLICY)]
    assert "sepc" in state.problems[0].path
    assert state.policies == []
    assert_conns(state, {("x/b", "x/c"): ALL})


@pytest.mark.parametrize(
    ("doc", "obj", "path", "words"),
    [
        (
            "kind: Namespace\nmetadata: {name: Prod}\n",
            "Namespace Prod",
            "metadata.name",
            ["'Prod'"],
        ),
        ("kind: Pod\nmetadata: {name: web_1, namespace: x}\n", "Pod x/web_1", "metadata.name", []),
        ("kind: Pod\nmetadata: {name: a, namespace: X}\n", "Pod X/a", "metadata.namespace", []),
        (
            "kind: NetworkPolicy\nmetadata: {namespace: x}\n",
            "NetworkPolicy x/<unnamed>",
            "metadata.name",
            ["required"],
        ),
        (
            "kind: Deployment\nmetadata: {name: web, namespace: x}\n"
            "spec: {replicas: -1, template: {}}\n",
            "Deployment x/web",
            "spec.replicas",
            ["-1"],
        ),
        (
            "kind: Deployment\nmetadata: {name: web, namespace: x}\nspec: {replicas: 1}\n",
            "Deployment x/web",
            "spec.template",
            ["required"],
        ),
        (
            "kind: Pod\nmetadata: {name: a, namespace: x}\nstatus: {podIP: 10.0.0.300}\n",
            "Pod x/a",
            "status.podIP",
            ["'10.0.0.300'"],
        ),
    ],
)
def test_invalid_metadata_and_objects(doc: str, obj: str, path: str, words: list[str]) -> None:
    check(only_problem(doc), obj, path, *words)


# -- duplicates and partial acceptance --------------------------------------------------------

ALLOW_FROM_B = policy_doc(
    "podSelector: {matchLabels: {pod: a}}\n"
    "ingress:\n- from: [{podSelector: {matchLabels: {pod: b}}}]",
    name="same",
)
ALLOW_FROM_C = policy_doc(
    "podSelector: {matchLabels: {pod: a}}\n"
    "ingress:\n- from: [{podSelector: {matchLabels: {pod: c}}}]",
    name="same",
)


def test_duplicate_name_in_another_file_is_rejected_and_first_kept() -> None:
    manifests = load_text(model_yaml() + "---\n" + ALLOW_FROM_B, "one.yaml")
    manifests.objects += load_text(ALLOW_FROM_C, "two.yaml").objects
    state = ClusterState.build(manifests)
    assert len(state.problems) == 1
    problem = state.problems[0]
    assert (problem.severity, problem.file, problem.obj, problem.path) == (
        "error",
        "two.yaml",
        "NetworkPolicy x/same",
        "metadata.name",
    )
    assert "duplicate" in problem.message and "one.yaml" in problem.message
    assert [p.file for p in state.policies] == ["one.yaml"]
    assert_conns(state, {("x/b", "x/a"): ALL, ("x/c", "x/a"): NONE})


def test_duplicate_name_in_the_same_file_keeps_the_first() -> None:
    state = ClusterState.build(
        load_text(model_yaml() + "---\n" + ALLOW_FROM_B + "---\n" + ALLOW_FROM_C, "one.yaml")
    )
    assert [(p.file, p.path) for p in state.problems] == [("one.yaml", "metadata.name")]
    assert len(state.policies) == 1
    assert_conns(state, {("x/b", "x/a"): ALL, ("x/c", "x/a"): NONE})


def test_same_name_different_kind_or_namespace_is_not_a_duplicate() -> None:
    found = problems(
        """
        kind: Pod
        metadata: {name: web, namespace: x}
        ---
        kind: Deployment
        metadata: {name: web, namespace: x}
        spec: {template: {}}
        ---
        kind: Pod
        metadata: {name: web, namespace: y}
        """
    )
    assert found == []


def test_invalid_objects_are_left_out_and_the_others_stay() -> None:
    state = build(
        model_yaml()
        + "---\n"
        + policy_doc(
            "podSelector: {matchLabels: {pod: a}}\n"
            "ingress:\n- from: [{podSelector: {matchLabels: {pod: b}}}]",
            name="good",
        )
        + "---\n"
        # Would also let c in, but port 0 is invalid: the whole policy is left out.
        + policy_doc(
            "podSelector: {matchLabels: {pod: a}}\n"
            "ingress:\n- from: [{podSelector: {matchLabels: {pod: c}}}]\n  ports: [{port: 0}]",
            name="bad-port",
        )
        + "---\n"
        # Would isolate every pod of y, but its label value is invalid.
        + policy_doc("podSelector: {matchLabels: {pod: a b}}\npolicyTypes: [Ingress]", "bad", "y")
        + "---\n"
        + policy_doc("podSelector: {}\npolicyTypes: [Egress]", name="good-z", namespace="z")
        + "---\nkind: Pod\nmetadata: {name: Bad_Pod, namespace: x, labels: {pod: b}}\n",
        allow_problems=True,
    )
    assert sorted({p.obj for p in state.problems}) == [
        "NetworkPolicy x/bad-port",
        "NetworkPolicy y/bad",
        "Pod x/Bad_Pod",
    ]
    assert sorted(p.key for p in state.policies) == ["x/good", "z/good-z"]
    assert len(state.pods) == 9
    assert_conns(
        state,
        {
            ("x/b", "x/a"): ALL,
            ("x/c", "x/a"): NONE,
            ("x/b", "y/a"): ALL,
            ("z/a", "y/a"): NONE,
            ("z/a", "x/b"): NONE,
        },
    )


def test_valid_model_gives_no_problem() -> None:
    assert ClusterState.build(load_text(model_yaml(), "model.yaml")).problems == []


def test_pods_sharing_an_address_are_reported_with_file_and_both_pods() -> None:
    text = (
        "kind: Pod\nmetadata: {name: a, namespace: x}\nstatus: {podIP: 10.0.0.1}\n---\n"
        "kind: Pod\nmetadata: {name: b, namespace: x}\nstatus: {podIPs: [{ip: 10.0.0.1}]}\n---\n"
        "kind: Pod\nmetadata: {name: h, namespace: x}\nspec: {hostNetwork: true}\n"
        "status: {podIP: 10.0.0.1}\n"
    )
    state = ClusterState.build(load_text(text, "pods.yaml"))
    shared = [p for p in state.problems if p.code == "shared-address"]
    assert [(p.severity, p.file, p.obj, p.path) for p in shared] == [
        ("warning", "pods.yaml", "Pod x/b", "status.podIPs")
    ]
    assert "x/a" in shared[0].message
    assert len(state.pods) == 3  # a warning: nothing is left out
