"""--engine ray on a local Ray cluster (marker ray; .ci/run runs it): the same results as the local engine."""

import json
import os
import signal
import threading
import time

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from lmtx.cli import app

runner = CliRunner()
ray = pytest.importorskip("ray", reason="pip install 'lmtx[ray]'") if os.environ.get("LMTX_NEED_RAY") != "1" else None
pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def engine():
    from lmtx.search.ray_engine import RayEngine

    with RayEngine(actors=1, log=lambda s: None) as eng:  # one CPU per actor, one left for reads and writes
        yield eng
    import ray as r

    assert not r.is_initialized()


def _sorted(df):
    return df.sort_values(["doc_id", "rank"]).reset_index(drop=True)


def test_label_encoding_on_ray_equals_local(engine, tiny_encoder):
    from lmtx.search.encoder import load_encoder
    from lmtx.search.fast_encode import embed

    texts = [f"label {i} audio game text {i % 7}" for i in range(300)]
    local = embed(load_encoder(tiny_encoder), texts, 16)
    on_ray = engine.encode_labels(tiny_encoder, texts, "torch", 16, chunk=64)
    assert on_ray.shape == local.shape and np.abs(on_ray - local).max() < 1e-5


def test_int8_label_encoding_on_ray_equals_local(engine, tiny_encoder, monkeypatch):
    """onnx-int8 scales activations per batch: Ray must encode the local engine's chunks, not chunks of its own."""
    from lmtx.search import fast_encode
    from lmtx.search.encoder import load_encoder

    monkeypatch.setattr(fast_encode, "CHUNK", 64)  # several chunks; both engines cut them in this process
    texts = [f"label {i} audio game text {i % 7} " + "word " * (i % 11) for i in range(300)]
    local = fast_encode.encode_int8(load_encoder(tiny_encoder), texts, workers=2)
    on_ray = engine.encode_labels(tiny_encoder, texts, "onnx-int8", 16)
    assert on_ray.shape == local.shape and np.abs(on_ray - local).max() < 1e-6


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
@pytest.mark.parametrize("retrieval", ["dense", "hybrid"])
def test_tag_on_ray_equals_local_row_by_row(engine, tmp_path, small_data, tiny_encoder, suffix, retrieval):
    from lmtx.store.data import load_labels
    from lmtx.tag import TagOptions, tag

    labels = load_labels(small_data["labels"])
    opts = TagOptions(top_k=3, chunk_docs=7, retrieval=retrieval)
    a = tag(
        tiny_encoder, labels, small_data["eval"], tmp_path / f"local{suffix}", opts, progress=False, log=lambda s: None
    )
    b = tag(
        tiny_encoder,
        labels,
        small_data["eval"],
        tmp_path / f"ray{suffix}",
        opts,
        progress=False,
        log=lambda s: None,
        engine=engine,
    )
    assert a["docs"] == b["docs"] == 40 and b["engine"] == "ray"
    read = pd.read_parquet if suffix == ".parquet" else (lambda p: pd.read_json(p, lines=True, dtype={"doc_id": str}))
    la, lb = _sorted(read(tmp_path / f"local{suffix}")), _sorted(read(tmp_path / f"ray{suffix}"))
    assert list(la.columns) == list(lb.columns) and len(la) == len(lb) == 120
    assert (
        (la[["doc_id", "rank", "label_id", "label_name"]] == lb[["doc_id", "rank", "label_id", "label_name"]])
        .all()
        .all()
    )
    assert np.abs(la["score"].to_numpy() - lb["score"].to_numpy()).max() < 1e-5
    assert not list(tmp_path.glob("*.ray-parts"))


def test_tag_on_ray_with_a_killed_actor_gives_every_row_once(engine, tmp_path, small_data, tiny_encoder):
    """SIGKILL the ranking actor mid-job: Ray replaces it and retries its batch; every document comes back once,
    with the rows of an uninterrupted local run."""

    from lmtx.store.data import load_labels
    from lmtx.tag import TagOptions, tag

    docs = tmp_path / "docs.jsonl"
    rows = [json.loads(x) for x in open(small_data["eval"])]
    n = 40  # 1,600 documents, 80 batches: the job outlasts the kill on a fast machine
    docs.write_text(
        "".join(json.dumps({"id": f"{d['id']}-{i}", "text": d["text"]}) + "\n" for i in range(n) for d in rows)
    )
    labels = load_labels(small_data["labels"])
    opts = TagOptions(top_k=2, chunk_docs=20)
    ref = tag(tiny_encoder, labels, docs, tmp_path / "local.parquet", opts, progress=False, log=lambda s: None)
    killed = []

    def actor_pids() -> list[int]:
        """Ray names its worker processes after the actor they hold (ray::MapWorker(MapBatches(_RankActor)))."""
        out = []
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    cmd = open(f"/proc/{d}/cmdline", "rb").read().decode(errors="replace")
                except OSError:
                    continue
                if "_RankActor" in cmd and "ray::" in cmd:
                    out.append(int(d))
        return out

    def kill_one():
        for _ in range(1200):
            pids = actor_pids()
            if pids:
                time.sleep(0.5)  # mid-job: the actor has its first batches
                try:
                    os.kill(pids[0], signal.SIGKILL)
                except ProcessLookupError:
                    continue  # gone before the kill: look again
                killed.append(pids[0])
                return
            time.sleep(0.1)

    th = threading.Thread(target=kill_one, daemon=True)
    th.start()
    got = tag(
        tiny_encoder, labels, docs, tmp_path / "ray.parquet", opts, progress=False, log=lambda s: None, engine=engine
    )
    th.join(timeout=5)
    assert killed, "no actor was killed"
    assert got["docs"] == ref["docs"] == 40 * n
    la, lb = _sorted(pd.read_parquet(tmp_path / "local.parquet")), _sorted(pd.read_parquet(tmp_path / "ray.parquet"))
    assert len(lb) == 80 * n and lb.duplicated(["doc_id", "rank"]).sum() == 0
    assert (la[["doc_id", "rank", "label_id"]] == lb[["doc_id", "rank", "label_id"]]).all().all()


