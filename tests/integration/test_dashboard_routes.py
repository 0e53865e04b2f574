"""The dashboard's page and files as HTTP serves them: content types, what is cached and
for how long, the page's security headers, the Host check. (What the page does is tested
in a browser: tests/acceptance/test_dashboard.py.)"""

from __future__ import annotations

import re

import pytest

from aqueue.api.dashboard import ASSETS, files
from aqueue.settings import Settings
from tests.integration.test_api import api_client


@pytest.fixture
async def client(pool):
    async with api_client(pool, Settings()) as c:
        yield c


async def test_the_page_is_html_revalidated_and_names_each_file_with_its_digest(client):
    r = await client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["cache-control"] == "no-cache"
    assert r.headers["etag"] == f'"{files()["index.html"].digest}"'
    for name in ASSETS:
        assert f'"dashboard/{name}?v={files()[name].digest}"' in r.text


async def test_the_page_runs_only_its_own_script_and_cannot_be_framed(client):
    headers = (await client.get("/")).headers
    policy = headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy and "'unsafe-inline'" not in policy
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("app.js", "text/javascript; charset=utf-8"),
        ("app.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ],
)
async def test_a_file_with_its_current_digest_is_cached_for_a_year(client, name, content_type):
    digest = files()[name].digest
    r = await client.get(f"/dashboard/{name}", params={"v": digest})
    assert r.status_code == 200
    assert r.headers["content-type"] == content_type
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert r.content == files()[name].body
    assert r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("query", ["", "?v=0123456789abcdef", "?v="])
async def test_a_file_without_its_current_digest_is_revalidated_every_time(client, query):
    r = await client.get(f"/dashboard/app.js{query}")
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-cache"
    assert r.content == files()["app.js"].body


async def test_a_revalidation_with_the_current_etag_is_a_304_without_a_body(client):
    etag = (await client.get("/")).headers["etag"]
    r = await client.get("/", headers={"If-None-Match": etag})
    assert r.status_code == 304 and r.content == b""
    r = await client.get("/dashboard/app.css", headers={"If-None-Match": '"stale"'})
    assert r.status_code == 200


@pytest.mark.parametrize(
    "path", ["/dashboard/index.html", "/dashboard/nope.js", "/dashboard/..%2F__init__.py"]
)
async def test_anything_else_under_dashboard_is_a_json_404(client, path):
    r = await client.get(path)
    assert r.status_code == 404
    assert r.json()["status"] == 404


async def test_the_page_answers_only_the_allowed_hosts(client):
    r = await client.get("/", headers={"Host": "evil.example"})
    assert r.status_code == 400 and "not allowed" in r.json()["error"]


async def test_the_page_loads_only_what_it_is_served_with(client):
    """Every URL the page names is one of its files (relative: it works under a prefix)."""
    page = (await client.get("/")).text
    for url in re.findall(r'(?:src|href)="([^"]+)"', page):
        if url.startswith("#"):
            continue
        assert url.startswith("dashboard/"), url
        assert (await client.get(f"/{url}")).status_code == 200, url
