"""The web dashboard in a real headless Chromium (Playwright), against `aqueue serve`: every
page loads without a console or page error, the actions do what the API says they did,
the filters and pages of the job list work, API data is shown as text, never run.

Chromium is the system's (scripts/system-tools installs Debian's); without it, or without
Playwright, these tests fail saying so: they are never skipped. Screenshots of every page,
desktop and phone width, go to test-artifacts/dashboard/."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.helpers import ROOT, ServeProcess, free_port, wait_for

try:
    from playwright.async_api import Browser, Page, async_playwright, expect
except ImportError:  # the browser fixture fails saying so
    async_playwright = None

pytestmark = pytest.mark.timeout(180)

ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
# markup in API data: shown as text, or the test's window.__xss is set
XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'


def chromium_path() -> str:
    path = os.environ.get("AQUEUE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail(
            f"Chromium is not installed (looked for {path}): the dashboard's browser tests "
            "need it. Install Debian's (apt-get install chromium; scripts/system-tools does "
            "it when run as root) or set AQUEUE_CHROMIUM to a Chromium binary.",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="module")
async def server(module_db_url: str) -> AsyncIterator[str]:
    port = free_port()
    process = await ServeProcess(
        "--database-url",
        module_db_url,
        "--port",
        str(port),
        "--app",
        "tests.apps:dashboard",
        "--queues",
        "default:4,long:4,cron:1,pages:4,failing:2,pause-me:1",
        "--reaper-interval",
        "0.2",
        "--backoff-base",
        "0.1",
        "--backoff-cap",
        "0.2",
        "--shutdown-grace",
        "1",
    ).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.signal(signal.SIGTERM)
        assert await process.wait() == 0, "\n".join(process.lines[-30:])


@pytest.fixture(scope="module")
async def http(server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    executable = chromium_path()
    if async_playwright is None:
        pytest.fail(
            "Playwright for Python is not installed: pip install -e '.[test]'", pytrace=False
        )
    expect.set_options(timeout=15_000)
    playwright = await async_playwright().start()
    try:
        launched = await playwright.chromium.launch(executable_path=executable)
    except Exception as exc:
        await playwright.stop()
        pytest.fail(f"Chromium at {executable} did not start: {exc}", pytrace=False)
    try:
        yield launched
    finally:
        await launched.close()
        await playwright.stop()


@dataclass
class Tab:
    """A browser page and what went wrong in it: console errors and uncaught exceptions."""

    page: Page
    base: str
    errors: list[str] = field(default_factory=list)
    # console errors this test causes on purpose (the failed request of an API error)
    expected: list[str] = field(default_factory=list)

    async def open(self, hash_route: str) -> None:
        await self.page.goto(f"{self.base}/#{hash_route}")
        await self.ready()

    async def ready(self) -> None:
        await expect(self.page.locator("main#main")).to_have_attribute("data-state", "ready")

    async def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await self.page.evaluate("window.scrollTo(0, 0)")  # the sticky header at the top
        await self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(x in e for x in self.expected)]


@pytest.fixture
async def tab(browser: Browser, server: str) -> AsyncIterator[Tab]:
    context = await browser.new_context(viewport=DESKTOP, locale="en-US", timezone_id="UTC")
    page = await context.new_page()
    tab = Tab(page, server)
    page.on(
        "console",
        lambda m: (
            tab.errors.append(f"console {m.type}: {m.text} ({m.location})")
            if m.type == "error"
            else None
        ),
    )
    page.on("pageerror", lambda exc: tab.errors.append(f"page error: {exc}"))
    try:
        yield tab
        assert await page.evaluate("window.__xss") is None, "markup from API data ran"
    finally:
        await context.close()
    assert not tab.unexpected(), "errors in the page:\n" + "\n".join(tab.unexpected())


# --- the API, beside the page ------------------------------------------------------------


async def enqueue(http: httpx.AsyncClient, type_: str, **fields: Any) -> str:
    response = await http.post("/jobs", json={"type": type_, **fields})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def job(http: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    response = await http.get(f"/jobs/{job_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def until(http: httpx.AsyncClient, job_id: str, status: str) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        found = await job(http, job_id)
        return found if found["status"] == status else None

    result: dict[str, Any] = await wait_for(reached, 20, 0.05)
    return result


async def queue(http: httpx.AsyncClient, name: str) -> dict[str, Any]:
    queues = (await http.get("/queues")).json()["queues"]
    return next(q for q in queues if q["name"] == name)


async def schedule(http: httpx.AsyncClient, name: str) -> dict[str, Any]:
    schedules = (await http.get("/schedules")).json()["schedules"]
    return next(s for s in schedules if s["name"] == name)


async def accept(dialog: Any) -> None:
    await dialog.accept()


def runs(found: dict[str, Any]) -> int:
    return sum(e["status"] == "RUNNING" for e in found["events"])


# --- the tests ---------------------------------------------------------------------------


async def test_every_page_loads_without_errors_at_desktop_and_phone_width(
    tab: Tab, http: httpx.AsyncClient, module_db_url: str
) -> None:
    for n in range(6):
        await enqueue(http, "dash.quick", payload={"n": n})
    dead = await enqueue(
        http,
        "dash.fail",
        payload={"message": f"boom {XSS}", "note": XSS},
        max_attempts=1,
        concurrency_key=f"key {XSS}",
    )
    running = await enqueue(http, "dash.long", queue="long")
    await until(http, dead, "DEAD")
    await until(http, running, "RUNNING")
    conn = await asyncpg.connect(module_db_url)
    try:
        # an hour of history for the charts: attempts that finished 2 to 57 minutes ago
        await conn.execute(
            """INSERT INTO job_events (job_id, at, status, attempt, queue)
               SELECT gen_random_uuid(),
                      now() - interval '2 minutes' - (g % 56) * interval '1 minute',
                      CASE WHEN g % 23 = 0 THEN 'RETRY' ELSE 'COMPLETED' END, 1,
                      CASE WHEN g % 3 = 0 THEN 'cron' ELSE 'default' END
               FROM generate_series(1, 3000) g
               WHERE g % 56 < 40 OR g % 7 = 0"""
        )
        # a lost and a stopped process beside the live one
        await conn.execute(
            """INSERT INTO workers (id, host, pid, version, roles, queues, running, started_at,
                                    last_heartbeat, stopped_at)
               VALUES ('host-b:4242:lost', 'host-b', 4242, '0.1.0', '{worker}',
                       '{"default": 10}', 3, now() - interval '2 hours',
                       now() - interval '10 minutes', NULL),
                      ('host-c:4343:gone', 'host-c', 4343, '0.1.0', '{api,worker}',
                       '{"default": 10}', 0, now() - interval '3 hours',
                       now() - interval '1 hour', now() - interval '1 hour')
               ON CONFLICT (id) DO NOTHING"""
        )
    finally:
        await conn.close()

    page = tab.page
    for width, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        await page.set_viewport_size(viewport)

        await tab.open("/")
        default = page.locator('section.queue[data-queue="default"]')
        await expect(default).to_be_visible()
        await expect(default.locator(".count-dead dd")).not_to_have_text("0")
        # the charts have bars for the jobs that just finished
        await expect(default.locator(".chart-completed rect.bar").first).to_be_visible()
        await expect(default.locator(".chart-failed rect.bar").first).to_be_visible()
        # the chart of every queue sums what /stats says of the hour: compared while the
        # counts hold still (a job of the 5-second schedule finishing between the page's
        # poll and the test's would keep them apart for most of every poll)
        await set_enabled(http, "dash-every-5s", False)
        try:
            await wait_for(lambda: cron_idle(http), 15, 0.2)
            await wait_for(lambda: chart_agrees_with_stats(page, http), 15, 0.5)
        finally:
            await set_enabled(http, "dash-every-5s", True)
        await expect(
            page.locator('section.queue[data-queue="long"] .count-running dd')
        ).to_have_text("1")
        await assert_fits(page, width)
        await tab.shot(f"overview-{width}")

        await tab.open("/jobs")
        await expect(page.locator(f'tr[data-job="{dead}"]')).to_be_visible()
        await expect(page.locator(f'tr[data-job="{running}"] .badge')).to_have_text("RUNNING")
        await assert_fits(page, width)
        await tab.shot(f"jobs-{width}")

        await tab.open(f"/jobs/{dead}")
        await expect(page.locator("h1")).to_have_text("dash.fail")
        # the markup in the error, the payload and the key is there as text
        await expect(page.locator("pre.error-text")).to_contain_text(f"RuntimeError: boom {XSS}")
        await expect(page.locator("pre.json")).to_contain_text('"note": "<img src=x onerror=')
        await expect(page.get_by_text(f"key {XSS}", exact=True)).to_be_visible()
        await expect(page.locator("tr[data-attempt]")).to_have_count(1)
        await page.locator("tr[data-attempt] details summary").click()
        await expect(page.locator("tr[data-attempt] details pre")).to_contain_text("Traceback")
        assert await page.locator("img[src=x]").count() == 0
        await assert_fits(page, width)
        await tab.shot(f"job-{width}")

        await tab.open(f"/jobs/{running}")
        await expect(page.locator(".page-head .badge")).to_have_text("RUNNING")
        await expect(page.locator("tr[data-attempt] .badge")).to_have_text("RUNNING")
        await tab.shot(f"job-running-{width}")

        await tab.open("/schedules")
        row = page.locator('tr[data-name="dash-every-5s"]')
        await expect(row.locator(".badge")).to_have_text("enabled")
        await expect(row).to_contain_text("*/5 * * * * *")
        await assert_fits(page, width)
        await tab.shot(f"schedules-{width}")

        await tab.open("/workers")
        for state in ("alive", "lost", "stopped"):
            await expect(page.locator(f'tr[data-state="{state}"]').first).to_be_visible()
        await assert_fits(page, width)
        await tab.shot(f"workers-{width}")

    assert await page.evaluate("window.__xss") is None
    await http.post(f"/jobs/{running}/cancel", json={})


async def set_enabled(http: httpx.AsyncClient, name: str, enabled: bool) -> None:
    found = await schedule(http, name)
    response = await http.patch(f"/schedules/{found['id']}", json={"enabled": enabled})
    assert response.status_code == 200, response.text


async def cron_idle(http: httpx.AsyncClient) -> bool:
    queues = (await http.get("/queues")).json()["queues"]
    depth = next((q["depth"] for q in queues if q["name"] == "cron"), {})
    return all(depth.get(k, 0) == 0 for k in ("pending", "retry", "running"))


async def chart_agrees_with_stats(page: Page, http: httpx.AsyncClient) -> bool:
    caption = page.locator(".card:not(.queue) .chart-box figcaption").first
    stats = (await http.get("/stats")).json()
    completed = sum(sum(q["completed"]) for q in stats["queues"])
    return f"({completed:,} in the last hour)" in (await caption.text_content() or "")


async def assert_fits(page: Page, width: str) -> None:
    """Nothing wider than the screen (a phone would scroll sideways)."""
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the page is {overflow}px wider than the {width} screen"


async def test_cancel_a_running_job_from_its_page_and_from_the_list(
    tab: Tab, http: httpx.AsyncClient
) -> None:
    first = await enqueue(http, "dash.long", queue="long")
    second = await enqueue(http, "dash.long", queue="long")
    await until(http, first, "RUNNING")
    await until(http, second, "RUNNING")
    page = tab.page

    await tab.open(f"/jobs/{first}")
    await expect(page.locator(".page-head .badge")).to_have_text("RUNNING")
    await page.locator('.page-head button[data-action="cancel"]').click()
    await expect(page.locator(".page-head .badge")).to_have_text("CANCELLED")
    await expect(page.locator(".notice-ok")).to_contain_text("is CANCELLED")
    assert (await job(http, first))["status"] == "CANCELLED"
    # a cancelled job can be retried, not cancelled again
    await expect(page.locator('.page-head button[data-action="cancel"]')).to_have_count(0)
    await expect(page.locator('.page-head button[data-action="retry"]')).to_be_visible()

    await tab.open("/jobs?status=RUNNING&queue=long")
    row = page.locator(f'tr[data-job="{second}"]')
    await row.locator('button[data-action="cancel"]').click()
    await expect(row).to_have_count(0)  # the list, refreshed, has no RUNNING row for it
    assert (await job(http, second))["status"] == "CANCELLED"


async def test_retry_a_dead_job_and_see_it_run_again(tab: Tab, http: httpx.AsyncClient) -> None:
    dead = await enqueue(http, "dash.fail", payload={"message": "fails every time"}, max_attempts=1)
    await until(http, dead, "DEAD")
    page = tab.page
    await tab.open(f"/jobs/{dead}")
    await expect(page.locator("tr[data-attempt]")).to_have_count(1)
    await page.locator('.page-head button[data-action="retry"]').click()
    await expect(page.locator(".notice-ok")).to_contain_text("again")
    # it ran again (and failed again): a second attempt, shown by the page's own refresh
    await expect(page.locator("tr[data-attempt]")).to_have_count(2)
    await expect(page.locator('tr[data-attempt="2"] .badge')).to_have_text("DEAD")
    found = await until(http, dead, "DEAD")
    assert runs(found) == 2
    assert any(e["error"] == "retried (was DEAD)" for e in found["events"])


async def test_pause_a_queue_after_confirming_and_resume_it(
    tab: Tab, http: httpx.AsyncClient
) -> None:
    await until(http, await enqueue(http, "dash.quick", queue="pause-me"), "COMPLETED")
    page = tab.page
    await tab.open("/")
    card = page.locator('section.queue[data-queue="pause-me"]')
    pause = card.locator("button[data-action=pause]")
    await expect(pause).to_be_visible()

    # dismissed: nothing happens
    messages: list[str] = []

    async def dismiss(dialog: Any) -> None:
        messages.append(dialog.message)
        await dialog.dismiss()

    page.once("dialog", dismiss)
    await pause.click()
    await wait_for(lambda: bool(messages), 10)
    assert 'Pause queue "pause-me"?' in messages[0]
    await asyncio.sleep(0.3)
    assert (await queue(http, "pause-me"))["paused"] is False
    await expect(card.locator(".flags .badge").first).to_have_text("active")

    # accepted: paused, for the API too, and its jobs wait
    page.once("dialog", accept)
    await pause.click()
    await expect(card.locator(".flags .badge").first).to_have_text("paused")
    assert (await queue(http, "pause-me"))["paused"] is True
    waiting = await enqueue(http, "dash.quick", queue="pause-me")
    await expect(card.locator(".count-pending dd")).to_have_text("1")
    assert (await job(http, waiting))["status"] == "PENDING"

    # resume asks nothing
    await card.locator("button[data-action=resume]").click()
    await expect(card.locator(".flags .badge").first).to_have_text("active")
    assert (await queue(http, "pause-me"))["paused"] is False
    await until(http, waiting, "COMPLETED")


async def test_retry_every_dead_job_of_a_queue(tab: Tab, http: httpx.AsyncClient) -> None:
    ids = [await enqueue(http, "dash.fail", queue="failing", max_attempts=1) for _ in range(3)]
    for job_id in ids:
        await until(http, job_id, "DEAD")
    page = tab.page
    await tab.open("/")
    card = page.locator('section.queue[data-queue="failing"]')
    button = card.locator("button[data-action=retry-dead]")
    await expect(button).to_have_text("Retry dead (3)")
    page.once("dialog", accept)
    await button.click()
    await expect(page.locator(".notice-ok")).to_contain_text("3 dead job(s) of failing retried")

    async def all_ran_twice() -> bool:
        found = [await job(http, job_id) for job_id in ids]
        return all(f["status"] == "DEAD" and runs(f) == 2 for f in found)

    await wait_for(all_ran_twice, 20, 0.1)
    await expect(button).to_have_text("Retry dead (3)")


async def test_disable_and_enable_a_schedule(tab: Tab, http: httpx.AsyncClient) -> None:
    page = tab.page
    await tab.open("/schedules")
    row = page.locator('tr[data-name="dash-every-5s"]')
    await row.locator("button[data-action=disable]").click()
    await expect(row.locator(".badge")).to_have_text("disabled")
    await expect(page.locator(".notice-ok")).to_contain_text("dash-every-5s disabled")
    assert (await schedule(http, "dash-every-5s"))["enabled"] is False

    await row.locator("button[data-action=enable]").click()
    await expect(row.locator(".badge")).to_have_text("enabled")
    assert (await schedule(http, "dash-every-5s"))["enabled"] is True


async def test_filter_the_jobs_and_walk_their_pages(tab: Tab, http: httpx.AsyncClient) -> None:
    quick = [await enqueue(http, "dash.quick", queue="pages", payload={"n": n}) for n in range(25)]
    failed = [await enqueue(http, "dash.fail", queue="pages", max_attempts=1) for _ in range(3)]
    for job_id in [quick[-1], *failed]:
        await until(http, job_id, "COMPLETED" if job_id == quick[-1] else "DEAD")
    page = tab.page
    await tab.open("/jobs")
    await page.locator("#f-queue").fill("pages")
    await page.locator("#f-type").fill("dash.quick")
    await page.locator("#f-limit").select_option("10")
    await page.get_by_role("button", name="Filter").click()
    await tab.ready()

    rows = page.locator("tbody tr[data-job]")
    seen: list[str] = []
    for expected in (10, 10, 5):
        await expect(rows).to_have_count(expected)
        ids = [await r.get_attribute("data-job") or "" for r in await rows.all()]
        assert all(i in quick for i in ids), "a job of another queue or type is listed"
        seen += ids
        next_page = page.locator("button[data-action=next]")
        if expected == 10:
            await next_page.click()
            await tab.ready()
        else:
            await expect(next_page).to_have_count(0)
    assert seen == list(reversed(quick)), "the pages are not the jobs newest first, each once"

    await page.locator("button[data-action=previous]").click()
    await expect(rows).to_have_count(10)
    assert await rows.first.get_attribute("data-job") == quick[14]

    await page.locator("#f-type").fill("")
    await page.locator("#f-status").select_option("DEAD")
    await page.get_by_role("button", name="Filter").click()
    await expect(rows).to_have_count(3)
    assert {await r.get_attribute("data-job") for r in await rows.all()} == set(failed)
    assert "status=DEAD" in page.url and "queue=pages" in page.url


async def test_an_api_error_is_shown_to_the_user(tab: Tab, http: httpx.AsyncClient) -> None:
    running = await enqueue(http, "dash.long", queue="long")
    await until(http, running, "RUNNING")
    page = tab.page
    await tab.open(f"/jobs/{running}")
    await page.locator("#live-toggle").click()  # the page keeps what it shows
    await expect(page.locator("#live-state")).to_have_text("paused")
    # cancelled behind the page's back: its Cancel button now gets a 409
    await http.post(f"/jobs/{running}/cancel", json={})
    tab.expected.append("409")
    await page.locator('.page-head button[data-action="cancel"]').click()
    notice = page.locator(".notice-error")
    await expect(notice).to_contain_text("Cancel failed: 409")
    await expect(notice).to_contain_text("CANCELLED")
    # a filter the API refuses says why
    tab.expected.append("400")
    await page.goto(f"{tab.base}/#/jobs?queue=no%20spaces")
    await expect(page.locator(".load-error")).to_contain_text("400")
    await expect(page.locator(".load-error")).to_contain_text("queue")
