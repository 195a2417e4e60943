"""A node's table contents, kept up to date one pod at a time.

The table's chains never change; only its map elements do (see `compile.py` for the
lookups). This module computes those elements and keeps them current as pods come, go
and change labels, so that pod churn becomes a handful of `add element` / `delete element`
commands in one transaction instead of a new table. Policy changes rebuild (atomically).

Every id is derived from what it stands for, so the same cluster always gives the same
table, whether built at once or reached through a history of changes:

- a row (an isolated local pod's side) is keyed by the set of policies that select the pod
  in that direction (plus its named ports, which ingress rules resolve on it);
- a column (a peer) is keyed by the set of rules whose peers match it, among the wide rules
  (those that can match beyond their policy's namespace) and those of policies selecting
  some local pod (plus, for egress, its named ports); external address ranges are columns
  too; rules for every peer (`from: []`) need no column and go with the row;
- ids are hashes of those keys (probed past the rare collision), connection tags hashes of
  the connections' text. Nothing of a name or label reaches the table but through a hash.

A pair (row . column) holds the connections the row allows towards the column: the union of
its NetworkPolicies' rules matching the column or, when cluster-wide policies (the admin and
baseline tiers) select the pod too, the engine's tier evaluation of those rules
(`policy.engine.side_conns`), computed here once per (row, column) and never per packet. A
row's default (`*_default*`) holds what it allows towards a peer with no pair of its own, so
rules matching every peer and rows selected by cluster-wide policies alone (which allow what
no rule decides) need no pair per column. The per-packet cost is the same few lookups
whatever the cluster and however many tiers.

Why keys and not the matrix's classes: classes are numbered by position, so adding one pod
renumbers them and would rewrite the table; keys stay put, and an update touches only
the elements of the pods it concerns (and, when a policy starts or stops selecting a pod of
this node, the pods of its namespace that its rules tell apart).
"""

from __future__ import annotations

import hashlib
import ipaddress
from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, Generic, Literal, TypeVar

from netfence.cluster.state import NAMESPACE_NAME_LABEL, ClusterState, ContainerPort, Namespace, Pod
from netfence.policy.conns import NO_CONNS, Conns
from netfence.policy.engine import IPAddress, side_conns
from netfence.policy.ipranges import FAMILY_MAX, IPNetwork, Span, cut
from netfence.policy.ir import (
    AnyPolicy,
    CompiledPolicy,
    Direction,
    IPPeer,
    PodPeer,
    Rule,
    TierPolicy,
    compile_cluster_policy,
    compile_policy,
)

CONN_TAG = 0x8000_0000  # connection tags carry the top bit; row and column ids never do
FAMILIES = (4, 6)
DIRECTIONS: tuple[Direction, ...] = ("egress", "ingress")
_ID_BITS = 0x7FFF_FFFF
_NO_RULES: frozenset[str] = frozenset()

K = TypeVar("K", bound=Hashable)
Ports = tuple[ContainerPort, ...]
Where = IPAddress | tuple[str, str]  # a peer's address, or a range (first, last) of texts
# Every rule a peer matches, as the rules its pod matches (shared by the pods of a namespace
# with the same labels) and those its address range matches (shared by the range), and its
# ports. Two shared sets rather than their union: a union is a set of its own per group of
# peers (~2 KB each, thousands of groups).
Matched = tuple[frozenset[str], frozenset[str], Ports]


@dataclass(frozen=True, slots=True)
class RowKey:
    policies: frozenset[str]  # keys of the policies, of every tier, selecting the pod
    ports: Ports  # the pod's container ports when those policies use named ports


@dataclass(frozen=True, slots=True)
class ColumnKey:
    rules: frozenset[str]  # provenance texts of the relevant rules matching the peer
    ports: Ports  # egress: the peer's container ports when a matching rule names ports


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "big")


def _key_text(key: RowKey | ColumnKey) -> str:
    names = key.policies if isinstance(key, RowKey) else key.rules
    ports = ",".join(f"{p.name}/{p.protocol}/{p.port}" for p in key.ports)
    return "\n".join(sorted(names)) + "|" + ports


