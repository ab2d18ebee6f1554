"""The Python API (lmtx.api, exported from lmtx): what the CLI does, from Python objects."""

import json
from pathlib import Path

import pandas as pd
import pytest

import lmtx
from lmtx.store.data import DataError


def test_import_lmtx_is_light_and_exports_the_api():
    import subprocess
    import sys

    code = "import lmtx, sys; print('torch' in sys.modules, 'pandas' in sys.modules, callable(lmtx.iterate))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.split() == [
        "False",
        "False",
        "True",
    ]
    assert {"Tagger", "iterate", "evaluate", "teacher", "RunConfig"} <= set(lmtx.__all__)
    with pytest.raises(AttributeError):
        lmtx.no_such_thing  # noqa: B018


SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"


def test_tagger_on_texts_dataframes_and_files_matches_lmtx_tag(tmp_path, tiny_encoder):
    """The API and the CLI give identical outputs on the bundled sample (600 documents, 411 labels)."""
    small_data = {"labels": str(SAMPLE / "labels.jsonl"), "eval": str(SAMPLE / "eval.jsonl")}
    t = lmtx.Tagger.load(tiny_encoder, labels=small_data["labels"])
    docs = [json.loads(x) for x in open(small_data["eval"])]
    by_texts = t.tag([d["text"] for d in docs], k=3)
    assert list(by_texts.columns) == ["id", "rank", "label", "label_name", "score"] and len(by_texts) == 3 * len(docs)
    frame = pd.DataFrame({"doc": [d["id"] for d in docs], "body": [d["text"] for d in docs]})
    by_frame = t.tag(frame, k=3, columns={"id": "doc", "text": "body"})
    assert (by_frame["label"].to_numpy() == by_texts["label"].to_numpy()).all()
    from typer.testing import CliRunner

    from lmtx.cli import app

    args = ["tag", "--model", tiny_encoder, "--labels", small_data["labels"], "--docs", small_data["eval"]]
    r = CliRunner().invoke(app, args + ["--top-k", "3", "--out", str(tmp_path / "cli.parquet"), "--no-progress"])
    assert r.exit_code == 0, r.output
    cli = pd.read_parquet(tmp_path / "cli.parquet")
    assert (cli["label_id"].to_numpy() == by_frame["label"].to_numpy()).all()
    assert abs(cli["score"].to_numpy() - by_frame["score"].to_numpy()).max() < 1e-6
    assert (cli["doc_id"].to_numpy() == by_frame["id"].to_numpy()).all()
    s = t.tag_file(small_data["eval"], tmp_path / "api.parquet", k=3)
    assert s["docs"] == len(docs)
    assert pd.read_parquet(tmp_path / "api.parquet").equals(cli)  # the API's file and the CLI's, byte for byte


def test_in_memory_rows_are_checked_like_file_lines(small_data, tiny_encoder):
    t = lmtx.Tagger.load(tiny_encoder, labels=[{"id": "a", "name": "audio"}, {"id": "g", "name": "games"}])
    with pytest.raises(DataError, match=r"<docs DataFrame>:row 2: .*text"):
        t.tag(pd.DataFrame({"id": ["1", "2"], "text": ["music player", None]}))
    with pytest.raises(DataError, match=r"<docs>:row 2: field 'id': duplicate document id '1'"):
        t.tag([{"id": "1", "text": "x"}, {"id": "1", "text": "y"}])
    with pytest.raises(DataError, match=r"<labels>:row 1: missing field\(s\) \['name'\]"):
        lmtx.Tagger.load(tiny_encoder, labels=[{"id": "a"}])


def test_iterate_then_tagger_from_the_run_folder(tmp_path, small_data, tiny_encoder):
    out = tmp_path / "run"
    rounds = list(
        lmtx.iterate(
            out=out,
            docs=small_data["docs"],
            labels=small_data["labels"],
            eval_docs=small_data["eval"],
            rounds=1,
            teacher="simulated:0",
            encoder=tiny_encoder,
            candidates=3,
            overrides={"train.batch_size": 8},
        )
    )
    assert [r.round for r in rounds] == [0, 1] and "P@1" in rounds[-1].metrics
    with pytest.raises(Exception, match="unknown option 'candidate'.*did you mean candidates"):
        lmtx.iterate(out=out, candidate=3)
    t = lmtx.Tagger.load(out)  # the run's label file and retrieval settings
    df = t.tag(["a music player with plugins"], k=2)
    assert len(df) == 2 and set(df["label"]) <= set(t.labels.ids)
    m = lmtx.evaluate(out, small_data["eval"], small_data["labels"])
    assert abs(m["P@1"] - rounds[-1].metrics["retrieval"]["final"]["P@1"]) < 1e-9


def test_teacher_by_name_gives_p_yes(tiny_teacher):
    t = lmtx.teacher(f"hf:{tiny_teacher}", prompt="paper")
    p = t.p_yes([("an audio player", "Audio", "sound"), {"doc": "a game", "label": "Games"}])
    assert len(p) == 2 and all(0.0 <= x <= 1.0 for x in p)


def test_evaluate_from_python_equals_lmtx_evaluate(tmp_path, tiny_encoder):
    from typer.testing import CliRunner

    from lmtx.cli import app

    docs, labels = str(SAMPLE / "eval.jsonl"), str(SAMPLE / "labels.jsonl")
    r = CliRunner().invoke(
        app,
        ["evaluate", "--model", tiny_encoder, "--docs", docs, "--labels", labels, "--out", str(tmp_path / "m.json")],
    )
    assert r.exit_code == 0, r.output
    cli = json.loads((tmp_path / "m.json").read_text())
    api = lmtx.evaluate(tiny_encoder, docs, labels)
    assert {k: api[k] for k in ("P@1", "P@5", "R@10", "nDCG@5")} == {
        k: cli[k] for k in ("P@1", "P@5", "R@10", "nDCG@5")
    }
