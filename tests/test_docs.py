"""The docs: the site builds with MkDocs in strict mode (no broken link, no page left out of the
navigation), the config reference is the one the code generates, the README stays a short
front page, and no page reads like a lab notebook (issue numbers, clock times)."""

import dataclasses
import re
import subprocess
import sys
import typing
from pathlib import Path

from orchestrator.common.paths import REPO_ROOT
from orchestrator.config.experiment import ExperimentConfig
from orchestrator.config.fields import markdown_reference, reference

DOCS = REPO_ROOT / "docs"


def _leaf_keys(cls, prefix: str = "") -> list[str]:
    keys, hints = [], typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        kind = hints[item.name]
        if dataclasses.is_dataclass(kind):
            keys += _leaf_keys(kind, f"{prefix}{item.name}.")
        else:
            keys.append(f"{prefix}{item.name}")
    return keys


def test_the_config_reference_is_generated_from_the_dataclasses_and_has_every_field():
    page = (DOCS / "config-reference.md").read_text()
    assert page == markdown_reference(reference()), (
        "docs/config-reference.md drifted from the code: "
        "alexnet-ray config --fields --markdown > docs/config-reference.md"
    )
    documented = re.findall(r"^\| `([a-z0-9_.]+)` \|", page, flags=re.MULTILINE)
    assert documented == _leaf_keys(ExperimentConfig)
    assert len(documented) >= 100
    # every field says what it is: a field without a comment in its dataclass has no meaning
    rows = [line for line in page.splitlines() if line.startswith("| `")]
    assert all(not row.endswith("|  |") for row in rows), [r for r in rows if r.endswith("|  |")]


def test_the_site_builds_strictly(tmp_path):
    mkdocs = Path(sys.executable).parent / "mkdocs"
    built = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    assert (tmp_path / "site" / "config-reference" / "index.html").is_file()


def test_the_readme_is_a_front_page_and_no_page_is_a_lab_notebook():
    readme = REPO_ROOT / "README.md"
    assert len(readme.read_text().splitlines()) <= 150
    notebook = re.compile(r"\b[Ii]ssues? #?\d+|\(#\d+\)|\bstop \d+\b|\b(?:[01]\d|2[0-3]):[0-5]\d\b")
    for page in [readme, *DOCS.glob("*.md")]:
        text = page.read_text()
        found = [m.group(0) for m in notebook.finditer(text) if not _an_address(text, m)]
        assert found == [], f"{page.name}: {found}"


def _an_address(text: str, match: re.Match) -> bool:
    """127.0.0.1:5000 and the like: a host and port, not a time of day."""
    return text[max(0, match.start() - 1)] in ".:/"