class _Ids(Generic[K]):
    """Ids derived from keys, reference counted; a collision probes to the next hash."""

    def __init__(self, salt: str, tag: int = 0) -> None:
        self.salt = salt
        self.tag = tag
        self.id_of: dict[K, int] = {}
        self.key_of: dict[int, K] = {}
        self.refs: Counter[K] = Counter()

    def canonical(self, key: K) -> K:
        """The live key equal to `key` if there is one, else `key`: equal keys held as one
        object."""
        found = self.id_of.get(key)
        return key if found is None else self.key_of[found]

    def acquire(self, key: K, text: Callable[[], str]) -> tuple[int, bool]:
        """The key's id, and whether the key just came alive (`text` names a new key)."""
        self.refs[key] += 1
        found = self.id_of.get(key)
        if found is not None:
            return found, False
        name = text()
        probe = 0
        while True:
            value = self.tag | (_hash(f"{self.salt}|{probe}|{name}") & _ID_BITS)
            if value & _ID_BITS and value not in self.key_of:
                break
            probe += 1
        self.id_of[key], self.key_of[value] = value, key
        return value, True

    def release(self, key: K) -> int | None:
        """Drop one reference; the freed id when it was the last."""
        self.refs[key] -= 1
        if self.refs[key] > 0:
            return None
        del self.refs[key]
        value = self.id_of.pop(key)
        del self.key_of[value]
        return value


class Journal:
    """The value each element had at the last flush, for the elements touched since."""

    def __init__(self) -> None:
        self.before: dict[tuple[str, Hashable], tuple[ElementMap, Any]] = {}

    def touch(self, element_map: ElementMap, key: Hashable, old: Any) -> None:
        self.before.setdefault((element_map.name, key), (element_map, old))

    def changes(self) -> tuple[dict[str, list[Hashable]], dict[str, list[tuple[Hashable, Any]]]]:
        """(deleted keys, added (key, value)) per map name, and forget them."""
        deleted: dict[str, list[Hashable]] = defaultdict(list)
        added: dict[str, list[tuple[Hashable, Any]]] = defaultdict(list)
        for (name, key), (element_map, old) in self.before.items():
            new = element_map.data.get(key)
            if old == new:
                continue
            if old is not None:
                deleted[name].append(key)
            if new is not None:
                added[name].append((key, new))
        self.before.clear()
        return deleted, added


ElementKind = Literal["address", "range", "pair", "row", "ports", "member"]


class ElementMap:
    """One nftables map (or set: values are True) as a dict, recording what changes.

    Keys by kind: an address; a range (first, last) of address texts; a pair (row id,
    column id); a row id; ports (tag, protocol, first, last); member: an address or a
    range, in a set."""

    def __init__(self, name: str, kind: ElementKind, journal: Journal) -> None:
        self.name = name
        self.kind = kind
        self.data: dict[Hashable, Any] = {}
        self._journal = journal

    def set(self, key: Hashable, value: Any) -> None:
        old = self.data.get(key)
        if old != value:
            self._journal.touch(self, key, old)
            self.data[key] = value

    def delete(self, key: Hashable) -> None:
        if key in self.data:
            self._journal.touch(self, key, self.data.pop(key))


class _ConnTags:
    """Connection tags shared by all sides, with their (tag . protocol . ports) elements."""

    def __init__(self, ports: ElementMap) -> None:
        self.ids: _Ids[Conns] = _Ids("conns", CONN_TAG)
        self.ports = ports

    def acquire(self, conns: Conns) -> int:
        tag, new = self.ids.acquire(conns, conns.__str__)
        if new:
            for element in _port_elements(tag, conns):
                self.ports.set(element, True)
        return tag

    def elements(self, tag: int) -> Iterator[tuple[int, str, int, int]]:
        conns = self.ids.key_of[tag]
        return _port_elements(tag, conns)

    def release(self, tag: int) -> None:
        conns = self.ids.key_of[tag]
        if self.ids.release(conns) is not None:
            for element in _port_elements(tag, conns):
                self.ports.delete(element)


def _port_elements(tag: int, conns: Conns) -> Iterator[tuple[int, str, int, int]]:
    for protocol, ranges in conns.items():
        for lo, hi in ranges:
            yield (tag, protocol, lo, hi)


