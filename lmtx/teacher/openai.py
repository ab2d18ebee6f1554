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
import hashlib
import itertools
import math
import os
from typing import Sequence

from ..prompts import PromptTemplate
from .base import NO_STRINGS, YES_STRINGS, Judgment, Pair, TeacherError, answer_token_ids


def _root(url: str) -> str:
    url = url.rstrip("/")
    return url[:-3] if url.endswith("/v1") else url


class ServedTeacher:
    simulated = False
    chunk_pairs = 512  # pairs per cache commit: enough to keep hundreds of requests in flight

    def __init__(self, urls: Sequence[str], template: PromptTemplate, model_id: str, served_model: str | None = None,
                 chat_format: str | None = None, tokenizer=None, concurrency: int = 128, timeout: float = 300.0,
                 retries: int = 4, top_logprobs: int = 20, api_key: str | None = None, prime: bool = True,
                 log=print):
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
        self.stats = {"prompts": 0, "requests": 0, "retries": 0, "missing_yes_mass": 0, "missing_no_mass": 0,
                      "low_mass": 0, "prompt_tokens": 0}
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
            r = httpx.get(f"{_root(self.urls[0])}/v1/models", headers=self._headers(), timeout=10)
            r.raise_for_status()
        except httpx.HTTPError as e:
            raise TeacherError(f"teacher server {self.urls[0]} is unreachable ({type(e).__name__}: {e}); "
                               f"start one with `lmtx teacher serve NAME` or check --teacher-url") from None
        served = [m["id"] for m in r.json().get("data", [])]
        if self.served_model is None:
            if not served:
                raise TeacherError(f"teacher server {self.urls[0]} serves no model")
            self.served_model = served[0]
        elif self.served_model not in served:
            raise TeacherError(f"teacher server {self.urls[0]} serves {served}, not {self.served_model!r}")
        self.yes_ids, self.no_ids = answer_token_ids(encode=self._tokenize)

    def _tokenize(self, text: str | None = None, messages=None) -> list[int]:
        if self.tokenizer is not None:
            if messages is not None:
                text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
                return self.tokenizer.encode(text, add_special_tokens=False)
            return self.tokenizer.encode(text, add_special_tokens=False)
        import httpx

        body = {"model": self.served_model, "add_special_tokens": False}
        if messages is not None:
            body.update(messages=messages, add_generation_prompt=True)
        else:
            body["prompt"] = text
        r = httpx.post(f"{_root(self.urls[0])}/tokenize", json=body, headers=self._headers(), timeout=30)
        if r.status_code >= 400:
            raise TeacherError(f"{self.urls[0]}/tokenize failed ({r.status_code}); give the model's tokenizer "
                               f"(--teacher-tokenizer) for servers without a /tokenize endpoint")
        return r.json()["tokens"]

    # -- prompts --------------------------------------------------------------------------------------------
    def render(self, pair: Pair) -> list[int] | str:
        msg = self.template.render(pair.doc, pair.label, pair.description)
        if self.chat_format:
            return self.chat_format.format(msg=msg)
        return self._tokenize(messages=[{"role": "user", "content": msg}])

    # -- scoring --------------------------------------------------------------------------------------------
    def _replica(self, doc_id: str) -> str:
        h = int.from_bytes(hashlib.sha256(doc_id.encode()).digest()[:8], "big")
        return self.urls[h % len(self.urls)]

    def _read(self, choice) -> Judgment:
        lp = choice.get("logprobs") or {}
        top = (lp.get("top_logprobs") or [None])[0] or {}
        # top_logprobs maps token strings to logprobs; vLLM can return "token_id:N" keys (return_tokens_as_token_ids)
        by_id = {}
        for k, v in top.items():
            if k.startswith("token_id:"):
                by_id[int(k.split(":", 1)[1])] = v
        floor = min(top.values()) if top else -30.0
        if by_id:
            y = [by_id[i] for i in self.yes_ids if i in by_id]
            n = [by_id[i] for i in self.no_ids if i in by_id]
        else:
            y = [v for k, v in top.items() if k in YES_STRINGS]
            n = [v for k, v in top.items() if k in NO_STRINGS]
        if not y:
            self.stats["missing_yes_mass"] += 1
            y = [floor]
        if not n:
            self.stats["missing_no_mass"] += 1
            n = [floor]
        py = sum(math.exp(v) for v in y)
        pn = sum(math.exp(v) for v in n)
        if py + pn < 0.5:
            self.stats["low_mass"] += 1
        return Judgment(p_yes=py / (py + pn), mass=py + pn)

    async def _request(self, client, url: str, prompts: list) -> list[Judgment]:
        import httpx

        delay = 1.0
        for attempt in range(self.retries + 1):
            body = {"model": self.served_model, "prompt": prompts, "max_tokens": 1, "temperature": 0,
                    "logprobs": 1 if self.exact_ids else self.top_logprobs, "return_tokens_as_token_ids": True}
            if self.exact_ids:
                body["logprob_token_ids"] = self.yes_ids + self.no_ids
            try:
                r = await client.post(f"{url}/completions" if url.endswith("/v1") else f"{url}/v1/completions",
                                      json=body, headers=self._headers())
                if r.status_code >= 500:
                    raise httpx.HTTPStatusError(f"server error {r.status_code}", request=r.request, response=r)
                if r.status_code == 400 and self.exact_ids and "logprob_token_ids" in r.text:
                    self.exact_ids = False
                    self.log(f"[lmtx] {url} lacks logprob_token_ids: reading the top-{self.top_logprobs} logprobs")
                    continue
                if r.status_code >= 400:
                    raise TeacherError(f"teacher server {url} refused the request ({r.status_code}): {r.text[:300]}")
                data = r.json()
                self.stats["requests"] += 1
                self.stats["prompt_tokens"] += data.get("usage", {}).get("prompt_tokens", 0)
                choices = sorted(data["choices"], key=lambda c: c["index"])
                return [self._read(c) for c in choices]
            except (httpx.TimeoutException, httpx.TransportError, httpx.HTTPStatusError) as e:
                if attempt == self.retries:
                    raise TeacherError(f"teacher server {url} failed after {self.retries + 1} tries: "
                                       f"{type(e).__name__}: {e}") from None
                self.stats["retries"] += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30)
        raise AssertionError("unreachable")

    async def _score(self, groups: list[list[Pair]]) -> list[list[Judgment]]:
        import httpx

        sem = asyncio.Semaphore(self.concurrency)
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        async with httpx.AsyncClient(timeout=self.timeout, limits=limits) as client:
            async def one(group):
                prompts = [self.render(p) for p in group]
                url = self._replica(group[0].doc_id)
                async with sem:
                    if self.prime and len(prompts) > 1:
                        first = await self._request(client, url, prompts[:1])
                        return first + await self._request(client, url, prompts[1:])
                    return await self._request(client, url, prompts)

            return await asyncio.gather(*(one(g) for g in groups))

    def score(self, pairs: Sequence[Pair]) -> list[Judgment]:
        groups = [list(g) for _, g in itertools.groupby(pairs, key=lambda p: p.doc_id)]
        results = asyncio.run(self._score(groups))
        self.stats["prompts"] += len(pairs)
        out = [j for r in results for j in r]
        if len(out) != len(pairs):
            raise TeacherError(f"teacher server returned {len(out)} answers for {len(pairs)} prompts")
        return out
