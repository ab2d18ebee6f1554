"""Writes tests/data/resume-fixture/: a run folder as lmtx writes it, for the test that newer code resumes it.

    python tests/data/make_resume_fixture.py      # from the repository root; rewrites the folder

The fixture is the run folder of a 2-round run (tiny random encoder, SIMULATED teacher, 40 sample documents) as it
stood after round 1, plus the teacher cache as it stood after round 2, plus round 2's metrics as that code computed
them. A resumed run must redo round 2 from the folder with zero teacher calls and the same metrics
(tests/test_resume_fixture.py). Regenerate it only when the run-folder format changes on purpose.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
OUT = ROOT / "tests" / "data" / "resume-fixture"


def config():
    from lmtx.config import EncoderConfig, IndexConfig, LoopConfig, RunConfig, TeacherConfig, TrainConfig

    return RunConfig(
        loop=LoopConfig(docs="data/docs.jsonl", labels="data/labels.jsonl", eval_docs="data/eval.jsonl", rounds=2),
        encoder=EncoderConfig(model="encoder", batch_size=8),
        index=IndexConfig(candidates=3),
        teacher=TeacherConfig(name="simulated:0.2", decision="rel:0.05"),
        train=TrainConfig(batch_size=8),
    )


def main():
    from conftest import build_tiny_encoder, write_small_data

    from lmtx.loop.run import Runtime, iterate
    from lmtx.store.data import gold_of, load_docs, load_labels
    from lmtx.teacher.simulated import SimulatedTeacher

    if OUT.exists():
        shutil.rmtree(OUT)
    (OUT / "data").mkdir(parents=True)
    write_small_data(OUT / "data")
    build_tiny_encoder(OUT / "enc-build")
    shutil.move(str(OUT / "enc-build" / "st"), str(OUT / "encoder"))
    shutil.rmtree(OUT / "enc-build")
    os.chdir(OUT)
    cfg = config()
    labels = load_labels(cfg.loop.labels)
    gold = gold_of(load_docs(cfg.loop.docs, labels))
    rt = Runtime(progress=False, teacher=SimulatedTeacher(gold, 0.2, seed=0), log=lambda s: None)
    for res in iterate(cfg, "run", rt):
        if res.round == 1:
            shutil.copytree("run", "after-round-1", ignore=shutil.ignore_patterns("teacher-cache.sqlite*"))
    shutil.copy("run/teacher-cache.sqlite", "after-round-1/teacher-cache.sqlite")
    shutil.copy("run/round-02/metrics.json", "expected-round-02.json")
    shutil.rmtree("run")
    os.rename("after-round-1", "run")
    # config.json holds the data files' absolute paths; the test puts its own copy's folder in their place
    conf = OUT / "run" / "config.json"
    conf.write_text(conf.read_text().replace(str(OUT), "{FIXTURE}"))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    import sentence_transformers
    import torch
    import transformers

    versions = {"sentence_transformers": sentence_transformers.__version__, "transformers": transformers.__version__,
                "torch": torch.__version__}
    (OUT / "WRITTEN_BY").write_text(json.dumps({"lmtx_commit": commit.strip(), **versions}) + "\n")


if __name__ == "__main__":
    main()