class _Rules:
    """The rules of one direction, of every tier, indexed by what their peers can match."""

    def __init__(
        self,
        policies: Iterable[AnyPolicy],
        direction: Direction,
        namespaces: Mapping[str, Namespace],
    ) -> None:
        self.direction = direction
        self.namespaces = namespaces
        self._candidates: dict[str, list[tuple[str, PodPeer]]] = {}
        self._by_labels: dict[tuple[str, ...], frozenset[str]] = {}
        self._sets: dict[frozenset[str], frozenset[str]] = {}  # one object per distinct set
        self.by_text: dict[str, Rule] = {}
        self.by_key: dict[str, AnyPolicy] = {}
        self.of_policy: dict[str, frozenset[str]] = {}
        self.named: dict[str, bool] = {}  # policy key -> some rule names a port
        self.selecting: dict[str, list[CompiledPolicy]] = defaultdict(list)  # by namespace
        self.tiered: list[TierPolicy] = []  # cluster-wide policies taking part here
        self.everyone: set[str] = set()  # rules matching every peer that columns carry
        self.folded: dict[str, frozenset[str]] = {}  # policy -> rules matching every peer
        self.wide: set[str] = set()  # rules that may match beyond the policy's namespace
        self.in_namespace: dict[str, list[tuple[str, PodPeer]]] = defaultdict(list)
        self.by_namespaces: list[tuple[str, PodPeer]] = []
        self.blocks: list[tuple[str, IPPeer]] = []
        for policy in policies:
            if not policy.isolates(direction):
                continue
            self.by_key[policy.key] = policy
            if isinstance(policy, TierPolicy):
                self.tiered.append(policy)
            else:
                self.selecting[policy.namespace].append(policy)
            texts = []
            folded = []
            for rule in policy.rules(direction):
                text = str(rule.provenance)
                texts.append(text)
                self.by_text[text] = rule
                if rule.peers is None:
                    # A rule for every peer needs no column, unless its named ports resolve on
                    # the peer (egress): it goes with the row, in its pairs and default.
                    if direction == "egress" and rule.has_named_ports:
                        self.everyone.add(text)
                    else:
                        folded.append(text)
                for peer in rule.peers or ():
                    if isinstance(peer, IPPeer) or peer.namespace is None:
                        self.wide.add(text)
                    if isinstance(peer, IPPeer):
                        self.blocks.append((text, peer))
                    elif peer.namespace is not None:
                        self.in_namespace[peer.namespace].append((text, peer))
                    else:
                        self.by_namespaces.append((text, peer))
            self.of_policy[policy.key] = frozenset(texts)
            self.folded[policy.key] = frozenset(folded)
            self.named[policy.key] = any(r.has_named_ports for r in policy.rules(direction))

    def of_pod(self, pod: Pod) -> frozenset[str]:
        """The rules whose pod peers match the pod (cached per namespace and labels)."""
        # namespace, then label names and values in turn: one flat tuple, a third of a tuple
        # of pairs and smaller than a frozenset
        key = (pod.namespace, *chain.from_iterable(sorted(pod.labels.items())))
        found = self._by_labels.get(key)
        if found is None:
            rules = frozenset(
                text
                for text, peer in self._namespace_peers(pod.namespace)
                if peer.pods.matches(pod.labels)
            )
            found = self._by_labels[key] = self._sets.setdefault(rules, rules)
        return found

    def forget_namespace(self, name: str) -> None:
        self._candidates.pop(name, None)
        self._by_labels = {k: v for k, v in self._by_labels.items() if k[0] != name}
        self._sets = {rules: rules for rules in self._by_labels.values()}

    def _namespace_peers(self, name: str) -> list[tuple[str, PodPeer]]:
        found = self._candidates.get(name)
        if found is None:
            labels = self._namespace_labels(name)
            found = self._candidates[name] = [
                *self.in_namespace.get(name, ()),
                *(
                    (text, peer)
                    for text, peer in self.by_namespaces
                    if peer.namespaces is not None and peer.namespaces.matches(labels)
                ),
            ]
        return found

    def _namespace_labels(self, name: str) -> Mapping[str, str]:
        namespace = self.namespaces.get(name)
        return namespace.labels if namespace else {NAMESPACE_NAME_LABEL: name}

    def policies_selecting(self, pod: Pod) -> frozenset[str]:
        """The policies of every tier that take part in the pod's side of this direction:
        NetworkPolicies of its namespace selecting it, cluster-wide policies whose subject
        it is."""
        local = [
            p.key
            for p in self.selecting.get(pod.namespace, ())
            if p.pod_selector.matches(pod.labels)
        ]
        if self.tiered:
            labels = self._namespace_labels(pod.namespace)
            local += (
                p.key
                for p in self.tiered
                if p.subject.namespaces is not None
                and p.subject.namespaces.matches(labels)
                and p.subject.pods.matches(pod.labels)
            )
        return frozenset(local)

    def is_tiered(self, policies: frozenset[str]) -> bool:
        return bool(self.tiered) and any(isinstance(self.by_key[p], TierPolicy) for p in policies)

    def side_conns(self, policies: frozenset[str], rules: frozenset[str], ports: Ports) -> Conns:
        """What a pod selected by `policies` allows towards a peer matching `rules`.

        NetworkPolicies alone allow the union of their matching rules; with a cluster-wide
        tier among them the engine's own `side_conns` decides (first match, Pass, the
        baseline only where no NetworkPolicy selects), so the table cannot differ from it."""
        if self.is_tiered(policies):
            matched = {self.by_text[text].provenance for text in rules}
            return side_conns(self.direction, (self.by_key[p] for p in policies), matched, ports)
        found = NO_CONNS
        for text in rules:
            found = found | self.by_text[text].conns_for(ports)
        return found


