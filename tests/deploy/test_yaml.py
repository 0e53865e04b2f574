"""Every YAML file of the repository passes yamllint (.yamllint; warnings fail too)."""

from __future__ import annotations

from tests.deploy.files import ROOT, run, tool


def yaml_files() -> list[str]:
    listed = run(
        "git", "ls-files", "--cached", "--others", "--exclude-standard",
        "*.yaml", "*.yml", ".yamllint",
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    return [path for path in listed.stdout.split() if (ROOT / path).exists()]


def test_yamllint_finds_nothing_in_any_yaml_file():
    files = yaml_files()
    assert "compose.yaml" in files and "k8s/worker.yaml" in files
    result = run(tool("yamllint", "PyPI yamllint"), "--strict", *files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_yamllint_would_find_a_careless_file(tmp_path):
    careless = tmp_path / "careless.yaml"
    careless.write_text("key: value\nkey: again\nlist:\n- a\n-  b   \n")
    result = run(
        tool("yamllint", "PyPI yamllint"), "--strict", "-c", str(ROOT / ".yamllint"), str(careless)
    )
    assert result.returncode != 0 and "duplication of key" in result.stdout
