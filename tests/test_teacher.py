import numpy as np
import pandas as pd
import pytest

from lmtx.learn.select import decide, select_positives
from lmtx.teacher.base import Pair, TeacherError, answer_token_ids
from lmtx.teacher.cache import AnswerCache, score_cached
from lmtx.teacher.hf import HFTeacher
from lmtx.teacher.prompts import PromptError, PromptTemplate, load_template
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


def test_decision_rules_and_selection():
    j = pd.DataFrame(
        {
            "doc": [0, 0, 0, 1, 1, 1],
            "label": [5, 6, 7, 5, 8, 9],
            "p_yes": [0.9, 0.88, 0.2, 0.3, 0.1, 0.05],
            "similarity": [0.1, 0.5, 0.9, 0.9, 0.2, 0.1],
        }
    )
    assert decide(j, "abs:0.5").tolist() == [True, True, False, False, False, False]
    assert decide(j, "rel:0.05").tolist() == [True, True, False, True, False, False]
    assert decide(j, "quantile:0.5").sum() == 3
    j["yes"] = decide(j, "abs:0.5")
    ex = select_positives(j, "similarity")
    assert len(ex) == 1 and ex[0].choices == [6] and ex[0].yes == {5, 6}  # doc 1 has no yes: sits out
    assert select_positives(j, "p_yes")[0].choices == [5]
    assert sorted(select_positives(j, "random")[0].choices) == [5, 6]
    assert len(select_positives(j, "all")) == 2


def test_templates():
    t = load_template("paper")
    assert (
        t.render("some doc", "Games")
        == 'document = "some doc". Is the tag "Games" relevant to the document? answer yes or no'
    )
    with pytest.raises(PromptError, match="must come before"):
        PromptTemplate("x", "{label} {doc}")
    with pytest.raises(PromptError, match="unknown field"):
        PromptTemplate("x", "{doc} {label} {foo}")
    with pytest.raises(PromptError, match="unknown prompt"):
        load_template("nope")


def test_registry_errors():
    with pytest.raises(TeacherError, match="unknown teacher"):
        make_teacher("nope", load_template())
    with pytest.raises(TeacherError, match="gold"):
        make_teacher("simulated:0.1", load_template())


def test_zero_probability_is_never_yes():
    j = pd.DataFrame({"doc": [0, 0, 1], "label": [1, 2, 3], "p_yes": [0.0, 0.0, 1.0], "similarity": [0.5, 0.4, 0.3]})
    for rule in ("rel:0.05", "quantile:0.0", "abs:0.0"):
        assert decide(j, rule).tolist() == [False, False, True], rule


def test_user_prompts_folder_is_listed_and_shadows_built_ins(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from lmtx.cli import app
    from lmtx.teacher.prompts import find_templates

    monkeypatch.chdir(tmp_path)
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "my.txt").write_text('Text: "{doc}". Does "{label}" fit? yes or no')
    (tmp_path / "prompts" / "paper.txt").write_text("{doc} / {label}: yes or no")
    t = find_templates()
    assert (
        t["my"].endswith("prompts/my.txt")
        and t["paper"].endswith("prompts/paper.txt")
        and t["paper-desc"] == "built-in"
    )
    assert load_template("my").render("a b", "Audio") == 'Text: "a b". Does "Audio" fit? yes or no'
    assert load_template("paper").text == "{doc} / {label}: yes or no"  # the user's copy wins
    r = CliRunner().invoke(app, ["prompts", "list"])
    assert r.exit_code == 0 and "my " in r.output and "prompts/my.txt" in r.output and "[built-in]" in r.output
    (tmp_path / "prompts" / "bad.txt").write_text("{label} before {doc}")
    r = CliRunner().invoke(app, ["prompts", "list"])
    assert r.exit_code == 0 and "<error:" in r.output
    with pytest.raises(PromptError, match="unknown prompt 'nope'"):
        load_template("nope")


def test_documents_without_spaces_are_cut_too():
    t = load_template("paper", max_doc_words=10)
    assert len(t.cut("x" * 2_000_000)) == 160
    assert len(t.cut("字" * 5000)) == 160
    assert t.cut(" ".join(["w"] * 50)) == " ".join(["w"] * 10)


def test_prompts_over_the_context_are_cut_by_tokens_and_counted(tiny_teacher):
    """A document longer than the teacher's context is cut by tokens (not words) so the prompt fits, the cut is
    counted in teacher.stats; a template that cannot fit at all is a clear error."""
    from lmtx.teacher.base import fit_context

    t = HFTeacher(tiny_teacher, load_template("paper-desc"))
    assert t.context == 1024  # the model config's max_position_embeddings
    t.context = 60
    long = Pair("d", " ".join(["audio music player"] * 200), "a", "Audio", "sound and music")
    ids = t.encode(long)
    assert len(ids) < 60 and t.stats["prompts_cut"] == 1
    short = Pair("d", "audio player", "a", "Audio", "sound and music")
    assert t.encode(short) == encode_short(t, short) and t.stats["prompts_cut"] == 1
    (j,) = t.score([long])
    assert 0 < j.p_yes < 1
    with pytest.raises(TeacherError, match="cannot hold the prompt"):
        fit_context(lambda p: [0] * (100 + len(p.doc.split())), long, 60, t.tokenizer)  # template alone: 100


def encode_short(t, p):
    from lmtx.teacher.base import encode_prompt

    return encode_prompt(t.tokenizer, t.render(p))
