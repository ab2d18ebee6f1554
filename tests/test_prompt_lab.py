import json

import numpy as np
from typer.testing import CliRunner

from lmtx.cli import app


def _naive_auc(p, g):
    pos = [a for a, y in zip(p, g) if y]
    neg = [a for a, y in zip(p, g) if not y]
    return sum((a > b) + 0.5 * (a == b) for a in pos for b in neg) / (len(pos) * len(neg))


def test_prompts_eval_numbers_by_hand(tmp_path, small_data, tiny_encoder, tiny_teacher):
    out = tmp_path / "pe"
    r = CliRunner().invoke(
        app,
        [
            "prompts",
            "eval",
            "--teacher",
            f"hf:{tiny_teacher},simulated:0",
            "--prompts",
            "paper,paper-desc",
            "--docs",
            small_data["eval"],
            "--labels",
            small_data["labels"],
            "--pairs",
            "30",
            "-j",
            "3",
            "--encoder",
            tiny_encoder,
            "--decision",
            "abs:0.5",
            "--cache",
            str(tmp_path / "c.sqlite"),
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    rows = json.loads((out / "prompts_eval.json").read_text())
    assert len(rows) == 4 and (out / "prompts_eval.png").stat().st_size > 1000
    for row in rows:
        p, g = np.array(row["p_yes"]), np.array(row["gold"])
        assert len(p) == 30
        assert abs(row["auc"] - _naive_auc(p, g)) < 1e-9
        yes = p >= 0.5
        tp = (yes & g).sum()
        assert abs(row["precision"] - (tp / yes.sum() if yes.sum() else 0)) < 1e-9
        assert abs(row["recall"] - tp / g.sum()) < 1e-9
        assert abs(row["yes_rate"] - yes.mean()) < 1e-9
    sim = [r for r in rows if r["teacher"] == "simulated:0"]
    assert all(r["auc"] == 1.0 and r["precision"] == 1.0 and r["recall"] == 1.0 for r in sim)
    assert "| hf:" in r.output and "AUC" in r.output
    # re-evaluating is free: every answer comes from the cache
    r = CliRunner().invoke(
        app,
        [
            "prompts",
            "eval",
            "--teacher",
            f"hf:{tiny_teacher}",
            "--prompts",
            "paper",
            "--docs",
            small_data["eval"],
            "--labels",
            small_data["labels"],
            "--pairs",
            "30",
            "-j",
            "3",
            "--encoder",
            tiny_encoder,
            "--cache",
            str(tmp_path / "c.sqlite"),
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0 and json.loads((out / "prompts_eval.json").read_text())[0]["asked"] == 0


def test_prompts_list_and_show():
    r = CliRunner().invoke(app, ["prompts", "list"])
    assert r.exit_code == 0 and "paper-desc" in r.output and "sources" in r.output
    r = CliRunner().invoke(app, ["prompts", "show", "paper"])
    assert r.exit_code == 0 and "answer yes or no" in r.output and "# hash" in r.output


def test_prompts_eval_describe_forms(tmp_path, small_data, tiny_encoder, tiny_teacher):
    """--describe yes,no,both: one row per form for a template with ({description}); both is the mean of the two."""
    out = tmp_path / "pe"
    args = ["prompts", "eval", "--teacher", f"hf:{tiny_teacher}", "--prompts", "paper-desc,paper"]
    args += ["--docs", small_data["eval"], "--labels", small_data["labels"], "--pairs", "12", "-j", "3"]
    args += ["--encoder", tiny_encoder, "--cache", str(tmp_path / "c.sqlite"), "--out", str(out)]
    r = CliRunner().invoke(app, [*args, "--describe", "yes,no,both"])
    assert r.exit_code == 0, r.output
    rows = {row["prompt"]: row for row in json.loads((out / "prompts_eval.json").read_text())}
    assert set(rows) == {"paper-desc", "paper-desc (describe no)", "paper-desc (describe both)", "paper"}
    yes, no, both = (
        np.array(rows[k]["p_yes"]) for k in ("paper-desc", "paper-desc (describe no)", "paper-desc (describe both)")
    )
    assert np.allclose(both, (yes + no) / 2) and not np.allclose(yes, no)
    assert np.allclose(no, rows["paper"]["p_yes"], atol=1e-5)  # the description left out renders as `paper`
    r = CliRunner().invoke(app, [*args, "--describe", "maybe"])
    assert r.exit_code == 2 and "--describe must be one of yes, no, both" in r.output
