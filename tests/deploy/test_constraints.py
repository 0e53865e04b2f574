"""constraints.txt, the lock the image is built from (scripts/lock writes it): it pins
exactly aqueue's runtime dependencies and the build backend, with everything they need,
and the tests run on those very versions (.ci/run installs with it)."""

from __future__ import annotations

import tomllib
from importlib import metadata

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.files import CONSTRAINTS, ROOT, dockerfile

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def pins() -> dict[str, str]:
    pinned: dict[str, str] = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and version and " " not in line, f"not name==version: {line!r}"
        key = canonicalize_name(name)
        assert key not in pinned, f"{name} pinned twice"
        pinned[key] = version
    return pinned


def closure(requirements: list[str]) -> set[str]:
    """The distributions these requirements install here, theirs included, read from the
    installed distributions' metadata (markers evaluated for this platform)."""
    environment = default_environment()
    found: set[str] = set()
    todo = [(Requirement(r), frozenset({""})) for r in requirements]
    while todo:
        requirement, extras = todo.pop()
        marker = requirement.marker
        if marker and not any(marker.evaluate({**environment, "extra": e}) for e in extras):
            continue
        name = canonicalize_name(requirement.name)
        wanted = frozenset({"", *requirement.extras})
        if name in found and not requirement.extras:
            continue
        found.add(name)
        for sub in metadata.requires(requirement.name) or []:
            todo.append((Requirement(sub), wanted))
    return found


RUNTIME = PYPROJECT["project"]["dependencies"]
BUILD = PYPROJECT["build-system"]["requires"]


def test_every_line_pins_one_version_of_one_package_not_aqueue_itself():
    assert pins()
    assert "aqueue" not in pins()


def test_it_pins_exactly_the_runtime_dependencies_and_the_build_backend_with_theirs():
    expected = closure(RUNTIME) | closure(BUILD)
    assert set(pins()) == expected, (
        f"missing: {sorted(expected - set(pins()))}, not needed: "
        f"{sorted(set(pins()) - expected)}: run scripts/lock after changing dependencies"
    )


def test_the_tests_run_on_the_versions_the_image_installs():
    installed = {name: metadata.version(name) for name in closure(RUNTIME) | closure(BUILD)}
    differ = {n: (v, pins()[n]) for n, v in installed.items() if pins().get(n) != v}
    assert not differ, (
        f"installed here vs pinned (name: (installed, pinned)): {differ}. Install as .ci/run "
        "does, pip install -c constraints.txt -e '.[dev]'; or run scripts/lock to take these"
    )


def test_the_pins_satisfy_what_pyproject_asks():
    for text in RUNTIME + BUILD:
        requirement = Requirement(text)
        version = pins()[canonicalize_name(requirement.name)]
        assert requirement.specifier.contains(version, prereleases=True), (text, version)


def test_the_image_and_ci_install_with_it():
    _, (build, runtime) = dockerfile()
    assert "constraints.txt ./" in build.all("COPY")
    assert all("--constraint" in r for r in build.all("RUN") + runtime.all("RUN"))
    assert "-c constraints.txt" in (ROOT / ".ci" / "run").read_text()
