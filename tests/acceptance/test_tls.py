"""`aqueue serve` over HTTPS: a certificate made here with the openssl command, requests
over TLS verified against it, and plain HTTP refused on the same port; a certificate or
key aqueue cannot use is one line on stderr at start."""

from __future__ import annotations

import signal
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import (
    OPENSSL,
    ROOT,
    ServeProcess,
    aqueue_command,
    free_port,
    self_signed_certificate,
    subprocess_env,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


def trusting(cert: Path) -> ssl.SSLContext:
    """A client that trusts this certificate only, and checks the name it names."""
    return ssl.create_default_context(cafile=str(cert))


@pytest.fixture
async def https(db_url: str, certificate: tuple[Path, Path]) -> AsyncIterator[tuple[int, int]]:
    cert, key = certificate
    port, metrics_port = free_port(), free_port()
    process = await ServeProcess(
        "--roles", "api", "--database-url", db_url, "--port", str(port),
        "--metrics-port", str(metrics_port), "--ssl-certfile", str(cert), "--ssl-keyfile", str(key),
    ).start(marker=f"api listening on https://127.0.0.1:{port}")  # fmt: skip
    try:
        await process.wait_for_line(f"metrics on https://127.0.0.1:{metrics_port}/metrics")
        yield port, metrics_port
    finally:
        process.signal(signal.SIGTERM)
        assert await process.wait() == 0, "\n".join(process.lines[-30:])


async def test_the_api_answers_over_https_verified_against_its_certificate(https, certificate):
    port, metrics_port = https
    cert, _ = certificate
    for host in ("127.0.0.1", "localhost"):
        async with httpx.AsyncClient(
            base_url=f"https://{host}:{port}", verify=trusting(cert)
        ) as http:
            created = await http.post("/jobs", json={"type": "demo.echo", "payload": {"n": 1}})
            assert created.status_code == 201, created.text
            job = (await http.get(f"/jobs/{created.json()['id']}")).json()
            assert job["payload"] == {"n": 1}
    async with httpx.AsyncClient(verify=trusting(cert)) as http:
        metrics = await http.get(f"https://127.0.0.1:{metrics_port}/metrics")
        assert metrics.status_code == 200 and "jobs_enqueued_total" in metrics.text


async def test_plain_http_to_the_tls_port_gets_no_answer(https):
    port, _ = https
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.TransportError):
            await http.get(f"http://127.0.0.1:{port}/healthz")


async def test_a_client_that_does_not_trust_the_certificate_is_refused(https):
    port, _ = https
    async with httpx.AsyncClient() as http:  # the system's CAs: not this certificate
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await http.get(f"https://127.0.0.1:{port}/healthz")


def serve_with(*args: str) -> subprocess.CompletedProcess[str]:
    # no database is reached: the files are checked before anything starts
    return subprocess.run(
        aqueue_command("serve", "--database-url", "postgresql://u@127.0.0.1:1/none", *args),
        env=subprocess_env(),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("aqueue: error: ")
    return lines[0]


def test_a_certificate_without_its_key_is_refused_before_anything_starts(certificate):
    cert, key = certificate
    result = serve_with("--ssl-certfile", str(cert))
    assert result.returncode == 2
    assert "--ssl-certfile needs --ssl-keyfile" in one_line(result)
    result = serve_with("--ssl-keyfile", str(key))
    assert result.returncode == 2
    assert "--ssl-keyfile needs --ssl-certfile" in one_line(result)


def test_files_aqueue_cannot_use_are_one_line_at_start(certificate, tmp_path):
    cert, key = certificate
    _, other_key = self_signed_certificate(tmp_path, "other")
    encrypted = tmp_path / "encrypted.pem"
    subprocess.run(
        [
            OPENSSL,
            "pkey",
            "-in",
            str(key),
            "-out",
            str(encrypted),
            "-aes256",
            "-passout",
            "pass:pw",
        ],
        check=True,
    )
    unreadable = tmp_path / "unreadable.pem"
    unreadable.write_bytes(key.read_bytes())
    unreadable.chmod(0)
    cases = [
        ((tmp_path / "missing.pem", key), "cannot read --ssl-certfile", "No such file"),
        ((cert, tmp_path), "cannot read --ssl-keyfile", "Is a directory"),
        ((key, key), "holds no PEM certificate", str(key)),
        ((cert, cert), "holds no PEM private key", str(cert)),
        ((cert, other_key), "cannot serve HTTPS", "key values mismatch"),
        ((cert, encrypted), "is encrypted", str(encrypted)),
    ]
    if subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0":
        cases.append(((cert, unreadable), "cannot read --ssl-keyfile", "Permission denied"))
    secret = "".join(key.read_text().splitlines()[1:-1])
    for (certfile, keyfile), *words in cases:
        result = serve_with("--ssl-certfile", str(certfile), "--ssl-keyfile", str(keyfile))
        assert result.returncode == 1, result.stderr
        line = one_line(result)
        for word in words:
            assert word in line, line
        assert secret[:40] not in line and "PRIVATE KEY" not in line
