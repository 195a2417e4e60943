"""Renderers for connectivity lists: txt (netpol-analyzer's connlist form), json, csv, md, dot.

Each renderer yields chunks of text, formatting every peer and every distinct `Conns` value
once, so that millions of lines stream out without building them all in memory.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator

from netfence.analysis.connlist import ConnList
from netfence.analysis.formats import ListFormat

CHUNK = 10_000


def render_list(connections: ConnList, fmt: ListFormat) -> Iterator[str]:
    return _RENDERERS[fmt](connections)


def _lines(connections: ConnList, line: Callable[[int, int, int], str]) -> Iterator[str]:
    buffer: list[str] = []
    for s, d, c in connections.rows():
        buffer.append(line(s, d, c))
        if len(buffer) >= CHUNK:
            yield "".join(buffer)
            buffer.clear()
    yield "".join(buffer)


def _conns_text(connections: ConnList) -> Callable[[int], str]:
    cache: dict[int, str] = {}

    def text(conn_id: int) -> str:
        found = cache.get(conn_id)
        if found is None:
            found = cache[conn_id] = str(connections.conns(conn_id))
        return found

    return text


def _txt(connections: ConnList) -> Iterator[str]:
    labels, conns = connections.labels, _conns_text(connections)
    return _lines(connections, lambda s, d, c: f"{labels[s]} => {labels[d]} : {conns(c)}\n")


def _json(connections: ConnList) -> Iterator[str]:
    """A JSON array, one connection object per line."""
    peers = [json.dumps(p.as_dict()) for p in connections.peers]
    cache: dict[int, str] = {}

    def conns(conn_id: int) -> str:
        found = cache.get(conn_id)
        if found is None:
            value = connections.conns(conn_id)
            found = cache[conn_id] = (
                f'"conns": {json.dumps(str(value))}, "protocols": {json.dumps(value.as_dict())}'
            )
        return found

    first = True

    def line(s: int, d: int, c: int) -> str:
        nonlocal first
        sep = "\n" if first else ",\n"
        first = False
        return f'{sep}{{"src": {peers[s]}, "dst": {peers[d]}, {conns(c)}}}'

    yield "["
    yield from _lines(connections, line)
    yield "\n]\n"


def _csv(connections: ConnList) -> Iterator[str]:
    labels, conns = connections.labels, _conns_text(connections)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["src", "dst", "conn"])
    yield out.getvalue()

    def line(s: int, d: int, c: int) -> str:
        out.seek(0)
        out.truncate()
        writer.writerow([labels[s], labels[d], conns(c)])
        return out.getvalue()

    yield from _lines(connections, line)


def _md(connections: ConnList) -> Iterator[str]:
    labels, conns = connections.labels, _conns_text(connections)
    yield "| src | dst | conn |\n|-----|-----|------|\n"
    yield from _lines(connections, lambda s, d, c: f"| {labels[s]} | {labels[d]} | {conns(c)} |\n")


def _dot_quote(text: str) -> str:
    r"""A DOT quoted string. Inside quotes DOT knows one escape, `\"`; a backslash before
    anything else is kept, and labels then read `\\` as a backslash and `\n` as a line break.
    Everything else is written as it is (DOT files are UTF-8; JSON's `\uXXXX` escapes would
    show verbatim): owner references, unlike object names, may hold any character."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n") + '"'


def _dot(connections: ConnList) -> Iterator[str]:
    """Workloads clustered by namespace (all of them: an isolated workload is a node without
    edges), external ranges that have connections as boxes, edges labelled by ports."""
    peers, labels, conns = connections.peers, connections.labels, _conns_text(connections)
    ids = [_dot_quote(label) for label in labels]
    used = {i for s, d, _ in connections.rows() for i in (s, d)}
    shown = sorted(
        (i for i, p in enumerate(peers) if not p.is_external or i in used), key=labels.__getitem__
    )
    namespaces: dict[str, list[int]] = {}
    for i in shown:
        if not peers[i].is_external:
            namespaces.setdefault(peers[i].namespace, []).append(i)
    lines = ["digraph netfence {", "\trankdir=LR; node [shape=ellipse];"]
    for k, (namespace, members) in enumerate(sorted(namespaces.items())):
        lines.append(f"\tsubgraph cluster_{k} {{")
        lines.append(f"\t\tlabel={_dot_quote(namespace)}; style=rounded;")
        for i in members:
            label = _dot_quote(f"{peers[i].name}[{peers[i].kind}]")
            lines.append(f"\t\t{ids[i]} [label={label}];")
        lines.append("\t}")
    # A range listed as a source and as a destination is one node.
    for external in dict.fromkeys(ids[i] for i in shown if peers[i].is_external):
        lines.append(f"\t{external} [shape=box, color=red2, fontcolor=red2];")
    yield "\n".join(lines) + "\n"
    yield from _lines(
        connections,
        lambda s, d, c: f"\t{ids[s]} -> {ids[d]} [label={_dot_quote(conns(c))}];\n",
    )
    yield "}\n"


_RENDERERS: dict[ListFormat, Callable[[ConnList], Iterator[str]]] = {
    ListFormat.txt: _txt,
    ListFormat.json: _json,
    ListFormat.csv: _csv,
    ListFormat.md: _md,
    ListFormat.dot: _dot,
}
