"""observability/ and compose.observability.yaml, checked by the tools that read them and
against the metric contract observability/METRICS.md:

- promtool: the Prometheus config (and its Kubernetes variant), the alert rules, their
  unit tests (alerts_test.yml), and every query of the Grafana dashboard, which must
  parse and return data from series shaped as METRICS.md says;
- every metric an alert or a panel reads is in METRICS.md, with labels it has; counters
  and histograms are read through rate(), database-wide gauges through max (or min),
  never summed over the processes that all export them;
- the dashboard's panels name the provisioned data source; the compose file validates
  against the compose specification (check-jsonschema) and mounts what the configs
  expect; all YAML passes yamllint --strict.

A missing tool fails the test that needs it, naming it: none is skipped."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import ROOT

OBS = ROOT / "observability"
PROMETHEUS = OBS / "prometheus"
CONFIG = PROMETHEUS / "prometheus.yml"
ALERTS = PROMETHEUS / "alerts.yml"
ALERTS_TEST = PROMETHEUS / "alerts_test.yml"
GRAFANA = OBS / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "aqueue.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "aqueue.yml"
COMPOSE = ROOT / "compose.observability.yaml"
CONTRACT = OBS / "METRICS.md"

# The classic dashboard model's schemaVersion in the Grafana that compose runs (12.3).
SCHEMA_VERSION = 42

# Series Prometheus writes itself, for every target it scrapes (not aqueue's to export).
PROMETHEUS_SERIES = {"up": frozenset({"job", "instance"})}
# Labels Prometheus attaches to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})

# Sample values for Grafana's variables, to make a dashboard query plain PromQL.
GRAFANA_VARIABLES = {
    "queue": "default",
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "1h",
}


# --- tools -----------------------------------------------------------------------------


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not installed: apt-get install prometheus (scripts/system-tools "
            "installs it when run as root)"
        )
    return path


def python_tool(module: str, package: str) -> list[str]:
    if importlib.util.find_spec(module) is None:
        pytest.fail(f"{package} is not installed: pip install -e '.[test]'")
    return [sys.executable, "-m", module]


def run(*command: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def succeeds(*command: str | Path, cwd: Path = ROOT) -> str:
    done = run(*command, cwd=cwd)
    assert done.returncode == 0, (
        f"{' '.join(map(str, command))} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    )
    return done.stdout


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


# --- the metric contract ---------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str  # counter, histogram or gauge
    labels: frozenset[str]

    @property
    def database_wide(self) -> bool:
        """A gauge from the database: the same numbers on every scraped process."""
        return self.kind == "gauge"


SECTIONS = {"Counters": "counter", "Histograms": "histogram", "Gauges": "gauge"}
NAME_IN_CONTRACT = re.compile(r"`([a-z][a-z0-9]*(?:_[a-z0-9]+)+)(?:\{([a-z_,]*)\})?`")


def contract() -> dict[str, Metric]:
    """The metrics of METRICS.md: every backticked snake_case name on a list line, with
    its {labels}, typed by the section it is listed under."""
    metrics: dict[str, Metric] = {}
    kind = None
    for line in CONTRACT.read_text().splitlines():
        if line.startswith("## "):
            kind = next((k for word, k in SECTIONS.items() if word in line), None)
            continue
        if kind is None or not line.lstrip().startswith("- "):
            continue
        for name, labels in NAME_IN_CONTRACT.findall(line):
            assert name not in metrics, f"{name} is listed twice in METRICS.md"
            metrics[name] = Metric(name, kind, frozenset(filter(None, labels.split(","))))
    return metrics


def series_names() -> dict[str, tuple[Metric | None, frozenset[str]]]:
    """Every series name a query may read -> (its metric, the labels it has)."""
    names: dict[str, tuple[Metric | None, frozenset[str]]] = {}
    for metric in contract().values():
        if metric.kind == "histogram":
            names[f"{metric.name}_bucket"] = (metric, metric.labels | {"le"})
            names[f"{metric.name}_sum"] = (metric, metric.labels)
            names[f"{metric.name}_count"] = (metric, metric.labels)
        else:
            names[metric.name] = (metric, metric.labels)
    for name, labels in PROMETHEUS_SERIES.items():
        names[name] = (None, labels)
    return names


def test_the_contract_lists_the_metrics_of_every_kind():
    metrics = contract()
    kinds = {
        kind: {m.name for m in metrics.values() if m.kind == kind} for kind in SECTIONS.values()
    }
    assert "jobs_completed_total" in kinds["counter"]
    assert "job_pickup_latency_seconds" in kinds["histogram"]
    assert {"jobs_pending", "database_oldest_xmin_age_transactions"} <= kinds["gauge"]
    assert metrics["jobs_queue_depth"].labels == {"queue", "status"}
    assert metrics["jobs_table_dead_tuples"].labels == set()
    assert len(metrics) == 29, sorted(metrics)


# --- reading PromQL --------------------------------------------------------------------

TOKEN = re.compile(
    r"""
    (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<number>(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(?:ms|[smhdwy])*)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<punct>[(){}\[\],])
  | (?P<op>[-+*/%^=!<>~@]+)
  | (?P<space>\s+)
    """,
    re.VERBOSE,
)
AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}  # fmt: skip
LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}
RATES = {"rate", "irate", "increase"}


@dataclass(frozen=True)
class Selector:
    name: str
    labels: tuple[str, ...]  # the label names its matchers test
    within: tuple[str | None, ...]  # the calls around it, outermost first (None: a bare paren)

    @property
    def aggregation(self) -> str | None:
        """The innermost aggregation operator around the selector."""
        return next((call for call in reversed(self.within) if call in AGGREGATIONS), None)


def tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    position = 0
    for match in TOKEN.finditer(expr):
        assert match.start() == position, f"cannot read {expr[position:]!r} in {expr!r}"
        position = match.end()
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            out.append((kind, match.group()))
    assert position == len(expr), f"cannot read {expr[position:]!r} in {expr!r}"
    return out


def closing(toks: list[tuple[str, str]], start: int, opening: str, close: str) -> int:
    """The index after the bracket that closes toks[start]."""
    depth = 0
    for index in range(start, len(toks)):
        if toks[index][1] == opening:
            depth += 1
        elif toks[index][1] == close:
            depth -= 1
            if depth == 0:
                return index + 1
    raise AssertionError(f"unbalanced {opening}{close}")


def selectors(expr: str) -> list[Selector]:
    """The series selectors of a PromQL expression, each with the calls around it."""
    toks = tokens(expr)
    found: list[Selector] = []
    stack: list[str | None] = []
    call: str | None = None  # the function or aggregation whose "(" comes next
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        following = toks[i + 1][1] if i + 1 < len(toks) else None
        if kind == "ident" and text in LABEL_LISTS:
            i = closing(toks, i + 1, "(", ")") if following == "(" else i + 1
        elif kind == "ident" and following == "(":
            call, i = text, i + 1
        elif kind == "ident" and text in AGGREGATIONS and following in {"by", "without"}:
            call, i = text, i + 1
        elif kind == "ident" and text.lower() in KEYWORDS:
            i += 1
        elif kind == "ident":
            labels: list[str] = []
            i += 1
            if i < len(toks) and toks[i][1] == "{":
                end = closing(toks, i, "{", "}")
                labels = [t for k, t in toks[i + 1 : end - 1] if k == "ident"]
                i = end
            found.append(Selector(text, tuple(labels), tuple(stack)))
        elif text == "(":
            stack.append(call)
            call, i = None, i + 1
        elif text == ")":
            stack.pop()
            i += 1
        elif text == "[":
            i = closing(toks, i, "[", "]")
        elif text == "{":
            raise AssertionError(f"a selector without a metric name in {expr!r}")
        else:
            i += 1
    assert not stack, f"unbalanced parentheses in {expr!r}"
    return found


def test_selectors_are_read_with_their_labels_and_the_calls_around_them():
    expr = (
        'time() - max by (queue) (deriv(jobs_pending{queue=~"a|b", type!="x"}[15m] offset 1h))'
        " > 1e6 and on (queue) sum(rate(jobs_failed_total[5m])) by (queue) "
        "/ ignoring (type) group_left histogram_quantile(0.9, "
        'sum by (le) (rate(job_pickup_latency_seconds_bucket{le="+Inf"}[1m])))'
    )
    assert selectors(expr) == [
        Selector("jobs_pending", ("queue", "type"), ("max", "deriv")),
        Selector("jobs_failed_total", (), ("sum", "rate")),
        Selector(
            "job_pickup_latency_seconds_bucket", ("le",), ("histogram_quantile", "sum", "rate")
        ),
    ]
    assert selectors("max(jobs_table_dead_tuples > 0)")[0].aggregation == "max"
    assert selectors("sum(max by (queue) (jobs_pending))")[0].aggregation == "max"
    assert selectors("deriv(jobs_pending[5m])")[0].aggregation is None


def contract_problems(expr: str) -> list[str]:
    """What an expression reads that METRICS.md does not promise, or reads wrongly."""
    names = series_names()
    problems = []
    for selector in selectors(expr):
        if selector.name not in names:
            problems.append(f"{selector.name} is not a metric of METRICS.md")
            continue
        metric, labels = names[selector.name]
        unknown = set(selector.labels) - labels - TARGET_LABELS
        if unknown:
            problems.append(f"{selector.name} has no label {sorted(unknown)}")
        if metric is None:
            continue
        if (
            metric.kind in {"counter", "histogram"}
            and (selector.within[-1:] or [None])[0] not in RATES
        ):
            problems.append(f"{selector.name} is a {metric.kind}: read it through rate()")
        if metric.database_wide and selector.aggregation not in {"max", "min"}:
            problems.append(
                f"{selector.name} comes identically from every process: aggregate it with "
                f"max, not {selector.aggregation or 'nothing'}"
            )
    return problems


def test_the_contract_check_finds_what_it_should():
    assert contract_problems('max by (queue) (jobs_pending{queue="a"})') == []
    assert contract_problems("sum by (queue) (jobs_pending)") != []  # summed over processes
    assert contract_problems("jobs_table_size_bytes") != []  # one line per process
    assert contract_problems("sum(jobs_completed_total)") != []  # a counter without rate
    assert contract_problems("rate(job_pickup_latency_seconds[5m])") != []  # no such series
    assert contract_problems('max(jobs_pending{tenant="x"})') != []  # no such label
    assert contract_problems("max(jobs_pendng)") != []


# --- Prometheus ------------------------------------------------------------------------


def test_prometheus_config_is_valid_and_loads_the_alert_rules():
    out = succeeds(promtool(), "check", "config", CONFIG)
    assert "1 rule files found" in out, out
    config = load_yaml(CONFIG)
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"aqueue-api", "aqueue-worker", "aqueue-scheduler"}
    for job, (service, port) in {
        "aqueue-api": ("api", 8000),
        "aqueue-worker": ("worker", 9100),
        "aqueue-scheduler": ("scheduler", 9100),
    }.items():
        assert jobs[job].get("metrics_path", "/metrics") == "/metrics"
        # every replica: DNS answers a compose service's name with all its containers
        assert jobs[job]["dns_sd_configs"] == [
            {"names": [service], "type": "A", "port": port, "refresh_interval": "30s"}
        ]


def kubernetes_variant() -> list[dict[str, Any]]:
    text = CONFIG.read_text()
    block = text.split("# BEGIN kubernetes\n", 1)[1].split("# END kubernetes", 1)[0]
    lines = block.splitlines()
    assert all(line.startswith("# ") for line in lines), "the variant is not all commented"
    variant: list[dict[str, Any]] = yaml.safe_load("\n".join(line[2:] for line in lines))[
        "scrape_configs"
    ]
    return variant


def test_the_commented_kubernetes_variant_is_valid(tmp_path: Path):
    """Debian's promtool is built without Kubernetes discovery (it rejects
    kubernetes_sd_configs as an unknown field), so promtool checks the variant's
    relabeling on a static job and the discovery itself is checked here."""
    (job,) = kubernetes_variant()
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    relabel = job["relabel_configs"]
    keep = relabel[0]
    assert keep["action"] == "keep"
    assert keep["source_labels"] == ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"]
    targets = {rule.get("target_label") for rule in relabel}
    assert {"__address__", "__metrics_path__", "job", "namespace", "pod"} <= targets
    config = load_yaml(CONFIG)
    config["rule_files"] = [str(ALERTS)]
    config["scrape_configs"] = [
        {
            "job_name": job["job_name"],
            "static_configs": [{"targets": ["10.0.0.2:8000"]}],
            "relabel_configs": relabel,
        }
    ]
    checked = tmp_path / "prometheus-kubernetes.yml"
    checked.write_text(yaml.safe_dump(config))
    succeeds(promtool(), "check", "config", checked)


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def test_alert_rules_are_valid():
    out = succeeds(promtool(), "check", "rules", ALERTS)
    assert f"SUCCESS: {len(alert_rules())} rules found" in out, out


def test_every_alert_says_how_bad_since_when_and_where():
    for rule in alert_rules():
        name = rule["alert"]
        assert rule.get("for"), f"{name} has no for:"
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        annotations = rule["annotations"]
        assert set(annotations) >= {"summary", "description"}, name
        if "by (queue)" in rule["expr"]:
            for text in ("summary", "description"):
                assert "$labels.queue" in annotations[text], f"{name}'s {text} names no queue"


def test_alerts_read_only_what_the_contract_promises():
    problems = {rule["alert"]: contract_problems(rule["expr"]) for rule in alert_rules()}
    assert not any(problems.values()), problems


def test_alert_rule_tests_pass():
    out = succeeds(promtool(), "test", "rules", ALERTS_TEST, cwd=PROMETHEUS)
    assert "SUCCESS" in out, out


SERIES_LABEL = re.compile(r'(\w+)="([^"]*)"')


def test_every_alert_is_tested_firing_and_silent():
    """Each alert (each severity) is expected to fire in some test, and some test holds
    series it must ignore: a check that expects no alert at all, or input series (another
    queue, another target) that none of the expected alerts comes from."""
    fired: set[tuple[str, str]] = set()
    silent: set[str] = set()
    for case in load_yaml(ALERTS_TEST)["tests"]:
        inputs = [dict(SERIES_LABEL.findall(s["series"])) for s in case["input_series"]]
        for check in case.get("alert_rule_test", []):
            expected = [alert["exp_labels"] for alert in check.get("exp_alerts") or []]
            fired |= {(check["alertname"], labels["severity"]) for labels in expected}
            sources = [{k: v for k, v in e.items() if k != "severity"} for e in expected]
            if not expected or any(
                not any(source.items() <= series.items() for source in sources) for series in inputs
            ):
                silent.add(check["alertname"])
    for rule in alert_rules():
        severity = rule["labels"]["severity"]
        assert (rule["alert"], severity) in fired, f"no test fires {rule['alert']} ({severity})"
        assert rule["alert"] in silent, f"no test keeps {rule['alert']} silent"


def test_the_alert_tests_fail_each_alert_that_sums_what_every_process_exports(tmp_path: Path):
    """The tests feed the database-wide gauges from several processes, with values whose
    sum crosses the thresholds or changes the annotations: each rule, its max turned into
    sum, fails them (one promtool run per rule, all at once)."""
    runs: dict[str, subprocess.Popen[str]] = {}
    for g, group in enumerate(load_yaml(ALERTS)["groups"]):
        for r, rule in enumerate(group["rules"]):
            if not re.search(r"\bmax\b", rule["expr"]):
                continue
            rules = load_yaml(ALERTS)
            rules["groups"][g]["rules"][r]["expr"] = re.sub(r"\bmax\b", "sum", rule["expr"])
            directory = tmp_path / f"{g}-{r}"
            directory.mkdir()
            (directory / "alerts.yml").write_text(yaml.safe_dump(rules))
            shutil.copy(ALERTS_TEST, directory / "alerts_test.yml")
            name = f"{rule['alert']} ({rule['labels']['severity']})"
            runs[name] = subprocess.Popen(
                [promtool(), "test", "rules", "alerts_test.yml"],
                cwd=directory,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                text=True,
            )
    passing = [name for name, process in runs.items() if process.wait(timeout=120) == 0]
    assert not passing, f"these alerts pass their tests when they sum: {passing}"
    assert len(runs) >= 10


# --- Grafana ---------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(items: list[dict[str, Any]] | None = None) -> Iterator[dict[str, Any]]:
    """Every panel, rows and the panels of collapsed rows included."""
    for panel in dashboard()["panels"] if items is None else items:
        yield panel
        yield from panels(panel.get("panels", []))


def queries() -> Iterator[tuple[str, str]]:
    """(where, expr) of every query, Grafana's variables replaced by sample values."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in GRAFANA_VARIABLES, f"no sample value for ${name}"
        return GRAFANA_VARIABLES[name]

    for panel in panels():
        for target in panel.get("targets", []):
            expr = re.sub(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))", substitute, target["expr"])
            yield f"panel {panel['id']} ({panel['title']}) {target['refId']}", expr


