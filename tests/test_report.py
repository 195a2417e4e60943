"""`netfence report`: the embedded data against the engine, escaping, and the page itself in
headless Chromium (clicks on the graph and the matrix, explanations, the diff, scale).

Browser tests need `chromium`, `chromium-driver` (Debian) and selenium (a dev dependency);
outside CI they are skipped when one is missing, in CI (CI=true) they fail. Screenshots go to
tests/artifacts/ (git-ignored); the README's picture is tests/artifacts/report-seed-edge.png.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import build, model_yaml
from netfence.analysis.connlist import Peer, connectivity
from netfence.analysis.diff import diff
from netfence.cli import app
from netfence.cluster.state import ClusterState, Pod
from netfence.k8s.loader import load_paths
from netfence.policy.engine import DirectionVerdict, Endpoint, Engine
from netfence.policy.ipranges import Span
from netfence.policy.matrix import ClusterMatrix
from netfence.report.html import library, render_html, script_json
from netfence.report.model import report_data

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "examples" / "seed"
SEED_BROKEN = ROOT / "examples" / "seed-broken"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
ASSETS = ROOT / "src" / "netfence" / "report" / "assets"
DATA = re.compile(r'<script type="application/json" id="netfence-data">(.*?)</script>', re.S)
HOSTILE = "</script><script>window.pwned=1</script><!--<img src=x onerror=window.pwned=2>"


def replica(suffix: str, ip: str) -> str:
    """A pod of the ReplicaSet x/web-5d8f7."""
    return f"""
apiVersion: v1
kind: Pod
metadata:
  name: web-5d8f7-{suffix}
  namespace: x
  labels: {{app: web}}
  ownerReferences:
  - {{apiVersion: apps/v1, kind: ReplicaSet, name: web-5d8f7, uid: "1", controller: true}}
spec: {{containers: [{{name: web, ports: [{{name: http, containerPort: 8080}}]}}]}}
status: {{podIP: {ip}}}
---"""


# A cluster that exercises what explanations must get right: the e2e model (namespaces x, y, z;
# pods a, b, c with named ports) plus named ports on both sides, endPort, SCTP, ipBlocks with
# holes in both families, an egress default deny, the admin and baseline tiers, and a
# workload whose two replicas fall in different pod classes (one is inside an ipBlock).
RICH = (
    replica("aaaaa", "10.9.0.1")
    + replica("bbbbb", "10.1.0.2")
    + """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-from-y, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: y}}}]
    ports: [{port: serve-80-tcp}, {protocol: UDP, port: 80, endPort: 81}]
  - from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}]
    ports: [{protocol: SCTP, port: 81}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-egress, namespace: y}
spec:
  podSelector: {matchLabels: {pod: b}}
  egress:
  - to: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}, {ipBlock: {cidr: "fd00::/8"}}]
    ports: [{port: 8080}]
  - to:
    - namespaceSelector: {matchLabels: {ns: x}}
      podSelector: {matchExpressions: [{key: pod, operator: In, values: [a, c]}]}
    ports: [{port: serve-81-udp, protocol: UDP}, {port: http}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-egress, namespace: z}
spec:
  podSelector: {}
  policyTypes: [Egress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-ingress, namespace: x}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - ports: [{port: http}]
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: guard-z}
spec:
  priority: 10
  subject: {namespaces: {matchLabels: {ns: z}}}
  ingress:
  - name: deny-x
    action: Deny
    from: [{namespaces: {matchLabels: {ns: x}}}]
    ports: [{portNumber: {protocol: TCP, port: 80}}]
  - {name: pass-y, action: Pass, from: [{namespaces: {matchLabels: {ns: y}}}]}
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata: {name: default}
spec:
  subject: {namespaces: {matchLabels: {ns: z}}}
  ingress:
  - {name: deny-y, action: Deny, from: [{namespaces: {matchLabels: {ns: y}}}]}
