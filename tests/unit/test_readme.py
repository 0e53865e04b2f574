"""The README's configuration table agrees with the table of options: same flags, variables
and defaults (the meaning column is prose, free to say more than --help).

`python -m tests.unit.test_readme` prints the table as it should read, keeping the README's
meanings where it has them: paste it over the old one."""

from __future__ import annotations

from aqueue.settings import OPTIONS, Option
from tests.helpers import ROOT

HEADER = "| flag | env | default | meaning |\n|---|---|---|---|"


def readme_rows() -> dict[str, list[str]]:
    """flag -> its cells, from the first table under ## Configuration."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    assert "\n".join(lines[:2]) == HEADER, "the configuration table lost its header"
    rows: dict[str, list[str]] = {}
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        assert len(cells) == 4, f"not four cells: {line}"
        flag = cells[0].strip("`")
        assert flag not in rows, f"{flag} is in the README table twice"
        rows[flag] = cells
    return rows


def env_cell(option: Option) -> str:
    cell = f"`{option.env}`"
    if option.env_fallback is not None:
        cell += f" (or `{option.env_fallback}`)"
    if option.file_env is not None:
        cell += f", or the file `{option.file_env}` names"
    return cell


def default_cell(option: Option) -> str:
    shown = option.shown_default
    return shown if option.default is None else f"`{shown}`"


def row(option: Option, meaning: str | None = None) -> str:
    cells = [f"`{option.flag}`", env_cell(option), default_cell(option), meaning or option.help]
    return "| " + " | ".join(cells) + " |"


def plain(cell: str) -> str:
    return cell.replace("`", "")


def table() -> str:
    rows = readme_rows()
    return "\n".join(
        [HEADER, *(row(o, rows[o.flag][3] if o.flag in rows else None) for o in OPTIONS)]
    )


def test_every_option_is_in_the_readme_with_its_variable_and_default():
    rows = readme_rows()
    wrong = [
        row(o, rows[o.flag][3] if o.flag in rows else None)
        for o in OPTIONS
        if o.flag not in rows
        or plain(rows[o.flag][1]) != plain(env_cell(o))
        or plain(rows[o.flag][2]) != plain(default_cell(o))
    ]
    assert not wrong, "README.md ## Configuration should read:\n" + "\n".join(wrong)


def test_the_readme_lists_no_flag_that_does_not_exist():
    flags = {o.flag for o in OPTIONS}
    assert set(readme_rows()) <= flags, f"not options: {sorted(set(readme_rows()) - flags)}"


if __name__ == "__main__":
    print(table())
