"""The teacher on a GPU cluster with no server to run: Ray Data's vLLM engine processor (``ray.data.llm``).

``lmtx iterate --engine ray --teacher-backend ray-vllm --teacher wizardlm`` hands every uncached (document,
candidate) pair to ``vLLMEngineProcessorConfig``: one vLLM engine per GPU (or per ``tensor_parallel`` GPUs), prefix
caching on. lmtx keeps its own parts at both ends: its prompt renderer runs on the driver (token ids from the
model's tokenizer, exactly as the in-process backends build them: Ray's chat-template and tokenize stages are off),
its logprob reader is Ray's post-processing and returns scalars only (P(yes), the yes+no mass), and the answer
cache stays the one source of truth (only uncached pairs go to Ray; answers are committed every ``chunk_pairs``).
A document's candidate prompts are adjacent rows, so they land in the same engine batch and share its prefix.

Needs ``ray[llm]``, which pins its own vLLM and CUDA libraries: GPU images only, never CPU CI. Without a GPU the
pre- and post-processing functions are tested on rows shaped like Ray's output (``tests/test_ray_vllm.py``).
"""

from __future__ import annotations

from typing import Sequence

from .base import Judgment, Pair, TeacherError, answer_token_ids, encode_prompt, prompt_text
from .logprobs import judge
from .openai import UNREADABLE
from .prompts import PromptTemplate

MAX_UNREADABLE = 0.02  # share of a chunk's answers allowed without yes/no mass, as the served teacher
TOP_LOGPROBS = 20  # vLLM's SamplingParams(logprobs=K): the yes/no variants are read from the top K, as the vllm backend


class VllmPre:
    """Ray's pre-processing: lmtx's rendered prompt (token ids) with greedy one-token sampling and the top-K
    logprobs; the row's key rides along."""

    def __init__(self, top_logprobs: int = TOP_LOGPROBS):
        self.top_logprobs = top_logprobs

    def __call__(self, row: dict) -> dict:
        return {
            "key": row["key"],
            "tokenized_prompt": list(row["ids"]),
            "sampling_params": {"max_tokens": 1, "temperature": 0.0, "logprobs": self.top_logprobs},
        }


class VllmPost:
    """Ray's post-processing: the first generated position's logprobs (``[{token_id: {"logprob": ...}}]``, int keys,
    as Ray's vLLM stage returns them) read by lmtx's judge; scalars out (p_yes -1 where no yes/no mass was listed)."""

    def __init__(self, yes_ids: Sequence[int], no_ids: Sequence[int]):
        self.yes_ids, self.no_ids = list(yes_ids), list(no_ids)

    def __call__(self, row: dict) -> dict:
        lps = row.get("logprobs")
        first = lps[0] if lps is not None and len(lps) else {}
        entries = {}
        for tok, v in (first or {}).items():
            if v is None:  # Arrow fills the keys other rows listed with nulls
                continue
            entries[int(tok)] = float(v["logprob"] if isinstance(v, dict) else v)
        x = judge(entries, self.yes_ids, self.no_ids)
        return {
            "key": row["key"],
            "p_yes": -1.0 if x.judgment is None else float(x.judgment.p_yes),
            "mass": 0.0 if x.judgment is None else float(x.judgment.mass),
            "input_tokens": int(row.get("num_input_tokens") or 0),
        }