"""
)


def embedded(page: str) -> dict[str, Any]:
    found = DATA.search(page)
    assert found is not None
    data: dict[str, Any] = json.loads(found.group(1))
    return data


def decode(array: dict[str, str]) -> list[int]:
    raw = base64.b64decode(array["data"])
    return np.frombuffer(raw, dtype=f"<{array['dtype']}").tolist()  # type: ignore[no-any-return]


def owned_pod(name: str, owner: str) -> dict[str, Any]:
    """Pod x/<name> whose controlling owner is the ReplicaSet `owner` (any string: owner
    references are not validated as names are)."""
    reference = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner, "uid": "1"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "x",
            "labels": {"app": name},
            "ownerReferences": [{**reference, "controller": True}],
        },
        "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80}]}]},
    }


def write_cluster(folder: Path, text: str, *, model: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    body = textwrap.dedent(text)
    (folder / "cluster.yaml").write_text(model_yaml() + "---\n" + body if model else body)
    return folder


# -- without a browser -----------------------------------------------------------------------


def test_vendored_library_matches_its_pin() -> None:
    pin = library()
    content = (ASSETS / str(pin["file"])).read_bytes()
    assert hashlib.sha256(content).hexdigest() == pin["sha256"]
    licence = (ASSETS / str(pin["licenseFile"])).read_text()
    assert pin["license"] == "MIT" and "Permission is hereby granted" in licence
    # The minified file keeps its copyright header, so the page carries the licence too.
    assert content.startswith(b"/**\n * Copyright (c)")


def test_script_json_cannot_leave_its_element() -> None:
    data = {HOSTILE: [HOSTILE, "a & b", "\u2028\u2029", "</SCRIPT >"]}
    text = script_json(data)
    for bad in ("<", ">", "&", "\u2028", "\u2029"):
        assert bad not in text
    assert json.loads(text) == data


def test_embedded_edges_are_the_connectivity_list() -> None:
    state = build(model_yaml() + "---\n" + RICH)
    data = report_data(state, source="rich")
    labels = data["peers"]["label"]  # type: ignore[index]
    edges = data["edges"]
    assert isinstance(edges, dict)
    conns = data["conns"]
    assert isinstance(conns, list)
    shown = {
        (labels[s], labels[d], conns[c]["text"])
        for s, d, c in zip(
            decode(edges["src"]), decode(edges["dst"]), decode(edges["conn"]), strict=True
        )
    }
    assert shown == {(str(c.src), str(c.dst), str(c.conns)) for c in connectivity(state)}
    assert len(shown) == edges["count"]


def test_report_command_writes_one_page(tmp_path: Path) -> None:
    out = tmp_path / "seed.html"
    result = CliRunner().invoke(app, ["report", str(SEED), "-o", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>")
    # Self-contained: no reference to anything outside the file, and a policy forbidding it.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "default-src 'none'" in page
    assert embedded(page)["summary"]["pods"] == len(ClusterState.build(load_paths([SEED])).pods)


def test_report_command_to_stdout_and_errors(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(SEED), "-o", "-"])
    assert result.exit_code == 0
    assert result.stdout.startswith("<!DOCTYPE html>")
    missing = tmp_path / "no" / "such" / "dir" / "r.html"
    result = CliRunner().invoke(app, ["report", str(SEED), "-o", str(missing)])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"error: cannot write {missing}: No such file or directory"
    ]
    # Input with errors: the report is still written (with the errors as findings), exit 1.
    result = CliRunner().invoke(app, ["report", str(SEED_BROKEN), "-o", str(tmp_path / "b.html")])
    assert result.exit_code == 1
    findings = embedded((tmp_path / "b.html").read_text())["findings"]
    assert any(
        f["severity"] == "error" and f["object"].endswith("allow-port-8000") for f in findings
    )


def test_report_against_embeds_the_diff(tmp_path: Path) -> None:
    out = tmp_path / "d.html"
    result = CliRunner().invoke(
        app, ["report", str(SEED), "--against", str(SEED_BROKEN), "-o", str(out)]
    )
    assert result.exit_code == 1  # seed-broken has an invalid policy
    data = embedded(out.read_text())
    old, new = (ClusterState.build(load_paths([p])) for p in (SEED_BROKEN, SEED))
    expected = [(d.change, str(d.src), str(d.dst)) for d in diff(old, new)]
    assert expected
    assert [(d["diff-type"], d["src"], d["dst"]) for d in data["diff"]] == expected
    labels = data["peers"]["label"]
    for d in data["diff"]:  # every peer of the seed's differences is in the report
        assert labels[d["s"]] == d["src"] and labels[d["d"]] == d["dst"]


def require(reason: str | None) -> None:
    """Skip for `reason`, a missing tool; in CI (CI=true), where everything must run, fail."""
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run this test but this machine {reason}")
    pytest.skip(reason)


def _graphviz() -> str:
    dot = shutil.which("dot")
    require(None if dot else "needs Graphviz (`dot`)")
    assert dot is not None
    return dot


@pytest.mark.parametrize(
    "owner",
    ["web-5d8f7", 'café"} -> x [label="</script>\\n{', "back\\slash\\"],
    ids=["plain", "hostile", "backslashes"],
)
def test_dot_output_renders_with_graphviz(tmp_path: Path, owner: str) -> None:
    """Every workload is a node inside its namespace's cluster, every connection an edge, and
    Graphviz reads names with quotes, backslashes and non-ASCII characters without a word."""
    dot = _graphviz()
    pod = owned_pod("owned", owner)
    folder = tmp_path / "cluster"
    folder.mkdir()
    shutil.copytree(SEED, folder / "seed")
    (folder / "owned.json").write_text(json.dumps(pod))
    result = CliRunner().invoke(app, ["list", str(folder), "-o", "dot"])
    assert result.exit_code == 0, result.output
    state = ClusterState.build(load_paths([folder]))
    connections = connectivity(state)
    rendered = subprocess.run(
        [dot, "-Tplain"], input=result.stdout, capture_output=True, text=True, check=False
    )
    assert rendered.returncode == 0 and rendered.stderr == "", rendered.stderr
    lines = rendered.stdout.splitlines()
    nodes = [line for line in lines if line.startswith("node ")]
    edges = [line for line in lines if line.startswith("edge ")]
    workloads = {str(p) for p in connections.peers if not p.is_external}
    ranges = {str(c.src) for c in connections if c.src.is_external} | {
        str(c.dst) for c in connections if c.dst.is_external
    }
    assert len(nodes) == len(workloads | ranges)
    assert len(edges) == len(connections)
    assert any(owner.split("\\")[0].split('"')[0] in line for line in nodes)
    svg = subprocess.run(
        [dot, "-Tsvg"], input=result.stdout, capture_output=True, text=True, check=True
    ).stdout
    assert svg.count('class="cluster"') == len(state.namespaces)


# -- in the browser --------------------------------------------------------------------------


def _browser_missing() -> str | None:
    for tool in ("chromium", "chromedriver"):
        if shutil.which(tool) is None:
            return f"needs `{tool}` (Debian packages chromium, chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "needs selenium (pip install -e '.[dev]')"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require(_browser_missing())
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="nf-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(shutil.which("chromium"))
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",  # containers often have a small /dev/shm
        f"--user-data-dir={profile}",
        "--window-size=1500,950",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(shutil.which("chromedriver"))))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def open_report(driver: Any, page: Path) -> None:
    from selenium.webdriver.support.wait import WebDriverWait

    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(page.as_uri())
    WebDriverWait(driver, 60).until(
        lambda d: d.execute_script("return !!(window.netfenceReport && netfenceReport.graph.cy)")
    )


def assert_no_page_errors(driver: Any) -> None:
    """No script error and no Content-Security-Policy violation was logged."""
    severe = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []


def click_at(driver: Any, point: dict[str, float]) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    actions = ActionChains(driver)
    builder = ActionBuilder(driver)
    builder.pointer_action.move_to_location(int(point["x"]), int(point["y"]))
    builder.pointer_action.click()
    builder.perform()
    actions.reset_actions()


def details(driver: Any) -> str:
    text: str = driver.find_element("id", "details-body").text
    return text


def screenshot(driver: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / name))


def seed_page(tmp_path: Path, *extra: str) -> Path:
    """The seed's report, made from the repository as the README shows it (relative path)."""
    out = tmp_path / "seed.html"
    cwd = Path.cwd()
    os.chdir(ROOT)
    try:
        result = CliRunner().invoke(
            app, ["report", str(SEED.relative_to(ROOT)), *extra, "-o", str(out)]
        )
    finally:
        os.chdir(cwd)
    assert result.exit_code in (0, 1), result.output
    return out


