"""A run folder written by an earlier lmtx resumes under this code with zero teacher calls and the same results.

tests/data/resume-fixture/ (made by tests/data/make_resume_fixture.py, see its WRITTEN_BY) is a 2-round run stopped
after round 1, with every answer round 2 needs already in its teacher cache. Resuming must read the folder as it is
(config, manifest, encoders, optimizer state, judgments, guard rows), ask the teacher nothing, and compute round 2's
metrics as the code that wrote the fixture did.
"""

import json
import math
import shutil
from pathlib import Path

import pytest

from lmtx.config import RunConfig
from lmtx.loop.run import Runtime, iterate
from lmtx.teacher.base import TeacherError

FIXTURE = Path(__file__).parent / "data" / "resume-fixture"
# figures of wall time, of this process, or of what the teacher was asked (zero now, by design): not results
VOLATILE = {
    "seconds",
    "peak_rss_gb",
    "memory_gb_after_step",
    "teacher_pairs_per_s",
    "teacher_prompts_per_s",
    "pairs_asked",
    "prompts_asked",
    "guard_pairs_asked",
    "guard_prompts_asked",
    "teacher_stats",
}
# figures the code reports since the fixture was written (the fixture's expected metrics lack them; nothing else may
# be missing or new)
ADDED_SINCE = {"R@10_by_weight"}


class NoCalls:
    """Stands where the fixture's SIMULATED teacher stood (same model id); any call fails the test."""

    simulated = True
    model_id = "SIMULATED(error=0.2,seed=0)"
    calls = 0

    def describe(self):
        return "a teacher that must not be asked"

    def score(self, pairs):
        NoCalls.calls += 1
        raise TeacherError(f"the resumed run asked the teacher about {len(pairs)} pairs")


def _close(a, b, path="metrics"):
    if isinstance(a, dict):
        assert set(a) == set(b) - ADDED_SINCE, f"{path}: keys {sorted(set(a) ^ (set(b) - ADDED_SINCE))}"
        for k in a:
            if k not in VOLATILE:
                _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, float) and isinstance(b, (int, float)):
        assert math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6), f"{path}: {a} vs {b}"
    else:
        assert a == b, f"{path}: {a!r} vs {b!r}"


def _older_sentence_transformers() -> bool:
    """sentence-transformers reads the encoder folders of its own and older versions, not newer ones (6.x writes
    module paths 5.x does not have): the fixture is checked where the installed version is at least the writer's."""
    import sentence_transformers

    wrote = json.loads((FIXTURE / "WRITTEN_BY").read_text()).get("sentence_transformers", "0")
    major = lambda v: int(v.split(".")[0])  # noqa: E731
    return major(sentence_transformers.__version__) < major(wrote)


@pytest.mark.skipif(_older_sentence_transformers(), reason="fixture written by a newer sentence-transformers")
def test_fixture_run_resumes_with_zero_teacher_calls(tmp_path, monkeypatch):
    work = tmp_path / "fixture"
    shutil.copytree(FIXTURE, work)
    conf = work / "run" / "config.json"
    conf.write_text(conf.read_text().replace("{FIXTURE}", str(work)))
    monkeypatch.chdir(work)
    cfg = RunConfig.from_dict(json.loads(conf.read_text()))
    rounds = list(iterate(cfg, "run", Runtime(progress=False, teacher=NoCalls(), log=lambda s: None)))
    assert [(r.round, r.resumed) for r in rounds] == [(0, True), (1, True), (2, False)]
    assert NoCalls.calls == 0
    m = rounds[-1].metrics
    assert m["pairs_asked"] == m["prompts_asked"] == 0 and m["guard_pairs_asked"] == m["guard_prompts_asked"] == 0
    _close(json.loads((work / "expected-round-02.json").read_text()), m)
