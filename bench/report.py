"""Summaries of a run: medians with min-max spread, ratios aqueue/peer, each system as a
fraction of the plain-SQL ceiling; written as JSON, a markdown table and a PNG chart."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from bench.scenarios import SCENARIOS, Result

# the plain-SQL references, and the key of each row's shares of it
CEILINGS = {"sql": "fraction_of_sql", "sql:same_row": "fraction_of_same_row"}


def is_peer(label: str) -> bool:
    """A system aqueue is compared with (an earlier aqueue included), not a reference or
    another way of driving the current aqueue."""
    return label != "aqueue" and not label.startswith(("sql", "aqueue:"))


def summarize(results: list[Result], labels: list[str]) -> list[dict[str, Any]]:
    """One row per (scenario, metric): per label median/min/max over the valid runs."""
    rows: list[dict[str, Any]] = []
    for scenario in SCENARIOS.values():
        ran = [r for r in results if r.scenario == scenario.name]
        if not ran:
            continue
        for metric in scenario.metrics:
            row: dict[str, Any] = {
                "scenario": scenario.name,
                "title": scenario.title,
                "metric": metric.key,
                "unit": metric.unit,
                "higher_is_better": metric.higher_is_better,
                "by_label": {},
                "ratio_aqueue_over": {},
                "fraction_of_sql": {},
                "fraction_of_same_row": {},
            }
            for label in labels:
                runs = [r for r in ran if r.label == label]
                if not runs:
                    continue
                values = [
                    r.metrics[metric.key]
                    for r in runs
                    if r.valid and r.metrics.get(metric.key) is not None
                ]
                row["by_label"][label] = {
                    "median": statistics.median(values) if values else None,
                    "min": min(values) if values else None,
                    "max": max(values) if values else None,
                    "runs": len(runs),
                    "invalid": sum(1 for r in runs if not r.valid),
                }
            aq = row["by_label"].get("aqueue", {}).get("median")
            for label, stats in row["by_label"].items():
                if not is_peer(label) or metric.key == "rate_per_s":
                    continue
                peer = stats["median"]
                row["ratio_aqueue_over"][label] = aq / peer if aq and peer else None
            for ceiling, key in CEILINGS.items():
                sql = row["by_label"].get(ceiling, {}).get("median")
                if sql and metric.key == "jobs_per_s":
                    row[key] = {
                        label: stats["median"] / sql
                        for label, stats in row["by_label"].items()
                        if not label.startswith("sql") and stats["median"]
                    }
            rows.append(row)
    return rows


def _fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit.startswith("jobs/s"):
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"


def _cell(stats: dict[str, Any] | None, unit: str) -> str:
    if not stats:
        return ""
    if stats["median"] is None:
        return f"INVALID ({stats['invalid']}/{stats['runs']})"
    text = _fmt(stats["median"], unit)
    if stats["runs"] > 1:
        text += f" ({_fmt(stats['min'], unit)}-{_fmt(stats['max'], unit)})"
    if stats["invalid"]:
        text += f" INVALID {stats['invalid']}/{stats['runs']}"
    return text


def _baseline_note(doc: dict[str, Any]) -> list[str]:
    base = doc["meta"].get("baseline")
    if not base:
        return []
    runs = [r for r in doc["runs"] if r["label"] == base["label"]]
    processes = sum(r["details"]["code"]["processes_checked"] for r in runs
                    if "code" in r["details"])  # fmt: skip
    differs = base["files_differing_from_working_tree"]
    shown = ", ".join(differs[:6]) + (", ..." if len(differs) > 6 else "")
    if all(r["valid"] for r in runs):
        proof = (
            f"all {processes} of them loaded aqueue from the exported revision alone, every "
            "file matching the revision's git blob"
        )
    else:
        proof = f"{processes} of them checked; see the INVALID runs below"
    return [
        f"Baseline: **{base['label']}** is `{base['rev']}` = {base['sha']} "
        f"({base['subject']!r}); the working tree's aqueue/ and sql/ differ from it in "
        f"{len(differs)} file(s){': ' + shown if differs else ''}. "
        f"aqueue/{base['label']} = current over baseline. The baseline ran only in "
        f"subprocesses; {proof}.",
        "",
    ]


def markdown(doc: dict[str, Any]) -> str:
    labels: list[str] = doc["labels"]
    rows: list[dict[str, Any]] = doc["summary"]
    peers = [x for x in labels if is_peer(x)]
    meta = doc["meta"]
    out = [
        "# aqueue benchmark results",
        "",
        f"Run {meta['started']} ({meta['mode']}, {meta['repeat']} repetition(s), "
        f"PostgreSQL {meta['postgres']}, {meta['cpus']} CPUs, Python {meta['python']}). "
        f"Valid: **{'all runs' if doc['valid'] else 'NO: see INVALID cells'}**.",
        "",
        "Cells: median (min-max over repetitions). Ratio = aqueue / peer: above 1 means "
        "aqueue is faster for jobs/s; below 1 means aqueue is quicker for ms and MB.",
        "",
        *_baseline_note(doc),
        "| scenario | metric | "
        + " | ".join(labels)
        + " |"
        + "".join(f" aqueue/{p} |" for p in peers),
        "|" + "---|" * (2 + len(labels) + len(peers)),
    ]
    for row in rows:
        cells = [_cell(row["by_label"].get(label), row["unit"]) for label in labels]
        ratios = []
        for p in peers:
            r = row["ratio_aqueue_over"].get(p)
            ratios.append((f"{r:.2f}x" if r >= 0.1 else f"{r:.3f}x") if r else "")
        out.append(
            f"| {row['scenario']} | {row['metric']} ({row['unit']}) | "
            + " | ".join(cells)
            + " |"
            + "".join(f" {r} |" for r in ratios)
        )
    sql_rows = [r for r in rows if r["fraction_of_sql"]]
    if sql_rows:
        shown = [x for x in labels if not x.startswith("sql")]
        out += [
            "",
            "## Each system as a share of the database's own ceiling",
            "",
            "Drains: the same claim/complete cycle as plain SQL, batches of 100, run by "
            "pgbench (1 connection for the one-process drains, 2 for the two-process "
            "drain); a worker process that overlaps claims and completions on several "
            "pooled connections can pass the 1-connection figure. Enqueues: one asyncpg "
            "connection inserting (type, payload) rows into the same jobs-like table, one "
            "bare INSERT per job in its own durable transaction, or one binary COPY per "
            "batch of 1,000.",
            "",
            "| scenario | sql ceiling (jobs/s) | " + " | ".join(shown) + " |",
            "|" + "---|" * (2 + len(shown)),
        ]
        for row in sql_rows:
            sql = row["by_label"]["sql"]["median"]
            fr = [
                f"{row['fraction_of_sql'][x] * 100:.1f}%" if x in row["fraction_of_sql"] else ""
                for x in shown
            ]
            out.append(f"| {row['scenario']} | {sql:,.0f} | " + " | ".join(fr) + " |")
    same_rows = [r for r in rows if r["fraction_of_same_row"]]
    if same_rows:
        shown = [x for x in labels if not x.startswith("sql")]
        out += [
            "",
            "## Enqueues as a share of a bare INSERT (or COPY) of aqueue's own row",
            "",
            "sql:same_row: aqueue's schema, the row aqueue's enqueue writes, inserted by one "
            "plain asyncpg connection with no RETURNING, NOTIFY or pool, each job (or batch) "
            "its own durable transaction. The gap to it is aqueue's own cost.",
            "",
            "| scenario | same-row ceiling (jobs/s) | " + " | ".join(shown) + " |",
            "|" + "---|" * (2 + len(shown)),
        ]
        for row in same_rows:
            sql = row["by_label"]["sql:same_row"]["median"]
            fr = [
                f"{row['fraction_of_same_row'][x] * 100:.1f}%"
                if x in row["fraction_of_same_row"]
                else ""
                for x in shown
            ]
            out.append(f"| {row['scenario']} | {sql:,.0f} | " + " | ".join(fr) + " |")
    out += ["", "## Settings", ""]
    for label, by_scenario in doc["settings"].items():
        distinct: dict[str, list[str]] = {}
        for scenario, settings in by_scenario.items():
            distinct.setdefault(json.dumps(settings, sort_keys=True), []).append(scenario)
        for settings_json, scenarios in distinct.items():
            out.append(f"- **{label}** ({', '.join(scenarios)}): `{settings_json}`")
    invalid = [r for r in doc["runs"] if not r["valid"]]
    if invalid:
        out += ["", "## INVALID runs", ""]
        for r in invalid:
            out.append(f"- {r['label']} {r['scenario']} rep {r['rep']}: {'; '.join(r['errors'])}")
    out.append("")
    return "\n".join(out)


def chart(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        r
        for r in doc["summary"]
        if r["metric"] in ("jobs_per_s", "p50_ms", "p99_ms", "rss_peak_mb")
    ]
    if not rows:
        return
    cols = 3
    nrows = -(-len(rows) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.4 * nrows), squeeze=False)
    palette = {
        "aqueue": "#1f77b4", "pgqueuer": "#ff7f0e", "pgqueuer:tuned": "#ffbb78",
        "procrastinate": "#2ca02c", "procrastinate:tuned": "#98df8a", "sql": "#7f7f7f",
        "aqueue:connection": "#17becf", "sql:same_row": "#c7c7c7",
        "sql:aqueue_claim": "#a0a0a0",
    }  # fmt: skip
    for label in doc["labels"]:
        if label.startswith("aqueue@"):
            palette[label] = "#aec7e8"  # the earlier revision: aqueue's colour, lighter
    for ax, row in zip(axes.flat, rows, strict=False):
        labels = [x for x, s in row["by_label"].items() if s["median"] is not None]
        med = [row["by_label"][x]["median"] for x in labels]
        lo = [m - row["by_label"][x]["min"] for x, m in zip(labels, med, strict=True)]
        hi = [row["by_label"][x]["max"] - m for x, m in zip(labels, med, strict=True)]
        ax.bar(range(len(labels)), med, yerr=[lo, hi], capsize=3,
               color=[palette.get(x, "#9467bd") for x in labels])  # fmt: skip
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=25, ha="right", fontsize=8)
        ax.set_title(f"{row['scenario']}: {row['metric']}", fontsize=9)
        ax.set_ylabel(row["unit"], fontsize=8)
    for ax in list(axes.flat)[len(rows) :]:
        ax.axis("off")
    fig.suptitle(f"aqueue benchmark ({doc['meta']['mode']}, {doc['meta']['started']})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write(doc: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "latest.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    (out_dir / "latest.md").write_text(markdown(doc))
    chart(doc, out_dir / "latest.png")
