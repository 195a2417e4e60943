"""Wiring for `netfence agent`: pick the source, build the enforcer, run loop and server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from netfence.agent.http import serve
from netfence.agent.loop import Agent, JsonFormatter
from netfence.dataplane.decisions import Decision, DecisionLog, DecisionReader, Resolver
from netfence.dataplane.enforcer import Enforcer
from netfence.policy.ipranges import IPNetwork
from netfence.sources.changes import Source


@dataclass(frozen=True)
class Options:
    node: str
    manifests: Path | None = None
    kubeconfig: str | None = None  # None with manifests None: in-cluster configuration
    netns: str | None = None
    listen: tuple[str, int] | None = ("127.0.0.1", 9990)
    node_addresses: frozenset[str] = frozenset()
    # refused until programmed (see NodeProgram); None: those the node's Node object declares
    pod_cidrs: tuple[IPNetwork, ...] | None = None
    decision_log: str | None = None  # a file to append JSON lines to, "-": stdout; None: off
    audit: bool = False  # report would-be drops, enforce nothing (logs to stdout by default)

    @property
    def decisions(self) -> DecisionLog | None:
        on = self.decision_log is not None or self.audit
        return DecisionLog(audit=self.audit) if on else None


def configure_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("netfence")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


async def _source(options: Options) -> Source:
    if options.manifests is not None:
        from netfence.sources.files import FilesSource

        return FilesSource(options.manifests)
    from netfence.sources.kube import KubeSource, api_client

    return KubeSource(await api_client(options.kubeconfig))


async def run(options: Options) -> None:
    """Run until SIGTERM/SIGINT; the table stays in the kernel afterwards."""
    enforcer = Enforcer(
        options.netns,
        options.node,
        options.node_addresses,
        pod_cidrs=options.pod_cidrs,
        decisions=options.decisions,
    )
    agent = Agent(await _source(options), enforcer)
    with _decision_log(options, agent):
        runner = await serve(agent, *options.listen) if options.listen else None
        loop = asyncio.get_running_loop()
        task = asyncio.create_task(agent.run())
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, task.cancel)
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            if runner is not None:
                await runner.cleanup()


@contextlib.contextmanager
def _decision_log(options: Options, agent: Agent) -> Iterator[None]:
    """The decision log's reader, subscribed before the first table loads."""
    setting = options.decisions
    if setting is None:
        yield
        return
    path = options.decision_log or "-"
    with contextlib.ExitStack() as stack:
        output: TextIO = (
            sys.stdout if path == "-" else stack.enter_context(open(path, "a", encoding="utf-8"))
        )

        def observe(decision: Decision) -> None:
            agent.metrics.decisions.labels(decision.action, decision.direction).inc()

        reader = DecisionReader(
            setting,
            options.netns,
            Resolver(options.node, lambda: agent.enforcer.program),
            output,
            observe,
            agent.metrics.decisions_lost.inc,
        )
        stack.callback(reader.stop)
        reader.start()
        yield
