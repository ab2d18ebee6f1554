import numpy as np
import pytest

from lmtx.teacher.base import Pair, TeacherError, answer_token_ids
from lmtx.teacher.cache import AnswerCache, score_cached
from lmtx.teacher.hf import HFTeacher
from lmtx.teacher.prompts import load_template
from lmtx.teacher.registry import make_teacher
from lmtx.teacher.simulated import SimulatedTeacher

DOCS = {
    "d1": "audio player for music files with a plugin system",
    "d2": "a strategy game with network play and sound",
}
LABELS = [
    ("audio", "Audio", "sound and music"),
    ("game", "Games", "games and play"),
    ("web", "Web", "web server"),
    ("mail", "Mail", "mail client"),
]


def pairs():
    return [Pair(d, t, l, n, desc) for d, t in DOCS.items() for l, n, desc in LABELS]


def test_prefix_reuse_equals_full_prompts(tiny_teacher):
    t = HFTeacher(tiny_teacher, load_template("paper-desc"), batch_size=3)
    t.prefix_reuse = True
    a = t.score(pairs())
    t.prefix_reuse = False
    b = t.score(pairs())
    assert np.allclose([x.p_yes for x in a], [x.p_yes for x in b], atol=1e-5)
    assert np.allclose([x.mass for x in a], [x.mass for x in b], atol=1e-5)
    assert all(0 < x.p_yes < 1 and 0 < x.mass <= 1 for x in a)
    # rendered through the model's chat template, document before label
    r = t.render(pairs()[0])
    assert (
        r.startswith("<|user|> document = ")
        and r.endswith(" <|assistant|>")
        and r.index("audio player") < r.index('"Audio"')
    )


def test_prefix_reuse_runs_fewer_tokens(tiny_teacher):
    t = HFTeacher(tiny_teacher, load_template("paper"))
    t.score(pairs())
    reuse = t.prompt_tokens
    t.prefix_reuse, t.prompt_tokens = False, 0
    t.score(pairs())
    assert reuse < 0.6 * t.prompt_tokens


def test_packed_suffixes_run_no_pads(tiny_teacher):
    """A document's suffixes of unequal length (descriptions shown and left out, as under teacher.describe both) run
    packed after the prefix: exactly their own tokens, and the answers of full prompts."""
    from dataclasses import replace

    from lmtx.teacher.hf import _common_prefix_len

    t = HFTeacher(tiny_teacher, load_template("paper-desc"), batch_size=16)
    ps = [p for p in pairs() if p.doc_id == "d1"]
    ps += [replace(p, description="") for p in ps]
    seqs = [t.encode(p) for p in ps]
    P = min(_common_prefix_len(seqs), min(len(s) for s in seqs) - 1)
    assert len({len(s) for s in seqs}) > 1
    t.prompt_tokens = 0
    a = t.score(ps)
    assert t.prompt_tokens == P + sum(len(s) - P for s in seqs)
    t.prefix_reuse = False
    b = t.score(ps)
    assert np.allclose([x.p_yes for x in a], [x.p_yes for x in b], atol=1e-5)


def test_answer_tokens_cover_variants(tiny_teacher):
    from transformers import AutoTokenizer

    yes, no = answer_token_ids(AutoTokenizer.from_pretrained(tiny_teacher))
    assert yes and no and not set(yes) & set(no)


def test_chat_format_override(tiny_teacher):
    t = HFTeacher(tiny_teacher, load_template("paper"), chat_format="USER: {msg} ASSISTANT:")
    assert t.render(pairs()[0]).endswith("answer yes or no ASSISTANT:")


def test_simulated_flips_at_the_set_rate():
    gold = {f"d{i}": {"a"} for i in range(2000)}
    ps = [Pair(f"d{i}", "x", lab, lab) for i in range(2000) for lab in ("a", "b")]
    perfect = SimulatedTeacher(gold, 0.0).score(ps)
    assert [j.p_yes for j in perfect] == [1.0, 0.0] * 2000
    noisy = SimulatedTeacher(gold, 0.1, seed=3).score(ps)
    flipped = np.mean([a.p_yes != b.p_yes for a, b in zip(perfect, noisy)])
    assert 0.08 < flipped < 0.12
    assert "SIMULATED" in SimulatedTeacher(gold, 0.1).model_id and SimulatedTeacher(gold).simulated


class Counting:
    simulated = False
    model_id = "counting"

    def __init__(self, fail_after=None):
        self.calls, self.asked, self.fail_after = 0, 0, fail_after

    def describe(self):
        return "counting"

    def score(self, ps):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("teacher died")
        self.asked += len(ps)
        from lmtx.teacher.base import Judgment

        return [Judgment(0.5, 1.0) for _ in ps]


def test_cache_asks_only_what_is_new_and_never_caches_failures(tmp_path):
    ps = [Pair(f"d{i}", f"doc {i}", f"l{j}", f"L{j}") for i in range(20) for j in range(3)]
    cache = AnswerCache(tmp_path / "c.sqlite")
    t = Counting(fail_after=2)
    with pytest.raises(RuntimeError):
        score_cached(t, "tpl", ps, cache, chunk_pairs=9)
    assert len(cache) == t.asked == 18  # two finished chunks (whole documents) kept, the failed one not
    t2 = Counting()
    ans, asked = score_cached(t2, "tpl", ps, cache, chunk_pairs=9)
    assert asked == t2.asked == 60 - 18 and len(ans) == 60
    _, asked = score_cached(Counting(), "tpl", ps, AnswerCache(tmp_path / "c.sqlite"))
    assert asked == 0
    _, asked = score_cached(Counting(), "other-template", ps, cache)
    assert asked == 60


def test_registry_errors():
    with pytest.raises(TeacherError, match="unknown teacher"):
        make_teacher("nope", load_template())
    with pytest.raises(TeacherError, match="gold"):
        make_teacher("simulated:0.1", load_template())


def encode_short(t, p):
    from lmtx.teacher.base import encode_prompt

    return encode_prompt(t.tokenizer, t.render(p))
