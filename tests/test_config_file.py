"""Run settings from a file (--config) with dotted overrides (--set); speed-only settings may change on resume."""

import inspect
import json

import pytest
from typer.testing import CliRunner

from lmtx.cli import app, iterate
from lmtx.config import ConfigError, RunConfig, apply_overrides, load_config_file

runner = CliRunner()


def test_every_setting_has_help_and_every_option_is_a_setting():
    from lmtx.cli import _setting_options
    from lmtx.config import settings

    fields = dict(settings())
    assert len(fields) > 50 and all(f.metadata.get("help") for f in fields.values())
    opts = _setting_options()
    assert {key for _, key, _ in opts} <= set(fields)
    names = set(inspect.signature(iterate).parameters)
    assert {name for name, _, _ in opts} <= names  # generated onto iterate's signature
    r = runner.invoke(app, ["iterate", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    assert "Default: 5 (index.candidates)" in r.output and "-j" in r.output and "--no-union" in r.output


def test_lmtx_config_is_a_valid_config_file_with_sources(tmp_path):
    import tomllib

    r = runner.invoke(app, ["config"])
    assert r.exit_code == 0
    assert RunConfig.from_dict(tomllib.loads(r.output)).to_dict() == RunConfig().to_dict()
    f = tmp_path / "my.toml"
    f.write_text("[train]\nlr = 5e-5\n[index]\ncandidates = 7\n")
    r = runner.invoke(app, ["config", "--config", str(f), "--set", "index.candidates=3"])
    assert r.exit_code == 0, r.output
    assert f"lr = 5e-05  # from {f}" in r.output and "candidates = 3  # from --set" in r.output
    assert "rounds = 5  # default" in r.output
    r = runner.invoke(app, ["config", "--set", "train.lr=-1"])
    assert r.exit_code == 2 and "train: lr > 0" in r.output
    r = runner.invoke(app, ["config", "--out", str(tmp_path / "all.toml")])
    assert r.exit_code == 0 and load_config_file(tmp_path / "all.toml")["loop"]["rounds"] == 5


def test_config_file_then_options_then_set(tmp_path, small_data, tiny_encoder):
    cfg = tmp_path / "run.toml"
    cfg.write_text(f"""
[loop]
docs = "{small_data["docs"]}"
labels = "{small_data["labels"]}"
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
    r = runner.invoke(
        app,
        [
            "iterate",
            "--config",
            str(cfg),
            "--out",
            str(out),
            "--lr",
            "0.01",
            "--set",
            "train.lr=1e-4",
            "--epochs",
            "2",
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    saved = json.loads((out / "config.json").read_text())
    # the file beats the defaults, a typed option beats the file, --set beats both
    assert saved["train"]["lr"] == 1e-4 and saved["train"]["epochs"] == 2 and saved["train"]["batch_size"] == 16
    assert saved["index"]["candidates"] == 3 and saved["loop"]["rounds"] == 1
    # the saved config.json is itself a valid --config file: the same run resumes from it
    r = runner.invoke(app, ["iterate", "--config", str(out / "config.json"), "--out", str(out), "--no-progress"])
    assert r.exit_code == 0 and "(finished earlier)" in r.output, r.output
    # speed-only settings may change on a resume; a learning rate may not, and the field is named
    r = runner.invoke(
        app,
        [
            "iterate",
            "--config",
            str(cfg),
            "--out",
            str(out),
            "--set",
            "train.lr=1e-4",
            "--set",
            "train.epochs=2",
            "--set",
            "teacher.batch_size=4",
            "--device",
            "cpu",
            "--no-prefix-reuse",
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app,
        [
            "iterate",
            "--config",
            str(cfg),
            "--out",
            str(out),
            "--set",
            "train.lr=3e-4",
            "--set",
            "train.epochs=2",
            "--no-progress",
        ],
    )
    assert r.exit_code == 2 and "train.lr: 0.0001 (saved) != 0.0003 (now)" in r.output, r.output


@pytest.mark.parametrize(
    "text,match",
    [
        ("[train]\nlrr = 1\n", "unknown key train.lrr"),
        ("[train\n", "not valid TOML"),
        ("[training]\nlr = 1\n", "unknown key training.lr"),
    ],
)
def test_bad_config_files_are_named(tmp_path, text, match):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config_file(p)


def test_set_coerces_by_field_type_and_names_bad_keys():
    d = apply_overrides(
        RunConfig().to_dict(),
        ["train.fn_mask=false", "loop.max_docs=7", "teacher.strong=none", "select.union=yes", "train.lr=2e-5"],
    )
    assert d["train"]["fn_mask"] is False and d["loop"]["max_docs"] == 7 and d["teacher"]["strong"] is None
    assert d["select"]["union"] is True and d["train"]["lr"] == 2e-5
    for bad, match in [
        ("train.lr", "use section.key=value"),
        ("train.lrr=1", "did you mean train.lr"),
        ("loop.rounds=two", "expected int"),
        ("select.union=maybe", "expected bool"),
    ]:
        with pytest.raises(ConfigError, match=match):
            apply_overrides(RunConfig().to_dict(), [bad])


def test_shipped_strong_teacher_recipe_is_a_valid_config():
    from pathlib import Path

    p = Path(__file__).resolve().parent.parent / "configs" / "strong-teacher.toml"
    cfg = RunConfig.from_dict(load_config_file(p))
    assert cfg.teacher.name == "qwen1.5b"
    # everything else stays at the defaults (q15-defaults beat the old w:0.8 / epochs 2 recipe, q15-both)
    default = RunConfig().to_dict()
    mine = cfg.to_dict()
    mine["teacher"]["name"] = default["teacher"]["name"]
    assert mine == default


def test_the_configuration_page_is_lmtx_config():
    from pathlib import Path

    from lmtx.config import render_config

    page = (Path(__file__).parents[1] / "docs" / "configuration.md").read_text()
    block = page.split("```toml\n", 1)[1].rsplit("```", 1)[0]
    assert block == render_config(), "docs/configuration.md is stale: paste `lmtx config` into its block"


def test_a_run_made_before_a_setting_existed_resumes_with_the_value_it_had():
    """config.LEGACY_VALUES: a saved config without train.hard_negatives was made with them off; resuming it with
    today's defaults keeps them off and is no config change, while an explicit choice in the saved config stands."""
    from lmtx.config import RunConfig, config_diff, keep_legacy

    saved = RunConfig().to_dict()
    del saved["train"]["hard_negatives"]
    cfg = keep_legacy(RunConfig(), saved)
    assert cfg.train.hard_negatives is False and RunConfig().train.hard_negatives is True
    assert config_diff(saved, cfg.to_dict()) == []
    assert config_diff(saved, RunConfig().to_dict()) == ["train.hard_negatives: None (saved) != True (now)"]
    on = RunConfig().to_dict()
    assert keep_legacy(RunConfig(), on).train.hard_negatives is True  # a run made with the key keeps its value
