import json
import os

import pandas as pd
import pytest
from typer.testing import CliRunner

from lmtx.cli import app
from lmtx.config import ConfigError, EncoderConfig, LoopConfig, RunConfig, TeacherConfig, TrainConfig
from lmtx.loop.run import Runtime, iterate
from lmtx.teacher.simulated import SimulatedTeacher

runner = CliRunner()


def test_help():
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0 and "iterate" in r.output
    r = runner.invoke(app, ["iterate", "--help"])
    assert r.exit_code == 0 and "--teacher" in r.output and "--dry-run" in r.output
    for cmd in (
        ["evaluate", "--help"],
        ["tag", "--help"],
        ["report", "--help"],
        ["fetch", "--help"],
        ["teacher", "serve", "--help"],
        ["prompts", "eval", "--help"],
    ):
        assert runner.invoke(app, cmd).exit_code == 0, cmd
    r = runner.invoke(app, ["teacher", "list"])
    assert r.exit_code == 0 and "wizardlm" in r.output and "simulated" in r.output


def test_console_script_points_at_the_app():
    from pathlib import Path

    import tomllib

    scripts = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    mod, _, fn = scripts["lmtx"].partition(":")
    import importlib

    assert callable(getattr(importlib.import_module(mod), fn))


@pytest.mark.filterwarnings("error::FutureWarning")  # e.g. a cache API transformers has deprecated
def test_two_round_cli_run_with_local_teacher(tmp_path, small_data, tiny_encoder, tiny_teacher):
    out = tmp_path / "run"
    args = [
        "iterate",
        "--docs",
        small_data["docs"],
        "--labels",
        small_data["labels"],
        "--eval-docs",
        small_data["eval"],
        "--out",
        str(out),
        "--rounds",
        "2",
        "--teacher",
        f"hf:{tiny_teacher}",
        "--encoder",
        tiny_encoder,
        "-j",
        "3",
        "--batch-size",
        "8",
        "--decision",
        "rel:0.05",
        "--no-progress",
    ]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    lines = [l for l in r.output.splitlines() if l.startswith("round ")]
    assert [l.split(" |")[0] for l in lines] == ["round 0", "round 1", "round 2"]
    for n in (1, 2):
        rd = out / f"round-{n:02d}"
        assert (rd / "encoder" / "modules.json").exists()
        j = pd.read_parquet(rd / "judgments.parquet")
        c = pd.read_parquet(rd / "candidates.parquet")
        # 40 docs: 13 held out for the guard (a third at most), 27 trained on, 3 candidates each
        assert len(c) == 27 * 3 and c["doc_id"].nunique() == 27
        # judged pairs: this round's candidates joined to the earlier rounds' (union)
        assert set(zip(c["doc_id"], c["label_id"])) <= set(zip(j["doc_id"], j["label_id"]))
        assert len(j) >= 81 and set(j.columns) >= {"doc_id", "label_id", "p_yes", "similarity", "yes", "fused"}
        assert not j["simulated"].any()
        m = json.loads((rd / "metrics.json").read_text())
        for k in ("P@1", "P@3", "P@5", "R@1", "R@10", "nDCG@1", "nDCG@5", "pseudo_positive_precision"):
            assert 0.0 <= m[k] <= 1.0, k
        assert m["guard"]["docs"] == 13 and isinstance(m["promoted"], bool)
        assert set(m["views"]["teacher"]) >= {"r_teacher", "r_student", "w_teacher", "w_student"}
        # memory: the peak (this process or a finished child) and the process's memory after each step
        mem = m["memory_gb_after_step"]
        assert {"retrieve", "teacher", "train", "guard", "evaluate"} <= set(mem) and m["peak_rss_gb"] > 0
        assert all(0 < v["rss"] <= v["hwm"] <= m["peak_rss_gb"] + 1e-3 for v in mem.values())
    man = json.loads((out / "manifest.json").read_text())
    assert sorted(man["rounds"]) == ["0", "1", "2"]
    assert f"best round: {man['best_round']} (P@1 " in r.output
    # same command again: nothing to do, every round reported as finished earlier
    r = runner.invoke(app, args)
    assert r.exit_code == 0 and r.output.count("(finished earlier)") == 3
    # a different config in the same folder is refused
    r = runner.invoke(app, args[:-1] + ["--lr", "0.1", "--no-progress"])
    assert r.exit_code == 2 and "different config" in r.output and "train.lr" in r.output


