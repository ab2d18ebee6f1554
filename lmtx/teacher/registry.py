"""Teacher names -> backends.

``--teacher`` takes a registry name (``qwen0.5b``, ``wizardlm``, ...), ``hf:PATH`` for any local causal-LM
folder, ``vllm:NAME_OR_PATH`` for the in-process vLLM engine (GPU; ``--teacher-url`` for a served one), or
``simulated:RATE`` (research only: answers from gold labels with RATE of them flipped).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from ..config import FLOAT_DTYPES
from .base import Pair, Teacher, TeacherError, chat_format_id
from .prompts import PromptTemplate

VICUNA = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions. USER: {msg} ASSISTANT:"
)
LLAMA2 = "[INST] {msg} [/INST]"


@dataclass(frozen=True)
class TeacherSpec:
    name: str
    model: str  # an offline asset name, or a hub id / local path
    asset: bool  # True: weights come from lmtx.store.assets
    chat_format: str | None = None  # None: the tokenizer's own chat template
    about: str = ""
    params_b: float = 0.0  # billions of parameters (what the memory check before loading assumes)


REGISTRY: dict[str, TeacherSpec] = {
    s.name: s
    for s in [
        TeacherSpec(
            "smollm2", "smollm2-135m", True, about="SmolLM2-135M-Instruct (offline; fast, weak)", params_b=0.135
        ),
        TeacherSpec(
            "qwen0.5b",
            "qwen2.5-coder-0.5b",
            True,
            about="Qwen2.5-Coder-0.5B-Instruct (offline; default)",
            params_b=0.494,
        ),
        TeacherSpec(
            "qwen1.5b",
            "qwen2.5-coder-1.5b",
            True,
            about="Qwen2.5-Coder-1.5B-Instruct (offline; quality, slow)",
            params_b=1.54,
        ),
        TeacherSpec("wizardlm", "WizardLMTeam/WizardLM-13B-V1.2", False, VICUNA, "the paper's teacher (GPU)", 13.0),
        TeacherSpec("vicuna", "lmsys/vicuna-13b-v1.5", False, VICUNA, "GPU", 13.0),
        TeacherSpec("llama2", "meta-llama/Llama-2-13b-chat-hf", False, LLAMA2, "GPU", 13.0),
    ]
}


def parse_simulated(spec: str) -> float | None:
    if not spec.startswith("simulated"):
        return None
    rate = spec.partition(":")[2] or "0"
    try:
        r = float(rate)
    except ValueError:
        raise TeacherError(f"bad simulated teacher {spec!r}: use simulated:RATE, e.g. simulated:0.1") from None
    if not 0 <= r <= 1:
        raise TeacherError(f"bad simulated teacher {spec!r}: the error rate must be in [0, 1]")
    return r


def check_teacher_spec(spec: str) -> None:
    """Refuse a teacher name that cannot be built, before anything is written or loaded."""
    if parse_simulated(spec) is not None:
        return
    if spec in REGISTRY:
        return
    if (spec.startswith("hf:") and spec[3:]) or (spec.startswith("vllm:") and spec[5:]):
        return
    import difflib

    close = difflib.get_close_matches(spec, list(REGISTRY), n=1)
    raise TeacherError(
        f"unknown teacher {spec!r}"
        + (f" (did you mean {close[0]!r}?)" if close else "")
        + f": use one of {', '.join(REGISTRY)}, hf:PATH, vllm:NAME_OR_PATH, or simulated:RATE"
    )


def teacher_model_name(spec: str) -> str:
    """The model a teacher name stands for (what a server serves it as)."""
    if spec.startswith("vllm:"):
        spec = spec[5:]
    if spec in REGISTRY:
        return REGISTRY[spec].model
    if spec.startswith("hf:"):
        return spec[3:]
    return spec


def teacher_model_id(spec: str, dtype: str = "float32") -> str:
    """The identity that goes into cache keys, without loading anything: the model, plus the registry's explicit
    chat format when it has one (``wizardlm`` and ``hf:<the same weights>`` render differently, so they never
    share answers), plus the precision it computes in unless float32 (``@bfloat16``, ``@awq``, ``@unknown``: a
    bf16 GPU teacher's answers are not a float32 CPU teacher's). Every backend (local, served, in-process vLLM)
    builds the same token ids for a teacher (lmtx.teacher.base.encode_prompt), so at the same precision they share
    the id. Offline float32 ids are the bare names, so existing caches stay valid."""
    base = spec[5:] if spec.startswith("vllm:") else spec
    fmt = REGISTRY[base].chat_format if base in REGISTRY else None
    return teacher_model_name(spec) + chat_format_id(fmt) + ("" if dtype == "float32" else f"@{dtype}")


def checkpoint_dtype(path: str) -> str:
    """The dtype a GPU engine runs a checkpoint in by default (vLLM's ``--dtype auto``): the config's
    torch_dtype, with float32 checkpoints run in bfloat16; bfloat16 when the config says nothing."""
    import json
    from pathlib import Path

    cfg = Path(path) / "config.json"
    d = None
    if cfg.exists():
        c = json.loads(cfg.read_text())
        d = c.get("torch_dtype") or c.get("dtype")
    return "float16" if d == "float16" else "bfloat16"


def resolve_dtype(dtype: str, backend: str, path: str | None = None, gpu: bool = False) -> str:
    """teacher.dtype "auto" made concrete for a backend: local (the HF backend: float32), serve (a server lmtx
    starts: float32 on a CPU, the checkpoint's on a GPU), inprocess (the vLLM engine: the checkpoint's), or
    external (a server lmtx did not start: unknown)."""
    if dtype != "auto":
        return dtype
    if backend == "local" or (backend == "serve" and not gpu):
        return "float32"
    if backend == "external":
        return "unknown"
    return checkpoint_dtype(path) if path else "bfloat16"


def make_teacher(
    spec: str,
    template: PromptTemplate,
    gold: Mapping[str, set[str]] | None = None,
    seed: int = 0,
    prefix_reuse: bool = True,
    batch_size: int = 16,
    device: str = "cpu",
    threads: int | None = None,
    progress=print,
    urls: list[str] | None = None,
    tokenizer: str | None = None,
    timeout: float = 300.0,
    dtype: str = "auto",
    engine=None,
) -> Teacher:
    """Build a teacher from its spec. ``dtype``: teacher.dtype (see resolve_dtype); it is part of the id.
    ``engine``: a started RayEngine, for ray-vllm:NAME (vLLM engines that Ray Data places on the cluster's GPUs)."""
    rate = parse_simulated(spec)
    if rate is not None:
        from .simulated import SimulatedTeacher

        if gold is None:
            raise TeacherError("the simulated teacher needs documents with gold labels")
        return SimulatedTeacher(gold, rate, seed)

    from .hf import HFTeacher

    if spec.startswith("vllm:"):  # the in-process vLLM engine (GPU machines with `pip install lmtx[vllm]`)
        from .vllm import InProcessVLLMTeacher

        base = spec[5:]
        chat_format = REGISTRY[base].chat_format if base in REGISTRY else None
        path = local_model_path(base, progress) if base in REGISTRY else base
        d = resolve_dtype(dtype, "inprocess", path)
        kw = {"dtype": d} if d in FLOAT_DTYPES else {"quantization": d}
        return InProcessVLLMTeacher(path, template, model_id=teacher_model_id(base, d), chat_format=chat_format, **kw)
    if spec.startswith("ray-vllm:"):  # Ray Data's vLLM engine processor on a GPU cluster (lmtx.teacher.ray_vllm)
        from transformers import AutoTokenizer

        from .ray_vllm import RayVllmTeacher

        if engine is None:
            raise TeacherError("the ray-vllm teacher backend runs on a Ray cluster: add --engine ray")
        base = spec[len("ray-vllm:") :]
        chat_format = REGISTRY[base].chat_format if base in REGISTRY else None
        path = local_model_path(base, progress) if base in REGISTRY else base.removeprefix("hf:")
        d = resolve_dtype(dtype, "inprocess", path)
        return RayVllmTeacher(
            engine,
            path,
            template,
            model_id=teacher_model_id(base, d),
            tokenizer=AutoTokenizer.from_pretrained(path),
            chat_format=chat_format,
            dtype=d,
            log=progress,
        )
    if urls:
        return make_served_teacher(
            spec, template, urls, tokenizer, progress, timeout=timeout, dtype=resolve_dtype(dtype, "external")
        )
    if spec not in REGISTRY and not spec.startswith("hf:"):
        raise TeacherError(f"unknown teacher {spec!r}: use one of {', '.join(REGISTRY)}, hf:PATH, or simulated:RATE")
    chat_format = REGISTRY[spec].chat_format if spec in REGISTRY else None
    d = resolve_dtype(dtype, "local")
    if d not in FLOAT_DTYPES:
        raise TeacherError(
            f"the local teacher backend computes in float32, bfloat16 or float16, not {d!r} "
            "(quantised teachers: serve them with vLLM and pass --teacher-url)"
        )
    path, model_id = local_model_path(spec, progress), teacher_model_id(spec, d)
    try:
        return HFTeacher(
            path,
            template,
            model_id=model_id,
            chat_format=chat_format,
            prefix_reuse=prefix_reuse,
            batch_size=batch_size,
            device=device,
            threads=threads,
            dtype=d,
        )
    except OSError as e:
        raise TeacherError(f"could not load teacher {spec!r} from {path!r}: {e}") from None


def local_model_path(spec: str, progress=print) -> str:
    """The folder (or hub id) a registry name or hf:PATH resolves to."""
    if spec in REGISTRY:
        s = REGISTRY[spec]
        if s.asset:
            from ..store.assets import hf_folder

            return str(hf_folder(s.model, progress))
        return s.model
    if spec.startswith("hf:"):
        return spec[3:]
    raise TeacherError(f"unknown teacher {spec!r}: use one of {', '.join(REGISTRY)} or hf:PATH")


def make_served_teacher(
    spec: str,
    template: PromptTemplate,
    urls: list[str],
    tokenizer: str | None = None,
    progress=print,
    timeout: float = 300.0,
    dtype: str = "unknown",
) -> Teacher:
    """A teacher behind OpenAI-compatible servers. The served model name is the registry's model id
    (``lmtx teacher serve`` serves it under that name); the tokenizer is local where lmtx has it."""
    from .openai import ServedTeacher

    chat_format = REGISTRY[spec].chat_format if spec in REGISTRY else None
    model_id = teacher_model_id(spec, dtype)
    tok = None
    tok_path = tokenizer
    if tok_path is None and spec in REGISTRY and REGISTRY[spec].asset:
        tok_path = local_model_path(spec, progress)
    if tok_path is not None:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tok_path)
    served = None if spec.startswith("hf:") else teacher_model_name(spec)
    return ServedTeacher(
        urls,
        template,
        model_id=model_id,
        served_model=served,
        chat_format=chat_format,
        tokenizer=tok,
        log=progress,
        timeout=timeout,
    )


def strongest_offline() -> str:
    """The registry's largest teacher whose weights ship offline (what a warning may suggest trying)."""
    return max((s for s in REGISTRY.values() if s.asset), key=lambda s: s.params_b).name


def run_teacher(
    name: str,
    teacher_cfg,
    template: PromptTemplate,
    gold,
    seed: int,
    *,
    device: str = "cpu",
    threads: int | None = None,
    log=print,
    urls: Sequence[str] = (),
    tokenizer: str | None = None,
    timeout: float = 300.0,
    served_dtype: str | None = None,
    plan=None,
    engine=None,
):
    """A run's teacher as its settings (config.TeacherConfig) and the machine's plan (lmtx.teacher.plan) say: served
    at ``urls`` when given; else the backend the plan chose (e.g. vllm:NAME on a GPU with vLLM)."""
    dtype = served_dtype if urls and served_dtype and teacher_cfg.dtype == "auto" else teacher_cfg.dtype
    if plan is not None and plan.backend in ("transformers", "vllm", "ray-vllm") and not urls:
        name = plan.spec
        if plan.device == "cuda":
            device = "cuda"
            dtype = plan.dtype if teacher_cfg.dtype == "auto" else dtype
    return make_teacher(
        name,
        template,
        gold=gold,
        seed=seed,
        prefix_reuse=teacher_cfg.prefix_reuse,
        batch_size=teacher_cfg.batch_size,
        device=device,
        threads=threads,
        progress=log,
        urls=list(urls),
        tokenizer=tokenizer,
        timeout=timeout,
        dtype=dtype,
        engine=engine,
    )


class _Teacher:
    """A teacher by name, with P(yes) for (document, label) pairs through lmtx's prompt and reader."""

    def __init__(self, inner, template):
        self.inner, self.template = inner, template
        self.model_id = inner.model_id

    def p_yes(self, pairs) -> list[float]:
        """``pairs``: (document text, label name[, label description]) tuples or dicts with doc / label /
        description. Returns P(yes) per pair."""

        ps = []
        for i, p in enumerate(pairs):
            if isinstance(p, Mapping):
                doc, name, desc = p.get("doc", ""), p.get("label", ""), p.get("description", "")
            else:
                doc, name, desc = (list(p) + [""])[:3]
            ps.append(Pair(f"d{i}", str(doc), f"l{i}", str(name), str(desc)))
        return [j.p_yes for j in self.inner.score(ps)]

    def describe(self) -> str:
        return self.inner.describe()


def teacher_by_name(
    name: str = "qwen0.5b", prompt: str = "paper-desc", urls: list[str] | None = None, device: str = "cpu"
) -> _Teacher:
    """A teacher by registry name, hf:PATH or vllm:NAME (served at ``urls`` when given), for P(yes) of pairs."""
    from .prompts import load_template

    tpl = load_template(prompt)
    return _Teacher(make_teacher(name, tpl, urls=urls or [], device=device, progress=lambda s: None), tpl)
