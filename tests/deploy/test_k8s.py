"""k8s/: every manifest valid against the Kubernetes schemas (offline, strict, on the
oldest and newest Kubernetes the validator ships), and the manifests held to the program:
the variables they set, the roles, ports and probe paths, the shutdown grace."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from aqueue.api.app import PROBE_PATHS, create_app
from aqueue.settings import ALL_ROLES, Settings
from tests.deploy.files import (
    K8S,
    METRICS_PORT,
    ROOT,
    applied_by_default,
    checked_settings,
    dockerfile,
    example_secret,
    k8s_files,
    k8s_object,
    k8s_objects,
    metrics_port_of,
    pod_container,
    pod_env,
    roles_everywhere,
    run,
    served_port,
    settings_of,
    stop_bound,
    tool,
)

NATIVE = [p for p in k8s_files() if "keda" not in p.parts]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
DEPLOYMENTS = {"aqueue-api": 2, "aqueue-worker": 3, "aqueue-scheduler": 2}


def _kubernetes_versions() -> list[str]:
    import kubernetes_validate

    shipped = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    versions = sorted(
        (tuple(int(n) for n in p.name[1:].split("-")[0].split(".")) for p in shipped.iterdir()),
    )
    return [".".join(map(str, versions[0])), ".".join(map(str, versions[-1]))]


@pytest.mark.parametrize("version", _kubernetes_versions())
def test_every_manifest_is_valid_against_the_kubernetes_schemas(version):
    validate = tool("kubernetes-validate", "PyPI kubernetes-validate")
    result = run(validate, "--strict", "-k", version, *map(str, NATIVE))
    # an unknown kind is only a warning to it: here it fails too
    problems = [line for line in result.stdout.splitlines() if not line.startswith("INFO")]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr
    assert result.stdout.count("passed") == len(k8s_objects(NATIVE))


def test_the_schema_check_would_find_a_mistyped_field(tmp_path):
    broken = tmp_path / "api.yaml"
    broken.write_text((K8S / "api.yaml").read_text().replace("readinessProbe:", "readyProbe:"))
    result = run(tool("kubernetes-validate", "PyPI kubernetes-validate"), "--strict", str(broken))
    assert result.returncode != 0 and "readyProbe" in result.stdout


def test_kubectl_apply_of_the_top_level_needs_no_custom_resource():
    groups = {o["apiVersion"].rpartition("/")[0] for o in k8s_objects(applied_by_default())}
    assert groups <= {"", "apps", "autoscaling", "policy"}, groups
    assert not any("keda" in p.parts for p in NATIVE)


def test_no_manifest_names_a_namespace():
    for o in k8s_objects():
        assert "namespace" not in o["metadata"], o["metadata"]["name"]


# --- the pods -----------------------------------------------------------------------------


def _deployments() -> list[dict[str, Any]]:
    return [o for o in k8s_objects(applied_by_default()) if o["kind"] == "Deployment"]


def test_the_deployments_and_their_replicas():
    assert {d["metadata"]["name"]: d["spec"]["replicas"] for d in _deployments()} == DEPLOYMENTS


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_every_variable_a_pod_gets_is_one_aqueue_reads_and_takes(name):
    checked_settings(name, pod_env(name))


def test_the_deployments_run_every_role_between_them():
    roles = {name: checked_settings(name, pod_env(name)).roles for name in DEPLOYMENTS}
    assert roles == {
        "aqueue-api": ("api",),
        "aqueue-worker": ("worker",),
        "aqueue-scheduler": ("scheduler", "reaper"),
    }
    assert roles_everywhere(roles) == set(ALL_ROLES)


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_pods_run_the_image_as_its_user_locked_down_with_resources(name):
    deployment = k8s_object("Deployment", name)
    pod = deployment["spec"]["template"]["spec"]
    container = pod_container(deployment)
    assert container["image"] == f"aqueue:{VERSION}"
    assert container["args"] == ["serve"]
    _, (_, runtime) = dockerfile()
    [user] = runtime.all("USER")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}" == user
    assert pod["automountServiceAccountToken"] is False
    _assert_locked_down(pod, container)


def _assert_locked_down(pod: dict[str, Any], container: dict[str, Any]) -> None:
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}
    # the one writable place, for handlers that use tempfile
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/tmp" in mounts


def test_postgres_runs_as_its_own_user_locked_down_too():
    statefulset = k8s_object("StatefulSet", "aqueue-postgres")
    pod = statefulset["spec"]["template"]["spec"]
    container = pod_container(statefulset)
    assert container["image"].startswith("postgres:16")
    assert pod["securityContext"]["runAsNonRoot"] is True
    _assert_locked_down(pod, container)


# --- ports, probes, services ----------------------------------------------------------------


def _app_paths() -> set[str]:
    app = create_app(None, Settings())  # type: ignore[arg-type]  # routes only, no request
    return {getattr(route, "path", "") for route in app.routes}


def _port(container: dict[str, Any], name_or_number: str | int) -> int:
    if isinstance(name_or_number, int):
        return name_or_number
    [port] = [p["containerPort"] for p in container["ports"] if p["name"] == name_or_number]
    return int(port)


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_probes_ask_the_port_the_process_serves_on_routes_it_answers_to_any_host(name):
    container = pod_container(k8s_object("Deployment", name))
    env = pod_env(name)
    port = served_port(env)
    assert [p["containerPort"] for p in container["ports"]] == [port]
    probes = {k: container[k]["httpGet"] for k in ("startupProbe", "livenessProbe")}
    probes["readinessProbe"] = container["readinessProbe"]["httpGet"]
    for kind, probe in probes.items():
        assert _port(container, probe["port"]) == port, kind
        # the kubelet's probe says Host: <pod IP>, which --allowed-hosts need not list
        assert probe["path"] in PROBE_PATHS, kind
    if "api" in settings_of(env).roles:
        assert probes["livenessProbe"]["path"] == "/healthz"
        assert probes["readinessProbe"]["path"] == "/readyz", "ready: the database answers"
        assert PROBE_PATHS <= _app_paths()
    else:
        # a worker's or scheduler's metrics port answers /healthz (the metrics work)
        assert metrics_port_of(env) == METRICS_PORT
        assert {p["path"] for p in probes.values()} == {"/healthz"}


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_prometheus_is_told_where_each_pod_serves_its_metrics(name):
    deployment = k8s_object("Deployment", name)
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == served_port(pod_env(name))
    assert annotations["prometheus.io/path"] == "/metrics"


def _selects(selector: dict[str, str], workload: dict[str, Any]) -> bool:
    labels = workload["spec"]["template"]["metadata"]["labels"]
    return selector.items() <= labels.items()


def test_the_api_service_reaches_the_api_pods_on_their_port():
    service = k8s_object("Service", "aqueue-api")
    api = k8s_object("Deployment", "aqueue-api")
    selected = [
        d["metadata"]["name"] for d in _deployments() if _selects(service["spec"]["selector"], d)
    ]
    assert selected == ["aqueue-api"]
    [port] = service["spec"]["ports"]
    assert _port(pod_container(api), port["targetPort"]) == Settings().port


def test_postgres_is_a_statefulset_with_its_volume_behind_a_headless_service():
    service = k8s_object("Service", "aqueue-postgres")
    statefulset = k8s_object("StatefulSet", "aqueue-postgres")
    assert service["spec"]["clusterIP"] == "None"
    assert statefulset["spec"]["serviceName"] == "aqueue-postgres"
    assert _selects(service["spec"]["selector"], statefulset)
    [claim] = statefulset["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in pod_container(statefulset)["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/var/lib/postgresql/data"
    env = {e["name"]: e for e in pod_container(statefulset)["env"]}
    assert env["PGDATA"]["value"].startswith("/var/lib/postgresql/data/"), "below lost+found"
    # the example DATABASE_URL reaches it: its user, database and Service, by namespace
    url = urlsplit(example_secret()["DATABASE_URL"])
    assert url.username == env["POSTGRES_USER"]["value"]
    assert url.path == "/" + env["POSTGRES_DB"]["value"]
    assert url.hostname and url.hostname.split(".")[0] == "aqueue-postgres"
    assert url.hostname.endswith(".svc") and url.port == service["spec"]["ports"][0]["port"]
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] in example_secret()


def test_the_workers_get_their_shutdown_grace_and_time_to_release_before_a_kill():
    worker = k8s_object("Deployment", "aqueue-worker")
    settings = settings_of(pod_env("aqueue-worker"))
    grace = settings.shutdown_grace_seconds
    termination = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    # as configmap.yaml and worker.yaml say: the grace plus 15, and no more than aqueue
    # itself can take
    assert termination == grace + 15 <= stop_bound(settings)


@pytest.mark.parametrize("name", ["aqueue-api", "aqueue-scheduler"])
def test_the_other_pods_stop_before_they_would_be_killed(name):
    pod = k8s_object("Deployment", name)["spec"]["template"]["spec"]
    pre_stop = pod_container(k8s_object("Deployment", name)).get("lifecycle", {}).get("preStop")
    waits = float(pre_stop["exec"]["command"][1]) if pre_stop else 0.0
    assert waits + stop_bound(settings_of(pod_env(name))) <= pod["terminationGracePeriodSeconds"]


def test_a_disruption_takes_one_worker_at_a_time():
    budget = k8s_object("PodDisruptionBudget", "aqueue-worker")
    assert budget["spec"]["maxUnavailable"] == 1
    selected = [d for d in _deployments() if _selects(budget["spec"]["selector"]["matchLabels"], d)]
    assert [d["metadata"]["name"] for d in selected] == ["aqueue-worker"]


@pytest.mark.parametrize(
    ("hpa", "path"),
    [("aqueue-api", K8S / "api.yaml"), ("aqueue-worker", K8S / "worker-hpa.yaml")],
)
def test_hpas_scale_their_deployment_on_cpu_from_its_replicas(hpa, path):
    spec = k8s_object("HorizontalPodAutoscaler", hpa, path)["spec"]
    target = spec["scaleTargetRef"]
    assert target["kind"] == "Deployment" and target["name"] == hpa
    assert spec["minReplicas"] == DEPLOYMENTS[hpa] < spec["maxReplicas"]
    [cpu] = [m for m in spec["metrics"] if m["type"] == "Resource"]
    assert cpu["resource"]["name"] == "cpu"
    assert "cpu" in pod_container(k8s_object("Deployment", hpa))["resources"]["requests"]


def _connections(settings: Settings) -> int:
    """The database connections one `aqueue serve` process holds at most: its pool and the
    pool's direct connection (aqueue.pool), the LISTEN connection of api, worker and
    scheduler, and a worker's own connections (a claim loop per queue, the completer, the
    heartbeat: db.OwnConnection)."""
    count = settings.pool_size + 2
    if "worker" in settings.roles:
        count += len(settings.queues) + 2
    return count


def test_postgres_takes_the_connections_of_every_replica_the_hpas_may_run():
    most = dict(DEPLOYMENTS)
    for hpa in ("aqueue-api", "aqueue-worker"):
        path = K8S / ("api.yaml" if hpa == "aqueue-api" else "worker-hpa.yaml")
        most[hpa] = k8s_object("HorizontalPodAutoscaler", hpa, path)["spec"]["maxReplicas"]
    needed = sum(n * _connections(settings_of(pod_env(name))) for name, n in most.items())
    args = pod_container(k8s_object("StatefulSet", "aqueue-postgres"))["args"]
    limit = int(args[args.index("-c") + 1].removeprefix("max_connections="))
    # room left for superusers (3), KEDA's scaler and an operator's psql
    assert needed + 20 <= limit, (needed, limit)