def test_the_dashboard_is_a_current_grafana_dashboard():
    board = dashboard()
    assert board["uid"] == "aqueue"
    assert board["title"] == "aqueue"
    assert board["schemaVersion"] == SCHEMA_VERSION
    ids = [panel["id"] for panel in panels()]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    assert all(panel["type"] in {"row", "timeseries", "stat"} for panel in panels())
    cells: set[tuple[int, int]] = set()
    for panel in panels():
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        mine = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
        refs = [target["refId"] for target in panel.get("targets", [])]
        assert len(refs) == len(set(refs)), panel["title"]
    shown = {selector.name for _, expr in queries() for selector in selectors(expr)}
    for wanted in (
        "jobs_completed_total",
        "jobs_failed_total",
        "jobs_retried_total",
        "jobs_dead_total",
        "job_pickup_latency_seconds_bucket",
        "worker_job_duration_seconds_bucket",
        "jobs_queue_depth",
        "jobs_oldest_pending_age_seconds",
        "jobs_running",
        "workers_alive",
        "worker_claim_batch_size_bucket",
        "completer_batch_size_bucket",
        "jobs_table_dead_tuples",
        "jobs_table_size_bytes",
        "database_oldest_transaction_age_seconds",
        "database_oldest_xmin_age_transactions",
        "database_idle_in_transaction_sessions",
    ):
        assert wanted in shown, f"no panel shows {wanted}"


