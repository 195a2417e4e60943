"""Compile the cluster state for one node into one nftables table, `inet netfence`.

Why this shape: per-packet cost must not grow with the number of policies or pods, and
loading must stay fast at tens of thousands of pods (10,000 linear rules cut the new
connection rate about 5x; per-pod named sets load quadratically). So a new connection is
decided by a fixed handful of hash/interval lookups, whatever the cluster:

1. `eg_src4`: source address -> row id, only for this node's egress-isolated pods (a miss
   means "not isolated here": the egress side allows);
2. `eg_peer4` / `eg_range4`: destination address -> column id: that of the pod's class, or
   of the external range (cut at ipBlock edges) holding the address;
3. `eg_pairs4`: (row . column) -> connection id: what the row allows the column, tiers
   (AdminNetworkPolicy, NetworkPolicy, BaselineAdminNetworkPolicy) already evaluated;
   when there is no pair, `eg_default4`: row -> connection id, what the row allows any
   peer its rules do not tell apart (nothing under NetworkPolicy isolation);
4. `conn_ports`: (connection id . protocol . port range), an interval set.
The ingress side mirrors it for this node's ingress-isolated destinations. Rows and
columns are grouped per node: classes or peers that this node's policies treat alike share
an id, so the pair map grows with what the node's policies distinguish, not with classes
squared. Row and column ids count from 1 (0 is "no entry") and connection ids carry the top
bit, so a missed lookup can never be mistaken for an allowance. Everything in the script
is derived: numbers and validated addresses, never a name or label. `program.py` computes
the elements (and keeps them current as pods change); this module renders them, as a whole
table or as one element transaction.

Hook: pods hang off a Linux bridge in the node's namespace. With
`net.bridge.bridge-nf-call-ip(6)tables=1` bridged pod-to-pod traffic of one node passes the
`inet` forward hook, and routed (cross-node, external) traffic passes it anyway, so one
forward chain sees every pod packet exactly once per node it crosses; the `bridge` family
would need conntrack that this kernel does not give it. The source's egress and the
destination's ingress are checked in sequence (mark-and-continue), so a same-node
connection needs both. Pod-to-node traffic meets the egress check in the input hook; the
node's own traffic to its pods (kubelet probes) is never filtered. `ct state
established,related` comes first, so replies pass; `invalid` is dropped, which (with
`nf_conntrack_tcp_loose=0`) also stops mid-stream packets of flows whose conntrack entry was
deleted when a policy change revoked them.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Any

from netfence.cluster.state import ClusterState
from netfence.dataplane.decisions import DecisionLog
from netfence.dataplane.nflog import COPY_BYTES
from netfence.dataplane.program import CONN_TAG, FAMILIES, ElementMap, NodeProgram

TABLE = "netfence"
_ADDR_TYPE = {4: "ipv4_addr", 6: "ipv6_addr"}
_IP = {4: "ip", 6: "ip6"}
_PROTO = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}
_UNKNOWN = {"saddr": "unknown-src", "daddr": "unknown-dst"}  # the decision log's places
ND_TYPES = "nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert"
_CHUNK = 2000  # elements per command line: long lines slow nft's parser down


def compile_node(state: ClusterState, node: str, decisions: DecisionLog | None = None) -> str:
    """The nft script that atomically replaces this node's `inet netfence` table
    (`decisions`: the decision log's setting, see `decisions.py`; None: off)."""
    return render_table(NodeProgram(state, node), decisions)


def _key_text(kind: str, key: Any) -> str:
    if kind == "member":
        kind = "range" if isinstance(key, tuple) else "address"
    if kind == "address":
        return str(key)
    if kind == "range":
        return f"{key[0]}-{key[1]}"
    if kind == "pair":
        return f"{key[0]} . {key[1]}"
    if kind == "row":
        return str(key)
    tag, protocol, lo, hi = key
    return f"{tag:#x} . {_PROTO[protocol]} . {lo}-{hi}"


def _element_text(element_map: ElementMap, key: Hashable, value: Any) -> str:
    text = _key_text(element_map.kind, key)
    if element_map.kind in ("ports", "member"):
        return text
    return f"{text} : {value:#x}" if value & CONN_TAG else f"{text} : {value}"


def _chunks(items: list[str]) -> Iterator[str]:
    for i in range(0, len(items), _CHUNK):
        yield ", ".join(items[i : i + _CHUNK])


def render_changes(
    program: NodeProgram,
    deleted: dict[str, list[Hashable]],
    added: dict[str, list[tuple[Hashable, Any]]],
) -> str:
    """One transaction of element deletions then additions ('' when nothing changed).

    nft applies a script all or nothing, and refuses to delete a missing element or add an
    existing one: a table that drifted from what the program expects makes it fail, and
    the caller replaces the whole table instead."""
    maps = {m.name: m for m in program.maps()}
    lines = []
    for name, keys in deleted.items():
        texts = [_key_text(maps[name].kind, k) for k in keys]
        lines += [f"delete element inet {TABLE} {name} {{ {c} }}" for c in _chunks(texts)]
    for name, items in added.items():
        texts = [_element_text(maps[name], k, v) for k, v in items]
        lines += [f"add element inet {TABLE} {name} {{ {c} }}" for c in _chunks(texts)]
    return "".join(f"{line}\n" for line in lines)


# -- rendering ----------------------------------------------------------------------------


def _map(name: str, key: str, value: str, interval: bool = False) -> str:
    flags = "\t\tflags interval\n" if interval else ""
    return f"\tmap {name} {{\n\t\ttype {key} : {value}\n{flags}\t}}\n"


def _side_chain(
    chain: str,
    f: int,
    own: str,
    peer: str,
    prefix: str,
    own_map: str,
    decisions: DecisionLog | None,
) -> str:
    """One side's check: return when not isolated or allowed, drop (or audit) otherwise."""
    ip = _IP[f]
    return f"""\tchain {chain}{f} {{
\t\tmeta mark set 0
\t\tmeta mark set {ip} {own} map @{own_map}
\t\tmeta mark 0 return
\t\tct mark set 0
\t\tct mark set {ip} {peer} map @{prefix}_peer{f}
\t\tct mark 0 ct mark set {ip} {peer} map @{prefix}_range{f}
\t\tmeta mark set meta mark . ct mark map @{prefix}_pairs{f}
\t\tmeta mark set meta mark map @{prefix}_default{f}
\t\tmeta mark . meta l4proto . th dport @conn_ports meta mark set 0 return
{_refuse(decisions, f"{chain}{f}")}\t}}
"""


def render_table(program: NodeProgram, decisions: DecisionLog | None = None) -> str:
    """The script replacing the table with the program's (all elements, as added);
    `decisions`: the decision log's setting (None: off, the refusing rules only drop)."""
    program.flush()  # what the new table holds is everything, not the changes
    added = {m.name: list(m.data.items()) for m in program.maps() if m.data}
    return "".join(_table(decisions)) + render_changes(program, {}, added)


def _refuse(decisions: DecisionLog | None, where: str) -> str:
    """The end of a refusing chain: drop; with the log, a rate-limited NFLOG copy first
    (the limit gates the copy only), and auditing, return (accept) instead of drop."""
    if decisions is None:
        return "\t\tcounter drop\n"
    log = (
        f"\t\tlimit rate {decisions.rate}/second burst {decisions.burst} packets "
        f'log prefix "{decisions.prefix(where)}" group {decisions.group} snaplen {COPY_BYTES}\n'
    )
    return log + ("\t\tcounter return\n" if decisions.audit else "\t\tcounter drop\n")


def _table(decisions: DecisionLog | None) -> Iterator[str]:
    # Declaring then deleting the table inside one transaction replaces it atomically:
    # the kernel never runs with a partial table, and a failed load leaves the old one.
    yield f"table inet {TABLE} {{}}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n"
    for f in FAMILIES:
        addr = _ADDR_TYPE[f]
        for prefix, own in (("eg", "src"), ("in", "dst")):
            yield _map(f"{prefix}_{own}{f}", addr, "mark")
            yield _map(f"{prefix}_peer{f}", addr, "mark")
            yield _map(f"{prefix}_range{f}", addr, "mark", interval=True)
            yield _map(f"{prefix}_pairs{f}", "mark . mark", "mark")
            yield _map(f"{prefix}_default{f}", "mark", "mark")
    yield "\tset conn_ports {\n\t\ttype mark . inet_proto . inet_service\n\t\tflags interval\n\t}\n"
    for f in FAMILIES:
        addr = _ADDR_TYPE[f]
        yield f"\tset pod_cidrs{f} {{\n\t\ttype {addr}\n\t\tflags interval\n\t}}\n"
        yield f"\tset known{f} {{\n\t\ttype {addr}\n\t}}\n"
    for f in FAMILIES:
        # egress: this node's isolated sources, peers looked up by destination; ingress:
        # this node's isolated destinations, peers looked up by source.
        yield _side_chain("egress", f, "saddr", "daddr", "eg", f"eg_src{f}", decisions)
        yield _side_chain("ingress", f, "daddr", "saddr", "in", f"in_dst{f}", decisions)
    if decisions is not None:
        for where in _UNKNOWN.values():
            yield f"\tchain {_chain(where)} {{\n{_refuse(decisions, where)}\t}}\n"
    yield f"""\tchain forward {{
\t\ttype filter hook forward priority filter; policy accept;
\t\tct state established,related accept
\t\tct state invalid drop
\t\ticmpv6 type {{ {ND_TYPES} }} accept
{_unknown("saddr", decisions)}{_unknown("daddr", decisions)}\t\tmeta nfproto ipv4 jump egress4
\t\tmeta nfproto ipv6 jump egress6
\t\tmeta nfproto ipv4 jump ingress4
\t\tmeta nfproto ipv6 jump ingress6
\t}}
\tchain input {{
\t\ttype filter hook input priority filter; policy accept;
\t\tct state established,related accept
\t\tct state invalid drop
\t\ticmpv6 type {{ {ND_TYPES} }} accept
{_unknown("saddr", decisions)}\t\tmeta nfproto ipv4 jump egress4
\t\tmeta nfproto ipv6 jump egress6
\t}}
}}
"""


def _unknown(field: str, decisions: DecisionLog | None) -> str:
    """Drop what comes from (or goes to) this node's pod ranges but no known pod (with the
    decision log: through the chain that logs it first)."""
    verdict = "drop" if decisions is None else f"jump {_chain(_UNKNOWN[field])}"
    return "".join(
        f"\t\t{_IP[f]} {field} @pod_cidrs{f} {_IP[f]} {field} != @known{f} {verdict}\n"
        for f in FAMILIES
    )


def _chain(where: str) -> str:
    return where.replace("-", "_")
