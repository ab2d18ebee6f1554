"""Prompt templates (lmtx.teacher.prompts): built-ins, user folders, cutting documents to fit."""

import pytest

from lmtx.teacher.base import Pair, TeacherError
from lmtx.teacher.hf import HFTeacher
from lmtx.teacher.prompts import PromptError, PromptTemplate, load_template


def encode_short(t, p):
    from lmtx.teacher.base import encode_prompt

    return encode_prompt(t.tokenizer, t.render(p))


def test_prompt_without_description_drops_the_parenthesis():
    from lmtx.teacher.prompts import load_template

    t = load_template("paper-desc")
    assert '"Games" relevant' in t.render("a doc", "Games", "")
    assert '"Games" (Games) relevant' not in t.render("a doc", "Games", "Games")
    assert '"Games" (Video games.) relevant' in t.render("a doc", "Games", "Video games.")


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
