"""Served teacher over an OpenAI-compatible HTTP API (vLLM, SGLang, llama.cpp server, ...).

``/v1/completions`` with ``max_tokens=1, temperature=0``; P(yes) comes from the log-probabilities of
the yes/no token ids (found through the tokenizer, never hand-written strings), asked for exactly with
vLLM's ``logprob_token_ids``. A server without that parameter gets ``logprobs=K`` (top-K) instead;
where a yes or no variant is outside the top K its probability is bounded by the smallest listed one
and the prompt is counted in ``missing_no_mass`` / ``missing_yes_mass`` (see ``stats``).

A document's j candidate prompts go out together in one request (the document comes first in each
prompt, so the server's prefix cache reuses it), documents are sharded over replicas by a hash of
their id (each replica's prefix cache stays warm), and up to ``concurrency`` requests are in flight.
Timeouts and 5xx answers are retried with backoff; an unreachable server is a clear TeacherError.
API keys come from the environment (``LMTX_TEACHER_API_KEY``) and never appear in logs or run folders.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import time
from typing import Sequence

from ..store.data import stable_key
from .base import (
    Judgment,
    Pair,
    PartialAnswers,
    TeacherError,
    answer_token_ids,
    context_limit,
    encode_prompt,
    fit_context,
    prompt_messages,
    prompt_text,
)
from .logprobs import Reading, judge, read_entries
from .prompts import PromptTemplate

# pairs per cache commit when Ray sends the requests: a Ray Data pipeline per chunk costs about a second to start,
# and a job killed mid-chunk loses at most this many answers
RAY_CHUNK_PAIRS = 8192

# a prompt the server answered without any yes/no mass: never a yes (mass 0), neutral in the fused score
UNREADABLE = Judgment(p_yes=0.5, mass=0.0)


class _Retryable(Exception):
    pass


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def read_choice(choice: dict, yes_ids, no_ids, exact: bool) -> Reading:
    """One completions choice read by lmtx's judge: the reading of every served request, local or on Ray."""
    return judge(read_entries(choice.get("logprobs")), yes_ids, no_ids, exact=exact)


def _completions(url: str) -> str:
    return f"{url}/completions" if url.endswith("/v1") else f"{url}/v1/completions"


def _root(url: str) -> str:
    url = url.rstrip("/")
    return url[:-3] if url.endswith("/v1") else url


