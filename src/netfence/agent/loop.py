"""The agent's loop: a source's changes -> the store -> the node's table, continuously.

Order of events and why:
- Nothing is loaded until the source has delivered its complete first view: a table
  already in the kernel (from a previous run) stays in force meanwhile, and is then replaced
  atomically. The table is never flushed, and it is left in place on exit, so a restart
  never opens a pod.
- Changes are coalesced: the loop takes whatever arrived while it was busy in one go, so a
  burst costs one transaction. Pod and namespace changes become element transactions; a
  policy change builds a new table (both atomic). A change of a cluster-wide policy or of a
  node hands the program the whole state: it builds a new table when the compiled policies
  differ (a node's addresses are those of `nodes` peers), elements otherwise.
- A table that fails to load leaves the previous one in force; the error is counted and
  logged and the loop tries again a second later with the then current state.
- Tracked flows the new table refuses are cut right after each load (off the latency
  path: the change is enforced for new connections already).
- The table's declarations (chains, sets, maps) are compared with what was loaded every
  second, and its rules (`nft -s -t`: no elements nor counter values) as soon as the
  kernel announces a change of the table (`dataplane.events`); if it was deleted or
  edited, it is loaded again. Element
  edits by someone else are caught by the next change's transaction, which nft then
  refuses (`Enforcer` falls back to a whole table).

Enforcement runs in a worker thread (libnftables calls, conntrack subprocesses), so the source
keeps being read while a transaction loads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
import time
from dataclasses import dataclass

from netfence.agent.metrics import Metrics
from netfence.cluster.store import Changed, ClusterStore
from netfence.dataplane.apply import ApplyError, Nftables
from netfence.dataplane.enforcer import Applied, Enforcer, PodChanges
from netfence.dataplane.events import TableEvents
from netfence.dataplane.nflog import NflogError
from netfence.sources.changes import Source

log = logging.getLogger("netfence.agent")
RETRY_SECONDS = 1.0


@dataclass
class Health:
    """What `/healthz` and `/readyz` report."""

    ready: bool = False  # the complete first view is enforced
    last_tick: float = 0.0  # monotonic time the loops last made progress

    def alive(self, now: float, stale: float = 10.0) -> bool:
        return now - self.last_tick < stale


class Agent:
    def __init__(
        self,
        source: Source,
        enforcer: Enforcer,
        metrics: Metrics | None = None,
        *,
        drift_every: float = 1.0,
    ) -> None:
        self.source = source
        self.enforcer = enforcer
        self.metrics = metrics or Metrics()
        self.store = ClusterStore()
        self.health = Health(last_tick=time.monotonic())
        self.drift_every = drift_every
        self._wake = asyncio.Event()
        self._look = asyncio.Event()  # the kernel announced a change of the table
        self._pending_since: float | None = None
        self._first_view = False
        self._retry = False
        # The table as loaded: its declarations, and its rules (see `_drift_loop`)
        self._shape: str | None = None
        self._rules: str | None = None
        self._events: TableEvents | None = None

    async def run(self) -> None:
        """Follow the source until cancelled (or until it ends)."""
        tasks = [
            asyncio.create_task(self._enforce_loop()),
            asyncio.create_task(self._drift_loop()),
        ]
        try:
            events = self._events = await asyncio.to_thread(self._subscribe)
            if events is not None:
                asyncio.get_running_loop().add_reader(events, self._on_events, events)
            async with contextlib.aclosing(self.source.updates()) as updates:
                async for update in updates:
                    self.store.apply(update)
                    self._first_view = True
                    if self._pending_since is None:
                        self._pending_since = time.monotonic()
                    self._wake.set()
        finally:
            if self._events is not None:
                asyncio.get_running_loop().remove_reader(self._events)
                self._events.close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- enforcing ----------------------------------------------------------------------

    async def _enforce_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=RETRY_SECONDS)
            except TimeoutError:
                self.health.last_tick = time.monotonic()
                if not self._retry:
                    continue
            self._wake.clear()
            if not self._first_view:
                continue
            since, self._pending_since = self._pending_since, None
            changed = self.store.take_changed()
            self._record_objects(changed)
            if not changed and not self._retry:
                self.health.last_tick = time.monotonic()
                continue
            try:
                applied, enforced_at = await asyncio.to_thread(self._enforce, changed)
            except Exception as exc:  # the loop must outlive any one failure
                self._retry = True
                kind = "apply" if isinstance(exc, ApplyError) else "internal"
                self.metrics.errors.labels(kind).inc()
                _event(
                    logging.ERROR,
                    "enforce failed; previous table stays",
                    error=f"{type(exc).__name__}: {exc}",
                )
                continue
            self._retry = False
            self._observe(applied, since, enforced_at)
            if applied.mode != "unchanged":  # off the latency path: enforced already
                try:
                    self.metrics.revoked.inc(await asyncio.to_thread(self.enforcer.sweep))
                except (OSError, subprocess.SubprocessError) as exc:
                    self.metrics.errors.labels("conntrack").inc()
                    _event(logging.ERROR, "cutting revoked flows failed", error=str(exc))

    def _enforce(self, changed: Changed) -> tuple[Applied, float]:
        """Load the change; returns how, and when the kernel had it."""
        program = self.enforcer.program
        whole = changed.policies or changed.cluster_policies or changed.nodes
        if program is None or whole or self._retry:
            applied = self.enforcer.apply(self.store.snapshot(), sweep=False)
        else:
            pods = self.store.pods
            applied = self.enforcer.update(
                PodChanges(
                    upserted=[pods[k] for k in changed.pods if k in pods],
                    deleted=[k for k in changed.pods if k not in pods],
                    namespaces=self.store.namespaces if changed.namespaces else None,
                ),
                sweep=False,
            )
        enforced_at = time.monotonic()
        if applied.mode == "table":
            self._shape, self._rules = self._listing(), self._rule_listing()
        return applied, enforced_at

    def _observe(self, applied: Applied, since: float | None, enforced_at: float) -> None:
        self.health.last_tick = time.monotonic()
        if since is not None and applied.mode != "unchanged":
            self.metrics.event_seconds.observe(enforced_at - since)
        self.metrics.sync_seconds.labels(applied.mode).observe(applied.seconds)
        program = self.enforcer.program
        if program is not None:
            self.metrics.elements.set(program.element_count)
        if not self.health.ready:
            self.health.ready = True
            _event(logging.INFO, "ready: the complete view is enforced", mode=applied.mode)
        if applied.mode != "unchanged":
            _event(
                logging.INFO,
                "enforced",
                mode=applied.mode,
                seconds=round(applied.seconds, 6),
                bytes=applied.script_bytes,
            )

    def _record_objects(self, changed: Changed) -> None:
        self.metrics.objects.labels("pods").set(len(self.store.pods))
        self.metrics.objects.labels("networkpolicies").set(len(self.store.policies))
        self.metrics.objects.labels("clusterpolicies").set(len(self.store.cluster_policies))
        self.metrics.objects.labels("nodes").set(len(self.store.declared_nodes))
        self.metrics.objects.labels("namespaces").set(len(self.store.namespaces))
        if changed.problems or changed.cluster_policies:
            problems = [*self.store.problems, *self.store.priority_conflicts()]
            for severity in ("error", "warning"):
                count = sum(p.severity == severity for p in problems)
                self.metrics.problems.labels(severity).set(count)
            for problem in problems:
                _event(logging.WARNING, "problem", problem=str(problem))

    # -- drift ----------------------------------------------------------------------------

    def _listing(self) -> str | None:
        try:
            return self.enforcer.nft.table_shape()
        except (ApplyError, OSError, RuntimeError):
            return None

    def _rule_listing(self) -> str | None:
        """The table's rules, through a context of its own: listing rules makes libnftables
        cache every element, which the enforcer's context must not keep (memory) nor spend
        its time on (pod updates queue behind it)."""
        try:
            with Nftables(self.enforcer.netns) as nft:
                return nft.table_rules()
        except (ApplyError, OSError, RuntimeError):
            return None

    def _subscribe(self) -> TableEvents | None:
        try:
            return TableEvents(self.enforcer.netns)
        except (NflogError, OSError) as exc:
            _event(
                logging.WARNING,
                "no nftables events: the table is checked every second only",
                error=str(exc),
            )
            return None

    def _on_events(self, events: TableEvents) -> None:
        try:
            if events.read():
                self._look.set()
        except OSError as exc:
            self.metrics.errors.labels("drift").inc()
            _event(logging.ERROR, "reading nftables events failed", error=str(exc))

    async def _drift_loop(self) -> None:
        """Every second, the table's declarations (a millisecond) against those loaded: a
        deleted table or chain or set shows there. Rule edits need a rule listing (~0.1 s
        at 50,000 elements): done when the kernel announces a change of the table, or every
        time when there are no events to say so."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._look.wait(), timeout=self.drift_every)
            announced = self._look.is_set()
            self._look.clear()
            if not self.health.ready or self._shape is None or self.enforcer.program is None:
                continue
            same = await asyncio.to_thread(self._listing) == self._shape
            if same and (announced or self._events is None):
                same = await asyncio.to_thread(self._rule_listing) == self._rules
            if same:
                continue
            self.metrics.drift.inc()
            _event(logging.WARNING, "table changed by someone else: loading it again")
            try:
                await asyncio.to_thread(self.enforcer.reload)
                self._shape = await asyncio.to_thread(self._listing)
                self._rules = await asyncio.to_thread(self._rule_listing)
            except (ApplyError, OSError, subprocess.SubprocessError, RuntimeError) as exc:
                self.metrics.errors.labels("drift").inc()
                _event(logging.ERROR, "restoring the table failed", error=str(exc))


def _event(level: int, message: str, **fields: object) -> None:
    log.log(level, message, extra={"fields": fields})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, message and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "time": round(record.created, 3),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        data.update(getattr(record, "fields", {}))
        return json.dumps(data, default=str)
