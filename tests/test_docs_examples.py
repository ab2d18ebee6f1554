"""Every Python example in README.md and docs/*.md runs as written (marker slow: the real offline encoder and
teacher), page by page, each page's blocks in order in one interpreter, in a scratch folder that holds what a
reader has after `./run.sh`: the bundled sample (data/), a finished run in runs/demo (here a small one of the
default recipe), and CSVs of their own (my_docs.csv: id, text; my_posts.csv: id, body)."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def blocks(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text())


WITH_EXAMPLES = [p for p in PAGES if blocks(p)]


def test_the_pages_have_python_examples_and_each_one_parses():
    names = {p.name for p in WITH_EXAMPLES}
    assert {"README.md", "python.md", "index.md"} <= names
    for page in WITH_EXAMPLES:
        for i, code in enumerate(blocks(page)):
            try:
                ast.parse(code)
            except SyntaxError as e:
                pytest.fail(f"{page.name}: python block {i + 1}: {e}")


@pytest.fixture(scope="module")
def reader_folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("reader")
    (d / "data").symlink_to(ROOT / "data")
    rows = [json.loads(x) for x in open(ROOT / "data" / "sample" / "eval.jsonl")][:40]
    import pandas as pd

    frame = pd.DataFrame({"id": [r["id"] for r in rows], "text": [r["text"] for r in rows]})
    frame.to_csv(d / "my_docs.csv", index=False)
    frame.rename(columns={"text": "body"}).to_csv(d / "my_posts.csv", index=False)
    env = {**os.environ, "LMTX_HOME": os.environ.get("LMTX_HOME", str(ROOT / ".lmtx"))}
    cmd = [sys.executable, "-m", "lmtx.cli", "iterate", "--out", "runs/demo", "--rounds", "1", "--max-docs", "20"]
    r = subprocess.run(
        cmd + ["--candidates", "3", "--no-progress"], cwd=d, env=env, capture_output=True, text=True, timeout=1800
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return d, env


@pytest.mark.slow
@pytest.mark.parametrize("page", WITH_EXAMPLES, ids=[p.name for p in WITH_EXAMPLES])
def test_python_examples_run(page, reader_folder):
    d, env = reader_folder
    code = "\n\n".join(blocks(page))
    r = subprocess.run([sys.executable, "-c", code], cwd=d, env=env, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, f"{page.name}:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"


def test_results_index_lists_every_results_file():
    """benchmarks/results/README.md names every results file (or the folder holding it)."""
    results = ROOT / "benchmarks" / "results"
    index = (results / "README.md").read_text()
    for p in sorted(results.iterdir()):
        if p.name == "README.md":
            continue
        name = p.name + "/" if p.is_dir() else p.name
        stem = p.stem if p.suffix == ".json" else None  # a .json beside its .md is listed as "(`.json`)"
        assert name in index or (stem and f"{stem}.md" in index), f"benchmarks/results/README.md does not list {name}"


def test_readme_and_docs_repeat_no_measured_figures():
    """Figures live in benchmarks/results/ only: README and docs link there, and quote no three-decimal metric."""
    for page in PAGES:
        found = re.findall(r"(?<![\w.])0\.\d{3}(?!\d)", page.read_text())
        assert not found, f"{page.relative_to(ROOT)} quotes figures {found[:5]}: link the results file instead"