def _cfg(small_data, tiny_encoder, rounds, **train):
    return RunConfig(
        encoder=EncoderConfig(model=tiny_encoder),
        teacher=TeacherConfig(name="simulated:0.1"),
        train=TrainConfig(batch_size=8, **train),
        loop=LoopConfig(rounds=rounds, docs=small_data["docs"], labels=small_data["labels"]),
    )


class Dying(SimulatedTeacher):
    """Simulated teacher that dies after `budget` pairs (to interrupt a round)."""

    def __init__(self, gold, budget):
        super().__init__(gold, 0.1)
        self.budget, self.asked = budget, 0

    def score(self, pairs):
        if self.asked + len(pairs) > self.budget:
            raise KeyboardInterrupt
        self.asked += len(pairs)
        return super().score(pairs)


def test_resume_after_interrupted_round(tmp_path, small_data, tiny_encoder):
    from lmtx.store.data import gold_of, load_docs

    gold = gold_of(load_docs(small_data["docs"]))
    out = tmp_path / "run"
    cfg = _cfg(small_data, tiny_encoder, 2)
    cfg.index.candidates = 4
    rt = Runtime(progress=False, log=lambda s: None)
    done = []
    first = Dying(gold, 120)
    with pytest.raises(KeyboardInterrupt):
        for res in iterate(cfg, out, Runtime(progress=False, log=lambda s: None, teacher=first)):
            done.append(res.round)
    assert done == [0]  # round 1 died mid-teaching, after two chunks of answers
    assert not (out / "round-01" / "metrics.json").exists() and 0 < first.asked <= 120
    t = Dying(gold, 10**9)
    rt.teacher = t
    results = list(iterate(cfg, out, rt))
    assert [(r.round, r.resumed) for r in results] == [(0, True), (1, False), (2, False)]
    # the pairs answered before the interruption came from the cache: the two attempts together asked what one
    # uninterrupted run asks in round 1 (guard and teaching)
    ref = list(iterate(cfg, tmp_path / "ref", Runtime(progress=False, log=lambda s: None, teacher=Dying(gold, 10**9))))
    asked = lambda m: m["pairs_asked"] + m["guard_pairs_asked"]  # noqa: E731
    assert asked(results[1].metrics) + first.asked == asked(ref[1].metrics)
    assert ref[1].metrics["pairs_asked"] == 27 * 4 and results[1].metrics["pairs_asked"] < 27 * 4
    assert results[1].metrics["simulated"] is True

    # extending the run to 3 rounds resumes too (rounds may grow)
    cfg3 = _cfg(small_data, tiny_encoder, 3)
    cfg3.index.candidates = 4
    assert [r.round for r in iterate(cfg3, out, rt) if not r.resumed] == [3]


def test_mismatched_config_refused(tmp_path, small_data, tiny_encoder):
    out = tmp_path / "run"
    list(iterate(_cfg(small_data, tiny_encoder, 0), out, Runtime(progress=False, log=lambda s: None)))
    with pytest.raises(ConfigError, match="train.margin"):
        list(iterate(_cfg(small_data, tiny_encoder, 1, margin=0.5), out, Runtime(progress=False, log=lambda s: None)))


def test_dry_run(small_data):
    r = runner.invoke(
        app,
        [
            "iterate",
            "--docs",
            small_data["docs"],
            "--labels",
            small_data["labels"],
            "-j",
            "5",
            "--rounds",
            "3",
            "--dry-run",
        ],
    )
    assert r.exit_code == 0 and "27 documents x 5 candidates = 135 teacher calls" in r.output
    assert "13 held-out documents" in r.output