def test_the_queue_variable_filters_every_per_queue_panel():
    (variable,) = dashboard()["templating"]["list"]
    assert variable["name"] == "queue"
    assert variable["includeAll"] and variable["multi"]
    match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["query"]["query"])
    assert match, variable["query"]
    metric, label = match.groups()
    assert label == "queue"
    assert "queue" in contract()[metric].labels
    names = series_names()
    for where, expr in queries():
        for selector in selectors(expr):
            if "queue" in names[selector.name][1]:
                assert "queue" in selector.labels, f"{where}: {selector.name} ignores $queue"


def datasource_uids() -> dict[str, str]:
    return {ds["uid"]: ds["type"] for ds in load_yaml(DATASOURCES)["datasources"]}


def test_every_panel_names_the_provisioned_datasource_by_uid():
    uids = datasource_uids()
    assert uids == {"aqueue-prometheus": "prometheus"}
    named = [dashboard()["templating"]["list"][0]["datasource"]]
    for panel in panels():
        if panel["type"] == "row":
            continue
        named.append(panel["datasource"])
        assert panel["targets"], f"{panel['title']} has no query"
        named.extend(target["datasource"] for target in panel["targets"])
    for datasource in named:
        assert uids.get(datasource["uid"]) == datasource["type"], datasource


