"""MkDocs hook: the repository's benchmarks/results/ folder joins the site as results/.

The docs link to results files as they lie in the repository (``../benchmarks/results/debtags.md``), which works
when the Markdown is read on a forge; in the site those links point at the copies under ``results/``, so
``mkdocs build --strict`` still checks that every one of them exists.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File

RESULTS = "benchmarks/results"
KINDS = {".md", ".png", ".json"}


def _root(config) -> Path:
    return Path(config["config_file_path"]).resolve().parent


def on_files(files, config):
    src = _root(config) / RESULTS
    for p in sorted(src.rglob("*")):
        if p.is_file() and p.suffix in KINDS:
            files.append(File.generated(config, f"results/{p.relative_to(src).as_posix()}", abs_src_path=str(p)))
    return files


_LINK = re.compile(r"(\]\()((?:\.\./)+)benchmarks/results/")


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri.startswith("results/"):
        return markdown
    depth = page.file.src_uri.count("/")  # a page under docs/ at this depth reaches results/ by depth x "../"
    return _LINK.sub(lambda m: m.group(1) + "../" * depth + "results/", markdown)