def pod(state: ClusterState, key: str) -> Pod:
    return next(p for p in state.pods if p.key == key)


def click_seed_pair(
    browser: Any, tmp_path: Path, where: str, src: str, dst: str
) -> tuple[Any, str]:
    """Open the seed's report, click the pair of pods `src` -> `dst` where `where` (the page's
    `graph.edgePoint` or `matrix.cellCentre`) draws it, and return the engine's verdict for
    the pair and the details the page then shows."""
    state = ClusterState.build(load_paths([SEED]))
    a, b = pod(state, src), pod(state, dst)
    open_report(browser, seed_page(tmp_path))
    if where.startswith("matrix"):
        browser.find_element("css selector", '.tabs button[data-view="matrix"]').click()
    labels = (str(Peer.of_pod(a)), str(Peer.of_pod(b)))
    point = browser.execute_script(
        f"const r = netfenceReport; return r.{where}(r.peer(arguments[0]), r.peer(arguments[1]));",
        *labels,
    )
    assert point is not None
    click_at(browser, point)
    shown = details(browser)
    assert f"{labels[0]} → {labels[1]}" in shown
    return Engine(state).verdict(a, b), shown


def test_click_an_edge_names_the_allowing_policy(browser: Any, tmp_path: Path) -> None:
    verdict, shown = click_seed_pair(
        browser, tmp_path, "graph.edgePoint", "staging/client", "production/web-server"
    )
    allowing = [c for side in (verdict.egress, verdict.ingress) for c in side.contributions]
    assert allowing  # the seed's point: the client reaches the web server through one rule
    assert f"Allowed: {verdict.conns}" in shown
    for c in allowing:
        assert f"{c.provenance}: allows {c.conns}" in shown
        assert c.provenance.policy in shown
    selected = browser.execute_script(
        "return netfenceReport.graph.cy.edges(':selected').map(e => e.data('label'))"
    )
    assert selected == [str(verdict.conns)]
    screenshot(browser, "report-seed-edge.png")
    assert_no_page_errors(browser)