def test_cli_reports_bad_input(tmp_path, small_data):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "text": "x"}\n{"id": "1", "text": "y"}\n')
    r = runner.invoke(app, ["iterate", "--docs", str(bad), "--labels", small_data["labels"], "--dry-run"])
    assert r.exit_code == 2 and "bad.jsonl:2: field 'id': duplicate document id" in r.output


def test_config_roundtrip():
    c = RunConfig()
    assert RunConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError):
        TeacherConfig(decision="maybe")


def test_early_stop_ends_at_the_first_round_not_promoted(tmp_path, small_data, tiny_encoder, tiny_teacher, monkeypatch):
    """The guard is made to refuse round 2 (whatever the scores): the run stops there, hands out round 1, and a
    rerun stops at the same place; without --early-stop the same refusal lets the run go on to round 4."""
    import lmtx.loop.guard as L
    from lmtx.evaluation.evaluate import resolve_model
    from lmtx.store.rundir import RunDir

    monkeypatch.setattr(
        L,
        "decision",
        lambda score, best, diff, r, best_round, n, z=2.0: (
            r != 2,
            "refused by the test" if r == 2 else "promoted by the test",
        ),
    )
    out = tmp_path / "run"
    args = [
        "iterate",
        "--docs",
        small_data["docs"],
        "--labels",
        small_data["labels"],
        "--out",
        str(out),
        "--rounds",
        "4",
        "--teacher",
        f"hf:{tiny_teacher}",
        "--encoder",
        tiny_encoder,
        "-j",
        "3",
        "--batch-size",
        "8",
        "--lr",
        "0.01",
        "--early-stop",
        "--no-progress",
    ]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    man = RunDir(out).manifest()
    rounds = sorted(int(k) for k in man["rounds"] if k != "0")
    promoted = [json.loads((out / f"round-{k:02d}" / "metrics.json").read_text())["promoted"] for k in rounds]
    assert rounds == [1, 2] and promoted == [True, False]
    assert man["stopped_early"] == {"at_round": 2, "best_round": 1} and man["best_round"] == 1
    assert "early stop" in r.output and "refused by the test" in r.output
    assert resolve_model(str(out)) == str(out / "round-01" / "encoder")
    assert runner.invoke(app, args).exit_code == 0  # a rerun stops at the same place
    assert RunDir(out).manifest()["stopped_early"] == man["stopped_early"]
    assert not (out / "round-03").exists()
    out2 = tmp_path / "run2"
    a2 = [x if x != str(out) else str(out2) for x in args if x != "--early-stop"]
    assert runner.invoke(app, a2).exit_code == 0
    man2 = RunDir(out2).manifest()
    assert sorted(int(k) for k in man2["rounds"] if k != "0") == [1, 2, 3, 4] and "stopped_early" not in man2


@pytest.mark.parametrize("point", ["teach:committed:1", "write:encoder:1"])
def test_kill_9_mid_round_then_resume_loses_no_answer(tmp_path, small_data, tiny_encoder, point):
    """A real SIGKILL (lmtx/store/drill.py failpoint) mid-teaching or mid-encoder-write; the rerun finishes, asks none
    of the answers the cache had committed, and leaves no temporary file."""
    import subprocess
    import sys

    out, log = tmp_path / "run", tmp_path / "drill.log"
    cmd = [
        sys.executable,
        "-c",
        "from lmtx.cli import main; main()",
        "iterate",
        "--docs",
        small_data["docs"],
        "--labels",
        small_data["labels"],
        "--out",
        str(out),
        "--rounds",
        "1",
        "--teacher",
        "simulated:0.1",
        "-j",
        "3",
        "--encoder",
        tiny_encoder,
        "--batch-size",
        "8",
        "--no-progress",
    ]
    env = {**os.environ, "LMTX_DRILL_LOG": str(log)}
    first = subprocess.run(cmd, env={**env, "LMTX_DRILL_KILL": point}, capture_output=True, text=True)
    assert first.returncode == -9, first.stderr[-1000:]
    lines = log.read_text().splitlines()
    committed = {tuple(x.split("\t")[1:]) for x in lines if x.startswith("committed")}
    assert committed
    second = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-1000:]
    asked_again = {
        tuple(x.split("\t")[1:]) for x in log.read_text().splitlines()[len(lines) :] if x.startswith("asked")
    }
    assert not committed & asked_again
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert json.loads((out / "manifest.json").read_text())["rounds"]["1"]


