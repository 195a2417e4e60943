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
from dataclasses import dataclass
from typing import Literal

from netfence.cluster.state import ClusterState
from netfence.dataplane import conntrack
from netfence.dataplane.apply import ApplyError, apply_ruleset
from netfence.dataplane.compile import render_changes, render_table
from netfence.dataplane.program import NodeProgram


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
    """

    def __init__(
        self,
        netns: str | None,
        node: str,
        node_addresses: frozenset[str] = frozenset(),
        program: NodeProgram | None = None,
    ) -> None:
        self.netns = netns
        self.node = node
        self.node_addresses = node_addresses
        self.program = program
        if program is not None:
            program.flush()  # the kernel holds all of it already

    def apply(self, state: ClusterState) -> Applied:
        """Enforce `state`; an `ApplyError` leaves the previous table in force."""
        start = time.perf_counter()
        if self.program is None:
            conntrack.harden(self.netns)
        if self.program is not None and self.program.sync(state):
            script = render_changes(self.program, *self.program.flush())
            if not script:
                return Applied("unchanged", 0, time.perf_counter() - start, 0)
            try:
                apply_ruleset(self.netns, script)
                mode: Literal["table", "elements"] = "elements"
            except ApplyError:  # drifted: replace the whole table
                script = self._load_table(self.program)
                mode = "table"
        else:
            script = self._load_table(NodeProgram(state, self.node))
            mode = "table"
        seconds = time.perf_counter() - start
        assert self.program is not None
        allowed = conntrack.table_allows(self.program, self.node_addresses)
        revoked = conntrack.revoke(self.netns, allowed)
        return Applied(mode, len(script), seconds, len(revoked))

    def _load_table(self, program: NodeProgram) -> str:
        script = render_table(program)
        self.program = None  # unknown until the load succeeds
        apply_ruleset(self.netns, script)
        self.program = program
        return script
