"""The vLLM command line lmtx builds (GPU vs CPU), and the in-process vLLM backend's wiring (a stand-in `vllm`
module where the real one is not installed; the real engine is exercised on GPU machines)."""

import math
import sys
import types

import pytest

from lmtx.teacher.base import Pair, TeacherError
from lmtx.teacher.prompts import load_template
from lmtx.teacher.registry import check_teacher_spec, make_teacher, teacher_model_id
from lmtx.teacher.vllm import server_args


def test_gpu_server_args():
    args, env, dev = server_args(
        "/m",
        "127.0.0.1",
        8000,
        "wizardlm-13b",
        device="gpu",
        gpu_memory_utilization=0.85,
        tensor_parallel=2,
        data_parallel=2,
    )
    assert dev == "gpu" and env == {}
    assert "--enforce-eager" not in args and "float32" not in args
    s = " ".join(args)
    for flag in (
        "--dtype auto",
        "--enable-prefix-caching",
        "--gpu-memory-utilization 0.85",
        "--tensor-parallel-size 2",
        "--data-parallel-size 2",
        "--max-logprobs 20",
        "--served-model-name wizardlm-13b",
    ):
        assert flag in s, flag


def test_cpu_server_args_and_auto_detection(monkeypatch):
    import lmtx.teacher.vllm as V

    args, env, dev = server_args("/m", "127.0.0.1", 8000, device="cpu")
    assert dev == "cpu" and "--dtype float32 --enforce-eager" in " ".join(args) and env["VLLM_CPU_KVCACHE_SPACE"]
    with pytest.raises(TeacherError, match="need GPUs"):
        server_args("/m", "127.0.0.1", 8000, device="cpu", tensor_parallel=2)
    monkeypatch.setattr(V, "gpu_count", lambda: 1)
    assert server_args("/m", "h", 1)[2] == "gpu"
    monkeypatch.setattr(V, "gpu_count", lambda: 0)
    assert server_args("/m", "h", 1)[2] == "cpu"


