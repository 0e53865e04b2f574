"""The README's Deployment sections say what the files do: the commands it gives are the
files' own, every file it names exists, and what it quotes is what the files hold."""

from __future__ import annotations

import re

import yaml

from tests.deploy.files import COMPOSE, K8S, ROOT, k8s_object

README = (ROOT / "README.md").read_text()
DEPLOYMENT = README.split("\n## Deployment\n", 1)[1].split("\n## ", 1)[0]


def test_the_seed_commands_work_as_written():
    for command in ("docker compose up --build -d", "QUEUE=email docker compose up -d worker"):
        assert command in DEPLOYMENT and command in COMPOSE.read_text()
    assert "kubectl apply -f k8s/" in DEPLOYMENT


def test_every_k8s_file_it_names_exists_and_every_file_is_in_its_table():
    paths = set(re.findall(r"k8s/[\w./-]+\.yaml", DEPLOYMENT))
    table = {f"k8s/{name}" for name in re.findall(r"^\| `([\w./-]+)` \|", DEPLOYMENT, re.M)}
    for path in paths | table:
        assert (ROOT / path).exists(), path
    files = {str(p.relative_to(ROOT)) for p in K8S.glob("*.yaml")} | {"k8s/examples/secret.yaml"}
    dirs = {str(p.parent.relative_to(ROOT)) + "/" for p in (K8S / "optional").rglob("*.yaml")}
    assert files | dirs <= table, f"not in the README's table: {(files | dirs) - table}"


def test_the_secret_it_makes_has_the_keys_the_pods_read():
    made = set(re.findall(r"--from-literal=(\w+)=", DEPLOYMENT))
    example = k8s_object("Secret", "aqueue-db", K8S / "examples" / "secret.yaml")
    assert made == set(example["stringData"])


def test_the_keda_query_it_quotes_is_the_scaledobjects():
    [scaled] = yaml.safe_load_all(
        (K8S / "optional" / "keda" / "worker-scaledobject.yaml").read_text()
    )
    [trigger] = [t for t in scaled["spec"]["triggers"] if t["type"] == "postgresql"]
    quoted = re.search(r"`(SELECT count\(\*\) FROM jobs[^`]*)`", DEPLOYMENT)
    assert quoted, "the README quotes the query"
    assert " ".join(quoted[1].split()) == " ".join(trigger["metadata"]["query"].split())