def test_dashboard_queries_parse(tmp_path: Path):
    """promtool has no query parser of its own: every query becomes a recording rule."""
    rules = [
        {"record": f"dashboard:query_{n}", "expr": expr} for n, (_, expr) in enumerate(queries())
    ]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = run(promtool(), "check", "rules", path)
    where = "\n".join(f"dashboard:query_{n} is {w}" for n, (w, _) in enumerate(queries()))
    assert done.returncode == 0, f"{done.stdout}{done.stderr}\n{where}"


def test_dashboard_queries_read_only_what_the_contract_promises():
    problems = {where: contract_problems(expr) for where, expr in queries()}
    assert not any(problems.values()), {k: v for k, v in problems.items() if v}


def sample_series() -> list[dict[str, str]]:
    """One series per name METRICS.md promises, with every label it has, from one
    process: counters and histograms growing, gauges (timestamps too) positive."""
    values = {"queue": "default", "type": "demo.echo", "status": "pending"}
    series = []
    for name, (metric, labels) in series_names().items():
        if metric is None:
            continue
        base = {label: values[label] for label in sorted(labels - {"le"})}
        base |= {"job": "aqueue-worker", "instance": "10.0.0.3:9100"}
        if name.endswith("_bucket"):
            for n, le in enumerate(("0.1", "1", "+Inf"), start=1):
                series.append(
                    {"series": selector_text(name, base | {"le": le}), "values": f"0+{n}x20"}
                )
        elif metric.kind == "gauge":
            series.append({"series": selector_text(name, base), "values": "5x20"})
        else:
            series.append({"series": selector_text(name, base), "values": "0+3x20"})
    return series


