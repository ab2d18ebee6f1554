"""Teacher prompt templates.

A template is one user message with the fields ``{doc}``, ``{label}`` (the label's name) and
``{description}``. The document always comes before the label so that the prompts of one document's
candidates share a prefix (reused by the local backend's KV cache and by vLLM's prefix cache).
The chat format (the model's own chat template, or a registry format such as Vicuna v1.1) is applied
by the teacher backend, not here. A template's hash goes into every cached answer's key.
"""

from __future__ import annotations

import hashlib
import re
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

FIELDS = {"doc", "label", "description"}
RENDER_VERSION = 2
_OPTIONAL_DESC = re.compile(r"\s?\(\{description\}\)")
REQUIRED = {"doc", "label"}


class PromptError(ValueError):
    pass


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    text: str
    max_doc_words: int = 256  # documents are cut to this many words before rendering

    def __post_init__(self):
        try:
            used = {f for _, f, _, _ in string.Formatter().parse(self.text) if f is not None}
        except ValueError as e:
            raise PromptError(f"template {self.name!r}: {e}") from None
        unknown = used - FIELDS
        if unknown:
            raise PromptError(f"template {self.name!r}: unknown field(s) {sorted(unknown)}; allowed: {sorted(FIELDS)}")
        missing = REQUIRED - used
        if missing:
            raise PromptError(f"template {self.name!r}: missing field(s) {sorted(missing)}")
        if self.text.index("{doc}") > self.text.index("{label}"):
            raise PromptError(f"template {self.name!r}: {{doc}} must come before {{label}} (prefix sharing)")

    @property
    def hash(self) -> str:
        # RENDER_VERSION: bumped when render() changes what a template produces for the same fields
        h = hashlib.sha256(f"{self.text}\x00{self.max_doc_words}\x00{RENDER_VERSION}".encode()).hexdigest()
        return h[:16]

    def cut(self, doc: str) -> str:
        words = doc.split()
        if len(words) > self.max_doc_words:
            return " ".join(words[: self.max_doc_words])
        return " ".join(words)

    def render(self, doc: str, label: str, description: str = "") -> str:
        """Fill the template. A label without a description (bare names) drops a parenthesised
        ``({description})`` from the template rather than repeating the name in it."""
        text = self.text
        if not description or description.strip() == label.strip():
            text = _OPTIONAL_DESC.sub("", text)
        return text.format(doc=self.cut(doc), label=label, description=description or label)


def _builtin_dir():
    return resources.files("lmtx") / "prompts"


def list_templates() -> list[str]:
    return sorted(p.name[:-4] for p in _builtin_dir().iterdir() if p.name.endswith(".txt"))


def load_template(name: str | None = None, path: str | Path | None = None, max_doc_words: int = 256) -> PromptTemplate:
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise PromptError(f"prompt file not found: {p}")
        return PromptTemplate(p.stem, p.read_text().strip(), max_doc_words)
    name = name or "paper-desc"
    f = _builtin_dir() / f"{name}.txt"
    if not f.is_file():
        raise PromptError(f"unknown prompt {name!r}; built-in: {', '.join(list_templates())}")
    return PromptTemplate(name, f.read_text().strip(), max_doc_words)
