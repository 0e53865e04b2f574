"""compose.yaml: valid against the compose spec, and what its services set is what aqueue
reads, so that the README's commands do what they say."""

from __future__ import annotations

import re
from typing import Any

import pytest

from aqueue.settings import ALL_ROLES, Settings
from tests.deploy.files import (
    COMPOSE,
    METRICS_PORT,
    checked_settings,
    compose,
    dockerfile,
    interpolate,
    metrics_port_of,
    roles_everywhere,
    run,
    settings_of,
    stop_bound,
    tool,
)

AQUEUE_SERVICES = ("api", "worker", "scheduler")


def _env(service: str, environ: dict[str, str] | None = None) -> dict[str, str]:
    """A service's environment in its container: the image's ENV (aqueue's variables),
    then what compose sets, with `environ` as the shell's."""
    _, (_, runtime) = dockerfile()
    env = {k: v for k, v in runtime.env().items() if not k.startswith(("PYTHON", "PIP_"))}
    raw: dict[str, Any] = compose()["services"][service]["environment"]
    env.update({key: interpolate(str(value), environ or {}) for key, value in raw.items()})
    return env


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, f"{duration}: give it in seconds"
    return float(match[1])


def test_it_is_valid_against_the_compose_spec():
    checker = tool("check-jsonschema", "PyPI check-jsonschema")
    result = run(checker, "--builtin-schema", "vendor.compose-spec", str(COMPOSE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_spec_check_would_find_a_mistyped_key(tmp_path):
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("stop_grace_period: 45s", "stop_grace: 45s"))
    checker = tool("check-jsonschema", "PyPI check-jsonschema")
    result = run(checker, "--builtin-schema", "vendor.compose-spec", str(broken))
    assert result.returncode != 0 and "stop_grace" in result.stdout


def test_postgres_16_with_a_named_volume_and_a_pg_isready_healthcheck():
    services = compose()["services"]
    db = services["db"]
    assert re.fullmatch(r"postgres:16(\.\d+)?(-\w+)?", db["image"])
    [volume] = db["volumes"]
    name, _, target = volume.partition(":")
    assert name in compose()["volumes"] and target == "/var/lib/postgresql/data"
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])


@pytest.mark.parametrize("service", AQUEUE_SERVICES)
def test_each_role_runs_from_the_one_image_once_postgres_is_healthy(service):
    spec = compose()["services"][service]
    assert spec["build"] == "." and spec["image"] == compose()["services"]["api"]["image"]
    assert spec["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert "networks" not in spec, "the default network: compose.observability.yaml finds it"


@pytest.mark.parametrize("service", AQUEUE_SERVICES)
def test_every_variable_a_service_sets_is_one_aqueue_reads_and_takes(service):
    checked_settings(service, _env(service))


def test_the_services_run_every_role_between_them():
    roles = {s: checked_settings(s, _env(s)).roles for s in AQUEUE_SERVICES}
    assert roles == {"api": ("api",), "worker": ("worker",), "scheduler": ("scheduler", "reaper")}
    assert roles_everywhere(roles) == set(ALL_ROLES)


def test_the_default_database_url_is_the_db_service():
    db = compose()["services"]["db"]["environment"]
    url = (
        f"postgresql://{db['POSTGRES_USER']}:{db['POSTGRES_PASSWORD']}@db:5432/{db['POSTGRES_DB']}"
    )
    for service in AQUEUE_SERVICES:
        assert settings_of(_env(service)).database_url == url
        elsewhere = _env(service, {"DATABASE_URL": "postgresql://u@elsewhere/x"})
        assert settings_of(elsewhere).database_url == "postgresql://u@elsewhere/x"


def test_queue_from_the_shell_chooses_the_workers_queues():
    # QUEUE=email docker compose up -d worker
    assert settings_of(_env("worker")).queues == {"default": Settings().concurrency}
    assert settings_of(_env("worker", {"QUEUE": "email"})).queues == {"email": 10}
    assert settings_of(_env("worker", {"QUEUE": "default,email:5"})).queues == {
        "default": 10,
        "email": 5,
    }


def test_the_api_port_is_published_on_loopback_and_the_metrics_ports_exposed():
    services = compose()["services"]
    [published] = services["api"]["ports"]
    assert published == f"127.0.0.1:{Settings().port}:{settings_of(_env('api')).port}"
    for service in ("worker", "scheduler"):
        assert metrics_port_of(_env(service)) == METRICS_PORT
        assert services[service]["expose"] == [str(METRICS_PORT)]


def test_a_stopping_worker_gets_its_shutdown_grace_and_time_to_release():
    settings = settings_of(_env("worker"))
    stop = _seconds(compose()["services"]["worker"]["stop_grace_period"])
    assert settings.shutdown_grace_seconds + 10 <= stop <= stop_bound(settings)


@pytest.mark.parametrize("service", ["api", "scheduler"])
def test_the_other_services_stop_before_docker_would_kill_them(service):
    stop = _seconds(compose()["services"][service]["stop_grace_period"])
    assert stop_bound(settings_of(_env(service))) <= stop


def test_the_api_answers_prometheus_which_scrapes_each_replica_by_its_address():
    # compose.observability.yaml finds the replicas through DNS: the Host is an address
    assert settings_of(_env("api")).api_allowed_hosts == ("*",)
    narrowed = {**_env("api"), "AQUEUE_ALLOWED_HOSTS": "localhost,127.0.0.1,[::1]"}
    assert "*" not in settings_of(narrowed).api_allowed_hosts  # what compose.yaml suggests
