"""The teacher backend chosen for each machine shape (GPU / vLLM faked), and the refusals that come before any
loading or network request."""

import socket

import pytest
from typer.testing import CliRunner

from lmtx.teacher.base import TeacherError
from lmtx.teacher.plan import Machine, check_hub_weights, plan_teacher

CPU = Machine(0, [], False, 22.0)
GPU_VLLM = Machine(1, [79.0], True, 200.0)
GPU_NO_VLLM = Machine(1, [79.0], False, 200.0)


@pytest.fixture()
def no_network(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_gpu_with_vllm_takes_the_vllm_engine():
    p = plan_teacher("wizardlm", GPU_VLLM)
    assert (p.backend, p.spec, p.device, p.dtype) == ("vllm", "vllm:wizardlm", "cuda", "bfloat16")
    assert p.weight_gib == pytest.approx(13e9 * 2 / 2**30)


def test_gpu_without_vllm_takes_transformers_with_a_hint():
    p = plan_teacher("wizardlm", GPU_NO_VLLM)
    assert (p.backend, p.device, p.dtype) == ("transformers", "cuda", "bfloat16") and "lmtx[vllm]" in p.hint


def test_cpu_refuses_a_gpu_teacher_without_network(no_network):
    with pytest.raises(TeacherError) as e:
        plan_teacher("wizardlm", CPU)
    msg = str(e.value)
    assert "no GPU" in msg and "--teacher-url" in msg and "--serve" in msg and "qwen1.5b" in msg
    # forced onto the CPU, the memory check still refuses 13B in float32 on 22 GiB, with the figures
    with pytest.raises(TeacherError, match=r"48\.4 GiB .* 22\.0 GiB free"):
        plan_teacher("wizardlm", CPU, backend="transformers")


def test_offline_teachers_stay_on_the_cpu_and_servers_are_not_loaded():
    p = plan_teacher("qwen0.5b", CPU)
    assert (p.backend, p.device, p.dtype) == ("transformers", "cpu", "float32") and 1.5 < p.weight_gib < 2.0
    assert plan_teacher("qwen0.5b", GPU_VLLM).backend == "transformers"  # small offline teachers: no vLLM engine
    assert plan_teacher("wizardlm", CPU, urls=["http://127.0.0.1:1/v1"]).backend == "served"
    assert plan_teacher("simulated:0.1", CPU).backend == "simulated"


def test_memory_refusal_on_a_small_gpu():
    with pytest.raises(TeacherError, match=r"needs about 24\.2 GiB .* the largest GPU has 16\.0 GiB free"):
        plan_teacher("wizardlm", Machine(1, [16.0], True, 64.0))


def test_vllm_forced_without_vllm_or_gpu():
    with pytest.raises(TeacherError, match=r"pip install 'lmtx\[vllm\]'"):
        plan_teacher("wizardlm", CPU, backend="vllm")
    with pytest.raises(TeacherError, match="needs a GPU"):
        plan_teacher("wizardlm", Machine(0, [], True, 22.0), backend="vllm")


def test_offline_message_is_one_check(monkeypatch, tmp_path, no_network):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(TeacherError, match="not in the local Hugging Face cache.*offline.*hf:PATH"):
        check_hub_weights("wizardlm")
    check_hub_weights("qwen0.5b")  # offline assets never need the hub


def test_cli_refuses_on_cpu_and_dry_run_shows_the_backend(monkeypatch, no_network):
    import lmtx.teacher.plan as plan
    from lmtx.cli import app

    monkeypatch.setattr(plan, "probe_machine", lambda: CPU)
    r = CliRunner().invoke(app, ["iterate", "--rounds", "5", "--teacher", "wizardlm", "--out", "unused-run"])
    assert r.exit_code == 2 and "no GPU" in r.output
    from pathlib import Path

    assert not Path("unused-run").exists()
    monkeypatch.setattr(plan, "probe_machine", lambda: GPU_VLLM)
    monkeypatch.setattr(plan, "check_hub_weights", lambda spec: None)
    r = CliRunner().invoke(app, ["iterate", "--rounds", "5", "--teacher", "wizardlm", "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "vllm on cuda, bfloat16, about 24.2 GiB of weights (79.0 GiB free)" in r.output
    assert "teacher calls in round 1" in r.output