def test_click_a_matrix_cell_names_the_isolating_policies(browser: Any, tmp_path: Path) -> None:
    verdict, shown = click_seed_pair(
        browser, tmp_path, "matrix.cellCentre", "staging/client", "production/api"
    )
    assert not verdict.conns and verdict.ingress.isolating
    isolating = ", ".join(verdict.ingress.isolating)
    assert "Denied: no connection allowed" in shown
    assert f"Ingress of production/api[Pod]\nisolated by {isolating}" in shown
    assert f"denied by ingress: isolated by {isolating}" in shown
    screenshot(browser, "report-seed-matrix.png")
    assert_no_page_errors(browser)


def set_input(browser: Any, element_id: str, value: str) -> None:
    """Type into a text field or pick an option, as a person would, and leave the field."""
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.select import Select

    element = browser.find_element("id", element_id)
    if element.tag_name == "select":
        Select(element).select_by_visible_text(value)
    else:
        element.clear()
        element.send_keys(value, Keys.TAB)


def test_port_and_namespace_filters(browser: Any, tmp_path: Path) -> None:
    state = ClusterState.build(load_paths([SEED]))
    connections = list(connectivity(state))
    open_report(browser, seed_page(tmp_path))
    edges = "return netfenceReport.graph.cy.edges().map(e => [e.source().id(), e.data('label')])"
    assert len(browser.execute_script(edges)) == len(connections)  # the seed is small: no folding
    set_input(browser, "port", "8000")
    on_port = [c for c in connections if ("TCP", 8000) in c.conns]
    assert sorted(label for _, label in browser.execute_script(edges)) == sorted(
        str(c.conns) for c in on_port
    )
    set_input(browser, "port", "8000/XTP")  # not a port: flagged, the filter stays
    assert "invalid" in browser.find_element("id", "port").get_attribute("class")
    assert len(browser.execute_script(edges)) == len(on_port)
    set_input(browser, "port", "")
    set_input(browser, "graph-focus", "staging")
    ends = browser.execute_script(
        "const label = (n) => netfenceReport.data.peers.label[n.data('peer')] || '';"
        "return netfenceReport.graph.cy.edges().map(e => [label(e.source()), label(e.target())]);"
    )
    touching = [c for c in connections if "staging" in (c.src.namespace, c.dst.namespace)]
    assert len(ends) == len(touching) and all(
        any(e.startswith("staging/") for e in p) for p in ends
    )
    browser.find_element("css selector", '.tabs button[data-view="matrix"]').click()
    set_input(browser, "matrix-src", "staging")
    browser.find_element("id", "matrix-nonempty").click()
    shown = browser.execute_script("return netfenceReport.matrix.shown()")
    assert shown["rows"] == ["staging/client[Pod]"]
    reached = {str(c.dst) for c in connections if str(c.src) == "staging/client[Pod]"}
    assert {c if c.endswith("]") else f"{c}[External]" for c in shown["cols"]} == reached
    assert_no_page_errors(browser)


def _range_address(span: Span) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    family, first, _ = span
    return ipaddress.IPv4Address(first) if family == 4 else ipaddress.IPv6Address(first)


