"""Databases for the benchmark: one fresh database per system, repetition and scenario,
created from a per-system template that already holds that system's schema."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

import asyncpg


def with_database(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


def safe_name(*parts: str) -> str:
    name = "_".join(re.sub(r"[^a-z0-9]+", "_", p.lower()) for p in parts)
    return name[:63]


class Databases:
    """CREATE/DROP DATABASE through a connection to the server's URL."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.created: list[str] = []

    async def _admin(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.server_url)

    async def create(self, name: str, template: str | None = None) -> str:
        conn = await self._admin()
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if template:
                await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
            else:
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        self.created.append(name)
        return with_database(self.server_url, name)

    async def drop(self, name: str) -> None:
        conn = await self._admin()
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
        if name in self.created:
            self.created.remove(name)

    async def drop_all(self) -> None:
        for name in list(reversed(self.created)):
            try:
                await self.drop(name)
            except Exception:  # best effort at the end of a run
                pass

    async def server_version(self) -> str:
        conn = await self._admin()
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()
