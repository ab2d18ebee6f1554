"""User errors: one line naming the file (line, field) or the option, exit code 2, no traceback, and nothing
written -- so the corrected command runs."""

import json
import os

import pytest
from typer.testing import CliRunner

from lmtx.cli import app

runner = CliRunner()


def base(small_data, out, tiny_encoder, *extra):
    return [
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
        "--encoder",
        tiny_encoder,
        "-j",
        "3",
        "--no-progress",
        *extra,
    ]


def user_error(r, *needles):
    assert r.exit_code == 2, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    for n in needles:
        assert n in r.output, (n, r.output)


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--teacher", "qwen05b"], "did you mean 'qwen0.5b'"),
        (["--strong-teacher", "qwen15b", "--strong-budget", "5"], "unknown teacher 'qwen15b'"),
        (["--decision", "abs:5"], "teacher.decision 'abs:5'"),
        (["--decision", "abs:1.2.3"], "teacher.decision must look like"),
        (["--decision", "quantile:2"], "teacher.decision 'quantile:2'"),
        (["--max-docs", "0"], "loop.max_docs must be >= 1"),
        (["--max-docs", "-5"], "loop.max_docs must be >= 1"),
        (["--encoder", "no-such-encoder-xyz"], "could not load encoder 'no-such-encoder-xyz'"),
        (["--prompt", "no-such-prompt"], "no-such-prompt"),
        (["--teacher", "simulated:2"], "error rate must be in [0, 1]"),
        (["--margin", "-1"], "margin >= 0"),
        (["--hnsw-m", "0"], "M >= 2"),
        (["--teacher-dtype", "fp64"], "teacher.dtype must be one of"),
        (["--label-backend", "gpu"], "encoder.label_backend must be one of"),
        (["--eval-sample", "-2"], "loop.eval_sample must be -1"),
    ],
)
def test_bad_options_write_nothing_and_the_corrected_command_runs(tmp_path, small_data, tiny_encoder, extra, needle):
    out = tmp_path / "run"
    user_error(runner.invoke(app, base(small_data, out, tiny_encoder, *extra)), needle)
    assert not out.exists()


def test_bad_files_write_nothing(tmp_path, small_data, tiny_encoder):
    out = tmp_path / "run"
    bad = tmp_path / "bad.jsonl"
    lines = open(small_data["docs"]).read().splitlines()
    bad.write_text("\n".join(lines[:3] + ['{"id": "x", "text": '] + lines[3:]) + "\n")
    args = base(small_data, out, tiny_encoder)
    cases = {
        "bad JSON": (bad, f"{bad}:4: bad JSON"),
        "missing": (tmp_path / "missing.jsonl", "file not found"),
        "directory": (tmp_path, "not a file"),
    }
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(("\n".join(lines[:2]) + "\n").encode() + '{"id": "z", "text": "caf\xe9"}\n'.encode("latin-1"))
    cases["latin-1"] = (latin, f"{latin}:3: not UTF-8")
    boolean = tmp_path / "bool.jsonl"
    boolean.write_text(lines[0] + "\n" + json.dumps({"id": True, "text": "x"}) + "\n")
    cases["bool id"] = (boolean, f"{boolean}:2: field 'id' must be a string")
    numeric = tmp_path / "num.jsonl"
    numeric.write_text(json.dumps({"id": 7, "text": 12345}) + "\n")
    cases["int text"] = (numeric, f"{numeric}:1: field 'text' must be a string")
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 this is not parquet")
    cases["corrupt parquet"] = (corrupt, "not a readable Parquet file")
    for name, (path, needle) in cases.items():
        a = list(args)
        a[a.index("--docs") + 1] = str(path)
        user_error(runner.invoke(app, a), needle)
        assert not out.exists(), name
    # the corrected command runs
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output


def test_relative_and_absolute_paths_are_the_same_run(tmp_path, small_data, tiny_encoder, monkeypatch):
    out = tmp_path / "run"
    r = runner.invoke(app, base(small_data, out, tiny_encoder))
    assert r.exit_code == 0, r.output
    monkeypatch.chdir(os.path.dirname(small_data["docs"]))
    a = base(small_data, out, tiny_encoder, "--rounds", "1")
    a[a.index("--docs") + 1] = os.path.basename(small_data["docs"])
    a[a.index("--labels") + 1] = "./" + os.path.basename(small_data["labels"])
    r = runner.invoke(app, a)
    assert r.exit_code == 0 and "(finished earlier)" in r.output, r.output


def test_gzipped_jsonl_reads(tmp_path, small_data):
    import gzip

    from lmtx.store.data import load_labels

    p = tmp_path / "labels.jsonl.gz"
    with gzip.open(p, "wt", encoding="utf-8") as f:
        f.write(open(small_data["labels"]).read())
    assert len(load_labels(p)) == len(load_labels(small_data["labels"]))
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(p.read_bytes()[:200])
    from lmtx.store.data import DataError

    with pytest.raises(DataError, match="broken gzip"):
        load_labels(broken)


