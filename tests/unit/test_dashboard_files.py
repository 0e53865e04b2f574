"""The dashboard's files as shipped: nothing that parses API data as markup, nothing
fetched from elsewhere, nothing inline that the page's CSP would block, every file in the
wheel's package data."""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatch

import pytest

from tests.helpers import ROOT

DASHBOARD = ROOT / "aqueue" / "dashboard"
SHIPPED = sorted(p for p in DASHBOARD.iterdir() if p.is_file() and p.suffix != ".py")


@pytest.mark.parametrize(
    "sink",
    [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        "DOMParser",
        "createContextualFragment",
        "srcdoc",
    ],
)
def test_the_script_never_parses_text_as_markup_or_code(sink):
    code = (DASHBOARD / "app.js").read_text()
    assert sink not in code, f"app.js uses {sink}: put API data in with textContent"


def test_nothing_is_fetched_from_another_site():
    for path in SHIPPED:
        text = path.read_text()
        # the SVG namespace is a name, not a fetch
        urls = set(re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}[^\s\"')]*", text))
        urls -= {"http://www.w3.org/2000/svg"}
        assert not urls, f"{path.name} names {sorted(urls)}"


def test_the_page_has_no_inline_script_or_style_for_the_csp_to_block():
    page = (DASHBOARD / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", page), "an inline <script>"
    assert "<style" not in page and " style=" not in page, "inline style"
    assert not re.search(r"\son[a-z]+\s*=", page), "an inline event handler"
    code = (DASHBOARD / "app.js").read_text()
    assert 'setAttribute("style"' not in code and "style:" not in code


def test_every_file_of_the_dashboard_is_in_the_package_data():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "aqueue.dashboard" in config["packages"]
    patterns = config["package-data"]["aqueue.dashboard"]
    for path in SHIPPED:
        assert any(fnmatch(path.name, p) for p in patterns), f"{path.name} would not ship"