def test_report_shows_each_rounds_metrics_guard_and_plots(tmp_path, small_data, tiny_encoder):
    """`lmtx report RUN`: report.md carries every finished round's P@1 as metrics.json has it, the guard's
    decision per round and the best round, and writes its two plots."""
    out = tmp_path / "run"
    r = runner.invoke(
        app,
        [
            "iterate",
            "--docs",
            small_data["docs"],
            "--labels",
            small_data["labels"],
            "--eval-docs",
            small_data["eval"],
            "--out",
            str(out),
            "--rounds",
            "2",
            "--teacher",
            "simulated:0.1",
            "-j",
            "3",
            "--encoder",
            tiny_encoder,
            "--batch-size",
            "8",
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["report", str(out)])
    assert r.exit_code == 0, r.output
    rep = (out / "report.md").read_text()
    man = json.loads((out / "manifest.json").read_text())
    assert f"use): {man['best_round']}" in rep
    for k in (0, 1, 2):
        m = json.loads((out / f"round-{k:02d}" / "metrics.json").read_text())
        assert f"| {k} | {m['P@1']:.4f} |" in rep
        if k:
            assert f"| {k} | {m['promoted']} | {m['best_round']} | {m['guard']['reason']} |" in rep
    assert "SIMULATED" in rep
    assert (out / "report_metrics.png").stat().st_size > 1000 and (out / "report_p_yes.png").stat().st_size > 1000
    r = runner.invoke(app, ["report", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "no finished round" in r.output


def test_eval_sample_and_round_label_embeddings_cached(tmp_path, small_data, tiny_encoder, monkeypatch):
    """Per-round evaluation on a fixed sample of eval docs (said in metrics.json); each round's label matrix is
    cached by its encoder folder, so `evaluate --model RUN` does not encode the labels again."""
    import numpy as np

    import lmtx.search.fast_encode as fe

    monkeypatch.setenv("LMTX_HOME", str(tmp_path / "home"))
    cfg = _cfg(small_data, tiny_encoder, 1)
    cfg.loop.eval_docs, cfg.loop.eval_sample = small_data["eval"], 5
    res = list(iterate(cfg, tmp_path / "run", Runtime(progress=False, log=lambda s: None)))
    for r in res:
        assert r.metrics["eval_docs"] == 5 and r.metrics["eval_sampled"] is True
    cached = list((tmp_path / "home" / "label-emb").glob("*.npy"))
    assert len(cached) == 2  # the initial encoder's and round 1's
    calls, real = [], fe.encode_labels
    monkeypatch.setattr(fe, "encode_labels", lambda *a, **k: calls.append(1) or (np.zeros((0, 32)), "torch"))
    from lmtx.evaluation.evaluate import evaluate
    from lmtx.store.data import load_docs, load_labels

    labels = load_labels(small_data["labels"])
    m = evaluate(str(tmp_path / "run"), load_docs(small_data["eval"], labels), labels)
    assert 0 <= m["P@1"] <= 1 and calls == []
    # resuming loads the best round's label matrix from the cache too
    cfg.loop.eval_sample = 0
    assert [r.resumed for r in iterate(cfg, tmp_path / "run", Runtime(progress=False, log=lambda s: None))] == [
        True
    ] * 2
    assert calls == []
    monkeypatch.setattr(fe, "encode_labels", real)
    # the full eval set when the sample is turned off (resuming with another eval_sample is allowed)
    cfg.loop.eval_sample, cfg.loop.rounds = 0, 2
    last = list(iterate(cfg, tmp_path / "run", Runtime(progress=False, log=lambda s: None)))[-1]
    assert last.metrics["eval_sampled"] is False and last.metrics["eval_docs"] > 5