def _expected_side(
    engine: Engine, side: DirectionVerdict, subject: Endpoint, peer: Endpoint
) -> dict[str, Any]:
    if not side.applies:
        return {"applies": False}
    assert isinstance(subject, Pod)
    matching = [
        str(r.provenance)
        for p in engine.selecting(subject, side.direction)
        for r in p.rules(side.direction)
        if engine.rule_matches(r, peer)
    ]
    return {
        "applies": True,
        "isolating": list(side.isolating),
        "matching": sorted(matching),
        "decisions": sorted(
            (str(c.provenance), str(c.conns), str(c.decided)) for c in side.contributions
        ),
        "allowed": str(side.allowed),
    }


def _shown_side(side: dict[str, Any]) -> dict[str, Any]:
    if not side["applies"]:
        return {"applies": False}
    rules = side["rules"]
    return {
        "applies": True,
        "isolating": side["isolating"],
        "matching": sorted(r["rule"] for r in rules if r["status"] != "peer"),
        "decisions": sorted(
            (r["rule"], r["conns"], r["decided"]) for r in rules if r["status"] == "matches"
        ),
        "allowed": side["allowed"],
    }


def assert_explanations_match_engine(
    driver: Any, state: ClusterState, sample: int | None = None
) -> int:
    """The page's explanation of pod-class pairs (and pod/range pairs) equals Engine.verdict:
    same isolating policies in the same order, same matching rules, same per-rule ports and
    decisions, same answer per side and overall. Returns how many pairs were compared."""
    engine = Engine(state)
    matrix = ClusterMatrix(state)
    pairs: list[tuple[Endpoint, Endpoint, dict[str, int], dict[str, int]]] = []
    for a in state.pods:
        for b in state.pods:
            if a is not b:
                pairs.append(
                    (a, b, {"cls": matrix.class_of[id(a)]}, {"cls": matrix.class_of[id(b)]})
                )
        for j, span in enumerate(matrix.dst_ranges):
            pairs.append((a, _range_address(span), {"cls": matrix.class_of[id(a)]}, {"range": j}))
        for j, span in enumerate(matrix.src_ranges):
            pairs.append((_range_address(span), a, {"range": j}, {"cls": matrix.class_of[id(a)]}))
    if sample is not None and len(pairs) > sample:
        pairs = random.Random(6).sample(pairs, sample)
    shown = driver.execute_script(
        "return arguments[0].map(([a, b]) => netfenceReport.explainPoints(a, b));",
        [[p[2], p[3]] for p in pairs],
    )
    for (src, dst, _, _), page in zip(pairs, shown, strict=True):
        verdict = engine.verdict(src, dst)
        expected = {
            "egress": _expected_side(engine, verdict.egress, src, dst),
            "ingress": _expected_side(engine, verdict.ingress, dst, src),
            "result": str(verdict.conns),
        }
        actual = {
            "egress": _shown_side(page["egress"]),
            "ingress": _shown_side(page["ingress"]),
            "result": page["result"],
        }
        assert actual == expected, (src, dst)
    return len(pairs)


def test_explanations_match_the_engine_on_every_pair(browser: Any, tmp_path: Path) -> None:
    folder = write_cluster(tmp_path / "rich", RICH, model=True)
    state = ClusterState.build(load_paths([folder]))
    assert not state.problems, [str(p) for p in state.problems]
    page = tmp_path / "rich.html"
    page.write_text(render_html(report_data(state, source=str(folder))))
    open_report(browser, page)
    assert assert_explanations_match_engine(browser, state) > 200
    # The two replicas of x/web-5d8f7 fall in two pod classes (one is inside the ipBlock that
    # y/b may reach on 8080): the workload pair is explained once per distinct answer.
    groups = browser.execute_script(
        "const r = netfenceReport;"
        "return r.explainPair(r.peer('y/b[Pod]'), r.peer('x/web-5d8f7[ReplicaSet]')).groups"
        ".map(g => g.result);"
    )
    engine = Engine(state)
    expected = {
        str(engine.verdict(pod(state, "y/b"), pod(state, f"x/web-5d8f7-{s}")).conns)
        for s in ("aaaaa", "bbbbb")
    }
    assert sorted(groups) == sorted(expected) and len(expected) == 2
    assert_no_page_errors(browser)


def test_seed_explanations_match_the_engine(browser: Any, tmp_path: Path) -> None:
    open_report(browser, seed_page(tmp_path))
    assert assert_explanations_match_engine(browser, ClusterState.build(load_paths([SEED]))) > 20
    assert_no_page_errors(browser)


