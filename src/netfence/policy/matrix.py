"""Whole-cluster connectivity, computed over equivalence classes of pods.

Pods that share a namespace, labels, container ports, the set of ipBlocks their addresses
fall in and host-network-ness are indistinguishable to every policy, so the matrix is
computed class by class. Within that, numpy does the pairs: selectors become boolean masks
over classes (from an inverted label index), each distinct `Conns` value is interned to a
small integer, and a rule updates a whole block of the ingress or egress matrix at once.
Cost grows with rules x matched classes, not with pods squared.

The cluster-wide tiers are order-dependent (first matching rule per port), so they are not
a union: each cell of a tier's subject rows carries an interned evaluation state (the ports
no rule took yet, those allowed, those neither allowed nor denied), rules step the states of
their block in evaluation order, and the final cell is admin-allowed | (admin-open & what the
next tier allows), where the next tier is the NetworkPolicy union for NetworkPolicy-isolated
rows and the baseline tier's answer otherwise (`decide_side` in `engine`, by blocks). A
cluster without cluster-wide policies never builds these states.

The naive pair-by-pair `Engine` is the reference; tests check this module against it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from netfence.cluster.state import ClusterState, ContainerPort, Pod
from netfence.policy.conns import ALL_CONNS, NO_CONNS, Conns
from netfence.policy.engine import Engine, HostNetworkMode
from netfence.policy.ipranges import IPRanges, Span, cut
from netfence.policy.ir import (
    Action,
    AnyPolicy,
    CompiledPolicy,
    Direction,
    IPPeer,
    Peer,
    PodPeer,
    Provenance,
    Rule,
    TierPolicy,
)
from netfence.policy.selectors import Selector

K = TypeVar("K")
IdArray = npt.NDArray[np.int32]
Mask = npt.NDArray[np.bool_]
NONE_ID, ALL_ID = 0, 1
_CHUNK_ROWS = 512


class ConnTable:
    """Interns `Conns` values as integers; 0 is no connection, 1 is all connections."""

    def __init__(self) -> None:
        self.values: list[Conns] = [NO_CONNS, ALL_CONNS]
        self._ids: dict[Conns, int] = {NO_CONNS: NONE_ID, ALL_CONNS: ALL_ID}
        self._union: dict[tuple[int, int], int] = {}
        self._meet: dict[tuple[int, int], int] = {}
        self._minus: dict[tuple[int, int], int] = {}

    def intern(self, conns: Conns) -> int:
        found = self._ids.get(conns)
        if found is None:
            found = self._ids[conns] = len(self.values)
            self.values.append(conns)
        return found

    def union(self, a: int, b: int) -> int:
        if a in (b, ALL_ID) or b == NONE_ID:
            return a
        if a == NONE_ID or b == ALL_ID:
            return b
        key = (a, b) if a < b else (b, a)
        found = self._union.get(key)
        if found is None:
            found = self._union[key] = self.intern(self.values[a] | self.values[b])
        return found

    def meet(self, a: int, b: int) -> int:
        if a in (b, NONE_ID) or b == ALL_ID:
            return a
        if a == ALL_ID or b == NONE_ID:
            return b
        key = (a, b) if a < b else (b, a)
        found = self._meet.get(key)
        if found is None:
            found = self._meet[key] = self.intern(self.values[a] & self.values[b])
        return found

    def minus(self, a: int, b: int) -> int:
        if b == NONE_ID or a == NONE_ID:
            return a
        if a == b or b == ALL_ID:
            return NONE_ID
        key = (a, b)
        found = self._minus.get(key)
        if found is None:
            found = self._minus[key] = self.intern(self.values[a] - self.values[b])
        return found

    def union_with(self, ids: IdArray, conn: int) -> IdArray:
        """Element-wise union of an id array with one id."""
        return self._apply(ids, lambda a: self.union(a, conn))

    def meet_arrays(self, a: IdArray, b: IdArray) -> IdArray:
        """Element-wise intersection of two id arrays of one shape."""
        return self._elementwise(a, b, ALL_ID, NONE_ID, self.meet)

    def union_arrays(self, a: IdArray, b: IdArray) -> IdArray:
        """Element-wise union of two id arrays of one shape."""
        return self._elementwise(a, b, NONE_ID, ALL_ID, self.union)

    def _elementwise(
        self, a: IdArray, b: IdArray, identity: int, absorbing: int, op: Callable[[int, int], int]
    ) -> IdArray:
        """`op` on each pair of cells, computed once per distinct pair of ids."""
        out = np.where(a == identity, b, a)
        mixed = (a != b) & (a != ALL_ID) & (b != ALL_ID) & (a != NONE_ID) & (b != NONE_ID)
        if mixed.any():
            pairs = np.stack([a[mixed], b[mixed]], axis=1)
            uniq, inverse = np.unique(pairs, axis=0, return_inverse=True)
            done = np.array([op(int(x), int(y)) for x, y in uniq], dtype=np.int32)
            out[mixed] = done[inverse.reshape(-1)]
        out[(a == absorbing) | (b == absorbing)] = absorbing
        return out

    def _apply(self, ids: IdArray, fn: Callable[[int], int]) -> IdArray:
        return map_ids(ids, fn)


def map_ids(ids: IdArray, fn: Callable[[int], int]) -> IdArray:
    """`fn` on every cell, computed once per distinct value."""
    keys = ids.astype(np.int64)
    return _map_keys(keys, int(keys.max(initial=0)) + 1, fn)


def map_id_pairs(a: IdArray, b: IdArray, fn: Callable[[int, int], int]) -> IdArray:
    """`fn` on every pair of cells of two arrays of one shape, once per distinct pair."""
    width = int(b.max(initial=0)) + 1
    keys = a.astype(np.int64) * width + b
    return _map_keys(keys, int(keys.max(initial=0)) + 1, lambda k: fn(k // width, k % width))


_DENSE_KEYS = 1 << 22


def _map_keys(keys: npt.NDArray[np.int64], size: int, fn: Callable[[int], int]) -> IdArray:
    """`fn` over integer keys, once per distinct key: through a lookup table when the keys
    are small (no sort: ids are few, cells millions), else through `np.unique`."""
    if size <= _DENSE_KEYS:
        present = np.zeros(size, dtype=bool)
        present[keys] = True
        found = np.flatnonzero(present)
        table = np.zeros(size, dtype=np.int32)
        table[found] = [fn(int(k)) for k in found]
        result: IdArray = table[keys]
        return result
    uniq, inverse = np.unique(keys, return_inverse=True)
    mapped = np.array([fn(int(u)) for u in uniq], dtype=np.int32)
    return mapped[inverse.reshape(keys.shape)]


class TierStates:
    """The evaluation state of an ordered tier for one cell, interned as a small integer.

    A state is (undecided, allowed, open) as conn ids: the ports no rule of the tier took
    yet, those an Allow rule took, and those no Allow or Deny rule took (passed or untaken).
    State 0 is the start: everything undecided and open, nothing allowed.
    """

    def __init__(self, table: ConnTable) -> None:
        self.table = table
        self.states: list[tuple[int, int, int]] = [(ALL_ID, NONE_ID, ALL_ID)]
        self._ids: dict[tuple[int, int, int], int] = {self.states[0]: 0}
        self._steps: dict[tuple[int, int, Action], int] = {}

    def step(self, ids: IdArray, conn: int, action: Action) -> IdArray:
        """Every state after a rule with these ports and this action matched."""
        return map_ids(ids, lambda state: self._step(state, conn, action))

    def _step(self, state: int, conn: int, action: Action) -> int:
        key = (state, conn, action)
        found = self._steps.get(key)
        if found is None:
            table = self.table
            undecided, allowed, open_ = self.states[state]
            taken = table.meet(undecided, conn)
            if taken == NONE_ID:
                found = state
            else:
                undecided = table.minus(undecided, conn)
                if action == "Allow":
                    allowed = table.union(allowed, taken)
                if action != "Pass":
                    open_ = table.minus(open_, taken)
                found = self._intern((undecided, allowed, open_))
            self._steps[key] = found
        return found

    def _intern(self, state: tuple[int, int, int]) -> int:
        found = self._ids.get(state)
        if found is None:
            found = self._ids[state] = len(self.states)
            self.states.append(state)
        return found

    def result(self, state: int, below: int) -> int:
        """What the cell allows: the tier's allowances, and of its open ports those the next
        tier (`below`, ALL_ID when there is none: the default allow) allows."""
        _, allowed, open_ = self.states[state]
        return self.table.union(allowed, self.table.meet(open_, below))


@dataclass
class PodClass:
    index: int
    namespace: str
    labels: dict[str, str]
    ports: tuple[ContainerPort, ...]
    host_network: bool
    pods: list[Pod] = field(default_factory=list)


class ClusterMatrix:
    """Ingress and egress matrices over pod classes and external address ranges.

    `ingress[d, s]`: what destination class d's ingress side allows from source s, where s
    indexes classes then `src_ranges`. `egress[s, d]`: likewise for source class s's egress
    towards classes then `dst_ranges`. `pod_to_pod()` combines both sides.
    """

    def __init__(
        self,
        state: ClusterState,
        family: int | None = None,
        host_network: HostNetworkMode = "pod",
        cut_with: Sequence[AnyPolicy] = (),
    ) -> None:
        """`cut_with`: more policies whose ipBlocks cut the external ranges (for `diff`, so
        that two clusters are compared over the same ranges)."""
        self.state = state
        self.engine = Engine(state, family, host_network)
        self.table = ConnTable()
        policies: list[AnyPolicy] = [*self.engine.policies, *self.engine.tier_policies]
        self.blocks = _distinct_blocks(policies)
        self.classes, self.class_of, self._signatures = _classes(state, self.engine, self.blocks)
        self.src_ranges = _ranges([*policies, *cut_with], "ingress", family)
        self.dst_ranges = _ranges([*policies, *cut_with], "egress", family)
        self._index = _LabelIndex(self.classes, state, host_network)
        self._block_masks = self._make_block_masks()
        self._port_groups = _port_groups(self.classes)
        self._rule_masks: dict[tuple[int, Direction], Mask] = {}
        self.isolated: dict[Direction, Mask] = {}
        # Cluster-wide rules that match some (subject, peer) pair, and whether they take any
        # port there that no earlier rule of their tier took (lint: shadowed rules).
        self.tier_rule_takes: dict[Provenance, bool] = {}
        self.ingress = self._direction("ingress")
        self.egress = self._direction("egress")

    @property
    def size(self) -> int:
        return len(self.classes)

    def pod_to_pod(self, rows: slice | None = None) -> IdArray:
        """[s, d] conn ids between classes (both sides applied); optionally a row block."""
        n = self.size
        rows = rows or slice(0, n)
        egress = self.egress[rows, :n]
        ingress = self.ingress[:, rows].T
        return self.table.meet_arrays(egress, np.ascontiguousarray(ingress))

    def pod_to_range(self) -> IdArray:
        """[s, j]: class s towards `dst_ranges[j]` (only the source's egress applies)."""
        return self.egress[:, self.size :]

    def range_to_pod(self) -> IdArray:
        """[j, d]: `src_ranges[j]` towards class d (only the destination's ingress applies)."""
        return self.ingress[:, self.size :].T

    def conns(self, conn_id: int) -> Conns:
        return self.table.values[conn_id]

    def targets(self, policy: AnyPolicy) -> npt.NDArray[np.intp]:
        """Indexes of the classes the policy selects (whatever its policyTypes or rules)."""
        return np.nonzero(self._index.targets(policy))[0]

    def pod_peer_classes(self, peer: PodPeer) -> Mask:
        return self._index.pod_peer(peer)

    def rule_mask(self, rule: Rule, direction: Direction) -> Mask:
        """The peers a rule selects: classes, then the direction's external ranges."""
        key = (id(rule), direction)
        mask = self._rule_masks.get(key)
        if mask is None:
            mask = self._rule_masks[key] = self._build_rule_mask(rule, direction)
        return mask

    def rule_vector(self, rule: Rule, direction: Direction, target: int) -> IdArray:
        """What `rule` allows class `target` per peer column (named ports resolved)."""
        mask = self.rule_mask(rule, direction)
        out = np.full(mask.size, NONE_ID, dtype=np.int32)
        if direction == "ingress":
            out[mask] = self.table.intern(rule.conns_for(self.classes[target].ports))
            return out
        for conn_id, cols in self._egress_columns(rule, mask):
            out[cols] = conn_id
        return out

    # -- construction -------------------------------------------------------------------

    def _make_block_masks(self) -> dict[IPRanges, tuple[Mask, Mask, Mask]]:
        """Per distinct ipBlock: classes with an address in it, and source/destination ranges."""
        masks = {}
        for block, block_id in self.blocks.items():
            classes = np.array([block_id in sig for sig in self._signatures], dtype=bool)
            src = np.array([block.covers(r) for r in self.src_ranges], dtype=bool)
            dst = np.array([block.covers(r) for r in self.dst_ranges], dtype=bool)
            masks[block] = (classes, src, dst)
        return masks

    def _peer_mask(self, peer: Peer, direction: Direction) -> Mask:
        ranges = self.src_ranges if direction == "ingress" else self.dst_ranges
        if isinstance(peer, IPPeer):
            classes, src, dst = self._block_masks[peer.block]
            return np.concatenate([classes, src if direction == "ingress" else dst])
        return np.concatenate([self._index.pod_peer(peer), np.zeros(len(ranges), dtype=bool)])

    def _build_rule_mask(self, rule: Rule, direction: Direction) -> Mask:
        width = self.size + len(self.src_ranges if direction == "ingress" else self.dst_ranges)
        if rule.peers is None:
            return np.ones(width, dtype=bool)
        mask = np.zeros(width, dtype=bool)
        for peer in rule.peers:
            mask |= self._peer_mask(peer, direction)
        return mask

    def _direction(self, direction: Direction) -> IdArray:
        n = self.size
        width = n + len(self.src_ranges if direction == "ingress" else self.dst_ranges)
        matrix = np.full((n, width), ALL_ID, dtype=np.int32)
        isolated = np.zeros(n, dtype=bool)
        locals_: list[tuple[CompiledPolicy, npt.NDArray[np.intp]]] = []
        tiered: list[tuple[TierPolicy, npt.NDArray[np.intp]]] = []
        every: list[AnyPolicy] = [*self.engine.policies, *self.engine.tier_policies]
        for policy in every:
            if not policy.isolates(direction):
                continue
            targets = self.targets(policy)
            if targets.size:
                isolated[targets] = True
                if isinstance(policy, CompiledPolicy):
                    locals_.append((policy, targets))
                else:
                    tiered.append((policy, targets))
        self.isolated[direction] = isolated
        np_isolated = np.zeros(n, dtype=bool)
        for _, targets in locals_:
            np_isolated[targets] = True
        matrix[np_isolated] = NONE_ID
        for policy, targets in locals_:
            for rule in policy.rules(direction):
                for conn_id, rows, cols in self._rule_blocks(rule, direction, targets):
                    block = np.ix_(rows, cols)
                    matrix[block] = self.table.union_with(matrix[block], conn_id)
        if tiered:
            self._apply_tiers(matrix, np_isolated, tiered, direction)
        return matrix

    def _apply_tiers(
        self,
        matrix: IdArray,
        np_isolated: Mask,
        tiered: list[tuple[TierPolicy, npt.NDArray[np.intp]]],
        direction: Direction,
    ) -> None:
        """Admin and baseline rules, in evaluation order, over their subjects' rows; `matrix`
        holds the NetworkPolicy tier on entry and the final answer on return."""
        rows = np.unique(np.concatenate([targets for _, targets in tiered]))
        local = np.full(self.size, -1, dtype=np.intp)
        local[rows] = np.arange(rows.size)
        shape = (rows.size, matrix.shape[1])
        states = TierStates(self.table)
        admin = np.zeros(shape, dtype=np.int32)
        baseline = np.zeros(shape, dtype=np.int32)
        for policy, targets in tiered:  # engine.tier_policies is in evaluation order
            tier_state = admin if policy.tier == "admin" else baseline
            for rule in policy.rules(direction):
                for conn_id, block_rows, cols in self._rule_blocks(rule, direction, targets):
                    block = np.ix_(local[block_rows], cols)
                    before = tier_state[block]
                    after = states.step(before, conn_id, rule.action)
                    tier_state[block] = after
                    takes = self.tier_rule_takes.get(rule.provenance, False)
                    self.tier_rule_takes[rule.provenance] = takes or bool((after != before).any())
        for start in range(0, rows.size, _CHUNK_ROWS):  # bounded temporaries
            part = slice(start, start + _CHUNK_ROWS)
            block_rows = rows[part]
            below = np.where(
                np_isolated[block_rows][:, None],
                matrix[block_rows],
                map_ids(baseline[part], lambda state: states.result(state, ALL_ID)),
            )
            matrix[block_rows] = map_id_pairs(admin[part], below, states.result)

    def _rule_blocks(
        self, rule: Rule, direction: Direction, targets: npt.NDArray[np.intp]
    ) -> list[tuple[int, npt.NDArray[np.intp], npt.NDArray[np.intp]]]:
        """(conn id, rows, columns) blocks of what `rule` matches, for subject rows `targets`:
        named ports resolve on the destination, the row (ingress) or the column (egress)."""
        mask = self._build_rule_mask(rule, direction)  # used once: not cached
        if not mask.any():
            return []
        if direction == "egress":
            blocks = [
                (conn_id, targets, cols) for conn_id, cols in self._egress_columns(rule, mask)
            ]
        else:
            cols = np.nonzero(mask)[0]
            if rule.has_named_ports:
                groups: dict[int, list[int]] = defaultdict(list)
                for t in targets.tolist():
                    groups[self.table.intern(rule.conns_for(self.classes[t].ports))].append(t)
                blocks = [
                    (conn_id, np.array(rows, dtype=np.intp), cols)
                    for conn_id, rows in groups.items()
                ]
            else:
                blocks = [(self.table.intern(rule.conns_for(())), targets, cols)]
        return [b for b in blocks if b[0] != NONE_ID and b[2].size]

    def _egress_columns(self, rule: Rule, mask: Mask) -> list[tuple[int, npt.NDArray[np.intp]]]:
        """(conn id, destination columns) groups: named ports resolve per destination."""
        n = self.size
        if not rule.has_named_ports:
            return [(self.table.intern(rule.conns_for(())), np.nonzero(mask)[0])]
        # Destination classes grouped by their container ports; external ranges have none,
        # so a named port allows nothing towards an IP.
        groups = []
        for ports, members in self._port_groups.items():
            cols = np.nonzero(mask[:n] & members)[0]
            if cols.size:
                groups.append((self.table.intern(rule.conns_for(ports)), cols))
        ext = np.nonzero(mask[n:])[0] + n
        if ext.size:
            groups.append((self.table.intern(rule.conns_for(())), ext))
        return groups


def _distinct_blocks(policies: Sequence[AnyPolicy]) -> dict[IPRanges, int]:
    blocks: dict[IPRanges, int] = {}
    for policy in policies:
        for rule in (*policy.ingress, *policy.egress):
            for peer in rule.peers or ():
                if isinstance(peer, IPPeer):
                    blocks.setdefault(peer.block, len(blocks))
    return blocks


def _ranges(policies: Sequence[AnyPolicy], direction: Direction, family: int | None) -> list[Span]:
    """External address ranges: each family's space cut at the direction's ipBlock edges.

    For one family (the dataplane's view of a packet) the whole family's space. For both
    (the analyzer's view), IPv4 always (the whole space when no ipBlock is used) and IPv6
    only when some ipBlock of this direction is IPv6, as connectivity lists are written.
    """
    peers = [
        peer
        for policy in policies
        for rule in policy.rules(direction)
        for peer in rule.peers or ()
        if isinstance(peer, IPPeer)
    ]
    blocks = [peer.block for peer in peers]
    if family is not None:
        return cut(family, blocks)
    ranges = cut(4, blocks)
    if any(6 in peer.families for peer in peers):  # even if its excepts leave it empty
        ranges += cut(6, blocks)
    return ranges


def _classes(
    state: ClusterState, engine: Engine, blocks: dict[IPRanges, int]
) -> tuple[list[PodClass], dict[int, int], list[frozenset[int]]]:
    """Group pods into classes.

    Returns the classes, a map id(pod) -> class index, and per class the ids of the ipBlocks
    that hold one of its addresses.
    """
    by_key: dict[tuple[object, ...], PodClass] = {}
    class_of: dict[int, int] = {}
    sig_cache: dict[object, frozenset[int]] = {}
    signatures: list[frozenset[int]] = []
    for pod in state.pods:
        ips = engine.pod_ips(pod)
        sig: frozenset[int] = frozenset()
        if ips and blocks:
            found = sig_cache.get(ips)
            if found is None:
                found = sig_cache[ips] = frozenset(
                    i for b, i in blocks.items() if any(ip in b for ip in ips)
                )
            sig = found
        ports = engine.named_ports(pod)
        key = (pod.namespace, frozenset(pod.labels.items()), ports, sig, pod.host_network)
        pod_class = by_key.get(key)
        if pod_class is None:
            pod_class = by_key[key] = PodClass(
                len(by_key), pod.namespace, dict(pod.labels), ports, pod.host_network
            )
            signatures.append(sig)
        pod_class.pods.append(pod)
        class_of[id(pod)] = pod_class.index
    return list(by_key.values()), class_of, signatures


def _port_groups(classes: Iterable[PodClass]) -> dict[tuple[ContainerPort, ...], Mask]:
    classes = list(classes)
    groups: dict[tuple[ContainerPort, ...], Mask] = {}
    for c in classes:
        mask = groups.get(c.ports)
        if mask is None:
            mask = groups[c.ports] = np.zeros(len(classes), dtype=bool)
        mask[c.index] = True
    return groups


class _LabelIndex:
    """Selectors evaluated as boolean masks over classes, from an inverted label index."""

    def __init__(
        self, classes: Sequence[PodClass], state: ClusterState, host_network: HostNetworkMode
    ) -> None:
        n = len(classes)
        self.n = n
        self._pairs: dict[tuple[str, str], Mask] = {}
        self._keys: dict[str, Mask] = {}
        for c in classes:
            for item in c.labels.items():
                self._mask(self._pairs, item)[c.index] = True
                self._mask(self._keys, item[0])[c.index] = True
        names = sorted(state.namespaces)
        self._ns_labels = {name: state.namespaces[name].labels for name in names}
        self._ns_members: dict[str, Mask] = {}
        for c in classes:
            self._mask(self._ns_members, c.namespace)[c.index] = True
        # In "node" mode selectors never see hostNetwork pods, as targets or as peers.
        self._selectable = np.array(
            [not (c.host_network and host_network == "node") for c in classes], dtype=bool
        )
        self._cache: dict[object, Mask] = {}

    def _mask(self, table: dict[K, Mask], key: K) -> Mask:
        mask = table.get(key)
        if mask is None:
            mask = table[key] = np.zeros(self.n, dtype=bool)
        return mask

    def _empty(self) -> Mask:
        return np.zeros(self.n, dtype=bool)

    def selector(self, selector: Selector) -> Mask:
        cached = self._cache.get(selector)
        if cached is not None:
            return cached
        result = np.ones(self.n, dtype=bool)
        for req in selector.requirements:
            if req.operator in ("In", "NotIn"):
                hit = self._empty()
                for value in req.values:
                    found = self._pairs.get((req.key, value))
                    if found is not None:
                        hit |= found
                result &= hit if req.operator == "In" else ~hit
            else:
                has = self._keys.get(req.key, self._empty())
                result &= has if req.operator == "Exists" else ~has
        self._cache[selector] = result
        return result

    def namespaces(self, selector: Selector) -> Mask:
        key = ("ns", selector)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        result = self._empty()
        for name, labels in self._ns_labels.items():
            if selector.matches(labels) and name in self._ns_members:
                result |= self._ns_members[name]
        self._cache[key] = result
        return result

    def in_namespace(self, name: str) -> Mask:
        return self._ns_members.get(name, self._empty())

    def pod_peer(self, peer: PodPeer) -> Mask:
        if peer.namespace is not None:
            where = self.in_namespace(peer.namespace)
        else:
            assert peer.namespaces is not None
            where = self.namespaces(peer.namespaces)
        mask: Mask = where & self.selector(peer.pods) & self._selectable
        return mask

    def targets(self, policy: AnyPolicy) -> Mask:
        if isinstance(policy, TierPolicy):
            return self.pod_peer(policy.subject)
        mask: Mask = (
            self.in_namespace(policy.namespace)
            & self.selector(policy.pod_selector)
            & self._selectable
        )
        return mask
