"""Cross-site request forgery refused: a page of another site cannot make a browser
pause, cancel or retry through the API; the API's own pages and non-browser clients can."""

from __future__ import annotations

from aqueue.settings import Settings
from tests.integration.test_api import api_client


async def test_a_cross_site_post_is_refused_and_changes_nothing(pool):
    async with api_client(pool, Settings()) as client:
        forged = await client.post(
            "/queues/default/pause", headers={"Origin": "http://evil.example"}
        )
        assert forged.status_code == 403 and "cross-site" in forged.json()["error"]
        fetched = await client.post(
            "/queues/default/pause", headers={"Sec-Fetch-Site": "cross-site"}
        )
        assert fetched.status_code == 403
        sandboxed = await client.post("/queues/default/pause", headers={"Origin": "null"})
        assert sandboxed.status_code == 403
        queues = (await client.get("/queues", headers={"Origin": "http://evil.example"})).json()
        assert not any(q["paused"] for q in queues["queues"])


async def test_same_origin_pages_and_plain_clients_may_act(pool):
    async with api_client(pool, Settings()) as client:
        host = client.base_url.netloc.decode()
        own = await client.post(
            "/queues/default/pause",
            headers={"Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"},
        )
        assert own.status_code == 200, own.text
        plain = await client.post("/queues/default/resume")  # curl, an SDK: no Origin
        assert plain.status_code == 200


async def test_a_limit_of_thousands_of_digits_is_a_400_not_a_500(pool):
    async with api_client(pool, Settings()) as client:
        answer = await client.get("/jobs", params={"limit": "9" * 5000})
        assert answer.status_code == 400 and "limit" in answer.json()["error"]