def test_diff_is_highlighted(browser: Any, tmp_path: Path) -> None:
    open_report(browser, seed_page(tmp_path, "--against", str(SEED_BROKEN.relative_to(ROOT))))
    old, new = (ClusterState.build(load_paths([p])) for p in (SEED_BROKEN, SEED))
    differences = diff(old, new)
    added = [d for d in differences if d.change == "added"]
    assert added
    classes = browser.execute_script(
        "return netfenceReport.graph.cy.edges('.added').map(e => e.data('label'))"
    )
    assert sorted(classes) == sorted(str(d.new) for d in added)
    browser.find_element("css selector", '.tabs button[data-view="diff"]').click()
    rows = browser.find_elements("css selector", "#diff tbody tr")
    assert len(rows) == len(differences)
    rows[0].click()
    first = differences[0]
    assert f"{first.src} → {first.dst}" in details(browser)
    against = SEED_BROKEN.relative_to(ROOT)
    assert f"{first.change} since {against}: No Connections → {first.new}" in details(browser)
    assert_no_page_errors(browser)


def test_hostile_names_stay_text(browser: Any, tmp_path: Path) -> None:
    """Owner references are not validated, so a workload can be called anything; invalid label
    values end up quoted in findings; folder names may hold `<`. None of it may end a script
    element, open a comment or become markup."""
    folder = tmp_path / "a<" / "script>"  # the path itself contains "</script>"
    owned = owned_pod("victim", HOSTILE)
    bad_label = {**owned, "metadata": {"name": "bad", "namespace": "x", "labels": {"a": HOSTILE}}}
    folder.mkdir(parents=True)
    (folder / "pods.json").write_text(json.dumps({"kind": "List", "items": [owned, bad_label]}))
    out = tmp_path / "hostile.html"
    result = CliRunner().invoke(app, ["report", str(folder), "-o", str(out)])
    assert result.exit_code == 1  # the invalid label
    page = out.read_text()
    assert page.lower().count("</script") == 3  # the three script elements' own ends
    assert "<!--" not in page
    open_report(browser, out)
    assert browser.execute_script("return window.pwned") is None
    assert browser.execute_script("return document.scripts.length") == 3
    assert browser.execute_script("return document.querySelectorAll('img').length") == 0
    assert browser.title == f"netfence report: {folder}"
    findings = browser.find_element("id", "findings").get_attribute("textContent")
    assert HOSTILE in findings and str(folder) in findings
    label = f"x/{HOSTILE}[ReplicaSet]"
    browser.execute_script("netfenceReport.graph.reveal(netfenceReport.peer(arguments[0]))", label)
    assert details(browser).splitlines()[0] == label
    assert browser.execute_script("return window.pwned") is None
    screenshot(browser, "report-hostile.png")
    assert_no_page_errors(browser)


def test_a_generated_cluster_stays_usable(browser: Any, tmp_path: Path) -> None:
    """500 pods / 100 policies from the benchmark generator: the graph starts from collapsed
    namespaces, search opens one, the matrix starts as namespace blocks, and explanations of a
    sample of pairs match the engine."""
    folder = tmp_path / "p500"
    generator = ROOT / "benchmarks" / "generate.py"
    subprocess.run(
        [sys.executable, str(generator), str(folder), "--pods", "500", "--policies", "100"],
        check=True,
        capture_output=True,
    )
    state = ClusterState.build(load_paths([folder]))
    page = tmp_path / "p500.html"
    page.write_text(render_html(report_data(state, source=str(folder))))
    open_report(browser, page)
    kinds = browser.execute_script(
        "return netfenceReport.graph.cy.nodes().map(n => n.hasClass('group'))"
    )
    assert kinds and all(kinds)  # namespaces only: nothing is expanded
    workload = next(str(c.src) for c in connectivity(state) if not c.src.is_external)
    search = browser.find_element("id", "search")
    search.send_keys(workload)
    browser.find_element("css selector", "#search-form button").click()
    assert details(browser).splitlines()[0] == workload
    selected = browser.execute_script(
        "return netfenceReport.graph.cy.nodes(':selected').map(n => n.data('peer'))"
    )
    assert len(selected) == 1
    assert browser.execute_script("return netfenceReport.matrix.grouped") is True
    assert assert_explanations_match_engine(browser, state, sample=400) == 400
    screenshot(browser, "report-p500.png")
    assert_no_page_errors(browser)
