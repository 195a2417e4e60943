"""The agent's Prometheus metrics, on a registry of its own.

prometheus-client is the reference client; a private registry keeps the process's default
collectors (and anything a test imports) out of what `/metrics` promises.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.sync_seconds = Histogram(
            "netfence_sync_duration_seconds",
            "Time to compile and load one change of the node's table.",
            ["mode"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.event_seconds = Histogram(
            "netfence_event_to_enforced_seconds",
            "From a source reporting a change to the kernel enforcing it.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.objects = Gauge(
            "netfence_objects", "Objects the agent knows.", ["kind"], registry=self.registry
        )
        self.elements = Gauge(
            "netfence_set_elements", "Elements in the node's table.", registry=self.registry
        )
        self.problems = Gauge(
            "netfence_problems",
            "Objects left out or warned about (see the log).",
            ["severity"],
            registry=self.registry,
        )
        self.errors = Counter(
            "netfence_errors_total", "Failures, by kind.", ["kind"], registry=self.registry
        )
        self.revoked = Counter(
            "netfence_revoked_flows_total",
            "Tracked connections cut because a change revoked them.",
            registry=self.registry,
        )
        self.drift = Counter(
            "netfence_drift_repairs_total",
            "Times the table was found changed by someone else and restored.",
            registry=self.registry,
        )
        self.decisions = Counter(
            "netfence_decisions_logged_total",
            "New connections written to the decision log (after the kernel's rate limit).",
            ["action", "direction"],
            registry=self.registry,
        )
        self.decisions_lost = Counter(
            "netfence_decisions_lost_total",
            "Batches of logged connections the kernel dropped because the reader fell behind.",
            registry=self.registry,
        )
