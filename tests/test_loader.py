"""Reading manifests: what `kubectl apply -f` accepts, and cluster dumps."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from netfence.cluster.state import ClusterState
from netfence.k8s.loader import Manifests, load_paths, load_text


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(text: str) -> Manifests:
    return load_text(textwrap.dedent(text))


def idents(manifests: Manifests) -> list[str]:
    return sorted(item.ident for item in manifests.objects)


def pod(name: str, namespace: str = "x") -> str:
    return f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}}}\n"


def test_folders_are_read_recursively_with_all_suffixes(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", pod("a"))
    write(tmp_path / "sub" / "b.yml", pod("b"))
    write(
        tmp_path / "sub" / "deeper" / "still" / "c.json",
        json.dumps(
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "c", "namespace": "x"}}
        ),
    )
    write(tmp_path / "sub" / "D.YAML", pod("d"))
    # Not manifests by name: ignored even though the content is a valid object.
    write(tmp_path / "notes.txt", pod("txt"))
    write(tmp_path / "sub" / "pod.yaml.bak", pod("bak"))
    manifests = load_paths([tmp_path])
    assert manifests.problems == []
    assert idents(manifests) == ["Pod x/a", "Pod x/b", "Pod x/c", "Pod x/d"]
    files = {item.name: Path(item.file) for item in manifests.objects}
    assert files["c"] == tmp_path / "sub" / "deeper" / "still" / "c.json"


def test_files_and_folders_can_be_mixed(tmp_path: Path) -> None:
    single = write(tmp_path / "one" / "a.yaml", pod("a"))
    write(tmp_path / "two" / "b.yaml", pod("b"))
    manifests = load_paths([single, tmp_path / "two"])
    assert idents(manifests) == ["Pod x/a", "Pod x/b"]


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", pod("a"))
    manifests = load_paths([tmp_path / "a.yaml", tmp_path / "nope"])
    assert idents(manifests) == ["Pod x/a"]
    assert len(manifests.problems) == 1
    problem = manifests.problems[0]
    assert problem.severity == "error"
    assert problem.file == str(tmp_path / "nope")
    assert "no such file" in problem.message


def test_multi_document_yaml() -> None:
    manifests = load_text(
        pod("a")
        + "---\n"
        + pod("b")
        + "---\n# only a comment\n---\n"
        + "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n"
        + "...\n---\n"
        + pod("c", "y")
    )
    assert manifests.problems == []
    assert idents(manifests) == ["Namespace x", "Pod x/a", "Pod x/b", "Pod y/c"]


def test_list_and_typed_list_items() -> None:
    manifests = load(
        """
        apiVersion: v1
        kind: List
        items:
        - {apiVersion: v1, kind: Pod, metadata: {name: a, namespace: x}}
        - apiVersion: networking.k8s.io/v1
          kind: NetworkPolicy
          metadata: {name: p, namespace: x}
        - {apiVersion: v1, kind: Service, metadata: {name: svc, namespace: x}}
        ---
        apiVersion: v1
        kind: PodList
        items:
        - metadata: {name: b, namespace: y}
        - metadata: {name: c, namespace: y}
        ---
        apiVersion: v1
        kind: NamespaceList
        items:
        - metadata: {name: y, labels: {team: blue}}
        """
    )
    assert manifests.problems == []
    assert idents(manifests) == [
        "Namespace y",
        "NetworkPolicy x/p",
        "Pod x/a",
        "Pod y/b",
        "Pod y/c",
    ]
    state = ClusterState.build(manifests)
    assert state.namespaces["y"].labels["team"] == "blue"


def test_list_items_without_kind_in_a_plain_list_are_skipped() -> None:
    manifests = load(
        """
        kind: List
        items:
        - metadata: {name: a, namespace: x}
        - {kind: Pod, metadata: {name: b, namespace: x}}
        """
    )
    assert idents(manifests) == ["Pod x/b"]


def test_unrelated_kinds_are_ignored_quietly() -> None:
    manifests = load(
        """
        apiVersion: v1
        kind: Service
        metadata: {name: web, namespace: x}
        spec: {selector: {app: web}, ports: [{port: 80}]}
        ---
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: cfg, namespace: x}
        data: {key: value}
        ---
        apiVersion: rbac.authorization.k8s.io/v1
        kind: ClusterRole
        metadata: {name: reader}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: a, namespace: x}
        """
    )
    assert manifests.problems == []
    assert idents(manifests) == ["Pod x/a"]


def test_json_array_file_is_skipped_with_a_warning(tmp_path: Path) -> None:
    array = write(
        tmp_path / "pods.json",
        json.dumps([{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}}]),
    )
    write(tmp_path / "good.json", json.dumps({"kind": "Pod", "metadata": {"name": "b"}}))
    manifests = load_paths([tmp_path])
    assert idents(manifests) == ["Pod default/b"]
    assert len(manifests.problems) == 1
    problem = manifests.problems[0]
    assert (problem.severity, problem.file) == ("warning", str(array))
    assert "list" in problem.message and "kind" in problem.message


def test_non_object_yaml_is_skipped_with_a_warning(tmp_path: Path) -> None:
    scalar = write(tmp_path / "scalar.yaml", "just some text\n")
    no_kind = write(tmp_path / "nokind.yaml", "metadata: {name: a}\n")
    write(tmp_path / "z.yaml", pod("z"))
    manifests = load_paths([tmp_path])
    assert idents(manifests) == ["Pod x/z"]
    by_file = {p.file: p for p in manifests.problems}
    assert set(by_file) == {str(scalar), str(no_kind)}
    assert all(p.severity == "warning" for p in manifests.problems)
    assert "string" in by_file[str(scalar)].message
    assert "map" in by_file[str(no_kind)].message
    assert "kind" in by_file[str(no_kind)].message


def test_broken_yaml_gives_a_warning_with_the_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: Pod\nmetadata:\n\tname: a\n", encoding="utf-8")  # tab on line 3
    indent = write(tmp_path / "indent.yaml", "kind: Pod\nmetadata:\n  name: b\n bad: x\n")
    write(tmp_path / "fine.yaml", pod("c"))
    manifests = load_paths([tmp_path])
    assert idents(manifests) == ["Pod x/c"]
    by_file = {p.file: p for p in manifests.problems}
    assert set(by_file) == {str(broken), str(indent)}
    assert by_file[str(broken)].severity == "warning"
    assert "line 3" in by_file[str(broken)].message
    assert "line 4" in by_file[str(indent)].message
    assert "YAML" in by_file[str(indent)].message


def test_objects_without_namespace_land_in_default() -> None:
    state = ClusterState.build(
        load(
            """
            kind: Pod
            metadata: {name: a, labels: {app: a}}
            ---
            kind: Pod
            metadata: {name: b, namespace: other}
            ---
            kind: NetworkPolicy
            metadata: {name: deny}
            spec: {podSelector: {}}
            ---
            kind: Deployment
            metadata: {name: web}
            spec: {template: {metadata: {labels: {app: web}}}}
            """
        )
    )
    assert state.problems == []
    assert sorted(p.key for p in state.pods) == ["default/a", "default/web", "other/b"]
    assert [p.key for p in state.policies] == ["default/deny"]
    assert state.namespaces["default"].labels == {"kubernetes.io/metadata.name": "default"}


def test_null_fields_mean_absent() -> None:
    manifests = load(
        """
        kind: NetworkPolicy
        metadata: {name: p, namespace: x, labels: null}
        spec:
          podSelector: {matchLabels: null, matchExpressions: null}
          ingress: null
          policyTypes: null
        ---
        kind: Pod
        metadata: {name: a, namespace: x, labels: {app: }}
        spec: {containers: null}
        """
    )
    state = ClusterState.build(manifests)
    assert state.problems == []
    assert state.pods[0].labels == {"app": ""}
    assert state.policies[0].spec.ingress is None
