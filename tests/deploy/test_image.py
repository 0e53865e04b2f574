"""The image's own steps, short of Docker (no engine runs here): the wheel is built from
exactly what the Dockerfile's build stage copies, the way it builds it; installed into a
fresh virtualenv it carries the SQL and the `aqueue` command; served from there with the
image's environment, the HEALTHCHECK's own command says healthy while the process answers
and unhealthy once it is gone."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
import tomllib
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from aqueue.settings import OPTIONS
from tests.deploy.files import (
    METRICS_PORT_ENV,
    ROOT,
    dockerfile,
    exec_form,
    metrics_port_option,
    run,
)
from tests.helpers import free_port, self_signed_certificate


def _build_context(into: Path) -> None:
    """What the build stage's COPY instructions put in /src."""
    _, (build, _) = dockerfile()
    for source in build.copied():
        src = ROOT / source
        if src.is_dir():
            shutil.copytree(
                src, into / source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        else:
            shutil.copy2(src, into / source)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import setuptools

    if Version(setuptools.__version__) < Version("68"):
        pytest.fail(
            f"setuptools {setuptools.__version__} cannot build the wheel: install the test "
            "extras with constraints.txt, as .ci/run does (pip install -c constraints.txt "
            "-e '.[dev]')"
        )
    context = tmp_path_factory.mktemp("context")
    _build_context(context)
    out = tmp_path_factory.mktemp("wheels")
    # the build stage's command
    built = run(
        sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps",
        "--wheel-dir", str(out), ".", cwd=context,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    [path] = out.glob("aqueue-*.whl")
    return path


def test_the_wheel_carries_the_sql_and_the_aqueue_command(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = archive.read(entry_points).decode()
    sql = {f"aqueue/sql/{p.name}" for p in (ROOT / "sql").glob("*.sql")}
    assert sql <= names, f"migrations or queries missing from the wheel: {sql - names}"
    modules = {f"aqueue/{p.relative_to(ROOT / 'aqueue')}" for p in (ROOT / "aqueue").rglob("*.py")}
    assert modules <= names, modules - names
    assert not any(n.startswith(("tests/", "bench/")) for n in names)
    assert "aqueue = aqueue.cli:main" in scripts


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel installed; its dependencies are this Python's
    (the versions constraints.txt pins, which the image installs: test_constraints.py)."""
    venv = tmp_path_factory.mktemp("venv")
    made = run(sys.executable, "-m", "venv", "--without-pip", str(venv))
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    site = run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    # a bare path line: the site-packages of this Python, but not its .pth files (the
    # editable install of the working tree stays out)
    Path(site.stdout.strip(), "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = run(
        sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
        "--no-index", str(wheel),
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    where = run(str(python), "-c", "import aqueue.db; print(aqueue.db.sql_dir())", cwd=venv)
    assert where.stdout.startswith(str(venv)), f"aqueue imported from {where.stdout}"
    return venv


def _image_env(**changes: str) -> dict[str, str]:
    """The runtime stage's ENV over a clean environment, with `changes`."""
    _, (_, runtime) = dockerfile()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AQUEUE_", "PYTHON", "VIRTUAL_ENV"))
        and k not in ("DATABASE_URL", "QUEUE")
    }
    env.update(runtime.env())
    # loopback only here: the image's 0.0.0.0 also answers on 127.0.0.1
    env["AQUEUE_HOST"] = "127.0.0.1"
    env.update(changes)
    return env


def _healthcheck(env: Mapping[str, str]) -> int:
    """The HEALTHCHECK's command, as Docker runs it in the container."""
    _, (_, runtime) = dockerfile()
    [healthcheck] = runtime.all("HEALTHCHECK")
    command = exec_form(healthcheck)
    assert command[0] == "python"
    result = subprocess.run(
        [sys.executable, *command[1:]], env=dict(env), capture_output=True, timeout=10
    )
    return result.returncode


class Serving:
    """`aqueue serve` of the installed wheel, as the image's ENTRYPOINT and CMD run it."""

    def __init__(self, venv: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [str(venv / "bin" / "aqueue"), "serve"],
            env=env,
            cwd=venv,  # as WORKDIR: not the source tree
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip())

    def wait_for_line(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no line with {text!r}; the log:\n" + self.log())
            time.sleep(0.05)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def log(self) -> str:
        return "\n".join(self.lines)


def _serving(venv: Path, env: dict[str, str]) -> Iterator[Serving]:
    server = Serving(venv, env)
    try:
        yield server
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


def _until_healthy(env: Mapping[str, str], server: Serving, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while _healthcheck(env) != 0:
        if server.proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError("never healthy; the log:\n" + server.log())
        time.sleep(0.2)


def test_the_api_container_is_healthy_while_it_answers_and_not_after(installed, db_url):
    port = free_port()
    env = _image_env(DATABASE_URL=db_url, AQUEUE_ROLES="api", AQUEUE_PORT=str(port))
    for server in _serving(installed, env):
        _until_healthy(env, server)
        # the installed wheel migrated the database and serves its queries
        depth = httpx.get(f"http://127.0.0.1:{port}/queues/depth?queue=default")
        assert depth.json() == {
            "queues": {"default": {"pending": 0, "oldest_pending_seconds": 0, "paused": False}}
        }
        assert server.stop() == 0
    assert _healthcheck(env) != 0


def test_a_worker_container_is_probed_on_its_metrics_port(installed, db_url):
    port = free_port()
    env = _image_env(DATABASE_URL=db_url, AQUEUE_ROLES="worker", **{METRICS_PORT_ENV: str(port)})
    for server in _serving(installed, env):
        server.wait_for_line("serving")
        if metrics_port_option():
            assert _healthcheck(env) == 0, "the worker's metrics port answers /healthz"
        else:
            # awaited (tests/deploy/files.py): until aqueue serves metrics on their own
            # port, nothing answers there and the check says so
            assert METRICS_PORT_ENV not in {n for o in OPTIONS for n in o.env_names}
            assert _healthcheck(env) != 0
        # a worker given no metrics port has nothing to probe: healthy while it runs
        assert _healthcheck({k: v for k, v in env.items() if k != METRICS_PORT_ENV}) == 0
        assert server.stop() == 0


def test_a_container_serving_https_is_probed_over_https(installed, db_url, tmp_path):
    cert, key = self_signed_certificate(tmp_path)
    port, metrics_port = free_port(), free_port()
    tls = {"AQUEUE_SSL_CERTFILE": str(cert), "AQUEUE_SSL_KEYFILE": str(key)}
    api = _image_env(DATABASE_URL=db_url, AQUEUE_ROLES="api", AQUEUE_PORT=str(port), **tls)
    worker = _image_env(
        DATABASE_URL=db_url, AQUEUE_ROLES="worker", **{METRICS_PORT_ENV: str(metrics_port)}, **tls
    )
    for env in (api, worker):
        for server in _serving(installed, env):
            _until_healthy(env, server)
            # the port speaks TLS only: the check asked over HTTPS, not by luck
            without_tls = {k: v for k, v in env.items() if k not in tls}
            assert _healthcheck(without_tls) != 0
            assert server.stop() == 0
        assert _healthcheck(env) != 0


def test_the_wheel_declares_the_dependencies_of_pyproject(wheel: Path):
    # what the runtime stage's `pip install --constraint` resolves from
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        requires = {
            str(Requirement(line.split(":", 1)[1]))
            for line in archive.read(metadata).decode().splitlines()
            if line.startswith("Requires-Dist:") and "extra ==" not in line
        }
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert requires == {str(Requirement(d)) for d in project["dependencies"]}