class _Peers:
    """Which rules of a direction match an external range, or a pod, of one family."""

    def __init__(self, rules: _Rules, family: int) -> None:
        self.rules = rules
        self.family = family
        blocks = [peer.block for _, peer in rules.blocks]
        self.spans: list[Span] = cut(family, blocks)
        self._starts = [lo for _, lo, _ in self.spans]
        self.span_rules = [
            frozenset(
                rules.everyone | {text for text, peer in rules.blocks if peer.block.covers(span)}
            )
            for span in self.spans
        ]

    def index(self, ip: IPAddress) -> int:
        """The span holding the address."""
        return bisect_right(self._starts, int(ip)) - 1

    def of_address(self, ip: IPAddress) -> frozenset[str]:
        return self.span_rules[self.index(ip)]


class Side:
    """One family's one direction: the own, peer, range, pair and default maps and their keys.

    egress: own = this node's egress-isolated pods (by source address), peers looked up by
    destination; ingress: own = ingress-isolated pods here (by destination), peers by source.

    A row's default is what it allows towards a peer none of its policies' rules match: nothing
    under NetworkPolicy isolation, but everything (or what a baseline leaves) when only
    cluster-wide policies select the pod, which have no implicit deny. A pair element exists
    only where the row and column allow something else than the row's default, so a row
    selected by an AdminNetworkPolicy alone costs one default element, not one per column.
    """

    def __init__(self, family: int, rules: _Rules, tags: _ConnTags, journal: Journal) -> None:
        self.family = family
        self.direction = rules.direction
        prefix, own = ("eg", "src") if self.direction == "egress" else ("in", "dst")
        self.own = ElementMap(f"{prefix}_{own}{family}", "address", journal)
        self.peer = ElementMap(f"{prefix}_peer{family}", "address", journal)
        self.ranges = ElementMap(f"{prefix}_range{family}", "range", journal)
        self.pairs = ElementMap(f"{prefix}_pairs{family}", "pair", journal)
        self.default = ElementMap(f"{prefix}_default{family}", "row", journal)
        self.rules = rules
        self.peers = _Peers(rules, family)
        self._tags = tags
        self._rows: _Ids[RowKey] = _Ids(f"{self.own.name}")
        self._columns: _Ids[ColumnKey] = _Ids(f"{self.peer.name}")
        self.relevant: Counter[str] = Counter()  # policy -> local rows it is part of
        # Rules of policies selecting no pod here decide nothing here, so columns need not
        # tell their peers apart: rules of policies selecting local pods ("relevant") shape
        # the columns, and wide rules always do. A wide rule (namespaceSelector, ipBlock,
        # cluster-wide peers) may match thousands of pods, and re-keying them all when its
        # policy first selects a pod here was the p99 of pod updates (0.4-0.8 s at 10,000
        # pods); kept always, an update re-keys at most one namespace's pods (p99 17 ms),
        # for about a quarter more elements (123k instead of 98k for 1,000 local pods of a
        # 10,000-pod / 1,000-policy cluster).
        self._relevant_rules: frozenset[str] = frozenset(rules.wide)
        self._column_keys: dict[Matched, ColumnKey] = {}
        self.row_of: dict[IPAddress, RowKey] = {}
        # every rule each address or range matches, relevant or not; addresses are grouped
        # by what they match (a few thousand groups for 10,000 pods, one shared tuple each,
        # counted; an index from rule to addresses would list every address under "to
        # 0.0.0.0/0", and even one set of members per group was 3 MiB at 10,000 pods)
        self.matched: dict[Where, Matched] = {}
        self._groups: dict[Matched, Matched] = {}
        self._members: Counter[Matched] = Counter()
        self._row_pairs: dict[RowKey, dict[ColumnKey, int]] = {}
        self._column_pairs: dict[ColumnKey, set[RowKey]] = defaultdict(set)
        self._rows_with_policy: dict[str, set[RowKey]] = defaultdict(set)
        self._columns_with_rule: dict[str, set[ColumnKey]] = defaultdict(set)
        self._row_rules: dict[RowKey, frozenset[str]] = {}
        self._row_folded: dict[RowKey, frozenset[str]] = {}  # its rules matching every peer
        self._row_default: dict[RowKey, Conns] = {}
        self._conns: dict[tuple[frozenset[str], frozenset[str], Ports], Conns] = {}

    # -- keys ---------------------------------------------------------------------------

    def row_key(self, pod: Pod) -> RowKey | None:
        policies = self.rules.policies_selecting(pod)
        if not policies:
            return None
        named = self.direction == "ingress" and any(self.rules.named[p] for p in policies)
        return RowKey(policies, _sorted_ports(pod.ports) if named else ())

    def pod_matches(self, pod: Pod, ip: IPAddress) -> Matched:
        return (self.rules.of_pod(pod), self.peers.of_address(ip), _sorted_ports(pod.ports))

    def column_key(self, matched: Matched) -> ColumnKey:
        found = self._column_keys.get(matched)
        if found is None:
            rules = (matched[0] | matched[1]) & self._relevant_rules
            named = self.direction == "egress" and any(
                self.rules.by_text[r].has_named_ports for r in rules
            )
            # The key in use when there is one: groups of peers share their column's key.
            found = self._column_keys[matched] = self._columns.canonical(
                ColumnKey(rules, matched[2] if named else ())
            )
        return found

    # -- placing elements ---------------------------------------------------------------

    def place_row(self, ip: IPAddress, key: RowKey | None) -> None:
        old = self.row_of.get(ip)
        if old == key:
            return
        if key is not None:
            row, new = self._rows.acquire(key, lambda: _key_text(key))
            if new:
                self._add_row(key, row)
            self.own.set(ip, row)
            self.row_of[ip] = key
            self.relevant.update(key.policies)
        else:
            self.own.delete(ip)
            del self.row_of[ip]
        if old is not None:
            self.relevant.subtract(old.policies)
            freed = self._rows.release(old)
            if freed is not None:
                self._drop_row(old, freed)

    def place_column(self, where: Where, matched: Matched | None) -> None:
        """Set (or, with None, remove) the column of an address or of a range (lo, hi).

        A column no relevant rule matches has no pair (the row's default decides), and an
        address whose column is that of its range is found there: neither needs an
        element."""
        before = self.matched.get(where)
        if before is not None and before != matched:
            self._leave(before)
        if matched is None:
            self.matched.pop(where, None)
            key = None
        else:
            matched = self._join(matched) if before != matched else before
            self.matched[where] = matched
            key = self.column_key(matched)
            if not key.rules or (
                not isinstance(where, tuple)
                and key == self.column_key((_NO_RULES, self.peers.of_address(where), ()))
            ):
                key = None
        target = self.ranges if isinstance(where, tuple) else self.peer
        placed = target.data.get(where)
        old = None if placed is None else self._columns.key_of[placed]
        if old == key:
            return
        if key is not None:
            column, new = self._columns.acquire(key, lambda: _key_text(key))
            if new:
                self._add_column(key, column)
            target.set(where, column)
        else:
            target.delete(where)
        if old is not None:
            freed = self._columns.release(old)
            if freed is not None:
                self._drop_column(old, freed)

    def _join(self, matched: Matched) -> Matched:
        """One more member of the group of these matches; returns the group's shared tuple."""
        group = self._groups.setdefault(matched, matched)
        self._members[group] += 1
        return group

    def _leave(self, matched: Matched) -> None:
        self._members[matched] -= 1
        if not self._members[matched]:
            del self._members[matched]
            del self._groups[matched]

    def refresh_relevance(self) -> None:
        """When policies start or stop selecting a pod here, the rules that tell columns
        apart change: re-key the columns those rules match (from the matches already
        computed)."""
        self.relevant = +self.relevant  # drop zero counts
        rules = frozenset(self.rules.wide).union(*(self.rules.of_policy[p] for p in self.relevant))
        if rules == self._relevant_rules:
            return
        changed = rules ^ self._relevant_rules
        self._relevant_rules = rules
        self._column_keys.clear()
        # Only what some changed rule matches gets another key.
        hit = {
            id(group)
            for group in self._groups
            if not (changed.isdisjoint(group[0]) and changed.isdisjoint(group[1]))
        }
        affected = [where for where, group in self.matched.items() if id(group) in hit]
        for where in affected:
            self.place_column(where, self.matched[where])

    def place_ranges(self) -> None:
        make = _address_text(self.family)
        for span, rules in zip(self.peers.spans, self.peers.span_rules, strict=True):
            self.place_column((make(span[1]), make(span[2])), (_NO_RULES, rules, ()))

    def allows(self, own: IPAddress, peer: IPAddress, protocol: str, port: int) -> bool:
        """What this side's lookups decide for a new connection (as the chain does)."""
        row = self.own.data.get(own)
        if row is None:
            return True  # not isolated here
        column = self.peer.data.get(peer)
        if column is None:
            lo, hi = self.peers.spans[self.peers.index(peer)][1:]
            make = _address_text(self.family)
            column = self.ranges.data.get((make(lo), make(hi)))
        tag = self.pairs.data.get((row, column), self.default.data.get(row))
        return tag is not None and any(
            p == protocol and lo <= port <= hi for t, p, lo, hi in self._tags.elements(tag)
        )

    # -- pairs --------------------------------------------------------------------------

    def _conns_for(self, row: RowKey, rules: frozenset[str], ports: Ports) -> Conns:
        # NetworkPolicies alone: the rules decide, whichever policies hold them.
        key = (row.policies if self.rules.is_tiered(row.policies) else frozenset(), rules, ports)
        found = self._conns.get(key)
        if found is None:
            found = self._conns[key] = self.rules.side_conns(row.policies, rules, ports)
        return found

    def _pair_conns(self, row: RowKey, column: ColumnKey) -> Conns:
        rules = column.rules & self._row_rules[row]
        if not rules:
            return self._row_default[row]
        ports = row.ports if self.direction == "ingress" else column.ports
        return self._conns_for(row, rules | self._row_folded[row], ports)

    def _set_pair(self, row: RowKey, column: ColumnKey) -> None:
        conns = self._pair_conns(row, column)
        if conns == self._row_default[row]:
            return  # the default element (or its absence) says it
        tag = self._tags.acquire(conns)
        self.pairs.set((self._rows.id_of[row], self._columns.id_of[column]), tag)
        self._row_pairs[row][column] = tag
        self._column_pairs[column].add(row)

    def _add_row(self, key: RowKey, row: int) -> None:
        self._row_rules[key] = frozenset().union(*(self.rules.of_policy[p] for p in key.policies))
        folded = self._row_folded[key] = frozenset().union(
            *(self.rules.folded[p] for p in key.policies)
        )
        default = self._row_default[key] = self._conns_for(key, folded, key.ports)
        if default:
            self.default.set(row, self._tags.acquire(default))
        self._row_pairs[key] = {}
        for policy in key.policies:
            self._rows_with_policy[policy].add(key)
        candidates: set[ColumnKey] = set()
        for rule in self._row_rules[key]:
            candidates |= self._columns_with_rule.get(rule, set())
        for column in candidates:
            self._set_pair(key, column)

    def _add_column(self, key: ColumnKey, column: int) -> None:
        candidates: set[RowKey] = set()
        policies = {self.rules.by_text[r].provenance.policy for r in key.rules}
        for rule in key.rules:
            self._columns_with_rule[rule].add(key)
        for policy in policies:
            candidates |= self._rows_with_policy.get(policy, set())
        for row in candidates:
            self._set_pair(row, key)

    def _drop_row(self, key: RowKey, row: int) -> None:
        for column, tag in self._row_pairs.pop(key).items():
            self.pairs.delete((row, self._columns.id_of[column]))
            self._tags.release(tag)
            self._column_pairs[column].discard(key)
        for policy in key.policies:
            self._rows_with_policy[policy].discard(key)
        del self._row_rules[key]
        del self._row_folded[key]
        if self._row_default.pop(key):
            self._tags.release(self.default.data[row])
            self.default.delete(row)

    def _drop_column(self, key: ColumnKey, column: int) -> None:
        for row in self._column_pairs.pop(key, set()):
            tag = self._row_pairs[row].pop(key)
            self.pairs.delete((self._rows.id_of[row], column))
            self._tags.release(tag)
        for rule in key.rules:
            self._columns_with_rule[rule].discard(key)