def test_tag_cli_engine_ray_and_iterate_engine_ray(tmp_path, small_data, tiny_encoder):
    out = tmp_path / "t.csv"
    r = runner.invoke(
        app,
        [
            "tag",
            "--model",
            tiny_encoder,
            "--labels",
            small_data["labels"],
            "--docs",
            small_data["eval"],
            "--out",
            str(out),
            "--engine",
            "ray",
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "by dense" in r.output and len(pd.read_csv(out)) == 40 * 5
    run = tmp_path / "run"
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
            str(run),
            "--rounds",
            "1",
            "--teacher",
            "simulated:0",
            "--encoder",
            tiny_encoder,
            "-j",
            "3",
            "--batch-size",
            "8",
            "--engine",
            "ray",
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "on Ray" in r.output and (run / "round-01" / "metrics.json").exists()


# -- teacher scoring on Ray -------------------------------------------------------------------------------------
def _pairs():
    from lmtx.teacher.base import Pair

    labels = [("audio", "Sound", "audio and music"), ("game", "Games", "games and play"), ("web", "Web", "web server")]
    return [
        Pair(f"d{i}", f"document {i}: a program for {topic}", lid, name, desc)
        for i, topic in enumerate(["music", "chess", "http", "sound", "puzzles", "browsing"])
        for lid, name, desc in labels
    ]


def _served(url, logs=None, **kw):
    from lmtx.teacher.openai import ServedTeacher
    from lmtx.teacher.prompts import load_template

    return ServedTeacher(
        [url],
        load_template("paper"),
        model_id="fake",
        chat_format="USER: {msg} ASSISTANT:",
        log=(logs.append if logs is not None else (lambda m: None)),
        **kw,
    )


# faults count completions requests; the first document's two (its first prompt, then the rest) go through lmtx's
# own client before Ray starts, so the faults after them fall on Ray's requests
@pytest.mark.parametrize("kind,faults", [("vllm", []), ("vllm-old", []), ("vllm", [None, None, 503, 500, "short"])])
def test_served_teacher_on_ray_gives_the_local_clients_answers(engine, kind, faults):
    """Ray Data's HTTP processor sends lmtx's request body and reads with lmtx's reader: the same P(yes) as lmtx's
    own client; an answer Ray cannot use (ids ignored, a 500, a choice missing) is asked again by lmtx's client."""
    from fake_openai import FakeServer, serve_http

    pairs = _pairs()
    url, stop = serve_http(FakeServer(kind))
    try:
        want = _served(url).score(pairs)
    finally:
        stop()
    srv = FakeServer(kind, faults=list(faults))
    url, stop = serve_http(srv)
    logs = []
    try:
        t = _served(url, logs, engine=engine)
        got = t.score(pairs)
    finally:
        stop()
    assert [a.p_yes for a in got] == pytest.approx([a.p_yes for a in want], abs=1e-9)
    assert {a.p_yes for a in got} != {got[0].p_yes}  # the answers differ by prompt ("Games" swaps yes and no)
    sent = [b["prompt"] for b in srv.requests]
    assert sum(len(p) for p in sent) >= len(pairs)  # every prompt went out, a document's together
    if kind == "vllm-old":  # the first document settles top-K reading before Ray's requests go out
        assert any("reading the top-20" in m for m in logs) and not any("could not score" in m for m in logs)
    if faults:  # the 500 and the short answer come back as rows Ray could not use; lmtx's client asks them again
        assert any("Ray could not score" in m for m in logs)


def test_served_teacher_on_ray_commits_answers_to_the_cache(engine, tmp_path):
    """Only uncached pairs go to Ray; a rerun over the same pairs sends nothing."""
    from fake_openai import FakeServer, serve_http

    from lmtx.teacher.cache import AnswerCache, score_cached
    from lmtx.teacher.openai import RAY_CHUNK_PAIRS

    srv = FakeServer("vllm")
    url, stop = serve_http(srv)
    try:
        t = _served(url, engine=engine)
        assert t.chunk_pairs == RAY_CHUNK_PAIRS
        cache = AnswerCache(tmp_path / "cache.sqlite")
        pairs = _pairs()
        a, asked = score_cached(t, "h", pairs[:9], cache)
        assert asked == 9
        n = len(srv.requests)
        b, asked = score_cached(t, "h", pairs, cache)
        assert asked == 9 and [x.p_yes for x in b[:9]] == [x.p_yes for x in a]
        c, asked = score_cached(t, "h", pairs, cache)
        assert asked == 0 and len(srv.requests) > n
    finally:
        stop()
