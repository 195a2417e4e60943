"""Reading manifests from files and folders into typed objects.

Accepts what `kubectl apply -f` accepts and what cluster dumps look like: folders walked
recursively, `.yaml`/`.yml`/`.json`, multi-document YAML, `List` and typed lists such as
`PodList` whose items may omit `kind`. Objects are recognised by `kind` alone; kinds that
do not bear on network policy are skipped quietly, files that hold no Kubernetes object
produce a warning. libyaml (`CSafeLoader`) is used when present: on 20,000 pods it is
about ten times faster than the pure-Python parser.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from netfence.k8s.models import (
    CLUSTER_SCOPED_KINDS,
    OBJECT_META_FIELDS,
    WORKLOAD_KINDS,
    AdminNetworkPolicy,
    BaselineAdminNetworkPolicy,
    ClusterNetworkPolicy,
    ClusterPolicySubject,
    K8sObject,
    LabelSelector,
    Namespace,
    NetworkPolicy,
    Node,
    Pod,
    Workload,
)
from netfence.problems import Problem

_YamlLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # SafeLoader without libyaml

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")

_MODELS: dict[str, type[K8sObject]] = {
    "NetworkPolicy": NetworkPolicy,
    "Pod": Pod,
    "Namespace": Namespace,
    "Node": Node,
    "AdminNetworkPolicy": AdminNetworkPolicy,
    "BaselineAdminNetworkPolicy": BaselineAdminNetworkPolicy,
    "ClusterNetworkPolicy": ClusterNetworkPolicy,
    **{kind: Workload for kind in WORKLOAD_KINDS},
}


CLUSTER_POLICY_MODELS = (AdminNetworkPolicy, BaselineAdminNetworkPolicy, ClusterNetworkPolicy)


@dataclass(frozen=True, slots=True)
class Loaded:
    """An object together with where it came from, for error messages."""

    obj: K8sObject
    file: str

    @property
    def kind(self) -> str:
        return self.obj.kind

    @property
    def namespace(self) -> str:
        if self.obj.kind in CLUSTER_SCOPED_KINDS:
            return ""
        return self.obj.metadata.namespace or "default"

    @property
    def name(self) -> str:
        return self.obj.metadata.name or ""

    @property
    def ident(self) -> str:
        """`Kind namespace/name`, or `Kind name` for cluster-scoped objects."""
        return describe(self.kind, self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class BrokenPolicy:
    """What can be read of a NetworkPolicy that is rejected: enough for the dataplane to
    fail closed for the pods it was meant to cover (see `ClusterState.validated`).

    `pod_selector` None: unreadable, so every pod of the namespace is covered."""

    namespace: str
    name: str
    pod_selector: LabelSelector | None
    file: str


@dataclass(frozen=True, slots=True)
class BrokenClusterPolicy:
    """What can be read of a rejected AdminNetworkPolicy, BaselineAdminNetworkPolicy or
    ClusterNetworkPolicy: where it stands (kind, tier, priority) and what it is about (its
    subject), for a deny-all stand-in there (see `ClusterState.validated`).

    None where the field is unreadable; `subject` None: no pod can be closed for it."""

    kind: str
    name: str
    tier: str | None
    priority: int | None
    subject: ClusterPolicySubject | None
    file: str


@dataclass
class Manifests:
    objects: list[Loaded] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    # Rejected policies, for enforcement to fail closed.
    broken: list[BrokenPolicy | BrokenClusterPolicy] = field(default_factory=list)


def describe(kind: str, namespace: str, name: str) -> str:
    shown = name or "<unnamed>"
    return f"{kind} {namespace}/{shown}" if namespace else f"{kind} {shown}"


def manifest_files(paths: Sequence[Path]) -> tuple[list[Path], list[Problem]]:
    """Expand folders recursively, in a stable order; missing paths are errors."""
    files: list[Path] = []
    problems: list[Problem] = []
    for path in paths:
        if path.is_dir():
            files.extend(
                sorted(
                    p
                    for p in path.rglob("*")
                    if p.is_file() and p.suffix.lower() in MANIFEST_SUFFIXES
                )
            )
        elif path.is_file():
            files.append(path)
        else:
            problems.append(
                Problem("error", "no such file or directory", file=str(path), code="no-such-path")
            )
    return files, problems


def load_paths(paths: Sequence[Path | str]) -> Manifests:
    files, problems = manifest_files([Path(p) for p in paths])
    result = Manifests(problems=problems)
    for file in files:
        _load_file(file, result)
    return result


def load_text(text: str, file: str = "<input>") -> Manifests:
    """Load manifests from a string (tests, stdin)."""
    result = Manifests()
    _load_documents(_parse(text, file, result, json_first=False), file, result)
    return result


def load_objects(objects: Iterable[Any], file: str = "") -> Manifests:
    """Load objects that are already parsed (the API's JSON) exactly as documents of a file."""
    result = Manifests()
    _load_documents(objects, file, result)
    return result


def _load_file(file: Path, result: Manifests) -> None:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        result.problems.append(
            Problem("warning", f"cannot read file: {exc}", file=str(file), code="unreadable")
        )
        return
    documents = _parse(text, str(file), result, json_first=file.suffix.lower() == ".json")
    _load_documents(documents, str(file), result)


def _parse(text: str, file: str, result: Manifests, *, json_first: bool) -> list[Any]:
    if json_first:
        try:
            return [json.loads(text)]
        except ValueError:
            pass  # JSON files may hold YAML; YAML is a superset for our purpose
    try:
        return list(yaml.load_all(text, Loader=_YamlLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        result.problems.append(
            Problem(
                "warning",
                f"not valid YAML{where}: {reason}; file skipped",
                file=file,
                code="not-yaml",
            )
        )
        return []


def _load_documents(documents: Iterable[Any], file: str, result: Manifests) -> None:
    for doc in documents:
        if doc is None:
            continue
        if not isinstance(doc, dict) or not isinstance(doc.get("kind"), str):
            result.problems.append(
                Problem(
                    "warning",
                    f"not a Kubernetes object (a {_shape(doc)} without a `kind`); skipped",
                    file=file,
                    code="not-an-object",
                )
            )
            continue
        if doc["kind"].endswith("List") and not isinstance(doc.get("items") or [], list):
            result.problems.append(
                Problem(
                    "warning",
                    f"`items` of a {doc['kind']} must be a list; skipped",
                    file=file,
                    path="items",
                    code="not-an-object",
                )
            )
            continue
        for raw in _flatten(doc):
            _load_object(raw, file, result)


def _shape(doc: Any) -> str:
    names: dict[type, str] = {dict: "map", list: "list", str: "string"}
    return names.get(type(doc), type(doc).__name__)


def _flatten(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """`List` and typed lists (`PodList`): their items, with the implied kind filled in."""
    kind = doc["kind"]
    if not kind.endswith("List"):
        yield doc
        return
    implied = kind[: -len("List")] or None
    items = doc.get("items")
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        if "kind" not in item and implied:
            item = {**item, "kind": implied}
        if isinstance(item.get("kind"), str):
            yield from _flatten(item)


def _load_object(raw: dict[str, Any], file: str, result: Manifests) -> None:
    kind = raw["kind"]
    model = _MODELS.get(kind)
    if model is None:
        return  # Services, ConfigMaps, RBAC...: nothing to do with network policy
    try:
        obj = model.model_validate(raw)
    except ValidationError as exc:
        meta = raw.get("metadata")
        meta = meta if isinstance(meta, dict) else {}
        name, namespace = meta.get("name"), meta.get("namespace")
        ident = describe(
            kind,
            ""
            if kind in CLUSTER_SCOPED_KINDS
            else (namespace if isinstance(namespace, str) else "default"),
            name if isinstance(name, str) else "",
        )
        errors = shape_errors(exc)
        result.problems.extend(
            Problem("error", message, file=file, obj=ident, path=path, code="invalid-shape")
            for path, message in errors
        )
        bad = [path for path, _ in errors]
        if kind == "NetworkPolicy":
            result.broken.append(broken_policy(raw, file, bad, namespace, name))
        elif model in CLUSTER_POLICY_MODELS:
            result.broken.append(broken_cluster_policy(raw, file, bad))
        return
    loaded = Loaded(obj, file)
    result.objects.append(loaded)
    meta = raw.get("metadata")
    for key in sorted(set(meta) - OBJECT_META_FIELDS if isinstance(meta, dict) else ()):
        # A warning, not an error: dumps from other versions carry fields we do not know,
        # but `lables:` silently leaving a pod unlabelled deserves a word.
        result.problems.append(
            Problem(
                "warning",
                "unknown field, ignored" + _did_you_mean(str(key), OBJECT_META_FIELDS),
                file=file,
                obj=loaded.ident,
                path=f"metadata.{key}",
                code="unknown-field",
            )
        )


_TYPE_MESSAGES = {
    "missing": "is required",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "dict_type": "must be a map",
    "model_type": "must be a map",
    "model_attributes_type": "must be a map",
    "list_type": "must be a list",
}


def shape_errors(exc: ValidationError) -> list[tuple[str, str]]:
    """pydantic's errors as (field path, message) in the API's own field names."""
    out: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        path = field_path(err["loc"])
        kind = err["type"]
        value = err.get("input")
        if kind == "string_type":
            message = "must be a string"
            if isinstance(value, bool | int | float):
                message += (
                    f'; quote it: "{str(value).lower() if isinstance(value, bool) else value}"'
                )
        elif kind == "literal_error":
            message = err["msg"].lower()
        elif kind == "extra_forbidden":
            message = "unknown field" + _did_you_mean(str(err["loc"][-1]), _KNOWN_FIELDS)
        elif kind == "missing" and isinstance(value, dict):
            wanted = str(err["loc"][-1])
            message = "is required" + _did_you_mean(wanted, [str(k) for k in value], found=True)
        else:
            message = _TYPE_MESSAGES.get(kind, err["msg"])
        out.append((path, message))
    return out


def _did_you_mean(name: str, candidates: Iterable[str], *, found: bool = False) -> str:
    """A hint naming the field that was probably meant (case slips first, then near misses)."""
    pool = list(candidates)
    close = [c for c in pool if c.lower() == name.lower() and c != name]
    close = close or difflib.get_close_matches(name, pool, n=1, cutoff=0.75)
    if not close:
        return ""
    if found:
        return f" (the field is spelled `{name}`, not `{close[0]}`)"
    return f"; did you mean `{close[0]}`?"


def _schema_fields(model: type[BaseModel]) -> set[str]:
    fields: set[str] = set()
    for info in model.model_fields.values():
        fields.add(info.alias or "")
        for arg in get_args(info.annotation) or (info.annotation,):
            for inner in (*get_args(arg), arg):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    fields |= _schema_fields(inner)
    return fields - {""}


_KNOWN_FIELDS = sorted(
    _schema_fields(NetworkPolicy)
    | _schema_fields(AdminNetworkPolicy)
    | _schema_fields(BaselineAdminNetworkPolicy)
    | _schema_fields(ClusterNetworkPolicy)
)


def field_path(loc: Iterable[int | str]) -> str:
    """('spec', 'ingress', 0, 'from') -> 'spec.ingress[0].from'."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part == "[key]":
            text += " (key)"
        elif part.replace("_", "").replace("-", "").isalnum():
            text += f".{part}" if text else part
        else:
            text += f"[{json.dumps(part)}]"
    return text


def broken_policy(
    raw: dict[str, Any], file: str, bad_paths: Sequence[str], namespace: object, name: object
) -> BrokenPolicy:
    """The readable part of a rejected NetworkPolicy: its namespace, name and, unless the
    problems touch it, its pod selector."""
    selector: LabelSelector | None = None
    if not any(path.startswith("spec.podSelector") or path == "spec" for path in bad_paths):
        spec = raw.get("spec")
        try:
            found = (spec or {}).get("podSelector") if isinstance(spec, dict) else None
            selector = LabelSelector.model_validate(found or {})
        except ValidationError:
            selector = None
    return BrokenPolicy(
        namespace if isinstance(namespace, str) and namespace else "default",
        name if isinstance(name, str) else "",
        selector,
        file,
    )


def broken_cluster_policy(
    raw: dict[str, Any], file: str, bad_paths: Sequence[str]
) -> BrokenClusterPolicy:
    """The readable part of a cluster-wide policy whose shape is wrong: its tier, priority
    and, unless the problems touch it, its subject (checked further by the caller)."""
    meta, spec = raw.get("metadata"), raw.get("spec")
    name = meta.get("name") if isinstance(meta, dict) else None
    spec = spec if isinstance(spec, dict) else {}
    subject: ClusterPolicySubject | None = None
    if not any(path.startswith("spec.subject") or path == "spec" for path in bad_paths):
        try:
            subject = ClusterPolicySubject.model_validate(spec.get("subject"))
        except ValidationError:
            subject = None
    tier, priority = spec.get("tier"), spec.get("priority")
    return BrokenClusterPolicy(
        raw["kind"],
        name if isinstance(name, str) else "",
        tier if isinstance(tier, str) else None,
        priority if isinstance(priority, int) and not isinstance(priority, bool) else None,
        subject,
        file,
    )