def selector_text(name: str, labels: dict[str, str]) -> str:
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def test_every_dashboard_query_returns_data(tmp_path: Path):
    """Every query, on series shaped as METRICS.md says, returns something: each is
    recorded, and an alert on the record's absence must stay silent."""
    found = list(queries())
    rules = []
    for n, (_, expr) in enumerate(found):
        rules.append({"record": f"dashboard:query_{n}", "expr": expr})
        rules.append({"alert": f"Empty{n}", "expr": f"absent(dashboard:query_{n})"})
    (tmp_path / "rules.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]})
    )
    test = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": sample_series(),
                "alert_rule_test": [
                    {"eval_time": "15m", "alertname": f"Empty{n}", "exp_alerts": []}
                    for n in range(len(found))
                ],
            }
        ],
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test))
    done = run(promtool(), "test", "rules", "test.yml", cwd=tmp_path)
    where = "\n".join(f"Empty{n}: {w}" for n, (w, _) in enumerate(found))
    assert done.returncode == 0, f"{done.stdout}{done.stderr}\n{where}"


def test_grafana_provisioning_loads_the_dashboard_from_where_compose_mounts_it():
    (provider,) = load_yaml(DASHBOARD_PROVIDERS)["providers"]
    assert provider["type"] == "file"
    mounts = compose_mounts("grafana")
    assert mounts[GRAFANA / "dashboards"] == provider["options"]["path"]
    assert mounts[GRAFANA / "provisioning"] == "/etc/grafana/provisioning"
    (datasource,) = load_yaml(DATASOURCES)["datasources"]
    assert datasource["url"] == "http://prometheus:9090"
    assert datasource["jsonData"]["timeInterval"] == load_yaml(CONFIG)["global"]["scrape_interval"]


