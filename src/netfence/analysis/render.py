"""Renderers for connectivity lists: txt (netpol-analyzer's connlist form), json, csv, md, dot."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from enum import StrEnum

from netfence.analysis.connlist import Connection, Peer


class ListFormat(StrEnum):
    txt = "txt"
    json = "json"
    csv = "csv"
    md = "md"
    dot = "dot"


def render_list(connections: Sequence[Connection], fmt: ListFormat) -> str:
    return _RENDERERS[fmt](connections)


def _txt(connections: Sequence[Connection]) -> str:
    return "".join(f"{c}\n" for c in connections)


def _json(connections: Sequence[Connection]) -> str:
    return json.dumps([c.as_dict() for c in connections], indent=2) + "\n"


def _csv(connections: Sequence[Connection]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["src", "dst", "conn"])
    writer.writerows([str(c.src), str(c.dst), str(c.conns)] for c in connections)
    return out.getvalue()


def _md(connections: Sequence[Connection]) -> str:
    lines = ["| src | dst | conn |", "|-----|-----|------|"]
    lines += [f"| {c.src} | {c.dst} | {c.conns} |" for c in connections]
    return "\n".join(lines) + "\n"


def _dot_id(peer: Peer) -> str:
    return json.dumps(str(peer))


def _dot(connections: Sequence[Connection]) -> str:
    """Workloads clustered by namespace, external ranges as boxes, edges labelled by ports."""
    namespaces: dict[str, set[Peer]] = {}
    external: set[Peer] = set()
    for c in connections:
        for peer in (c.src, c.dst):
            if peer.is_external:
                external.add(peer)
            else:
                namespaces.setdefault(peer.namespace, set()).add(peer)
    lines = ["digraph netfence {", "\tcompound=true; rankdir=LR; node [shape=ellipse];"]
    for i, (namespace, peers) in enumerate(sorted(namespaces.items())):
        lines.append(f"\tsubgraph cluster_{i} {{")
        lines.append(f"\t\tlabel={json.dumps(namespace)}; style=rounded;")
        for peer in sorted(peers, key=str):
            label = json.dumps(f"{peer.name}[{peer.kind}]")
            lines.append(f"\t\t{_dot_id(peer)} [label={label}];")
        lines.append("\t}")
    for peer in sorted(external, key=str):
        lines.append(f"\t{_dot_id(peer)} [shape=box, color=red2, fontcolor=red2];")
    for c in connections:
        lines.append(f"\t{_dot_id(c.src)} -> {_dot_id(c.dst)} [label={json.dumps(str(c.conns))}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


_RENDERERS = {
    ListFormat.txt: _txt,
    ListFormat.json: _json,
    ListFormat.csv: _csv,
    ListFormat.md: _md,
    ListFormat.dot: _dot,
}
