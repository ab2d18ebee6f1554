"""The teacher protocol: P(yes) for (document, label) pairs, read from next-token probabilities."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Protocol, Sequence, runtime_checkable

YES_STRINGS = ("yes", "Yes", "YES", " yes", " Yes", " YES")
NO_STRINGS = ("no", "No", "NO", " no", " No", " NO")


class TeacherError(RuntimeError):
    pass


class PartialAnswers(TeacherError):
    """A batch failed part-way; ``answers`` maps positions in the batch to the answers that did arrive."""

    def __init__(self, msg: str, answers: dict):
        super().__init__(msg)
        self.answers = answers


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Pair:
    doc_id: str
    doc: str
    label_id: str
    label: str
    description: str = ""

    @property
    def doc_hash(self) -> str:
        return text_hash(self.doc)

    @property
    def label_hash(self) -> str:
        return text_hash(f"{self.label}\x00{self.description}")


@dataclass(frozen=True)
class Judgment:
    p_yes: float  # P(yes) / (P(yes) + P(no)), summed over every yes / no token variant
    mass: float  # P(yes) + P(no) under the full next-token distribution (low = broken template)


@runtime_checkable
class Teacher(Protocol):
    """Anything that answers "is this label relevant to this document?" with a probability.

    ``model_id`` and ``simulated`` identify the teacher in cache keys and outputs; ``score`` must
    return one Judgment per pair, in order. Pairs arrive grouped by document.
    """

    model_id: str
    simulated: bool

    def score(self, pairs: Sequence[Pair]) -> list[Judgment]: ...

    def describe(self) -> str: ...


def answer_token_ids(tokenizer=None, encode=None) -> tuple[list[int], list[int]]:
    """Token ids of every single-token spelling of yes / no, from a HF tokenizer or an ``encode(str)`` callable."""
    if encode is None:
        encode = lambda s: tokenizer.encode(s, add_special_tokens=False)  # noqa: E731

    def ids(strings):
        out = set()
        for s in strings:
            toks = encode(s)
            if len(toks) == 1:
                out.add(toks[0])
        return sorted(out)

    yes, no = ids(YES_STRINGS), ids(NO_STRINGS)
    if not yes or not no:
        raise TeacherError("the tokenizer has no single-token spelling of yes/no; this teacher cannot be read")
    if set(yes) & set(no):
        raise TeacherError("yes and no share a token id in this tokenizer")
    return yes, no


def prompt_text(template, pair: Pair, chat_format: str | None, tokenizer=None) -> str:
    """The teacher's prompt for a pair, as every backend renders it (the answer cache assumes they agree): the
    template's message in the registry's chat format, else in the tokenizer's chat template, else the bare message
    followed by "Answer:". A served teacher without a local tokenizer sends prompt_messages instead."""
    msg = template.render(pair.doc, pair.label, pair.description)
    if chat_format:
        return chat_format.format(msg=msg)
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            prompt_messages(template, pair, msg), add_generation_prompt=True, tokenize=False
        )
    return msg + "\nAnswer:"


def prompt_messages(template, pair: Pair, msg: str | None = None) -> list[dict]:
    """The prompt as chat messages (for a server that applies its own chat template)."""
    return [
        {"role": "user", "content": msg if msg is not None else template.render(pair.doc, pair.label, pair.description)}
    ]


def encode_prompt(tokenizer, text: str) -> list[int]:
    """Token ids of a rendered prompt, the same for every backend: the text as written, plus the BOS token the
    tokenizer would add itself (Llama-style models; none for Qwen/SmolLM2), never EOS. A server given the text
    would add that BOS; the local backend and the served one send these ids, so both see the same prompt."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None and (not ids or ids[0] != bos):
        if tokenizer.encode(text, add_special_tokens=True)[:1] == [bos]:
            ids = [bos] + ids
    return ids


def fit_context(encode, pair: Pair, limit: int | None, tokenizer, stats: dict | None = None) -> list[int]:
    """The prompt's token ids (``encode(pair)``), fitted to the teacher's context: a prompt of ``limit`` tokens or
    more (one is left for the answer) has its document cut by tokens, not words, until it fits; counted in
    ``stats["prompts_cut"]``. A template that alone overflows the context is an error, not a silent answer."""
    ids = encode(pair)
    if not limit or len(ids) < limit or tokenizer is None:
        return ids
    doc_ids = tokenizer.encode(pair.doc, add_special_tokens=False)
    keep = len(doc_ids)
    for _ in range(6):
        keep -= len(ids) - limit + 1 + 4  # a few spare tokens: re-tokenizing the cut text may merge differently
        if keep <= 0:
            raise TeacherError(
                f"the teacher's context ({limit} tokens) cannot hold the prompt even with the document "
                f"{pair.doc_id!r} cut to nothing: shorten the template or the label description"
            )
        ids = encode(replace(pair, doc=tokenizer.decode(doc_ids[:keep])))
        if len(ids) < limit:
            break
    else:
        raise TeacherError(f"could not fit document {pair.doc_id!r} into the teacher's context of {limit} tokens")
    if stats is not None:
        stats["prompts_cut"] = stats.get("prompts_cut", 0) + 1
    return ids


def context_limit(tokenizer=None, config=None, served: int | None = None) -> int | None:
    """The teacher's context in tokens: the server's max_model_len, else the model config's
    max_position_embeddings, else the tokenizer's model_max_length when it is a real bound."""
    for v in (served, getattr(config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)):
        if isinstance(v, int) and 0 < v < 10_000_000:
            return v
    return None


def chat_format_id(chat_format: str | None) -> str:
    """The teacher-id suffix for an explicit chat format (Vicuna, Llama-2 of the registry): answers rendered with
    another format never share a cache key. None (the tokenizer's own chat template) adds nothing."""
    if not chat_format:
        return ""
    return "@fmt-" + hashlib.sha256(chat_format.encode()).hexdigest()[:10]
