"""`/metrics`, `/healthz` and `/readyz` over HTTP.

aiohttp serves them from the agent's own event loop (it is already there as the Kubernetes
client's transport), so probes see the loop's real health: a stuck loop stops answering.
"""

from __future__ import annotations

import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from netfence.agent.loop import Agent


def application(agent: Agent) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(agent.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        alive = agent.health.alive(time.monotonic())
        return web.Response(status=200 if alive else 503, text="ok\n" if alive else "stuck\n")

    async def readyz(_: web.Request) -> web.Response:
        ready = agent.health.ready
        return web.Response(status=200 if ready else 503, text="ready\n" if ready else "syncing\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def serve(agent: Agent, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(application(agent), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