class RayVllmTeacher:
    """A teacher whose pairs are scored by vLLM engines that Ray Data places on the cluster's GPUs."""

    simulated = False
    chunk_pairs = 8192  # pairs per cache commit (a killed job loses at most this many answers)

    def __init__(
        self,
        engine,
        model_source: str,
        template: PromptTemplate,
        model_id: str,
        tokenizer,
        chat_format: str | None = None,
        gpus: int | None = None,
        tensor_parallel: int = 1,
        dtype: str = "auto",
        batch_size: int = 64,
        max_model_len: int | None = None,
        log=print,
    ):
        self.engine, self.model_source, self.template = engine, model_source, template
        self.model_id, self.tokenizer, self.chat_format = model_id, tokenizer, chat_format
        self.tensor_parallel, self.dtype, self.batch_size = tensor_parallel, dtype, batch_size
        self.max_model_len, self.log = max_model_len, log
        self.gpus = gpus
        self.yes_ids, self.no_ids = answer_token_ids(encode=lambda t: tokenizer.encode(t, add_special_tokens=False))
        self.stats = {"prompts": 0, "prompt_tokens": 0, "unreadable": 0}
        self._processor = None

    @property
    def prompt_tokens(self) -> int:
        return self.stats["prompt_tokens"]

    def describe(self) -> str:
        return f"ray-vllm:{self.model_id} ({self.model_source}, prompt {self.template.name})"

    def engine_kwargs(self) -> dict:
        kw = {
            "enable_prefix_caching": True,
            "max_logprobs": TOP_LOGPROBS,
            "tensor_parallel_size": self.tensor_parallel,
            "dtype": self.dtype,
        }
        if self.max_model_len:
            kw["max_model_len"] = self.max_model_len
        return kw

    def processor(self):
        if self._processor is None:
            try:
                from ray.data.llm import build_processor, vLLMEngineProcessorConfig
            except ImportError as e:
                raise TeacherError(f"the ray-vllm backend needs ray[llm] on a GPU image ({e})") from None
            import ray

            gpus = self.gpus or int(ray.cluster_resources().get("GPU", 0))
            if gpus < self.tensor_parallel:
                raise TeacherError(
                    f"the ray-vllm backend needs GPUs in the Ray cluster: it has {gpus}, one engine needs "
                    f"{self.tensor_parallel}; on a cluster without GPUs serve the teacher and pass --teacher-url"
                )
            cfg = vLLMEngineProcessorConfig(
                model_source=self.model_source,
                engine_kwargs=self.engine_kwargs(),
                concurrency=gpus // self.tensor_parallel,
                batch_size=self.batch_size,
                chat_template_stage=False,  # lmtx renders the prompt (its template, the model's chat format)
                tokenize_stage=False,
                detokenize_stage=False,
            )
            self._processor = build_processor(
                cfg, preprocess=VllmPre(), postprocess=VllmPost(self.yes_ids, self.no_ids)
            )
        return self._processor

    def rows(self, pairs: Sequence[Pair]) -> list[dict]:
        """One row per pair in the given order (the cache hands pairs over grouped by document: adjacent rows)."""
        return [
            {
                "key": i,
                "ids": encode_prompt(self.tokenizer, prompt_text(self.template, p, self.chat_format, self.tokenizer)),
            }
            for i, p in enumerate(pairs)
        ]

    def score(self, pairs: Sequence[Pair]) -> list[Judgment]:
        if not pairs:  # nothing to ask: no engine needed (nor Ray installed)
            return []
        import ray.data

        ds = ray.data.from_items(self.rows(pairs))
        out: list[Judgment | None] = [None] * len(pairs)
        bad = 0
        for r in self.processor()(ds).iter_rows():
            k = int(r["key"])
            self.stats["prompt_tokens"] += int(r["input_tokens"])
            if r["p_yes"] < 0:
                bad += 1
                out[k] = UNREADABLE
            else:
                out[k] = Judgment(p_yes=float(r["p_yes"]), mass=float(r["mass"]))
        self.stats["prompts"] += len(pairs)
        self.stats["unreadable"] += bad
        missing = sum(a is None for a in out)
        if missing:
            raise TeacherError(f"Ray's vLLM processor returned no answer for {missing} of {len(pairs)} pairs")
        if bad > MAX_UNREADABLE * len(pairs):
            raise TeacherError(
                f"{bad} of {len(pairs)} teacher answers list neither yes nor no among the top {TOP_LOGPROBS} tokens; "
                "refusing to train on them (check the prompt template and the model)"
            )
        return out  # type: ignore[return-value]
