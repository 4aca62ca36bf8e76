"""The ops endpoints of `deskhand run`, an aiohttp server on the bot's own loop.

    async with serve_ops(runtime, slack=surface) as ops:
        ops.port  # also in <home>/ops.port while the server runs

- `GET /healthz`: 200 while the loop serves requests (liveness);
- `GET /readyz`: JSON of every dependency (bot/readiness.py); 200 when ready, else 503;
- `GET /metrics`: Prometheus text format from the runtime's registry (bot/metrics.py).

It listens on `DESKHAND_OPS_HOST:DESKHAND_OPS_PORT` (127.0.0.1:9469 by default; port 0 takes
a free one). A port that cannot be bound is logged as an error and the bot serves without
the endpoints: answering customers matters more than being watched.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from bot.logs import get_logger
from bot.readiness import ModelProbe, model_configured, readiness

log = get_logger("deskhand.ops")


@dataclass
class OpsServer:
    host: str
    port: int
    port_file: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def build_app(runtime, slack, model_probe: ModelProbe | None) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def readyz(request: web.Request) -> web.Response:
        report = await readiness(runtime, slack, model_probe)
        return web.json_response(report, status=200 if report["ready"] else 503)

    async def metrics(request: web.Request) -> web.Response:
        if runtime.metrics is None:
            return web.json_response({"error": "metrics are not set up"}, status=503)
        return web.Response(body=await runtime.metrics.render(), headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


def write_port_file(path: Path, port: int) -> None:
    """Write the bound port so a watcher never reads half a file (write, then rename)."""
    partial = path.with_suffix(".port.tmp")
    partial.write_text(f"{port}\n")
    os.replace(partial, path)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart may rebind at once
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


@asynccontextmanager
async def serve_ops(runtime, *, slack=None) -> AsyncIterator[OpsServer | None]:
    """Run the ops endpoints for the life of the block; yields None when they are off."""
    settings = runtime.settings
    if not settings.ops_enabled:
        yield None
        return
    try:
        sock = bind(settings.ops_host, settings.ops_port)
    except OSError as exc:
        log.error("ops_unavailable", host=settings.ops_host, port=settings.ops_port, error=str(exc))
        yield None
        return
    model_probe = ModelProbe(settings) if model_configured(settings) else None
    runner = web.AppRunner(build_app(runtime, slack, model_probe), access_log=None)
    await runner.setup()
    probing = asyncio.create_task(model_probe.run(), name="ops-model-probe") if model_probe else None
    server = OpsServer(settings.ops_host, sock.getsockname()[1], settings.home / "ops.port")
    try:
        await web.SockSite(runner, sock).start()
        write_port_file(server.port_file, server.port)
        log.info("ops_listening", url=server.url, port_file=str(server.port_file))
        yield server
    finally:
        server.port_file.unlink(missing_ok=True)
        if probing is not None:
            probing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probing
        await runner.cleanup()
