"""`schemathesis run` over the OpenAPI document a real `aqueue serve --roles api,worker`
serves, with a token: every operation, sent generated valid and invalid input, answers
without a 5xx and as its document says (status codes, content types, response bodies),
refuses what its document calls invalid, and refuses it all without the token.

Deterministic: a fixed seed, a bounded number of examples per operation, one request at
a time and no example database, so that a run sends what the last one sent (the server's
answers differ only in ids and times, which decide nothing the generator does next).

Schemathesis runs as its command line, the one interface its users share: its pytest
loader for a schema a fixture serves (schemathesis.pytest.from_fixture) sets a node
attribute pytest 9.2 no longer has, and a command in its own process leaves this test's
event loop free to read the server's log (a full pipe would stall the server)."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import asyncpg
import pytest

from tests.helpers import ServeProcess, free_port

pytestmark = pytest.mark.timeout(180)

# The server's one shared token (--api-token, every scope): issue 16 asks for a run with
# a token, through the routes' token checks to their code.
API_TOKEN = "fuzz-test-token-0123456789"
# Sent with every request, the schema's own included: the one place for the headers the
# API asks of a client.
AUTH_HEADERS: dict[str, str] = {"Authorization": f"Bearer {API_TOKEN}"}

SEED = 16
# Per operation, in the fuzzing phase (the coverage phase adds its own boundary and
# wrong-type cases): enough to get past each field's validation, few enough for seconds.
MAX_EXAMPLES = 25
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    # input the document calls invalid is refused (a looser API than its document)
    "negative_data_rejection",
    # methods no operation has (TRACE, OPTIONS, ...): a 405 whose Allow lists the path's
    "unsupported_method",
    "allow_header_conformance",
    # the same request without the token, or with a broken one, is refused (401)
    "ignored_auth",
    "missing_required_header",
    "response_headers_conformance",
)
# Not the stateful phase: it follows a created job to GET /jobs/{id}?wait=S, a long-poll
# of up to 30 s for a job no worker here finishes, and what it sends next depends on
# the ids the server answered.
PHASES = ("examples", "coverage", "fuzzing")


def schemathesis_command(schema_url: str) -> list[str]:
    headers = [arg for name, value in AUTH_HEADERS.items() for arg in ("-H", f"{name}: {value}")]
    return [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        schema_url,
        *headers,
        "--checks",
        ",".join(CHECKS),
        "--phases",
        ",".join(PHASES),
        "--mode",
        "all",  # valid input and invalid input
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--generation-deterministic",  # and no example database
        "--workers",
        "1",
        # a request that takes this long is a hang, reported as an error
        "--request-timeout",
        "30",
        "--no-color",
    ]


async def test_schemathesis_finds_no_5xx_and_nothing_the_document_does_not_say(
    db_url: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    port = free_port()
    server = await ServeProcess(
        "--roles", "api,worker", "--database-url", db_url, "--port", str(port),
        "--api-token", API_TOKEN,
    ).start(marker="api listening")  # fmt: skip
    run: asyncio.subprocess.Process | None = None
    try:
        run = await asyncio.create_subprocess_exec(
            *schemathesis_command(f"http://127.0.0.1:{port}/openapi.json"),
            cwd=tmp_path,  # its reports and cache land there, and no config file is found
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output = (await run.communicate())[0].decode(errors="replace")
    finally:
        if run is not None and run.returncode is None:  # the test was stopped
            run.kill()
            await run.wait()
        server.signal(signal.SIGTERM)
        code = await server.wait()
    print(output)  # its summary: what it tested, how long each phase took
    log = "\n".join(server.lines)
    assert run.returncode == 0, f"schemathesis found problems:\n{output}\nserver log:\n{log}"
    assert code == 0, log
    # the token got through to the routes' code: a run refused with 401s throughout would
    # pass every check above
    assert await pool.fetchval("SELECT count(*) FROM all_jobs") > 0, output
    # an exception the error handlers turned into a 500 is logged with its traceback:
    # named here even had no check seen the answer
    assert "unexpected error" not in log, log
