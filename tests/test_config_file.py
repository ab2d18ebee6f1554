"""Run settings from a file (--config) with dotted overrides (--set); speed-only settings may change on resume."""

import inspect
import json

import pytest
from typer.testing import CliRunner

from lmtx.cli import ITERATE_KEYS, app, iterate
from lmtx.config import ConfigError, RunConfig, apply_overrides, load_config_file

runner = CliRunner()
RUNTIME_OPTIONS = {"ctx", "config", "set_", "out", "teacher_url", "teacher_tokenizer", "teacher_timeout", "serve", "teacher_backend",
                   "threads", "device", "dry_run", "progress"}


def test_every_iterate_option_is_a_config_key_or_runtime_and_defaults_agree():
    defaults = RunConfig().to_dict()
    for name, p in inspect.signature(iterate).parameters.items():
        if name in RUNTIME_OPTIONS:
            continue
        assert name in ITERATE_KEYS, f"--{name} is neither a config key nor a runtime option"
        sect, k = ITERATE_KEYS[name].split(".")
        d = p.default.default
        if name in ("docs", "labels"):  # '' in the config: the bundled sample when neither is given
            assert d is None and defaults[sect][k] == ""
        else:
            assert d == defaults[sect][k], (name, d, defaults[sect][k])


def test_config_file_then_options_then_set(tmp_path, small_data, tiny_encoder):
    cfg = tmp_path / "run.toml"
    cfg.write_text(f"""
[loop]
docs = "{small_data['docs']}"
labels = "{small_data['labels']}"
rounds = 1
[teacher]
name = "simulated:0.1"
[encoder]
model = "{tiny_encoder}"
[index]
candidates = 3
[train]
lr = 0.5
batch_size = 16
""")
    out = tmp_path / "run"
    r = runner.invoke(app, ["iterate", "--config", str(cfg), "--out", str(out), "--lr", "0.01",
                            "--set", "train.lr=1e-4", "--epochs", "2", "--no-progress"])
    assert r.exit_code == 0, r.output
    saved = json.loads((out / "config.json").read_text())
    # the file beats the defaults, a typed option beats the file, --set beats both
    assert saved["train"]["lr"] == 1e-4 and saved["train"]["epochs"] == 2 and saved["train"]["batch_size"] == 16
    assert saved["index"]["candidates"] == 3 and saved["loop"]["rounds"] == 1
    # the saved config.json is itself a valid --config file: the same run resumes from it
    r = runner.invoke(app, ["iterate", "--config", str(out / "config.json"), "--out", str(out), "--no-progress"])
    assert r.exit_code == 0 and "(finished earlier)" in r.output, r.output
    # speed-only settings may change on a resume; a learning rate may not, and the field is named
    r = runner.invoke(app, ["iterate", "--config", str(cfg), "--out", str(out), "--set", "train.lr=1e-4",
                            "--set", "train.epochs=2", "--set", "teacher.batch_size=4", "--device", "cpu",
                            "--no-prefix-reuse", "--no-progress"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["iterate", "--config", str(cfg), "--out", str(out), "--set", "train.lr=3e-4",
                            "--set", "train.epochs=2", "--no-progress"])
    assert r.exit_code == 2 and "train.lr: 0.0001 (saved) != 0.0003 (now)" in r.output, r.output


@pytest.mark.parametrize("text,match", [
    ("[train]\nlrr = 1\n", "unknown key train.lrr"),
    ("[train\n", "not valid TOML"),
    ("[training]\nlr = 1\n", "unknown key training.lr"),
])
def test_bad_config_files_are_named(tmp_path, text, match):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config_file(p)


def test_set_coerces_by_field_type_and_names_bad_keys():
    d = apply_overrides(RunConfig().to_dict(), ["train.fn_mask=false", "loop.max_docs=7", "teacher.strong=none",
                                                "select.union=yes", "train.lr=2e-5"])
    assert d["train"]["fn_mask"] is False and d["loop"]["max_docs"] == 7 and d["teacher"]["strong"] is None
    assert d["select"]["union"] is True and d["train"]["lr"] == 2e-5
    for bad, match in [("train.lr", "use section.key=value"), ("train.lrr=1", "did you mean train.lr"),
                       ("loop.rounds=two", "expected int"), ("select.union=maybe", "expected bool")]:
        with pytest.raises(ConfigError, match=match):
            apply_overrides(RunConfig().to_dict(), [bad])


def test_shipped_strong_teacher_recipe_is_a_valid_config():
    from pathlib import Path

    p = Path(__file__).resolve().parent.parent / "configs" / "strong-teacher.toml"
    cfg = RunConfig.from_dict(load_config_file(p))
    assert (cfg.teacher.name, cfg.select.fusion, cfg.train.epochs) == ("qwen1.5b", "w:0.8", 2)
    assert cfg.train.merge_init == RunConfig().train.merge_init  # everything else stays at the defaults