# --- compose ---------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = load_yaml(COMPOSE)
    return loaded


def compose_mounts(service: str) -> dict[Path, str]:
    """The service's read-only bind mounts: host path -> container path."""
    mounts = {}
    for volume in compose()["services"][service]["volumes"]:
        source, target, *mode = volume.split(":")
        if source.startswith("./"):
            assert mode == ["ro"], f"{volume} is not read-only"
            path = (ROOT / source).resolve()
            assert path.exists(), f"{volume}: {source} does not exist"
            mounts[path] = target
    return mounts


def test_compose_file_follows_the_compose_specification(tmp_path: Path):
    check = python_tool("check_jsonschema", "check-jsonschema")
    succeeds(*check, "--builtin-schema", "vendor.compose-spec", COMPOSE)
    broken = tmp_path / "compose.yaml"
    broken.write_text("services:\n  grafana:\n    image: grafana/grafana\n    imaage: typo\n")
    assert run(*check, "--builtin-schema", "vendor.compose-spec", broken).returncode != 0


def test_compose_runs_prometheus_and_grafana_on_the_files_it_mounts():
    services = compose()["services"]
    assert set(services) == {"prometheus", "grafana"}
    for service in services.values():
        assert "networks" not in service, "services join the project's default network"
        for port in service["ports"]:
            assert port.startswith("127.0.0.1:"), f"{port} is not bound to loopback"
    prometheus = services["prometheus"]
    config_path = next(
        arg.split("=", 1)[1] for arg in prometheus["command"] if arg.startswith("--config.file=")
    )
    mounts = compose_mounts("prometheus")
    assert mounts[CONFIG] == config_path
    (rules,) = load_yaml(CONFIG)["rule_files"]
    assert mounts[ALERTS] == str(Path(config_path).parent / rules)
    sources = {volume.split(":")[0] for s in services.values() for volume in s["volumes"]}
    named = {source for source in sources if not source.startswith("./")}
    assert named == set(compose()["volumes"]) == {"prometheus-data", "grafana-data"}


def test_compose_holds_no_grafana_secret():
    environment = compose()["services"]["grafana"]["environment"]
    password = environment["GF_SECURITY_ADMIN_PASSWORD"]
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD(:\?[^}]*)?\}", password), password
    assert environment["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    others = set(environment) - {"GF_SECURITY_ADMIN_PASSWORD"}
    assert not any("PASSWORD" in key or "SECRET" in key for key in others), others


# --- YAML style ------------------------------------------------------------------------


def test_all_yaml_passes_yamllint():
    files = [ROOT / ".yamllint", COMPOSE, *sorted(OBS.rglob("*.yml")), *sorted(OBS.rglob("*.yaml"))]
    assert len(files) >= 7
    succeeds(*python_tool("yamllint", "yamllint"), "--strict", "-c", ROOT / ".yamllint", *files)