class ServedTeacher:
    simulated = False
    chunk_pairs = 512  # pairs per cache commit: enough to keep hundreds of requests in flight

    def __init__(
        self,
        urls: Sequence[str],
        template: PromptTemplate,
        model_id: str,
        served_model: str | None = None,
        chat_format: str | None = None,
        tokenizer=None,
        concurrency: int = 128,
        timeout: float = 300.0,
        retries: int = 4,
        top_logprobs: int = 20,
        api_key: str | None = None,
        prime: bool = True,
        log=print,
        deadline: float = 900.0,
        max_wait: float = 60.0,
        max_unreadable: float = 0.02,
        transport=None,
        engine=None,
    ):
        if not urls:
            raise TeacherError("a served teacher needs at least one --teacher-url")
        self.urls = [u.rstrip("/") for u in urls]
        self.template = template
        self.model_id = model_id
        self.served_model = served_model
        self.chat_format = chat_format
        self.tokenizer = tokenizer
        self.concurrency = concurrency
        self.timeout = timeout
        self.retries = retries
        self.top_logprobs = top_logprobs
        self._api_key = api_key if api_key is not None else os.environ.get("LMTX_TEACHER_API_KEY")
        self.log = log
        self.exact_ids = True  # vLLM's logprob_token_ids; falls back to top-K on servers without it
        # Send a document's first prompt alone, then its other j-1 together: prompts that arrive in the same
        # batch are all prefilled from scratch, while later ones find the document's prefix in the cache.
        self.prime = prime
        self.deadline = deadline  # seconds for one request, retries included
        self.max_wait = max_wait  # longest pause between tries (Retry-After is honoured up to this)
        self.max_unreadable = max_unreadable  # share of a chunk's prompts allowed without yes/no mass
        self.transport = transport  # an httpx transport (tests replay server responses through MockTransport)
        self.engine = None
        if engine is not None:
            self.use_engine(engine)
        self._mode_logged = False
        self.stats = {
            "prompts": 0,
            "requests": 0,
            "retries": 0,
            "fallbacks": 0,
            "missing_yes_mass": 0,
            "missing_no_mass": 0,
            "unreadable": 0,
            "low_mass": 0,
            "prompt_tokens": 0,
            "prompts_cut": 0,
        }
        self.context: int | None = None
        self._probe()

    @property
    def prompt_tokens(self) -> int:
        return self.stats["prompt_tokens"]

    def __repr__(self):  # never shows the key
        return f"ServedTeacher(urls={self.urls}, model={self.served_model!r})"

    def describe(self) -> str:
        return f"served:{self.model_id} at {', '.join(self.urls)} (prompt {self.template.name})"

    # -- set-up ---------------------------------------------------------------------------------------------
    def _headers(self):
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def _probe(self):
        import httpx

        try:
            with httpx.Client(transport=self.transport, timeout=10) as c:
                r = c.get(f"{_root(self.urls[0])}/v1/models", headers=self._headers())
            r.raise_for_status()
        except httpx.HTTPError as e:
            raise TeacherError(
                f"teacher server {self.urls[0]} is unreachable ({type(e).__name__}: {e}); "
                f"start one with `lmtx teacher serve NAME` or check --teacher-url"
            ) from None
        cards = r.json().get("data", [])
        served = [m["id"] for m in cards]
        if self.served_model is None:
            if not served:
                raise TeacherError(f"teacher server {self.urls[0]} serves no model")
            self.served_model = served[0]
        elif self.served_model not in served:
            raise TeacherError(f"teacher server {self.urls[0]} serves {served}, not {self.served_model!r}")
        self.yes_ids, self.no_ids = answer_token_ids(encode=self._tokenize)
        card = next((m for m in cards if m["id"] == self.served_model), {})
        self.context = context_limit(self.tokenizer, served=card.get("max_model_len"))

    def _tokenize(self, text: str | None = None, messages=None) -> list[int]:
        if self.tokenizer is not None:
            if messages is not None:
                text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
                return encode_prompt(self.tokenizer, text)
            return self.tokenizer.encode(text, add_special_tokens=False)
        import httpx

        body = {"model": self.served_model, "add_special_tokens": False}
        if messages is not None:
            body.update(messages=messages, add_generation_prompt=True)
        else:
            body["prompt"] = text
        with httpx.Client(transport=self.transport, timeout=30) as c:
            r = c.post(f"{_root(self.urls[0])}/tokenize", json=body, headers=self._headers())
        if r.status_code >= 400:
            raise TeacherError(
                f"{self.urls[0]}/tokenize failed ({r.status_code}); give the model's tokenizer "
                f"(--teacher-tokenizer) for servers without a /tokenize endpoint"
            )
        return r.json()["tokens"]

    # -- prompts --------------------------------------------------------------------------------------------
    def render(self, pair: Pair) -> list[int] | str:
        """The prompt (token ids where a tokenizer is at hand; the document cut by tokens where it would overflow
        the server's max_model_len)."""
        if self.tokenizer is None:
            return self._render(pair)
        return fit_context(self._render, pair, self.context, self.tokenizer, self.stats)

    def _render(self, pair: Pair) -> list[int] | str:
        # token ids as the local backend builds them (BOS included where the tokenizer adds one); without a local
        # tokenizer a chat-format text goes as is (the server adds its BOS the same way), and chat messages go to
        # the server's /tokenize, which applies the model's chat template
        if self.tokenizer is not None:
            return encode_prompt(self.tokenizer, prompt_text(self.template, pair, self.chat_format, self.tokenizer))
        if self.chat_format:
            return prompt_text(self.template, pair, self.chat_format)
        return self._tokenize(messages=prompt_messages(self.template, pair))

    # -- scoring --------------------------------------------------------------------------------------------
    def _replica(self, doc_id: str) -> str:
        return self.urls[stable_key(doc_id) % len(self.urls)]

    def _mode(self) -> str:
        return (
            "exact yes/no logprobs (logprob_token_ids)"
            if self.exact_ids
            else f"top-{self.top_logprobs} logprobs (the server ignores logprob_token_ids)"
        )

    async def _post(self, client, url: str, prompts: list) -> tuple[list[dict], bool]:
        """One completions request with retries: timeouts, transport errors, 429 (honouring Retry-After), 5xx,
        malformed JSON and a wrong number of choices are retried with jittered backoff within ``deadline``."""
        import httpx

        delay, t_end = 1.0, time.monotonic() + self.deadline
        for attempt in range(self.retries + 1):
            exact = self.exact_ids  # the mode this request asks in (another request may switch it meanwhile)
            body = self._body(prompts, exact)
            wait = None
            try:
                r = await client.post(_completions(url), json=body, headers=self._headers())
                if r.status_code == 429 or r.status_code >= 500:
                    wait = _retry_after(r.headers.get("retry-after")) if r.status_code in (429, 503) else None
                    raise _Retryable(f"HTTP {r.status_code}: {r.text[:200]}")
                if r.status_code == 400 and exact and "logprob_token_ids" in r.text:
                    self._fallback(url, "it refused logprob_token_ids")
                    continue
                if r.status_code >= 400:
                    raise TeacherError(f"teacher server {url} refused the request ({r.status_code}): {r.text[:300]}")
                try:
                    data = r.json()
                    choices = sorted(data["choices"], key=lambda c: c["index"])
                except (ValueError, KeyError, TypeError) as e:
                    raise _Retryable(f"malformed response ({type(e).__name__}: {r.text[:120]!r})") from None
                if len(choices) != len(prompts):
                    raise _Retryable(f"{len(choices)} choices for {len(prompts)} prompts")
                self.stats["requests"] += 1
                self.stats["prompt_tokens"] += (data.get("usage") or {}).get("prompt_tokens", 0) or 0
                return choices, exact
            except (httpx.TimeoutException, httpx.TransportError, _Retryable) as e:
                left = t_end - time.monotonic()
                if attempt == self.retries or left <= 0:
                    raise TeacherError(
                        f"teacher server {url} failed after {attempt + 1} tries: {type(e).__name__}: {e}"
                    ) from None
                self.stats["retries"] += 1
                pause = wait if wait is not None else delay * random.uniform(0.5, 1.5)
                await asyncio.sleep(max(0.0, min(pause, left, self.max_wait)))
                delay = min(delay * 2, 30)
        raise TeacherError(f"teacher server {url}: no answer after {self.retries + 1} tries")

    def _body(self, prompts: list, exact: bool) -> dict:
        """lmtx's completions request for a document's prompts: one token, greedy, the yes/no logprobs (the exact
        ids, or the top K)."""
        body = {
            "model": self.served_model,
            "prompt": prompts,
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": 1 if exact else self.top_logprobs,
            "return_tokens_as_token_ids": True,
        }
        if exact:
            body["logprob_token_ids"] = self.yes_ids + self.no_ids
        return body

    def _fallback(self, url: str, why: str):
        if self.exact_ids:
            self.exact_ids = False
            self.stats["fallbacks"] += 1
            self.log(f"[lmtx] {url}: {why}; reading the top-{self.top_logprobs} logprobs instead")

    async def _request(self, client, url: str, prompts: list) -> list[Judgment]:
        for _ in range(2):
            choices, exact = await self._post(client, url, prompts)
            readings = [read_choice(c, self.yes_ids, self.no_ids, exact) for c in choices]
            if exact and any(x.ignored for x in readings):
                self._fallback(url, "it did not return the requested yes/no token ids (logprob_token_ids ignored)")
                continue
            break
        return self._tally(readings)

    def _tally(self, readings: list[Reading]) -> list[Judgment]:
        """Readings as judgments (UNREADABLE where no yes/no mass was listed), counted in ``stats``."""
        out = []
        for x in readings:
            self.stats["missing_yes_mass"] += x.missing_yes
            self.stats["missing_no_mass"] += x.missing_no
            if x.judgment is None:
                self.stats["unreadable"] += 1
                out.append(UNREADABLE)
                continue
            if x.judgment.mass < 0.5:
                self.stats["low_mass"] += 1
            out.append(x.judgment)
        return out

    async def _score(self, groups: list[list[Pair]]) -> list:
        import httpx

        sem = asyncio.Semaphore(self.concurrency)
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        async with httpx.AsyncClient(timeout=self.timeout, limits=limits, transport=self.transport) as client:

            async def one(group):
                prompts = [self.render(p) for p in group]
                url = self._replica(group[0].doc_id)
                async with sem:
                    if self.prime and len(prompts) > 1:
                        first = await self._request(client, url, prompts[:1])
                        return first + await self._request(client, url, prompts[1:])
                    return await self._request(client, url, prompts)

            return await asyncio.gather(*(one(g) for g in groups), return_exceptions=True)

    # -- on Ray (--engine ray) ------------------------------------------------------------------------------
    def use_engine(self, engine) -> None:
        """Send the requests through a started lmtx.search.ray_engine.RayEngine (Ray Data's HTTP processor), with
        the answer cache committed every RAY_CHUNK_PAIRS pairs."""
        self.engine = engine
        self.chunk_pairs = RAY_CHUNK_PAIRS

    def _score_ray(self, groups: list[list[Pair]]) -> list:
        """The same requests through Ray Data's HTTP processor (lmtx.search.ray_engine.http_requests): lmtx's body,
        and lmtx's reader as Ray's post-processing, which returns only scalars. The first document goes through
        lmtx's own client first (it settles exact ids or top-K, as the local path does); with ``prime`` each
        document's first prompt goes in a first wave and its other j-1 in a second, so they find its prefix in
        the server's cache. A row Ray could not use (a refused request, a missing choice, ids ignored) is asked
        again through lmtx's own client, whose retries and fallbacks then apply."""
        from ..search.ray_engine import http_requests

        if not groups:
            return []
        results: list = [None] * len(groups)
        results[0] = asyncio.run(self._score(groups[:1]))[0]
        prompts = [[self.render(p) for p in g] for g in groups]
        got: list[list] = [[None] * len(g) for g in groups]
        redo: set[int] = set()
        waves = [(0, 1), (1, None)] if self.prime else [(0, None)]
        exact = self.exact_ids  # settled by the first document
        reader = _RayReader(self.yes_ids, self.no_ids, exact)
        for lo, hi in waves:
            reqs = [
                (gi, _completions(self._replica(groups[gi][0].doc_id)), self._body(prompts[gi][lo:hi], exact))
                for gi in range(1, len(groups))
                if gi not in redo and prompts[gi][lo:hi]
            ]
            try:
                rows = list(http_requests(self.engine, reqs, reader, headers=self._headers()))
            except Exception as e:  # the pipeline itself failed (retries spent): lmtx's client asks what is missing
                self.log(f"[lmtx] Ray's HTTP processor failed ({type(e).__name__}: {str(e)[:200]})")
                rows = []
            for row in rows:
                gi = int(row["key"])
                if not row["ok"] or row["ignored"] or len(row["p_yes"]) != len(prompts[gi][lo:hi]):
                    redo.add(gi)
                    continue
                self.stats["requests"] += 1
                self.stats["prompt_tokens"] += int(row["prompt_tokens"])
                got[gi][lo:hi] = self._tally(_RayReader.readings(row))
            redo |= {gi for gi in range(1, len(groups)) if gi not in redo and any(a is None for a in got[gi][lo:hi])}
        for gi in range(1, len(groups)):
            if gi not in redo:
                results[gi] = got[gi]
        if redo:
            order = sorted(redo)
            self.log(f"[lmtx] {len(order)} document(s) Ray could not score: asking them through lmtx's own client")
            for gi, r in zip(order, asyncio.run(self._score([groups[gi] for gi in order]))):
                results[gi] = r
        return results

    def score(self, pairs: Sequence[Pair]) -> list[Judgment]:
        """One Judgment per pair. A failed request raises PartialAnswers carrying every answer that did arrive
        (the cache keeps them). Too many prompts without yes/no mass stop the run (TeacherError)."""
        groups = [list(g) for _, g in itertools.groupby(pairs, key=lambda p: p.doc_id)]
        if not self._mode_logged:
            self._mode_logged = True
            self.log(f"[lmtx] served teacher {self.served_model}: asking for {self._mode()}")
        results = self._score_ray(groups) if self.engine is not None else asyncio.run(self._score(groups))
        self.stats["prompts"] += len(pairs)
        done, errors, i = {}, [], 0
        for g, r in zip(groups, results):
            if isinstance(r, BaseException):
                errors.append(r)
            else:
                done.update({i + k: a for k, a in enumerate(r)})
            i += len(g)
        if errors:
            e = errors[0]
            msg = str(e) if isinstance(e, TeacherError) else f"{type(e).__name__}: {e}"
            raise PartialAnswers(f"{msg} ({len(done)} of {len(pairs)} answers kept)", done)
        bad = sum(a is UNREADABLE for a in done.values())
        if bad > self.max_unreadable * len(pairs):
            raise TeacherError(
                f"{bad} of {len(pairs)} teacher answers carry no yes/no probability (the server listed neither "
                f"the yes nor the no tokens while reading {self._mode()}); refusing to train on them. Check that "
                f"the server returns logprobs (vLLM: --max-logprobs >= {self.top_logprobs}) and that "
                f"--teacher-url serves the model named by --teacher"
            )
        return [done[k] for k in range(len(pairs))]