def test_gpu_count_reads_nvidia_smi_and_respects_cuda_visible_devices(monkeypatch):
    import subprocess

    import lmtx.teacher.vllm as V

    listing = "GPU 0: NVIDIA H100 (UUID: GPU-a)\nGPU 1: NVIDIA H100 (UUID: GPU-b)\n"
    monkeypatch.setattr(V.shutil, "which", lambda name: "/usr/bin/nvidia-smi" if name == "nvidia-smi" else None)
    monkeypatch.setattr(V.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, listing, ""))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert V.gpu_count() == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert V.gpu_count() == 1
    for hidden in ("", "-1"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert V.gpu_count() == 0
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(V.shutil, "which", lambda name: None)  # no driver
    assert V.gpu_count() == 0


def test_vllm_teacher_names():
    check_teacher_spec("vllm:qwen0.5b")
    check_teacher_spec("vllm:/models/wizardlm")
    assert teacher_model_id("vllm:qwen0.5b") == teacher_model_id("qwen0.5b")
    with pytest.raises(TeacherError):
        check_teacher_spec("vllm:")


def test_in_process_backend_without_vllm_is_a_clear_error(monkeypatch, tiny_teacher):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(TeacherError, match="needs vllm"):
        make_teacher(f"vllm:{tiny_teacher}", load_template("paper"))


def test_in_process_backend_is_reachable_and_reads_logprobs(monkeypatch, tiny_teacher):
    from transformers import AutoTokenizer

    from lmtx.teacher.base import answer_token_ids

    tok = AutoTokenizer.from_pretrained(tiny_teacher)
    yes, no = answer_token_ids(tok)
    seen = {}

    class LP:
        def __init__(self, x):
            self.logprob = x

    class FakeLLM:
        def __init__(self, model, **kw):
            seen["model"], seen["kw"] = model, kw

        def get_tokenizer(self):
            return tok

        def generate(self, prompts, params, use_tqdm=False):
            seen["prompts"] = prompts
            out = []
            for i, _ in enumerate(prompts):
                lp = {
                    yes[0]: LP(math.log(0.6 if i % 2 else 0.2)),
                    no[0]: LP(math.log(0.2 if i % 2 else 0.6)),
                    **{t: LP(math.log(0.02)) for t in range(5)},
                }
                out.append(types.SimpleNamespace(outputs=[types.SimpleNamespace(logprobs=[lp])]))
            return out

    fake = types.ModuleType("vllm")
    fake.LLM, fake.SamplingParams = FakeLLM, lambda **kw: kw
    monkeypatch.setitem(sys.modules, "vllm", fake)
    t = make_teacher(f"vllm:{tiny_teacher}", load_template("paper"))
    assert t.describe().startswith("vllm-inprocess:") and seen["kw"]["enable_prefix_caching"] is True
    # the engine runs the checkpoint's own precision (float32 checkpoints in bfloat16), named in the teacher's id
    assert seen["kw"]["dtype"] in ("bfloat16", "float16") and t.model_id.endswith("@" + seen["kw"]["dtype"])
    pairs = [Pair("d1", "audio player", "a", "Audio"), Pair("d1", "audio player", "g", "Games")]
    got = t.score(pairs)
    assert [round(g.p_yes, 6) for g in got] == [0.25, 0.75]
    assert all("prompt_token_ids" in p for p in seen["prompts"])


def test_teacher_precision_is_part_of_the_fingerprint():
    """float32 (local CPU, --serve on a CPU) keeps the bare id; any other precision gets its own, so a bf16 GPU
    teacher's answers are never served from a float32 cache, nor an unknown server's."""
    from lmtx.config import ConfigError, TeacherConfig
    from lmtx.teacher.registry import resolve_dtype

    assert teacher_model_id("qwen0.5b", "float32") == teacher_model_id("qwen0.5b") == "qwen2.5-coder-0.5b"
    ids = {teacher_model_id("qwen0.5b", d) for d in ("float32", "bfloat16", "float16", "awq", "unknown")}
    assert len(ids) == 5
    assert resolve_dtype("auto", "local") == "float32"
    assert resolve_dtype("auto", "serve", gpu=False) == "float32"
    assert resolve_dtype("auto", "serve", "/nonexistent", gpu=True) == "bfloat16"
    assert resolve_dtype("auto", "external") == "unknown"
    assert resolve_dtype("awq", "external") == "awq"
    args = " ".join(server_args("/m", "h", 1, device="gpu", dtype="bfloat16")[0])
    assert "--dtype bfloat16" in args
    args = " ".join(server_args("/m", "h", 1, device="gpu", dtype="awq")[0])
    assert "--quantization awq" in args and "--dtype auto" in args
    assert "--dtype float32" in " ".join(server_args("/m", "h", 1, device="cpu", dtype="float32")[0])
    with pytest.raises(ConfigError, match="teacher.dtype"):
        TeacherConfig(dtype="fp64")
    with pytest.raises(TeacherError, match="local teacher backend"):
        make_teacher("qwen0.5b", load_template("paper"), dtype="awq")


def test_a_server_lmtx_did_not_start_gets_an_unknown_precision_unless_declared(monkeypatch):
    import lmtx.teacher.openai as O
    from lmtx.teacher.registry import make_served_teacher

    monkeypatch.setattr(
        O.ServedTeacher, "__init__", lambda self, urls, template, model_id, **kw: setattr(self, "model_id", model_id)
    )
    t = make_teacher("hf:/some/model", load_template("paper"), urls=["http://x:1/v1"])
    assert t.model_id.endswith("@unknown")
    t = make_teacher("hf:/some/model", load_template("paper"), urls=["http://x:1/v1"], dtype="float32")
    assert t.model_id == "/some/model"
    assert (
        make_served_teacher("hf:/m", load_template("paper"), ["http://x:1/v1"], dtype="bfloat16").model_id
        == "/m@bfloat16"
    )