def test_tag_refuses_duplicates_top_k_0_and_a_changed_input(tmp_path, small_data, tiny_encoder):
    out = tmp_path / "tags.jsonl"
    docs = tmp_path / "docs.jsonl"
    lines = open(small_data["docs"]).read().splitlines()
    docs.write_text("\n".join(lines[:10] + [lines[2]]) + "\n")
    args = [
        "tag",
        "--model",
        tiny_encoder,
        "--labels",
        small_data["labels"],
        "--docs",
        str(docs),
        "--out",
        str(out),
        "--no-progress",
        "--chunk-docs",
        "4",
    ]
    user_error(runner.invoke(app, args), f"{docs}:11: field 'id': duplicate document id")
    assert not out.exists()
    user_error(runner.invoke(app, [*args, "--top-k", "0"]), "--top-k")
    user_error(runner.invoke(app, [*args, "--label-backend", "gpu"]), "--label-backend must be one of")
    # the failed run left finished chunks; the corrected input is another file content: refused, named
    docs.write_text("\n".join(lines[:12]) + "\n")
    r = runner.invoke(app, args)
    user_error(r, "the input file changed")
    import shutil

    shutil.rmtree(str(out) + ".parts")
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    ids = {json.loads(l)["doc_id"] for l in out.read_text().splitlines()}
    assert len(ids) == 12


def test_tag_after_an_early_failure_runs_with_corrected_input(tmp_path, small_data, tiny_encoder):
    out = tmp_path / "tags.jsonl"
    docs = tmp_path / "docs.jsonl"
    lines = open(small_data["docs"]).read().splitlines()
    docs.write_text("\n".join(lines[:2] + ["not json"] + lines[2:6]) + "\n")
    args = [
        "tag",
        "--model",
        tiny_encoder,
        "--labels",
        small_data["labels"],
        "--docs",
        str(docs),
        "--out",
        str(out),
        "--no-progress",
    ]
    user_error(runner.invoke(app, args), f"{docs}:3: bad JSON")
    docs.write_text("\n".join(lines[:6]) + "\n")
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output


def test_evaluate_k_0_and_unknown_encoder(tmp_path, small_data):
    a = ["evaluate", "--docs", small_data["eval"], "--labels", small_data["labels"]]
    user_error(runner.invoke(app, [*a, "--baseline", "tfidf", "--k", "0"]), "--k must be positive")
    user_error(runner.invoke(app, [*a, "--model", "no-such-encoder-xyz"]), "could not load encoder")


def test_evaluate_refuses_an_unfinished_round(tmp_path, small_data, tiny_encoder):
    out = tmp_path / "run"
    assert runner.invoke(app, base(small_data, out, tiny_encoder)).exit_code == 0
    import shutil

    shutil.copytree(out / "round-01", out / "round-02")
    (out / "round-02" / "metrics.json").unlink()
    a = ["evaluate", "--docs", small_data["eval"], "--labels", small_data["labels"]]
    user_error(runner.invoke(app, [*a, "--model", str(out / "round-02")]), "never finished")
    assert runner.invoke(app, [*a, "--model", str(out / "round-01")]).exit_code == 0


def test_damaged_run_files_are_one_line_errors_naming_the_file(tmp_path, small_data, tiny_encoder):
    """A finished run whose files were damaged afterwards: the rerun stops with exit 2 and names the file
    (a flipped byte in a round's encoder weights included: round encoders carry a sha256 table)."""
    import shutil

    ok = tmp_path / "ok"
    assert runner.invoke(app, base(small_data, ok, tiny_encoder, "--guard-docs", "0")).exit_code == 0
    damages = {
        "manifest.json": lambda o: (o / "manifest.json").write_text("{trunc"),
        "teacher-cache.sqlite": lambda o: (o / "teacher-cache.sqlite").write_bytes(b"junk" * 100),
        "judgments.parquet": lambda o: (o / "round-01" / "judgments.parquet").write_bytes(b"PAR1"),
        "model.safetensors": lambda o: _flip(next((o / "round-01" / "encoder").rglob("model.safetensors"))),
    }
    for needle, damage in damages.items():
        out = tmp_path / needle
        shutil.copytree(ok, out)
        damage(out)
        user_error(
            runner.invoke(app, base(small_data, out, tiny_encoder, "--guard-docs", "0", "--rounds", "2")), needle
        )


def _flip(p):
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0xFF
    p.write_bytes(bytes(b))


def test_engine_ray_without_ray_is_one_clear_line(tmp_path, small_data, tiny_encoder, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
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
            str(tmp_path / "t.parquet"),
            "--engine",
            "ray",
        ],
    )
    assert r.exit_code == 2 and "pip install 'lmtx[ray]'" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "t.parquet").exists()
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
            str(tmp_path / "t.parquet"),
            "--engine",
            "spark",
        ],
    )
    assert r.exit_code == 2 and "--engine must be one of local, ray" in r.output
