"""The served teacher against every server shape and fault we know, replayed through httpx.MockTransport.

Each case must either score correctly (checked against the known logprobs of a real vLLM answer) or stop with
a clear TeacherError: none may come back as a silent P(yes) = 0.5.
"""

import pytest
from fake_openai import FakeServer, exact_p_yes

from lmtx.teacher.base import Pair, PartialAnswers, TeacherError
from lmtx.teacher.cache import AnswerCache, score_cached
from lmtx.teacher.logprobs import judge, read_entries
from lmtx.teacher.openai import ServedTeacher
from lmtx.teacher.prompts import load_template

PAIRS = [
    Pair(d, text, l, name, desc)
    for d, text in [
        ("d1", "audio player for music files"),
        ("d2", "a strategy game with network play"),
        ("d3", "a web server written in C"),
    ]
    for l, name, desc in [
        ("audio", "Audio", "sound and music"),
        ("game", "Games", "games and play"),
        ("web", "Web", "web server"),
    ]
]


def teacher(srv: FakeServer, logs=None, **kw):
    return ServedTeacher(
        ["http://fake:8000/v1"],
        load_template("paper"),
        model_id="fake",
        chat_format="USER: {msg} ASSISTANT:",
        transport=srv.transport,
        log=(logs.append if logs is not None else (lambda m: None)),
        **kw,
    )


def prompts_of(t):
    return [t.render(p) for p in PAIRS]


# (server kind, how close to the exact answer: exact ids are exact; top-20 misses variants below the 20th token)
READABLE = [
    ("vllm", 1e-9),
    ("vllm-strings", 2e-3),
    ("vllm-old", 2e-3),
    ("vllm-400", 2e-3),
    ("sglang", 2e-3),
    ("llamacpp", 2e-3),
]


@pytest.mark.parametrize("kind,tol", READABLE)
def test_server_kinds_score_correctly(kind, tol):
    logs = []
    srv = FakeServer(kind)
    t = teacher(srv, logs)
    got = t.score(PAIRS)
    want = [exact_p_yes(p) for p in prompts_of(t)]
    assert [round(x, 6) for x in want].count(round(want[0], 6)) < len(want)  # the answers differ by prompt
    for g, w in zip(got, want):
        assert abs(g.p_yes - w) < tol and 0 < g.mass <= 1
    assert t.stats["unreadable"] == 0
    assert t.exact_ids == (kind == "vllm")
    assert t.stats["fallbacks"] == (0 if kind == "vllm" else 1)
    assert any("asking for exact" in m for m in logs)  # the run log says which reading is in use
    if kind != "vllm":
        assert any("top-20" in m for m in logs)
        assert srv.requests[-1]["logprobs"] == 20 and "logprob_token_ids" not in srv.requests[-1]


@pytest.mark.parametrize("kind", ["top1", "nologprobs"])
def test_servers_without_yes_no_mass_stop_with_a_clear_error(kind):
    t = teacher(FakeServer(kind))
    with pytest.raises(TeacherError, match="carry no yes/no probability"):
        t.score(PAIRS)
    assert t.stats["unreadable"] == len(PAIRS)


@pytest.mark.parametrize("kind,match", [("mass>1", "mass of"), ("positive", "impossible logprob")])
def test_impossible_logprobs_are_protocol_errors(kind, match):
    with pytest.raises(TeacherError, match=match):
        teacher(FakeServer(kind)).score(PAIRS)


@pytest.mark.parametrize("fault", [429, 503, 500, "timeout", "malformed", "short"])
def test_transient_faults_are_retried(fault):
    srv = FakeServer("vllm", faults=[fault, fault])
    t = teacher(srv)
    got = t.score(PAIRS)
    assert [round(g.p_yes, 9) for g in got] == [round(exact_p_yes(p), 9) for p in prompts_of(t)]
    assert t.stats["retries"] == 2


def test_retry_after_is_honoured(monkeypatch):
    import lmtx.teacher.openai as O

    slept = []

    async def fake_sleep(s):
        slept.append(s)

    monkeypatch.setattr(O.asyncio, "sleep", fake_sleep)
    t = teacher(FakeServer("vllm", faults=[429], retry_after="7"), prime=False)
    t.score(PAIRS[:3])
    assert slept == [7.0]
    # without Retry-After: jittered exponential backoff
    t = teacher(FakeServer("vllm", faults=[503, 503], retry_after=None), prime=False)
    slept.clear()
    t.score(PAIRS[:3])
    assert len(slept) == 2 and 0.5 <= slept[0] <= 1.5 and 1.0 <= slept[1] <= 3.0


@pytest.mark.parametrize(
    "fault,match",
    [("timeout", "ReadTimeout"), ("malformed", "malformed"), ("short", "2 choices for 3 prompts"), (500, "HTTP 500")],
)
def test_persistent_faults_end_in_a_clear_error(fault, match):
    t = teacher(FakeServer("vllm", faults=[fault] * 10), retries=2, prime=False, max_wait=0)
    with pytest.raises(TeacherError, match=match):
        t.score(PAIRS[:3])


