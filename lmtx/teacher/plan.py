"""Which backend runs a teacher on this machine, in what precision, and whether it fits: decided before anything is
loaded or downloaded.

    plan_teacher("wizardlm", probe_machine())   # a GPU with vLLM -> the in-process vLLM engine, bfloat16
                                                # a GPU without vLLM -> transformers on the GPU (+ a hint)
                                                # no GPU -> TeacherError naming what would work

``probe_machine`` asks nvidia-smi for the GPUs and their free memory, looks for an importable vLLM (without importing
it) and reads the free RAM; tests pass a ``Machine`` of their own.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .base import TeacherError

GIB = 1 << 30
BYTES_PER = {"float32": 4, "bfloat16": 2, "float16": 2, "fp8": 1, "int8": 1, "int4": 0.5, "awq": 0.5, "gptq": 0.5}
OVERHEAD = 1.2  # weights x this (activations, the KV cache of prefix reuse, the runtime) must fit


@dataclass
class Machine:
    gpus: int = 0
    gpu_free_gib: list[float] = field(default_factory=list)  # per GPU
    vllm: bool = False  # vLLM importable in this environment
    ram_free_gib: float | None = None


@dataclass
class TeacherPlan:
    spec: str  # what make_teacher builds: the name as given, or vllm:NAME for the in-process engine
    backend: str  # simulated | served | serve | vllm | transformers | ray-vllm
    device: str  # cpu | cuda | remote | cluster
    dtype: str
    weight_gib: float | None = None  # the weights at that precision (None: unknown, or not loaded here)
    available_gib: float | None = None  # free memory where they would be loaded
    hint: str = ""

    def describe(self) -> str:
        mem = (
            f", about {self.weight_gib:.1f} GiB of weights"
            + (f" ({self.available_gib:.1f} GiB free)" if self.available_gib is not None else "")
            if self.weight_gib is not None
            else ""
        )
        return f"{self.backend} on {self.device}, {self.dtype}{mem}"


def probe_machine() -> Machine:
    """This machine: NVIDIA GPUs and their free memory (nvidia-smi; CUDA_VISIBLE_DEVICES respected), an importable
    vLLM, free RAM (/proc/meminfo MemAvailable)."""
    free: list[float] = []
    vis = os.environ.get("CUDA_VISIBLE_DEVICES")
    smi = shutil.which("nvidia-smi")
    if smi and not (vis is not None and vis.strip() in ("", "-1")):
        try:
            out = subprocess.run(
                [smi, "--query-gpu=memory.free", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=20,
            ).stdout
            free = [float(x) / 1024 for x in out.split() if x.strip().replace(".", "", 1).isdigit()]
        except (OSError, subprocess.SubprocessError):
            free = []
        if vis:
            keep = [int(x) for x in vis.split(",") if x.strip().isdigit()]
            free = [free[i] for i in keep if i < len(free)]
    return Machine(len(free), free, importlib.util.find_spec("vllm") is not None, _ram_free_gib())


def _ram_free_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / (1 << 20)
    except OSError:
        pass
    return None


def weight_gib(spec: str, dtype: str, path: str | None = None) -> float | None:
    """The teacher's weights at ``dtype``: from the registry's parameter count, else from a local folder's weight
    files (scaled from the precision they are stored in), else None."""
    from .registry import REGISTRY

    per = BYTES_PER.get(dtype)
    if per is None:
        return None
    base = spec[5:] if spec.startswith("vllm:") else spec
    if base in REGISTRY and REGISTRY[base].params_b:
        return REGISTRY[base].params_b * 1e9 * per / GIB
    p = Path(path) if path else None
    if p is None or not p.is_dir():
        return None
    files = [f for f in p.iterdir() if f.suffix in (".safetensors", ".bin", ".pt")]
    if not files:
        return None
    stored = 2
    cfg = p / "config.json"
    if cfg.exists():
        try:
            c = json.loads(cfg.read_text())
            stored = BYTES_PER.get(str(c.get("torch_dtype") or c.get("dtype") or "bfloat16"), 2)
        except (OSError, ValueError):
            pass
    return sum(f.stat().st_size for f in files) / stored * per / GIB


def _fits(spec: str, w: float | None, avail: float | None, where: str, fix: str) -> None:
    if w is not None and avail is not None and w * OVERHEAD > avail:
        raise TeacherError(
            f"teacher {spec!r} needs about {w:.1f} GiB for its weights ({w * OVERHEAD:.1f} GiB with "
            f"working memory) but {where} has {avail:.1f} GiB free; {fix}"
        )


def plan_teacher(
    spec: str, machine: Machine, urls=(), serve: bool = False, backend: str = "auto", dtype: str = "auto"
) -> TeacherPlan:
    """The backend for a teacher on ``machine``; TeacherError, naming what would work, when it cannot run here.
    ``backend``: auto | transformers | vllm (forced; the memory check still applies) | ray-vllm (vLLM engines that
    Ray Data places on the cluster's GPUs, --engine ray: nothing is checked against this machine)."""
    from .registry import REGISTRY, parse_simulated, resolve_dtype

    if parse_simulated(spec) is not None:
        return TeacherPlan(spec, "simulated", "cpu", "n/a")
    if urls:
        return TeacherPlan(spec, "served", "remote", resolve_dtype(dtype, "external"))
    gpu = machine.gpus > 0
    if serve:
        return TeacherPlan(
            spec, "serve", "cuda" if gpu else "cpu", dtype if dtype != "auto" else ("bfloat16" if gpu else "float32")
        )
    base = spec[5:] if spec.startswith("vllm:") else spec
    if backend == "ray-vllm":
        return TeacherPlan(f"ray-vllm:{base}", "ray-vllm", "cluster", dtype if dtype != "auto" else "bfloat16")
    big = base in REGISTRY and not REGISTRY[base].asset  # a GPU-class teacher (the paper's 13B models)
    if spec.startswith("vllm:"):
        backend = "vllm"
    forced = backend != "auto"
    if backend == "auto":
        backend = "vllm" if (gpu and machine.vllm and (big or spec.startswith("hf:"))) else "transformers"
    if backend == "vllm":
        if not machine.vllm:
            raise TeacherError(
                "the vLLM backend needs vLLM: pip install 'lmtx[vllm]' (GPU machines), or serve the "
                "teacher elsewhere and pass --teacher-url"
            )
        if not gpu:
            raise TeacherError(
                "the in-process vLLM engine needs a GPU; on a CPU serve the teacher (lmtx teacher "
                "serve, --serve) or pass --teacher-url"
            )
        d = dtype if dtype != "auto" else "bfloat16"
        w = weight_gib(base, d, None if base in REGISTRY else base.removeprefix("hf:"))
        _fits(
            spec,
            w,
            max(machine.gpu_free_gib),
            "the largest GPU",
            "use a larger GPU, a quantised checkpoint "
            "(--teacher-dtype awq / fp8 with a server), or serve it with tensor parallelism (lmtx teacher serve "
            "--tensor-parallel-size N) and pass --teacher-url",
        )
        return TeacherPlan(f"vllm:{base}", "vllm", "cuda", d, w, max(machine.gpu_free_gib))
    # transformers (the local backend)
    if big and not gpu and not forced:
        raise TeacherError(
            f"teacher {spec!r} ({REGISTRY[base].model}, {REGISTRY[base].params_b:g}B parameters) is a GPU teacher and "
            "this machine has no GPU. Use a served copy (--teacher-url http://HOST:PORT/v1, e.g. from `lmtx teacher "
            f"serve {base}` on a GPU machine), run with --serve on a GPU machine, or take the strongest offline "
            "teacher, --teacher qwen1.5b. (--teacher-backend transformers forces it onto the CPU.)"
        )
    d = dtype if dtype != "auto" else ("bfloat16" if gpu and big else "float32")
    path = None
    if not big and (base in REGISTRY or spec.startswith("hf:")):
        path = _local_folder(base)
    w = weight_gib(base, d, path)
    hint = ""
    if gpu and big and not machine.vllm:
        hint = "vLLM is not installed: pip install 'lmtx[vllm]' runs this teacher several times faster"
    if gpu:
        _fits(
            spec,
            w,
            max(machine.gpu_free_gib),
            "the largest GPU",
            "use a larger GPU or serve it with vLLM "
            "(lmtx teacher serve --tensor-parallel-size N) and pass --teacher-url",
        )
        return TeacherPlan(spec, "transformers", "cuda", d, w, max(machine.gpu_free_gib), hint)
    _fits(
        spec,
        w,
        machine.ram_free_gib,
        "this machine",
        "pass --teacher-url to a served copy, or take a smaller teacher (lmtx teacher list)",
    )
    return TeacherPlan(spec, "transformers", "cpu", d, w, machine.ram_free_gib, hint)


def _local_folder(base: str) -> str | None:
    """The local folder of an offline asset (when already fetched) or of hf:PATH; never downloads."""
    from .registry import REGISTRY

    if base.startswith("hf:"):
        return base[3:]
    s = REGISTRY.get(base)
    if s is None or not s.asset:
        return None
    from ..store.assets import lmtx_home

    p = lmtx_home() / "assets" / s.model / "hf"  # assets.hf_folder's dequantized folder
    return str(p) if (p / ".complete").exists() else None


def hub_offline() -> bool:
    """Offline mode set (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE), or the hub not reachable in one 2-second try."""
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or os.environ.get("TRANSFORMERS_OFFLINE", "") not in (
        "",
        "0",
    ):
        return True
    import socket

    try:
        socket.create_connection(("huggingface.co", 443), timeout=2).close()
        return False
    except OSError:
        return True


def check_hub_weights(spec: str) -> None:
    """For a teacher named by a hub id: its weights must be in the local Hugging Face cache when the hub cannot be
    reached. One check, one message (no client retries)."""
    from .registry import REGISTRY

    base = spec[5:] if spec.startswith("vllm:") else spec
    if base not in REGISTRY or REGISTRY[base].asset:
        return
    repo = REGISTRY[base].model
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = isinstance(try_to_load_from_cache(repo, "config.json"), str)
    except Exception:
        cached = False
    if not cached and hub_offline():
        raise TeacherError(
            f"teacher {spec!r} needs the weights of {repo}, which are not in the local Hugging Face "
            "cache, and the model hub cannot be reached (offline). Put a local copy at hf:PATH "
            f"(--teacher hf:/path/to/{repo.split('/')[-1]}), or pass --teacher-url to a server that "
            "serves it."
        )
