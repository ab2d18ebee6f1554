import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from lmtx.cli import app
from lmtx.store.data import load_labels
from lmtx.tag import TagOptions, tag

runner = CliRunner()


def _corpus(path, n):
    words = ["audio player", "strategy game", "mail client", "web server", "python library", "font"]
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"doc{i}", "text": f"a {words[i % len(words)]} number {i}"}) + "\n")
    return path


@pytest.mark.parametrize("ext", [".parquet", ".jsonl", ".csv"])
def test_tag_streams_chunks_and_writes_every_format(tmp_path, small_data, tiny_encoder, ext):
    docs = _corpus(tmp_path / "new.jsonl", 250)
    out = tmp_path / f"tags{ext}"
    r = runner.invoke(
        app,
        [
            "tag",
            "--model",
            tiny_encoder,
            "--labels",
            small_data["labels"],
            "--docs",
            str(docs),
            "--out",
            str(out),
            "--top-k",
            "3",
            "--chunk-docs",
            "64",
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    df = (
        pd.read_parquet(out)
        if ext == ".parquet"
        else pd.read_json(out, lines=True)
        if ext == ".jsonl"
        else pd.read_csv(out)
    )
    assert len(df) == 250 * 3 and list(df.columns) == ["doc_id", "rank", "label_id", "label_name", "score"]
    assert df["doc_id"].nunique() == 250 and set(df["rank"]) == {1, 2, 3}
    assert not (tmp_path / f"tags{ext}.parts").exists()


def test_tag_resumes_after_interruption(tmp_path, small_data, tiny_encoder, monkeypatch):
    import lmtx.tag as T

    docs = _corpus(tmp_path / "new.jsonl", 300)
    out = tmp_path / "tags.parquet"
    labels = load_labels(small_data["labels"])
    opts = TagOptions(top_k=2, chunk_docs=50)
    real = T._write_part
    calls = {"n": 0}

    def dying(df, path, fmt):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        real(df, path, fmt)

    monkeypatch.setattr(T, "_write_part", dying)
    with pytest.raises(KeyboardInterrupt):
        tag(tiny_encoder, labels, docs, out, opts, progress=False, log=lambda s: None)
    assert len(list((tmp_path / "tags.parquet.parts").glob("part-*.parquet"))) == 3 and not out.exists()
    monkeypatch.setattr(T, "_write_part", real)
    # resumed with the same encoder named otherwise (as an asset name is): the folder is what counts
    import lmtx.store.assets as A

    real_resolve = A.resolve_encoder
    monkeypatch.setattr(
        A,
        "resolve_encoder",
        lambda spec, progress=print: real_resolve(tiny_encoder if spec == "tiny-by-name" else spec, progress),
    )
    s = tag("tiny-by-name", labels, docs, out, opts, progress=False, log=lambda s: None)
    assert s["resumed_chunks"] == 3 and s["chunks"] == 6
    df = pd.read_parquet(out)
    assert len(df) == 600 and df["doc_id"].nunique() == 300
    # the same result as an uninterrupted run
    full = tag(tiny_encoder, labels, docs, tmp_path / "full.parquet", opts, progress=False, log=lambda s: None)
    assert full["resumed_chunks"] == 0
    pd.testing.assert_frame_equal(df, pd.read_parquet(tmp_path / "full.parquet"))


def test_unseen_labels_and_min_score(tmp_path, tiny_encoder):
    labels = tmp_path / "new_labels.jsonl"
    labels.write_text(
        "".join(
            json.dumps({"id": f"n{i}", "name": n, "description": f"about {n}"}) + "\n"
            for i, n in enumerate(["audio", "games", "mail", "fonts"])
        )
    )
    docs = _corpus(tmp_path / "d.jsonl", 20)
    out = tmp_path / "t.jsonl"
    r = runner.invoke(
        app,
        [
            "tag",
            "--model",
            tiny_encoder,
            "--labels",
            str(labels),
            "--docs",
            str(docs),
            "--out",
            str(out),
            "--top-k",
            "4",
            "--min-score",
            "0.0",
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    df = pd.read_json(out, lines=True)
    # exactly what the encoder says about labels it never saw: the cosine ranking of the new file, recomputed here
    from lmtx.search.encoder import embed, load_encoder
    from lmtx.search.index import exact_topk

    model = load_encoder(tiny_encoder)
    texts = [f"about {n}" for n in ["audio", "games", "mail", "fonts"]]
    dtexts = [json.loads(l)["text"] for l in open(docs)]
    idx, sim = exact_topk(embed(model, dtexts), embed(model, texts), 4)
    keep = sim >= 0.0
    want = [(f"doc{i}", f"n{j}") for i in range(len(dtexts)) for j, k in zip(idx[i], keep[i]) if k]
    assert list(zip(df["doc_id"], df["label_id"])) == want
    assert np.allclose(df["score"], sim[keep], atol=1e-5)


def test_calibrate_on_a_labelled_sample(tmp_path, small_data, tiny_encoder):
    docs = _corpus(tmp_path / "d.jsonl", 30)
    r = runner.invoke(
        app,
        [
            "tag",
            "--model",
            tiny_encoder,
            "--labels",
            small_data["labels"],
            "--docs",
            str(docs),
            "--out",
            str(tmp_path / "t.csv"),
            "--calibrate-on",
            small_data["eval"],
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "calibrated --min-score" in r.output and "precision" in r.output


def test_bad_output_suffix(tmp_path, small_data, tiny_encoder):
    r = runner.invoke(
        app,
        [
            "tag",
            "--model",
            tiny_encoder,
            "--labels",
            small_data["labels"],
            "--docs",
            small_data["docs"],
            "--out",
            str(tmp_path / "t.txt"),
        ],
    )
    assert r.exit_code == 2 and "must end in .parquet" in r.output


def test_verify_adds_teacher_p_yes_through_the_cache(tmp_path, small_data, tiny_encoder, tiny_teacher):
    import sqlite3

    docs = _corpus(tmp_path / "d.jsonl", 12)
    cache = tmp_path / "answers.sqlite"
    args = [
        "tag",
        "--model",
        tiny_encoder,
        "--labels",
        small_data["labels"],
        "--docs",
        str(docs),
        "--top-k",
        "2",
        "--verify",
        "--teacher",
        f"hf:{tiny_teacher}",
        "--cache",
        str(cache),
        "--no-progress",
    ]
    r = runner.invoke(app, args + ["--out", str(tmp_path / "v.parquet")])
    assert r.exit_code == 0, r.output
    df = pd.read_parquet(tmp_path / "v.parquet")
    assert len(df) == 24 and df["p_yes"].between(0, 1).all()
    # a model that is not a run: the default teacher.describe (both), each row asked with its description and without
    assert sqlite3.connect(cache).execute("SELECT COUNT(*) FROM answers").fetchone()[0] == 2 * 24


def test_shards_tag_every_document_exactly_once(tmp_path, small_data, tiny_encoder):
    """--shard I/N: N runs over one corpus, each writing its own output; together they hold exactly the rows of
    one unsharded run. A bad spec is a one-line error."""
    docs = _corpus(tmp_path / "new.jsonl", 120)
    base = [
        "tag",
        "--model",
        tiny_encoder,
        "--labels",
        small_data["labels"],
        "--docs",
        str(docs),
        "--top-k",
        "2",
        "--chunk-docs",
        "16",
        "--no-progress",
    ]
    assert runner.invoke(app, base + ["--out", str(tmp_path / "all.jsonl")]).exit_code == 0
    full = pd.read_json(tmp_path / "all.jsonl", lines=True)
    parts = []
    for i in range(3):
        r = runner.invoke(app, base + ["--out", str(tmp_path / f"s{i}.jsonl"), "--shard", f"{i}/3"])
        assert r.exit_code == 0, r.output
        parts.append(pd.read_json(tmp_path / f"s{i}.jsonl", lines=True))
    ids = [set(p["doc_id"]) for p in parts]
    assert all(ids) and not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    joined = pd.concat(parts).sort_values(["doc_id", "rank"]).reset_index(drop=True)
    ref = full.sort_values(["doc_id", "rank"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(joined[["doc_id", "rank", "label_id"]], ref[["doc_id", "rank", "label_id"]])
    for bad in ("3/3", "1-3", "x/2"):
        r = runner.invoke(app, base + ["--out", str(tmp_path / "bad.jsonl"), "--shard", bad])
        assert r.exit_code == 2 and "--shard" in r.output and not (tmp_path / "bad.jsonl").exists()
