"""Fixtures that run the real ACME app (the `build_services`/`build_app` factories) in-process,
with an http-01 responder on loopback so validations go over real HTTP."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from ca.app import build_app, build_services
from ca.config import Config
from tests.acme_client import AcmeSession


class Http01Responder:
    """A real HTTP server on 127.0.0.1 answering /.well-known/acme-challenge/<token>."""

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/.well-known/acme-challenge/{token}", self._answer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _answer(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        if token not in self.tokens:
            raise web.HTTPNotFound()
        return web.Response(text=self.tokens[token])

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()


@pytest.fixture
async def responder():
    server = Http01Responder()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def make_config(tmp_path: Path, database_url: str, responder: Http01Responder):
    def make(**overrides: Any) -> Config:
        base = Config(data_dir=tmp_path / "data", database_url=database_url if "://" in database_url else None,
                      http01_port=responder.port, tls=False)
        if "://" not in database_url:
            base = dataclasses.replace(base, data_dir=Path(database_url).parent / "data")
        return dataclasses.replace(base, **overrides)

    return make


@pytest.fixture
async def start_app(aiohttp_client, clock, make_config):
    services_made = []

    async def start(formats=None, trust=None, **overrides: Any):
        extra = {k: v for k, v in (("formats", formats), ("trust", trust)) if v is not None}
        services = await build_services(make_config(**overrides), clock=clock, environ={}, **extra)
        services_made.append(services)
        client = await aiohttp_client(build_app(services))
        return client, services

    yield start


@pytest.fixture
async def acme(start_app):
    client, services = await start_app()
    session = AcmeSession(client)
    await session.load_directory()
    session.services = services  # type: ignore[attr-defined]
    return session