def test_answers_that_arrived_before_a_failure_are_kept(tmp_path):
    # the first document's requests succeed; every later request fails
    srv = FakeServer("vllm", faults=[None, None] + ["malformed"] * 50)
    t = teacher(srv, retries=1, max_wait=0, concurrency=1)
    cache = AnswerCache(tmp_path / "c.sqlite")
    with pytest.raises(PartialAnswers) as e:
        score_cached(t, "tpl", PAIRS, cache, chunk_pairs=100)
    assert len(e.value.answers) == 3 and "3 of 9 answers kept" in str(e.value)
    kept = cache.get_many("fake", "tpl", PAIRS)
    assert [k is not None for k in kept] == [True] * 3 + [False] * 6
    # the rerun asks only what is missing
    srv2 = FakeServer("vllm")
    t2 = teacher(srv2)
    answers, asked = score_cached(t2, "tpl", PAIRS, cache, chunk_pairs=100)
    assert asked == 6 and all(a is not None for a in answers)


def test_reader_parses_each_shape():
    ids = {
        "top_logprobs": [{"token_id:5": -0.1, "token_id:7": -2.5}],
        "tokens": ["token_id:5"],
        "token_logprobs": [-0.1],
    }
    assert read_entries(ids) == {5: -0.1, 7: -2.5}
    strings = {"top_logprobs": [{"Yes": -0.1, "No": -2.5}]}
    assert read_entries(strings) == {"Yes": -0.1, "No": -2.5}
    chat = {
        "content": [
            {"id": 5, "token": "Yes", "logprob": -0.1, "top_logprobs": [{"id": 7, "token": "No", "logprob": -2.5}]}
        ]
    }
    assert read_entries(chat) == {5: -0.1, 7: -2.5}
    assert read_entries(None) == {}
    # a top-1-only answer would read 0.5 with the floor bound: it is unreadable instead
    r = judge({5: -0.1}, [5], [7])
    assert r.judgment is None and r.missing_no
    # top-K with one side below the K-th: bounded by the smallest listed probability, flagged
    r = judge({5: -0.1, 1: -3, 2: -4, 3: -5, 4: -6}, [5], [7])
    assert r.judgment is not None and r.missing_no and r.judgment.p_yes > 0.99


def _llama_style_tokenizer():
    """A word-level tokenizer whose post-processor adds <s> (as Llama's does), built from a vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = [
        "<unk>",
        "<s>",
        "</s>",
        "USER:",
        "ASSISTANT:",
        "yes",
        "no",
        "Yes",
        "No",
        "document",
        "tag",
        "audio",
        "YES",
        "NO",
    ]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def test_encode_prompt_adds_the_tokenizers_bos_once():
    from lmtx.teacher.base import encode_prompt

    tok = _llama_style_tokenizer()
    assert encode_prompt(tok, "USER: audio ASSISTANT:") == [1, 3, 11, 4]
    assert encode_prompt(tok, "<s> USER: audio ASSISTANT:") == [1, 3, 11, 4]  # a BOS in the text is not doubled
    plain = _llama_style_tokenizer()
    plain._tokenizer.post_processor = None
    assert encode_prompt(plain, "USER: audio ASSISTANT:") == [3, 11, 4]  # Qwen-like: no BOS added


def test_local_and_served_renderings_are_the_same_token_ids(tmp_path):
    """A registry chat format (Vicuna-style) through the local HF path and through the served path: the same ids."""
    from lmtx.teacher.base import encode_prompt

    tok = _llama_style_tokenizer()
    fmt = "USER: {msg} ASSISTANT:"
    served = ServedTeacher(
        ["http://fake:8000/v1"],
        load_template("paper"),
        model_id="m",
        chat_format=fmt,
        tokenizer=tok,
        transport=FakeServer("vllm").transport,
        log=lambda m: None,
    )
    for p in PAIRS[:3]:
        local = encode_prompt(tok, fmt.format(msg=load_template("paper").render(p.doc, p.label, p.description)))
        assert served.render(p) == local and local[0] == 1


def test_teacher_ids_tell_chat_formats_apart_and_keep_offline_ids():
    from lmtx.teacher.registry import REGISTRY, teacher_model_id

    assert teacher_model_id("qwen0.5b") == "qwen2.5-coder-0.5b"  # existing caches stay valid
    w = teacher_model_id("wizardlm")
    assert w.startswith(REGISTRY["wizardlm"].model + "@fmt-")
    assert w != teacher_model_id(f"hf:{REGISTRY['wizardlm'].model}")
    assert teacher_model_id("vllm:wizardlm") == w
    assert teacher_model_id("llama2") != teacher_model_id("hf:" + REGISTRY["llama2"].model)


def test_unreachable_server_is_a_clear_error(tiny_teacher):
    import socket

    from lmtx.teacher.registry import make_served_teacher

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TeacherError, match=rf"127.0.0.1:{port}.* is unreachable"):
        make_served_teacher(f"hf:{tiny_teacher}", load_template("paper"), [f"http://127.0.0.1:{port}/v1"], timeout=5)
