"""One place that turns next-token log-probabilities into a yes/no Judgment, with the checks that keep a
broken or partial answer from passing as P(yes) = 0.5.

Backends hand over what they got for the first generated position as ``{token: logprob}`` where a token is
an int id (vLLM's ``return_tokens_as_token_ids``, ``logprob_token_ids``, the in-process engine, llama.cpp's
``id`` field) or a decoded string (OpenAI-style servers without ids). ``read_entries`` parses the response
shapes seen in the wild; ``judge`` decides what the entries say.

What ``judge`` does with a side that is missing:

* exact mode (the server was asked for every yes/no id): a missing id means the server ignored the request
  -- ``Reading.ignored`` is set and the caller switches to top-K;
* top-K mode: a side absent from the top K is bounded by the smallest listed probability (its true mass is
  below that), counted in ``missing_yes`` / ``missing_no``; a prompt where *both* sides are absent carries no
  answer at all (``judgment`` is None) and is counted as unreadable;
* a total listed mass above 1, a positive or non-finite logprob: a protocol error (``TeacherError``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

from .base import NO_STRINGS, YES_STRINGS, Judgment, TeacherError

MASS_SLACK = 1e-3  # float rounding in a server's log-softmax


@dataclass
class Reading:
    judgment: Judgment | None  # None: no yes/no mass at all (unreadable)
    missing_yes: bool = False
    missing_no: bool = False
    ignored: bool = False  # exact mode: the server did not return every requested id
    listed: int = 0  # how many distinct tokens the server listed


def read_entries(lp) -> dict:
    """The first position's ``{token id or string: logprob}`` from an OpenAI-compatible ``logprobs`` object.

    Shapes: completions (``top_logprobs: [{tok: lp}]`` with ``tokens`` / ``token_logprobs``; keys may be
    ``"token_id:N"``), and chat / llama.cpp style (``content: [{token, logprob, id?, top_logprobs: [...]}]``).
    """
    out: dict = {}
    if not lp:
        return out

    def key(tok, tid=None):
        if tid is not None:
            return int(tid)
        if isinstance(tok, str) and tok.startswith("token_id:"):
            return int(tok.split(":", 1)[1])
        return tok

    if isinstance(lp.get("content"), list):  # chat-completions / llama.cpp shape
        first = lp["content"][0] if lp["content"] else {}
        items = list(first.get("top_logprobs") or [])
        if "logprob" in first:
            items.append(first)
        for it in items:
            out[key(it.get("token"), it.get("id"))] = float(it["logprob"])
        return out
    tops = lp.get("top_logprobs") or []
    top = tops[0] if tops else None
    if isinstance(top, dict):
        for k, v in top.items():
            out[key(k)] = float(v)
    elif isinstance(top, list):  # a list of {token, logprob, id?}
        for it in top:
            out[key(it.get("token"), it.get("id"))] = float(it["logprob"])
    toks, tlp = lp.get("tokens") or [], lp.get("token_logprobs") or []
    if toks and tlp and tlp[0] is not None:
        out.setdefault(key(toks[0]), float(tlp[0]))
    return out


def judge(
    entries: Mapping, yes_ids: Sequence[int], no_ids: Sequence[int], exact: bool = False, min_listed: int = 5
) -> Reading:
    """What the listed logprobs say about yes vs no (see the module docstring for the rules). A missing side is
    bounded by the smallest listed probability only when at least ``min_listed`` tokens were listed: with the
    top-1 alone that bound is the listed side itself, and the answer would read 0.5."""
    for k, v in entries.items():
        if not math.isfinite(v) or v > 1e-6:
            raise TeacherError(f"teacher answer has an impossible logprob {v!r} for token {k!r}")
    total = sum(math.exp(v) for v in entries.values())
    if total > 1 + MASS_SLACK:
        raise TeacherError(
            f"teacher answer lists a probability mass of {total:.4f} > 1 for one position: "
            f"the server's logprobs are not log-probabilities of one distribution"
        )
    by_id = all(isinstance(k, int) for k in entries) and entries
    if by_id:
        y = [entries[i] for i in yes_ids if i in entries]
        n = [entries[i] for i in no_ids if i in entries]
        if exact and (len(y) < len(yes_ids) or len(n) < len(no_ids)):
            return Reading(None, ignored=True, listed=len(entries))
    else:
        y = [v for k, v in entries.items() if isinstance(k, str) and k in YES_STRINGS]
        n = [v for k, v in entries.items() if isinstance(k, str) and k in NO_STRINGS]
        if exact:
            return Reading(None, ignored=True, listed=len(entries))
    if (not y and not n) or ((not y or not n) and len(entries) < min_listed):
        return Reading(None, not y, not n, listed=len(entries))
    floor = min(entries.values())
    py = sum(math.exp(v) for v in y) if y else math.exp(floor)
    pn = sum(math.exp(v) for v in n) if n else math.exp(floor)
    return Reading(Judgment(p_yes=py / (py + pn), mass=py + pn), not y, not n, listed=len(entries))
