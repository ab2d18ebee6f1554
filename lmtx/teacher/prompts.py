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
        """The first ``max_doc_words`` words, and at most 16 characters per allowed word: a text without spaces
        (Chinese, a base64 blob, a 2 MB line) is cut too, not sent whole. (No cached answer changes: none of
        the 11,698 sample and debtags documents reaches the character cap.)"""
        words = doc.split()
        if len(words) > self.max_doc_words:
            words = words[: self.max_doc_words]
        text = " ".join(words)
        cap = 16 * self.max_doc_words
        return text[:cap] if len(text) > cap else text

    @property
    def shows_description(self) -> bool:
        """The template has a `` ({description})`` for the label's description (teacher.describe can leave it out)."""
        return _OPTIONAL_DESC.search(self.text) is not None

    def render(self, doc: str, label: str, description: str = "") -> str:
        """Fill the template. A label without a description (bare names) drops a parenthesised
        ``({description})`` from the template rather than repeating the name in it."""
        text = self.text
        if not description or description.strip() == label.strip():
            text = _OPTIONAL_DESC.sub("", text)
        return text.format(doc=self.cut(doc), label=label, description=description or label)


def _builtin_dir():
    return resources.files("lmtx.teacher") / "templates"


def user_dirs() -> list[Path]:
    """Where user templates live, searched before the built-ins: ``$LMTX_PROMPTS`` (os.pathsep-separated
    folders), then ``./prompts`` of the working directory."""
    import os

    dirs = [Path(x) for x in os.environ.get("LMTX_PROMPTS", "").split(os.pathsep) if x]
    return dirs + [Path.cwd() / "prompts"]


def find_templates() -> dict[str, str]:
    """name -> where it comes from (a user file path, or 'built-in'); user templates shadow built-ins."""
    out = {p.name[:-4]: "built-in" for p in _builtin_dir().iterdir() if p.name.endswith(".txt")}
    for d in reversed(user_dirs()):
        if d.is_dir():
            out.update({p.stem: str(p) for p in sorted(d.glob("*.txt"))})
    return dict(sorted(out.items()))


def list_templates() -> list[str]:
    return list(find_templates())


def load_template(name: str | None = None, path: str | Path | None = None, max_doc_words: int = 256) -> PromptTemplate:
    """A template by file path, or by name: ``$LMTX_PROMPTS/NAME.txt``, ``./prompts/NAME.txt``, then built-in.
    A name that contains a path separator or ends in ``.txt`` is a file path."""
    name = name or "paper-desc"
    if path is None and ("/" in name or name.endswith(".txt")):
        path = name
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise PromptError(f"prompt file not found: {p}")
        try:
            text = p.read_text(encoding="utf-8").strip()
        except UnicodeDecodeError:
            raise PromptError(f"{p}: not UTF-8 text") from None
        return PromptTemplate(p.stem, text, max_doc_words)
    for d in user_dirs():
        f = d / f"{name}.txt"
        if f.is_file():
            return load_template(path=f, max_doc_words=max_doc_words)
    f = _builtin_dir() / f"{name}.txt"
    if not f.is_file():
        raise PromptError(
            f"unknown prompt {name!r}; known: {', '.join(list_templates())} (user templates: "
            f"{' or '.join(str(d) for d in user_dirs())}/NAME.txt)"
        )
    return PromptTemplate(name, f.read_text().strip(), max_doc_words)
