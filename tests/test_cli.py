"""The `netfence list` command end to end, in-process and as a real process."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from netfence.cli import app

WORLD = "0.0.0.0-255.255.255.255[External]"
CLUSTER = """
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {pod: a}}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {pod: b}}
"""
POLICY = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-from-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{podSelector: {matchLabels: {pod: b}}}]
    ports: [{protocol: UDP, port: 53}, {port: 80}]
"""
BAD_POLICY = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad, namespace: x}
spec:
  podSelector: {matchLabels: {pod: b}}
  policyTypes: [Ingress]
  ingress:
  - ports: [{port: 0}]
"""
# By hand: a is isolated for ingress (b may use TCP 80 and UDP 53), everything else is open.
EXPECTED_TXT = [
    f"{WORLD} => x/b[Pod] : All Connections",
    f"x/a[Pod] => {WORLD} : All Connections",
    "x/a[Pod] => x/b[Pod] : All Connections",
    f"x/b[Pod] => {WORLD} : All Connections",
    "x/b[Pod] => x/a[Pod] : TCP 80,UDP 53",
]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "pods").mkdir()
    (tmp_path / "pods" / "pods.yaml").write_text(CLUSTER)
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "a.yml").write_text(POLICY)
    return tmp_path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def test_list_txt(folder: Path) -> None:
    code, out, err = run("list", str(folder), "-o", "txt")
    assert code == 0, err
    assert out.splitlines() == EXPECTED_TXT
    assert err == ""


def test_list_defaults_to_txt(folder: Path) -> None:
    code, out, _ = run("list", str(folder))
    assert code == 0
    assert out.splitlines() == EXPECTED_TXT


def test_list_json(folder: Path) -> None:
    code, out, _ = run("list", str(folder), "--output", "json")
    assert code == 0
    data = json.loads(out)
    assert [f"{c['src']['name']} => {c['dst']['name']} : {c['conns']}" for c in data] == (
        EXPECTED_TXT
    )
    entry = data[-1]
    assert entry["src"] == {
        "type": "workload",
        "namespace": "x",
        "kind": "Pod",
        "workload": "b",
        "name": "x/b[Pod]",
    }
    assert entry["protocols"] == {"TCP": ["80"], "UDP": ["53"]}
    assert data[0]["src"]["type"] == "external"
    assert data[0]["src"]["range"] == "0.0.0.0-255.255.255.255"


def test_list_csv(folder: Path) -> None:
    code, out, _ = run("list", str(folder), "-o", "csv")
    assert code == 0
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["src", "dst", "conn"]
    assert rows[1:] == [line.replace(" => ", " : ").split(" : ") for line in EXPECTED_TXT]
    # The comma inside the connections is quoted.
    assert 'x/b[Pod],x/a[Pod],"TCP 80,UDP 53"' in out.splitlines()


def test_list_md(folder: Path) -> None:
    code, out, _ = run("list", str(folder), "-o", "md")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].replace(" ", "") == "|src|dst|conn|"
    assert set(lines[1]) <= {"|", "-", ":", " "}
    assert "| x/b[Pod] | x/a[Pod] | TCP 80,UDP 53 |" in lines
    assert len(lines) == 2 + len(EXPECTED_TXT)


def test_list_dot(folder: Path) -> None:
    code, out, _ = run("list", str(folder), "-o", "dot")
    assert code == 0
    assert out.startswith("digraph")
    assert out.rstrip().endswith("}")
    assert '"x/b[Pod]" -> "x/a[Pod]" [label="TCP 80,UDP 53"];' in out
    assert f'"{WORLD}" -> "x/b[Pod]"' in out
    assert f'"x/b[Pod]" -> "{WORLD}"' in out
    assert out.count(" -> ") == len(EXPECTED_TXT)


def test_invalid_input_exits_1_with_the_error_on_stderr(folder: Path) -> None:
    bad = folder / "policies" / "bad.yaml"
    bad.write_text(BAD_POLICY)
    code, out, err = run("list", str(folder))
    assert code == 1
    assert str(bad) in err
    assert "NetworkPolicy x/bad" in err
    assert "spec.ingress[0].ports[0].port" in err
    assert "between 1 and 65535" in err
    assert "Traceback" not in err and "Traceback" not in out
    # The invalid policy is left out; the list of the rest is still written.
    assert out.splitlines() == EXPECTED_TXT


def test_missing_path_exits_1(tmp_path: Path) -> None:
    code, _, err = run("list", str(tmp_path / "nowhere"))
    assert code == 1
    assert "no such file" in err
    assert "Traceback" not in err


def test_unknown_output_format_is_a_usage_error(folder: Path) -> None:
    code, out, err = run("list", str(folder), "-o", "xml")
    assert code == 2
    assert out == ""
    assert "xml" in err


def test_warnings_alone_do_not_fail(folder: Path) -> None:
    (folder / "broken.yaml").write_text("kind: Pod\nmetadata:\n\tname: x\n")
    code, out, err = run("list", str(folder))
    assert code == 0
    assert "warning" in err and "broken.yaml" in err and "line 3" in err
    assert out.splitlines() == EXPECTED_TXT


def test_real_process_invalid_input(folder: Path) -> None:
    (folder / "bad.yaml").write_text(
        textwrap.dedent(
            """
            kind: NetworkPolicy
            metadata: {name: typo, namespace: x}
            spec:
              podselector: {}
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "netfence", "list", str(folder), "-o", "txt"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "NetworkPolicy x/typo" in proc.stderr
    assert "spec.podselector" in proc.stderr
    assert "podSelector" in proc.stderr
    assert proc.stdout.splitlines() == EXPECTED_TXT


def test_real_process_valid_input(folder: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "netfence", "list", str(folder), "-o", "csv"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.splitlines()[0] == "src,dst,conn"
    assert len(proc.stdout.splitlines()) == 1 + len(EXPECTED_TXT)
