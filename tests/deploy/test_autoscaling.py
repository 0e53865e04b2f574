"""Scaling the workers on queue depth, both ways k8s/optional/ ships: the Prometheus
adapter's rule (its PromQL run by promtool on the series aqueue's pods export) with the
HPA that reads it, and KEDA's ScaledObject (checked against KEDA's CRD schema, its SQL run
against a real PostgreSQL). Both must count what GET /queues/depth counts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from aqueue import control, enqueue
from aqueue.api.app import create_app
from aqueue.settings import Settings
from tests.deploy.files import (
    AWAITED_METRICS,
    K8S,
    k8s_object,
    pod_env,
    run,
    settings_of,
    tool,
)
from tests.helpers import jobs_in_every_state

ADAPTER = K8S / "optional" / "prometheus-adapter"
KEDA = K8S / "optional" / "keda" / "worker-scaledobject.yaml"
SCHEMA = Path(__file__).parent / "keda-scaledobject.schema.json"


def _adapter_rule() -> dict[str, Any]:
    config = k8s_object("ConfigMap", "aqueue-prometheus-adapter", ADAPTER / "adapter-config.yaml")
    [rule] = yaml.safe_load(config["data"]["config.yaml"])["externalRules"]
    assert isinstance(rule, dict)
    return rule


def _queue_depth_hpa() -> dict[str, Any]:
    return k8s_object("HorizontalPodAutoscaler", "aqueue-worker", ADAPTER / "worker-hpa.yaml")


def _external_metric() -> dict[str, Any]:
    [external] = [m for m in _queue_depth_hpa()["spec"]["metrics"] if m["type"] == "External"]
    metric: dict[str, Any] = external["external"]
    return metric


def _keda() -> dict[str, Any]:
    [scaled] = yaml.safe_load_all(KEDA.read_text())
    assert isinstance(scaled, dict)
    return scaled


def _keda_trigger(kind: str) -> dict[str, Any]:
    [trigger] = [t for t in _keda()["spec"]["triggers"] if t["type"] == kind]
    return trigger


def _worker_queues() -> set[str]:
    return set(settings_of(pod_env("aqueue-worker")).queues)


async def _exported_metrics(pool) -> dict[str, set[str]]:  # type: ignore[no-untyped-def]
    """The metrics GET /metrics serves, with their labels. Awaited (tests/deploy/files.py):
    while aqueue serves no /metrics, the names the metrics spec gives."""
    await enqueue(pool, "demo.echo", {})  # a queue, so that per-queue gauges have a sample
    transport = httpx.ASGITransport(app=create_app(pool, Settings()))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        r = await client.get("/metrics")
    if r.status_code == 404:
        return {name: {"queue"} for name in AWAITED_METRICS}
    assert r.status_code == 200, r.text
    return {
        family.name: {label for sample in family.samples for label in sample.labels}
        for family in text_string_to_metric_families(r.text)
    }


# --- the Prometheus adapter -----------------------------------------------------------------


def test_the_adapter_rule_has_only_fields_the_adapter_knows():
    # the adapter's config format (docs/config.md of kubernetes-sigs/prometheus-adapter)
    rule = _adapter_rule()
    assert set(rule) <= {"seriesQuery", "seriesFilters", "resources", "name", "metricsQuery"}
    assert rule["resources"] == {"overrides": {"namespace": {"resource": "namespace"}}}
    assert set(rule["name"]) <= {"matches", "as"}


def _rendered_query(matchers: str) -> str:
    """The rule's metricsQuery as the adapter fills it in for an HPA's request."""
    rule = _adapter_rule()
    series = rule["seriesQuery"].split("{")[0]
    query: str = rule["metricsQuery"]
    return query.replace("<<.Series>>", series).replace("<<.LabelMatchers>>", matchers)


def test_the_adapter_query_gives_the_queue_depth_once_however_many_pods_report_it(tmp_path):
    # every scraped aqueue process reports the same database-wide gauge: the API's pods and
    # the workers' alike (the metrics spec); another namespace's aqueue is another fleet
    def series(queue: str, namespace: str, pod: str, value: int) -> dict[str, str]:
        labels = f'queue="{queue}",namespace="{namespace}",pod="{pod}"'
        return {"series": f"jobs_pending{{{labels}}}", "values": f"{value}x10"}

    metric = _external_metric()
    queue = metric["metric"]["selector"]["matchLabels"]["queue"]
    tests = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    series(queue, "shop", "aqueue-worker-a", 40),
                    series(queue, "shop", "aqueue-worker-b", 40),
                    series(queue, "shop", "aqueue-api-a", 40),
                    series("email", "shop", "aqueue-worker-a", 7),
                    series(queue, "staging", "aqueue-worker-z", 500),
                ],
                "promql_expr_test": [
                    {
                        # the HPA's selector in the namespace "shop", as the adapter asks
                        "expr": _rendered_query(f'queue="{queue}",namespace="shop"'),
                        "eval_time": "5m",
                        "exp_samples": [{"labels": f'{{queue="{queue}"}}', "value": 40}],
                    },
                    {
                        # the series the rule discovers: every queue in every namespace
                        "expr": f"count({_adapter_rule()['seriesQuery']})",
                        "eval_time": "5m",
                        "exp_samples": [{"labels": "{}", "value": 5}],
                    },
                ],
            }
        ],
    }
    path = tmp_path / "adapter-test.yaml"
    path.write_text(json.dumps(tests))
    result = run(
        tool("promtool", "Debian prometheus (scripts/system-tools)"), "test", "rules", str(path)
    )
    assert result.returncode == 0, result.stdout + result.stderr


async def test_the_hpa_scales_on_the_metric_the_rule_serves_for_a_queue_the_workers_serve(pool):
    rule = _adapter_rule()
    metric = _external_metric()
    assert metric["metric"]["name"] == rule["name"]["as"] == rule["seriesQuery"].split("{")[0]
    exported = await _exported_metrics(pool)
    assert "queue" in exported[metric["metric"]["name"]], "aqueue exports it by queue"
    assert metric["metric"]["selector"]["matchLabels"]["queue"] in _worker_queues()
    assert metric["target"]["type"] == "AverageValue"


def test_the_queue_depth_hpa_replaces_the_cpu_one():
    cpu = k8s_object("HorizontalPodAutoscaler", "aqueue-worker", K8S / "worker-hpa.yaml")
    depth = _queue_depth_hpa()
    assert depth["metadata"]["name"] == cpu["metadata"]["name"]
    assert depth["spec"]["scaleTargetRef"] == cpu["spec"]["scaleTargetRef"]
    resource = [m for m in depth["spec"]["metrics"] if m["type"] == "Resource"]
    assert resource == cpu["spec"]["metrics"], "and still scales on CPU as it did"
    # README: after it, `kubectl apply -f k8s/ -l 'aqueue/worker-autoscaler!=cpu'`
    assert cpu["metadata"]["labels"]["aqueue/worker-autoscaler"] == "cpu"
    assert depth["metadata"]["labels"]["aqueue/worker-autoscaler"] != "cpu"


# --- KEDA ----------------------------------------------------------------------------------


def _strict(schema: Any) -> Any:
    """kubectl's strict field validation: an object refuses fields its schema lacks."""
    if isinstance(schema, dict):
        closed = {k: _strict(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            closed["additionalProperties"] = False
        return closed
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def test_the_scaledobject_is_valid_against_kedas_crd_schema():
    schema = _strict(json.loads(SCHEMA.read_text()))
    jsonschema.validate(_keda(), schema)


def test_the_schema_check_would_find_a_mistyped_field():
    broken = _keda()
    broken["spec"]["pollingIntervall"] = 15
    with pytest.raises(jsonschema.ValidationError, match="pollingIntervall"):
        jsonschema.validate(broken, _strict(json.loads(SCHEMA.read_text())))


def test_the_scaledobject_takes_over_the_worker_hpa_and_reads_the_workers_url():
    scaled = _keda()
    worker = k8s_object("Deployment", "aqueue-worker")
    assert scaled["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
    cpu_hpa = k8s_object("HorizontalPodAutoscaler", "aqueue-worker", K8S / "worker-hpa.yaml")
    hpa = scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]
    assert hpa["name"] == cpu_hpa["metadata"]["name"]
    assert (
        scaled["metadata"]["annotations"]["scaledobject.keda.sh/transfer-hpa-ownership"] == "true"
    )
    assert scaled["spec"]["minReplicaCount"] == cpu_hpa["spec"]["minReplicas"]
    assert scaled["spec"]["maxReplicaCount"] == cpu_hpa["spec"]["maxReplicas"]
    postgresql = _keda_trigger("postgresql")["metadata"]
    # KEDA's postgresql scaler's parameters (keda.sh/docs/latest/scalers/postgresql)
    assert set(postgresql) <= {
        "connectionFromEnv", "host", "port", "userName", "passwordFromEnv", "dbName",
        "sslmode", "query", "targetQueryValue", "activationTargetQueryValue",
    }  # fmt: skip
    # KEDA reads the variable from the target's first container: the workers' own URL
    [container] = worker["spec"]["template"]["spec"]["containers"]
    assert postgresql["connectionFromEnv"] in {e["name"] for e in container["env"]}
    assert postgresql["connectionFromEnv"] == "DATABASE_URL"
    # the same target as the adapter's HPA: one worker per that many due jobs
    assert float(postgresql["targetQueryValue"]) == float(
        _external_metric()["target"]["averageValue"]
    )
    [cpu] = cpu_hpa["spec"]["metrics"]
    utilization = cpu["resource"]["target"]["averageUtilization"]
    assert _keda_trigger("cpu")["metadata"]["value"] == str(utilization)


async def test_the_keda_query_counts_what_queue_depth_counts_on_the_real_schema(pool):
    query = _keda_trigger("postgresql")["metadata"]["query"]
    [queue] = [q for q in _worker_queues() if f"queue = '{q}'" in query]
    due = await jobs_in_every_state(pool, queue)
    await enqueue(pool, "demo.echo", {}, queue="elsewhere")

    counted = await pool.fetchval(query)
    [depth] = await control.depths(pool, [queue])
    assert counted == depth.pending == due
    assert isinstance(counted, int), "KEDA needs a number"
    # and with nothing there: 0, not NULL
    await pool.execute("DELETE FROM jobs")
    assert await pool.fetchval(query) == 0
