"""The documentation builds without a single Sphinx warning, and every citation of it holds.

The build is the README's command (``python -m sphinx -W -b html docs …``) with
``--keep-going``, so a failure lists every warning at once. Citations are the references the
code makes to the docs — ``docs/theory/erk_guid.md, eq. (4)`` or
``docs/theory/toy_world.md#the-tree-mixture`` — and each must name an existing page, an
equation number that the built page shows, and an anchor that it defines.
"""

from __future__ import annotations

import html
import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
#: Where citations are looked for (files under ``docs/_build`` are skipped).
SCANNED = ("stiffkit", "experiments", "benchmarks", "tests", "docs", "README.md")
SUFFIXES = {".py", ".md", ".rst", ".ipynb", ".toml"}
#: ``docs/<page>.md`` with an optional ``#anchor`` and an optional ``, eq. (N)`` /
#: ``, eqs. (N)–(M)`` / ``, eqs. (N), (M) and (K)`` clause.
CITATION = re.compile(
    r"docs/(?P<page>(?:[\w-]+/)*[\w-]+)\.md"
    r"(?:#(?P<anchor>[\w-]+))?"
    r"(?:,\s*eqs?\.\s*(?P<eqs>\(\d+\)(?:\s*(?:–|-|,|and)\s*\(\d+\))*))?"
)
DOCS_PACKAGES = ("sphinx", "numpydoc", "myst_parser")


def _require_docs_packages() -> None:
    missing = [m for m in DOCS_PACKAGES if importlib.util.find_spec(m) is None]
    if missing:
        message = f"docs packages not installed ({', '.join(missing)}): pip install -e '.[docs]'"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs .[test], which includes them
        pytest.skip(message)


@pytest.fixture(scope="module")
def built_docs(tmp_path_factory) -> Path:
    """Build the HTML documentation once for this module; return the output folder."""
    _require_docs_packages()
    out = tmp_path_factory.mktemp("docs")
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
           "-d", str(out / "doctrees"), str(DOCS), str(out / "html")]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        pytest.fail(
            f"Sphinx failed (exit {proc.returncode}, {elapsed:.0f} s); warnings and errors:\n"
            f"{proc.stderr.strip()}\n{proc.stdout.strip()}",
            pytrace=False,
        )
    return out / "html"


def test_docs_build_with_warnings_as_errors(built_docs):
    for page in ("index", "conventions", "theory/erk_guid", "api/stiffkit", "api/diffusion"):
        assert (built_docs / f"{page}.html").is_file(), page
    # The API pages are generated from the docstrings, not left empty.
    api = (built_docs / "api" / "diffusion.html").read_text(encoding="utf-8")
    assert 'id="stiffkit.diffusion.erk.erk_guid_correction"' in api


def _scanned_files() -> list[Path]:
    files = []
    for name in SCANNED:
        path = ROOT / name
        candidates = [path] if path.is_file() else path.rglob("*")
        for f in candidates:
            if f.is_file() and f.suffix in SUFFIXES and "_build" not in f.parts:
                files.append(f)
    return files


def _citations() -> list[tuple[str, str, str | None, list[int]]]:
    """Return ``(where, page, anchor, equation numbers)`` for every citation found."""
    found = []
    for f in _scanned_files():
        text = f.read_text(encoding="utf-8", errors="replace")
        # Join wrapped comment lines, so a citation broken after its comma still reads as one.
        text = re.sub(r"\n[ \t]*(?:#[ \t]*)?", " ", text)
        for m in CITATION.finditer(text):
            eqs = [int(n) for n in re.findall(r"\((\d+)\)", m.group("eqs") or "")]
            found.append((f.relative_to(ROOT).as_posix(), m.group("page"), m.group("anchor"), eqs))
    return found


def _page_targets(html_file: Path) -> tuple[set[int], set[str]]:
    text = html_file.read_text(encoding="utf-8")
    numbers = {int(n) for n in re.findall(r'<span class="eqno">\((\d+)\)', text)}
    ids = {html.unescape(i) for i in re.findall(r'\bid="([^"]+)"', text)}
    return numbers, ids


def test_every_citation_of_the_docs_resolves(built_docs):
    citations = _citations()
    assert citations, "no citations of docs/ found: the scan is broken"
    problems = []
    cache: dict[str, tuple[set[int], set[str]]] = {}
    for where, page, anchor, eqs in citations:
        html_file = built_docs / f"{page}.html"
        if not (DOCS / f"{page}.md").is_file() or not html_file.is_file():
            problems.append(f"{where}: no page docs/{page}.md")
            continue
        numbers, ids = cache.setdefault(page, _page_targets(html_file))
        problems += [f"{where}: docs/{page}.md has no eq. ({n})" for n in eqs if n not in numbers]
        if anchor and anchor not in ids:
            problems.append(f"{where}: docs/{page}.md has no anchor #{anchor}")
    assert not problems, "stale citations of the docs:\n" + "\n".join(problems)


def test_no_reference_to_the_old_design_notes():
    # The theory lives in docs/ only: no file may cite the external design notes instead.
    stale = [
        f"{f.relative_to(ROOT).as_posix()}:{i}"
        for f in _scanned_files()
        if f != Path(__file__).resolve()
        for i, line in enumerate(f.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if "DESIGN" + ".md" in line or "DESIGN §" in line
    ]
    assert not stale, "references to the external design notes remain:\n" + "\n".join(stale)