def _sorted_ports(ports: Ports) -> Ports:
    return tuple(sorted(set(ports), key=lambda p: (p.protocol, p.port, p.name or "")))


def _address_text(family: int) -> Callable[[int], str]:
    make = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
    top = FAMILY_MAX[family]

    def text(value: int) -> str:
        assert 0 <= value <= top
        return str(make(value))

    return text


class NodeProgram:
    """The elements of one node's table for a cluster, updated in place as pods change.

    `flush()` returns what changed since the previous flush (or since construction: every
    element) as (deleted keys, added elements) per map; `compile.py` renders either a
    whole table or an element transaction from it.
    """

    def __init__(
        self, state: ClusterState, node: str, pod_cidrs: Sequence[IPNetwork] | None = ()
    ) -> None:
        """`pod_cidrs`: the node's pod address ranges. An address there that belongs to no
        pod this program knows is a pod whose rules are not programmed yet (the network
        plugin gave it an address before its Pod reached the agent): dropped until then.
        None: those its Node object declares (`spec.podCIDRs`), none until it is known."""
        self.node = node
        self._own_cidrs = pod_cidrs is None
        if pod_cidrs is None:
            pod_cidrs = _node_cidrs(state, node)
        self.policies = _policy_records(state)
        compiled: list[AnyPolicy] = [compile_policy(p) for p in state.policies]
        compiled += (compile_cluster_policy(p, state.nodes) for p in state.cluster_policies)
        self.namespaces: dict[str, Namespace] = dict(state.namespaces)
        self.journal = Journal()
        self.conn_ports = ElementMap("conn_ports", "ports", self.journal)
        tags = _ConnTags(self.conn_ports)
        self.rules = {d: _Rules(compiled, d, self.namespaces) for d in DIRECTIONS}
        self.sides = {
            (f, d): Side(f, self.rules[d], tags, self.journal) for f in FAMILIES for d in DIRECTIONS
        }
        self.pods: dict[str, Pod] = {}
        # the keys of the pods holding each address (a tuple: almost always one)
        self._claims: dict[int, dict[IPAddress, tuple[str, ...]]] = {f: {} for f in FAMILIES}
        self.pod_cidrs = {f: ElementMap(f"pod_cidrs{f}", "member", self.journal) for f in FAMILIES}
        self.known = {f: ElementMap(f"known{f}", "member", self.journal) for f in FAMILIES}
        self._cidrs = tuple(pod_cidrs)
        for cidr in pod_cidrs:
            make = _address_text(cidr.version)
            first, last = int(cidr.network_address), int(cidr.broadcast_address)
            self.pod_cidrs[cidr.version].set((make(first), make(last)), True)
        for side in self.sides.values():
            side.place_ranges()
        self.update(upserted=state.pods)

    def maps(self) -> Iterator[ElementMap]:
        for side in self.sides.values():
            yield from (side.own, side.peer, side.ranges, side.pairs, side.default)
        yield self.conn_ports
        for family in FAMILIES:
            yield self.pod_cidrs[family]
            yield self.known[family]

    @property
    def element_count(self) -> int:
        return sum(len(m.data) for m in self.maps())

    def sync(self, state: ClusterState) -> bool:
        """Bring the elements to `state` if only pods and namespaces changed; False when
        the policies differ (the caller builds a new program: a new table)."""
        if _policy_records(state) != self.policies:
            return False
        if self._own_cidrs and _node_cidrs(state, self.node) != self._cidrs:
            return False  # its ranges are in the table's sets too: a new one
        wanted = {p.key: p for p in state.pods}
        self.update(
            upserted=[p for k, p in wanted.items() if self.pods.get(k) != p],
            deleted=[k for k in self.pods if k not in wanted],
            namespaces=state.namespaces,
        )
        return True

    def update(
        self,
        upserted: Iterable[Pod] = (),
        deleted: Iterable[str] = (),
        namespaces: Mapping[str, Namespace] | None = None,
    ) -> None:
        """Pods added or changed (by key), pods removed, and, when given, the namespaces
        as they now are (a label change re-keys the namespace's pods)."""
        affected: dict[int, set[IPAddress]] = {f: set() for f in FAMILIES}
        for key in deleted:
            old = self.pods.pop(key, None)
            if old is not None:
                self._claim(old, key, affected, add=False)
        for pod in upserted:
            key = pod.key  # one string per pod, for `pods` and the claims alike
            old = self.pods.get(key)
            if old == pod:
                continue
            if old is not None:
                self._claim(old, key, affected, add=False)
            self.pods[key] = pod
            self._claim(pod, key, affected, add=True)
        if namespaces is not None:
            self._namespaces(namespaces, affected)
        for family, addresses in affected.items():
            for ip in addresses:
                self._place(family, ip)
            for direction in DIRECTIONS:
                self.sides[(family, direction)].refresh_relevance()

    def flush(self) -> tuple[dict[str, list[Hashable]], dict[str, list[tuple[Hashable, Any]]]]:
        return self.journal.changes()

    def allows(self, src: IPAddress, dst: IPAddress, protocol: str, port: int) -> bool:
        """What this node's table decides for a new connection it forwards: unknown pods
        of this node refused, then the source's egress side here, then the destination's
        ingress side here."""
        family = src.version
        if self.unknown(src) or self.unknown(dst):
            return False
        return self.sides[(family, "egress")].allows(src, dst, protocol, port) and self.sides[
            (family, "ingress")
        ].allows(dst, src, protocol, port)

    def _namespaces(
        self, namespaces: Mapping[str, Namespace], affected: dict[int, set[IPAddress]]
    ) -> None:
        changed = {
            name
            for name in {*namespaces, *self.namespaces}
            if namespaces.get(name) != self.namespaces.get(name)
        }
        if not changed:
            return
        self.namespaces.clear()
        self.namespaces.update(namespaces)
        for rules in self.rules.values():
            for name in changed:
                rules.forget_namespace(name)
        for pod in self.pods.values():
            if pod.namespace in changed:
                for family in FAMILIES:
                    ip = _address(pod, family)
                    if ip is not None:
                        affected[family].add(ip)

    def _claim(self, pod: Pod, key: str, affected: dict[int, set[IPAddress]], *, add: bool) -> None:
        if pod.host_network:
            return  # the node's own traffic: matched by address ranges only
        for family in FAMILIES:
            ip = _address(pod, family)
            if ip is None:
                continue
            claims = self._claims[family]
            others = tuple(other for other in claims.get(ip, ()) if other != key)
            if add or others:
                claims[ip] = (*others, key) if add else others
            else:
                claims.pop(ip, None)
            affected[family].add(ip)

    def unknown(self, ip: IPAddress) -> bool:
        """In this node's pod ranges, but no pod of this node that the program knows."""
        return ip not in self.known[ip.version].data and any(
            ip in cidr for cidr in self._cidrs if cidr.version == ip.version
        )

    def _place(self, family: int, ip: IPAddress) -> None:
        """The elements of one address: its owner (the least pod key, when pods share it)."""
        claims = self._claims[family].get(ip)
        owner = self.pods[min(claims)] if claims else None
        if owner is not None and any(ip in cidr for cidr in self._cidrs):
            self.known[family].set(ip, True)
        else:
            self.known[family].delete(ip)
        for direction in DIRECTIONS:
            side = self.sides[(family, direction)]
            side.place_column(ip, side.pod_matches(owner, ip) if owner else None)
            local = owner is not None and owner.node == self.node
            side.place_row(ip, side.row_key(owner) if owner and local else None)


def _node_cidrs(state: ClusterState, node: str) -> tuple[IPNetwork, ...]:
    found = state.nodes.get(node)
    return found.pod_cidrs if found is not None else ()


def _address(pod: Pod, family: int) -> IPAddress | None:
    return next((ip for ip in pod.ips if ip.version == family), None)


def _policy_records(state: ClusterState) -> dict[str, Any]:
    """What the table's chains and rules are built from: policies of every tier and, when
    cluster-wide policies may have `nodes` peers, the nodes (a node's labels or addresses
    changing moves what those peers match)."""
    records: dict[str, Any] = {p.key: p.spec for p in state.policies}  # no key is ""
    records.update((p.key, p.spec) for p in state.cluster_policies)
    if state.cluster_policies:
        records[""] = {n.name: (n.labels, n.addresses) for n in state.nodes.values()}
    return records