class _RayReader:
    """lmtx's reader (read_choice) as Ray's post-processing, which must return scalars, not Readings: per prompt
    P(yes) and yes+no mass (-1 and 0 where no yes/no mass was listed) and the missing-side flags, whether exact ids
    were ignored, and the prompt tokens the server counted. ``readings`` turns such a row back into Readings.
    Raises on a response that is not an answer (Ray then marks the row)."""

    def __init__(self, yes_ids, no_ids, exact: bool):
        self.yes_ids, self.no_ids, self.exact = list(yes_ids), list(no_ids), exact

    def __call__(self, resp) -> dict:
        if not isinstance(resp, dict) or "choices" not in resp:
            raise TeacherError(f"not a completions answer: {str(resp)[:200]}")
        xs = [
            read_choice(c, self.yes_ids, self.no_ids, self.exact)
            for c in sorted(resp["choices"], key=lambda c: c["index"])
        ]
        return {
            "p_yes": [-1.0 if x.judgment is None else float(x.judgment.p_yes) for x in xs],
            "mass": [0.0 if x.judgment is None else float(x.judgment.mass) for x in xs],
            "missing_yes": [bool(x.missing_yes) for x in xs],
            "missing_no": [bool(x.missing_no) for x in xs],
            "ignored": any(x.ignored for x in xs),
            "prompt_tokens": int((resp.get("usage") or {}).get("prompt_tokens", 0) or 0),
        }

    @staticmethod
    def readings(row: dict) -> list[Reading]:
        return [
            Reading(None if p < 0 else Judgment(p_yes=float(p), mass=float(m)), bool(my), bool(mn))
            for p, m, my, mn in zip(row["p_yes"], row["mass"], row["missing_yes"], row["missing_no"])
        ]
