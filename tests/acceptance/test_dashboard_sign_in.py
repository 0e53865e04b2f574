"""The dashboard of a server that checks tokens, in a real headless Chromium: it asks for a
token, keeps it in an HTTP-only SameSite=Strict cookie (never in an address), acts with
the session's CSRF token, tells a token without the scope apart, and signs out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from aqueue import tokens
from tests.acceptance.test_dashboard import DESKTOP, Tab, accept, browser  # noqa: F401
from tests.helpers import api_server

try:
    from playwright.async_api import Browser, expect
except ImportError:  # the browser fixture fails saying so
    pass

pytestmark = pytest.mark.timeout(180)

QUEUE = "signed-in"


@pytest.fixture(scope="module")
async def secrets_(module_db_url: str) -> dict[str, str]:
    conn = await asyncpg.connect(module_db_url)
    try:
        made = {}
        for name, scopes in (("operator", ["admin"]), ("viewer", ["read"])):
            _, made[name] = await tokens.create(conn, name, scopes, None)
        return made
    finally:
        await conn.close()


@pytest.fixture(scope="module")
async def server(module_db_url: str, secrets_: dict[str, str]) -> AsyncIterator[str]:
    admin = {"Authorization": f"Bearer {secrets_['operator']}"}
    async with api_server(module_db_url, "--auth", "on") as server:
        async with httpx.AsyncClient(base_url=server.url, headers=admin) as http:
            created = await http.post("/jobs", json={"type": "demo.echo", "queue": QUEUE})
            assert created.status_code == 201, created.text
        yield server.url


@pytest.fixture
async def tab(browser: Browser, server: str) -> AsyncIterator[Tab]:  # noqa: F811
    context = await browser.new_context(viewport=DESKTOP, locale="en-US", timezone_id="UTC")
    page = await context.new_page()
    tab = Tab(page, server)
    page.on(
        "console",
        lambda m: tab.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
    )
    page.on("pageerror", lambda exc: tab.errors.append(f"page error: {exc}"))
    # the page's first requests are refused until it signs in: that is how it learns to ask
    tab.expected.append("401")
    try:
        yield tab
    finally:
        await context.close()
    assert not tab.unexpected(), "errors in the page:\n" + "\n".join(tab.unexpected())


async def sign_in(tab: Tab, secret: str) -> None:
    page = tab.page
    await page.goto(f"{tab.base}/#/")
    await expect(page.locator("main#main")).to_have_attribute("data-page", "sign-in")
    await page.locator("#token").fill(secret)
    await page.locator("form.sign-in button[type=submit]").click()
    await expect(page.locator("main#main")).to_have_attribute("data-page", "overview")
    await tab.ready()


async def paused(server: str, secret: str) -> bool:
    headers = {"Authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(base_url=server, headers=headers) as http:
        queues = (await http.get("/queues")).json()["queues"]
    return bool(next(q for q in queues if q["name"] == QUEUE)["paused"])


async def test_the_dashboard_asks_for_a_token_and_refuses_a_wrong_one(tab: Tab) -> None:
    page = tab.page
    await page.goto(f"{tab.base}/#/jobs")
    await expect(page.locator("main#main")).to_have_attribute("data-page", "sign-in")
    await expect(page.locator("#session")).to_be_hidden()
    await page.locator("#token").fill("aq_" + "n" * 43)
    await page.locator("form.sign-in button[type=submit]").click()
    await expect(page.locator(".sign-in-error")).to_have_text(
        "That token is unknown, revoked or expired."
    )
    assert await page.context.cookies() == []
    await tab.shot("sign-in")


async def test_signed_in_the_token_lives_in_an_http_only_strict_cookie(
    tab: Tab, secrets_: dict[str, str]
) -> None:
    await sign_in(tab, secrets_["operator"])
    page = tab.page
    await expect(page.locator("#session-name")).to_have_text("operator (admin, enqueue, read)")
    cookies = {c["name"]: c for c in await page.context.cookies()}
    assert cookies["aqueue_token"]["httpOnly"] is True
    assert cookies["aqueue_token"]["sameSite"] == "Strict"
    assert cookies["aqueue_csrf"]["sameSite"] == "Strict"
    # the page's script cannot read the token; the address never holds it
    assert secrets_["operator"] not in await page.evaluate("document.cookie")
    assert secrets_["operator"] not in page.url
    await page.goto(f"{tab.base}/#/jobs")
    await tab.ready()
    await expect(page.locator("main#main")).to_have_attribute("data-page", "jobs")


async def test_an_action_carries_the_csrf_token(tab: Tab, secrets_: dict[str, str]) -> None:
    await sign_in(tab, secrets_["operator"])
    card = tab.page.locator(f'section.queue[data-queue="{QUEUE}"]')
    tab.page.once("dialog", accept)
    await card.locator("button[data-action=pause]").click()
    await expect(card.locator(".flags .badge").first).to_have_text("paused")
    assert await paused(tab.base, secrets_["operator"])
    await card.locator("button[data-action=resume]").click()
    await expect(card.locator(".flags .badge").first).to_have_text("active")
    assert not await paused(tab.base, secrets_["operator"])


async def test_a_read_token_sees_but_its_actions_are_refused(
    tab: Tab, secrets_: dict[str, str]
) -> None:
    await sign_in(tab, secrets_["viewer"])
    tab.expected.append("403")
    card = tab.page.locator(f'section.queue[data-queue="{QUEUE}"]')
    tab.page.once("dialog", accept)
    await card.locator("button[data-action=pause]").click()
    await expect(tab.page.locator(".notice-error")).to_contain_text("it needs the admin scope")
    assert not await paused(tab.base, secrets_["operator"])


async def test_signing_out_forgets_the_token(tab: Tab, secrets_: dict[str, str]) -> None:
    await sign_in(tab, secrets_["operator"])
    page = tab.page
    await page.locator("#sign-out").click()
    await expect(page.locator("main#main")).to_have_attribute("data-page", "sign-in")
    names: list[Any] = [c["name"] for c in await page.context.cookies()]
    assert "aqueue_token" not in names
    await page.reload()
    await expect(page.locator("main#main")).to_have_attribute("data-page", "sign-in")
