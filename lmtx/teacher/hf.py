"""Local Hugging Face transformers teacher: any causal LM folder (or an offline GGUF asset), on CPU or GPU.

One forward pass per pair, never generation: P(yes) comes from the next-token distribution after the
rendered prompt. The prompts of one document's candidates share a long prefix (chat header + the
document); with ``prefix_reuse`` that prefix is run once and only the short suffixes (label + question +
assistant header) are run after it, packed into one sequence (no padding).
"""

from __future__ import annotations

import copy
import functools
import itertools
from pathlib import Path
from typing import Sequence

from .base import Judgment, Pair, TeacherError, answer_token_ids, context_limit, encode_prompt, fit_context, prompt_text
from .prompts import PromptTemplate


def _common_prefix_len(seqs: list[list[int]]) -> int:
    n = min(len(s) for s in seqs)
    for i in range(n):
        t = seqs[0][i]
        if any(s[i] != t for s in seqs[1:]):
            return i
    return n


class HFTeacher:
    simulated = False

    def __init__(
        self,
        model_path: str | Path,
        template: PromptTemplate,
        model_id: str | None = None,
        chat_format: str | None = None,
        prefix_reuse: bool = True,
        batch_size: int = 16,
        device: str = "cpu",
        threads: int | None = None,
        dtype: str = "float32",
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.model_id = model_id or str(model_path)
        self.template = template
        self.chat_format = chat_format
        self.prefix_reuse = prefix_reuse
        self.batch_size = batch_size
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_path))
        self.model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=getattr(torch, dtype)).to(device)
        self.model.eval()
        self.yes_ids, self.no_ids = answer_token_ids(self.tokenizer)
        if self.tokenizer.pad_token_id is None:  # batches of full prompts are padded by the tokenizer itself
            self.tokenizer.pad_token_id = self.tokenizer.eos_token_id or 0
        self.tokenizer.padding_side = "left"
        self.prompt_tokens = 0  # tokens actually run through the model (for speed accounting)
        self.context = context_limit(self.tokenizer, self.model.config)
        self.stats = {"prompts": 0, "prompts_cut": 0}

    def describe(self) -> str:
        return f"hf:{self.model_id} (prompt {self.template.name}, prefix reuse {'on' if self.prefix_reuse else 'off'})"

    # -- prompts -------------------------------------------------------------------------------------------
    def render(self, pair: Pair) -> str:
        return prompt_text(self.template, pair, self.chat_format, self.tokenizer)

    def encode(self, pair: Pair) -> list[int]:
        """The prompt's ids, the document cut by tokens where the prompt would overflow the context."""
        self.stats["prompts"] += 1
        return fit_context(
            lambda p: encode_prompt(self.tokenizer, self.render(p)), pair, self.context, self.tokenizer, self.stats
        )

    # -- scoring -------------------------------------------------------------------------------------------
    def _read(self, logits) -> list[Judgment]:
        torch = self.torch
        logp = torch.log_softmax(logits.float(), dim=-1)
        ly = torch.logsumexp(logp[:, self.yes_ids], dim=-1)
        ln = torch.logsumexp(logp[:, self.no_ids], dim=-1)
        p_yes = torch.sigmoid(ly - ln)
        mass = ly.exp() + ln.exp()
        return [Judgment(float(a), float(b)) for a, b in zip(p_yes, mass)]

    def _full(self, seqs: list[list[int]]) -> list[Judgment]:
        """No reuse: left-padded full prompts, logits of the last position only."""
        batch = self.tokenizer.pad({"input_ids": seqs}, padding=True, return_tensors="pt")  # left (set in __init__)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        self.prompt_tokens += sum(len(s) for s in seqs)
        out = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=pos.to(self.device),
            logits_to_keep=1,
            use_cache=False,
        )
        return self._read(out.logits[:, -1, :])

    def _with_prefix(self, seqs: list[list[int]]) -> list[Judgment]:
        """Run the shared prefix once, then the suffixes packed into one sequence against its KV cache.

        Packed, not padded: a batch of ``batch_size`` suffixes is one row of their tokens end to end, each token at
        its own position (prefix length + offset in its suffix) and a 4D mask letting it see the whole prefix and
        the earlier tokens of its own suffix only. The logits are those of padded batches (to float rounding), but
        no pad token is run: under teacher.describe both a document's suffixes differ in length by the label
        descriptions, and padding each to the longest ran about twice their tokens. The prefix's cache is not
        repeated per suffix either (one copy a batch)."""
        torch = self.torch
        P = min(_common_prefix_len(seqs), min(len(s) for s in seqs) - 1)
        if P < 8:
            return self._full(seqs)
        dev = self.device
        prefix = torch.tensor([seqs[0][:P]], device=dev)
        out = self.model(input_ids=prefix, use_cache=True, logits_to_keep=1)
        prefix_cache = out.cache if _new_cache_api() else out.past_key_values
        self.prompt_tokens += P
        dtype = self.model.dtype
        results: list[Judgment] = []
        for start in range(0, len(seqs), self.batch_size):
            chunk = [s[P:] for s in seqs[start : start + self.batch_size]]
            lens = torch.tensor([len(s) for s in chunk])
            T = int(lens.sum())
            ids = torch.tensor([[t for s in chunk for t in s]], dtype=torch.long)
            seg = torch.repeat_interleave(torch.arange(len(chunk)), lens)  # (T,) which suffix each token is of
            off = torch.cat([torch.arange(int(n)) for n in lens])  # (T,) its offset in that suffix
            own = (seg[:, None] == seg[None, :]) & (off[None, :] <= off[:, None])  # (T, T) causal within a suffix
            see = torch.cat([torch.ones((T, P), dtype=torch.bool), own], dim=1)  # every query sees the prefix
            mask = torch.zeros((1, 1, T, P + T), dtype=dtype).masked_fill(~see, torch.finfo(dtype).min)
            self.prompt_tokens += T
            h = self.model.base_model(
                input_ids=ids.to(dev),
                attention_mask=mask.to(dev),
                position_ids=(P + off)[None].to(dev),
                use_cache=True,
                **{("cache" if _new_cache_api() else "past_key_values"): copy.deepcopy(prefix_cache)},
            ).last_hidden_state  # (1, T, H)
            hl = h[0, (torch.cumsum(lens, 0) - 1).to(dev)]  # (B, H): each suffix's last token
            results.extend(self._read(self.model.get_output_embeddings()(hl)))
        return results

    def score(self, pairs: Sequence[Pair]) -> list[Judgment]:
        torch = self.torch
        results: list[Judgment] = []
        with torch.inference_mode():
            # pairs arrive grouped by document; keep the order
            for _, group in itertools.groupby(pairs, key=lambda p: p.doc_id):
                seqs = [self.encode(p) for p in group]
                if self.prefix_reuse and len(seqs) > 1:
                    results.extend(self._with_prefix(seqs))
                else:
                    for i in range(0, len(seqs), self.batch_size):
                        results.extend(self._full(seqs[i : i + self.batch_size]))
        if len(results) != len(pairs):
            raise TeacherError("internal: result count mismatch")
        return results


@functools.lru_cache(maxsize=None)
def _new_cache_api() -> bool:
    """transformers >= 5.24 names the KV cache ``cache`` (``past_key_values`` warns, and goes in 5.40); the
    floor release (4.56) knows only ``past_key_values``."""
    try:
        from transformers.modeling_outputs import BaseModelOutputWithPast
    except ImportError:
        return False
    return "cache" in getattr(BaseModelOutputWithPast, "__dataclass_fields__", {})
