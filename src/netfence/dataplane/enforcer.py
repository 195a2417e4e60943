"""Keeping one node's kernel table equal to what the cluster demands, change after change.

An `Enforcer` owns the node's `NodeProgram`. Given a new cluster state it loads the
smallest transaction that gets there: element additions and deletions when only pods and
namespaces changed, a whole new table when policies did (both atomic). If the element
transaction is refused (the table drifted: someone deleted or edited it), the whole table
is loaded instead. After any change, tracked connections the new state no longer allows
are cut (`conntrack.revoke`), so a revoked flow does not live on through `ct state
established`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from netfence.cluster.state import ClusterState, Namespace, Pod
from netfence.dataplane import conntrack
from netfence.dataplane.apply import ApplyError, Nftables
from netfence.dataplane.compile import render_changes, render_table
from netfence.dataplane.decisions import DecisionLog
from netfence.dataplane.program import NodeProgram
from netfence.policy.ipranges import IPNetwork


@dataclass(frozen=True, slots=True)
class PodChanges:
    """Pods added or changed, pods removed (keys), and the namespaces when they changed."""

    upserted: Sequence[Pod] = ()
    deleted: Sequence[str] = ()
    namespaces: Mapping[str, Namespace] | None = None


@dataclass(frozen=True, slots=True)
class Applied:
    mode: Literal["table", "elements", "unchanged"]
    script_bytes: int
    seconds: float  # compile + load
    revoked: int  # tracked flows cut


class Enforcer:
    """One node namespace (None: this one) and the node it stands for.

    `node_addresses`: the node's own addresses; its traffic is never filtered (kubelet
    probes), so its flows are never revoked. `program`: what the kernel table holds now,
    when known (a restarted caller that rebuilt it from the state it last enforced).
    `pod_cidrs`: the node's pod ranges, where addresses of pods not yet programmed are
    refused (see `NodeProgram`; None: those its Node object declares). `decisions`: the
    decision log (None: off); in audit mode nothing is enforced, so tracked flows are not cut
    either.
    """

    def __init__(
        self,
        netns: str | None,
        node: str,
        node_addresses: frozenset[str] = frozenset(),
        program: NodeProgram | None = None,
        pod_cidrs: Sequence[IPNetwork] | None = (),
        decisions: DecisionLog | None = None,
    ) -> None:
        self.netns = netns
        self.decisions = decisions
        # One nft context in the namespace for the enforcer's life: a pod update then costs
        # no process start (see dataplane/apply.py).
        self.nft = Nftables(netns)
        self.pod_cidrs = None if pod_cidrs is None else tuple(pod_cidrs)
        self.node = node
        self.node_addresses = node_addresses
        self.program = program
        # nf_conntrack_tcp_loose=0 in force (see conntrack.harden); None: not tried yet
        self.hardened: bool | None = None
        if program is not None:
            program.flush()  # the kernel holds all of it already

    def apply(self, state: ClusterState, sweep: bool = True) -> Applied:
        """Enforce `state`: by elements when only pods and namespaces changed since the last
        call, else a new table. An `ApplyError` leaves the previous table in force."""
        start = time.perf_counter()
        if self.program is not None and self.program.sync(state):
            return self._load_changes(start, sweep)
        self._harden_once()
        program = NodeProgram(state, self.node, self.pod_cidrs)
        return self._finish("table", self._load_table(program), start, sweep)

    def update(self, pods: PodChanges, sweep: bool = True) -> Applied:
        """Enforce pod and namespace changes (the policies did not change): elements only.

        The caller knows what changed, which saves comparing every pod."""
        start = time.perf_counter()
        if self.program is None:
            raise RuntimeError("no table yet: apply a complete state first")
        self.program.update(pods.upserted, pods.deleted, pods.namespaces)
        return self._load_changes(start, sweep)

    def reload(self) -> Applied:
        """Load the whole table again (after someone else changed or deleted it)."""
        start = time.perf_counter()
        if self.program is None:
            raise RuntimeError("no table yet: apply a complete state first")
        return self._finish("table", self._load_table(self.program), start, True)

    def _load_changes(self, start: float, sweep: bool) -> Applied:
        assert self.program is not None
        script = render_changes(self.program, *self.program.flush())
        if not script:
            return Applied("unchanged", 0, time.perf_counter() - start, 0)
        try:
            self.nft.apply(script)
        except ApplyError:  # drifted: replace the whole table
            return self._finish("table", self._load_table(self.program), start, sweep)
        return self._finish("elements", script, start, sweep)

    def sweep(self) -> int:
        """Cut the tracked flows the table now refuses; how many."""
        assert self.program is not None
        if self.decisions is not None and self.decisions.audit:
            return 0
        allowed = conntrack.table_allows(self.program, self.node_addresses)
        return len(conntrack.revoke(self.netns, allowed))

    def _finish(
        self, mode: Literal["table", "elements"], script: str, start: float, sweep: bool
    ) -> Applied:
        """`sweep` False: the caller sweeps later (off the latency path)."""
        seconds = time.perf_counter() - start
        return Applied(mode, len(script), seconds, self.sweep() if sweep else 0)

    def _harden_once(self) -> None:
        if self.hardened is None:
            self.hardened = conntrack.harden(self.netns)

    def _load_table(self, program: NodeProgram) -> str:
        script = render_table(program, self.decisions)
        self.program = None  # unknown until the load succeeds
        self.nft.apply(script)
        self.program = program
        return script
