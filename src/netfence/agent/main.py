"""Wiring for `netfence agent`: pick the source, build the enforcer, run loop and server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from netfence.agent.http import serve
from netfence.agent.loop import Agent, JsonFormatter
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
    pod_cidrs: tuple[IPNetwork, ...] = ()  # refused until programmed: see NodeProgram


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
        options.netns, options.node, options.node_addresses, pod_cidrs=options.pod_cidrs
    )
    agent = Agent(await _source(options), enforcer)
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
