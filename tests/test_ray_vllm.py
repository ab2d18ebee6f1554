"""The ray-vllm teacher backend's pre- and post-processing (lmtx.teacher.ray_vllm), on rows shaped like Ray Data's
vLLM engine stage output: no GPU and no ray[llm] needed (the engine itself runs only on GPU images)."""

import math

import pytest

from lmtx.teacher.base import NO_STRINGS, YES_STRINGS, Pair, encode_prompt, prompt_text
from lmtx.teacher.logprobs import judge
from lmtx.teacher.prompts import load_template
from lmtx.teacher.ray_vllm import TOP_LOGPROBS, RayVllmTeacher, VllmPost, VllmPre


class WordTokenizer:
    """A stand-in tokenizer: one id per known word (yes/no spellings first), else one per character."""

    bos_token_id = 1

    def __init__(self):
        self.vocab = {s: 10 + i for i, s in enumerate(YES_STRINGS + NO_STRINGS)}

    def encode(self, text, add_special_tokens=False):
        ids = [self.vocab[text]] if text in self.vocab else [100 + ord(c) % 500 for c in text]
        return [self.bos_token_id] + ids if add_special_tokens else ids  # a Llama-style tokenizer adds its BOS


YES = [10 + i for i in range(len(YES_STRINGS))]
NO = [10 + len(YES_STRINGS) + i for i in range(len(NO_STRINGS))]


def ray_row(key, lp: dict, other_keys=()):
    """A row as Ray's vLLM stage leaves it: logprobs per generated token as {token_id: {logprob, rank,
    decoded_token}}, int keys; Arrow fills the keys other rows listed with None."""
    first = {int(t): {"logprob": v, "rank": r + 1, "decoded_token": f"t{t}"} for r, (t, v) in enumerate(lp.items())}
    first.update({int(t): None for t in other_keys if t not in lp})
    return {"key": key, "logprobs": [first], "num_input_tokens": 42, "generated_text": "Yes"}


def test_post_reads_p_yes_like_lmtxs_judge_and_returns_scalars():
    lp = {10: math.log(0.5), 13: math.log(0.1), 16: math.log(0.3), 19: math.log(0.05), 500: math.log(0.01)}
    lp.update({600 + i: math.log(0.001) for i in range(6)})
    out = VllmPost(YES, NO)(ray_row(7, lp, other_keys=[777, 778]))
    want = judge(lp, YES, NO).judgment
    assert out == {"key": 7, "p_yes": pytest.approx(want.p_yes), "mass": pytest.approx(want.mass), "input_tokens": 42}
    assert all(isinstance(v, (int, float)) for v in out.values())  # nothing nested goes back into Arrow


def test_post_marks_an_answer_without_yes_or_no():
    lp = {500 + i: math.log(0.1) for i in range(8)}
    out = VllmPost(YES, NO)(ray_row(0, lp))
    assert out["p_yes"] == -1.0 and out["mass"] == 0.0


def test_pre_sends_lmtxs_token_ids_with_greedy_one_token_sampling():
    row = VllmPre()({"key": 3, "ids": [1, 2, 3]})
    assert row == {
        "key": 3,
        "tokenized_prompt": [1, 2, 3],
        "sampling_params": {"max_tokens": 1, "temperature": 0.0, "logprobs": TOP_LOGPROBS},
    }


def test_teacher_rows_are_lmtxs_prompts_in_pair_order_and_engine_settings():
    tok = WordTokenizer()
    tpl = load_template("paper")
    t = RayVllmTeacher(None, "org/model", tpl, "m", tok, chat_format="USER: {msg} ASSISTANT:")
    assert (t.yes_ids, t.no_ids) == (YES, NO)
    pairs = [Pair(f"d{i // 3}", f"doc {i // 3}", f"l{i % 3}", f"L{i % 3}", "") for i in range(9)]
    rows = t.rows(pairs)
    assert [r["key"] for r in rows] == list(range(9))  # a document's candidates stay adjacent
    for r, p in zip(rows, pairs):
        assert r["ids"] == encode_prompt(tok, prompt_text(tpl, p, "USER: {msg} ASSISTANT:", tok))
        assert r["ids"][0] == tok.bos_token_id
    kw = t.engine_kwargs()
    assert kw["enable_prefix_caching"] is True and kw["max_logprobs"] >= TOP_LOGPROBS
    assert t.score([]) == []


def test_ray_vllm_backend_needs_the_ray_engine():
    from typer.testing import CliRunner

    from lmtx.cli import app

    r = CliRunner().invoke(app, ["iterate", "--teacher", "wizardlm", "--teacher-backend", "ray-vllm", "--dry-run"])
    assert r.exit_code == 2 and "add --engine ray" in r.output
