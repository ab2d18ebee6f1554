"""The local teacher's suffixes packed or padded: seconds and tokens for the same prompts, and how far the answers
differ.

    python benchmarks/teacher_packing.py [--docs 40] [--repeats 2] [--teacher qwen0.5b]

With prefix reuse (the default) the local (transformers) teacher runs a document's shared prompt prefix once and
then the short suffixes (label, question, assistant header). Until 2026-12-06 the suffixes ran as a padded batch
(each padded to the longest) against a copy of the prefix's cache per suffix; now they run packed, one sequence
end to end with a mask that keeps each suffix to itself and the prefix (lmtx.teacher.hf). Under teacher.describe
both (the default) a document's suffixes are its candidates with and without their descriptions, so their lengths
differ most there.

Two prompt sets, the pairs `lmtx iterate` asks in round 1:

* sample: the bundled sample's first --docs documents x the initial encoder's top 5 labels, prompt paper-desc (the
  default job's prompts);
* pypi-sources: the first --docs documents of benchmarks/answers/pypi-describe-pairs.jsonl.gz (q05-fresh's
  round-1 candidates at 783,728 labels), prompt sources.

Each in the forms yes (one prompt a pair) and both (two), each way --repeats times, padded and packed alternating
(one process, one after the other: the ratio is measured in the same run). No answer cache: every prompt is run.
Writes benchmarks/results/teacher_packing.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lmtx.store.data import load_docs, load_labels  # noqa: E402
from lmtx.teacher.base import Judgment, Pair  # noqa: E402
from lmtx.teacher.cache import _grouped, describe_forms  # noqa: E402
from lmtx.teacher.hf import HFTeacher, _common_prefix_len, _new_cache_api  # noqa: E402
from lmtx.teacher.prompts import load_template  # noqa: E402
from lmtx.teacher.registry import make_teacher  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "teacher_packing"


def padded_with_prefix(self: HFTeacher, seqs: list[list[int]]) -> list[Judgment]:
    """lmtx's suffix batches before packing (kept here as the reference): each suffix padded to the longest of its
    batch, the prefix's cache repeated once per suffix."""
    torch = self.torch
    P = min(_common_prefix_len(seqs), min(len(s) for s in seqs) - 1)
    if P < 8:
        return self._full(seqs)
    dev = self.device
    out = self.model(input_ids=torch.tensor([seqs[0][:P]], device=dev), use_cache=True, logits_to_keep=1)
    prefix_cache = out.cache if _new_cache_api() else out.past_key_values
    self.prompt_tokens += P
    results: list[Judgment] = []
    for start in range(0, len(seqs), self.batch_size):
        chunk = [s[P:] for s in seqs[start : start + self.batch_size]]
        B, L = len(chunk), max(len(s) for s in chunk)
        ids = torch.full((B, L), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((B, P + L), dtype=torch.long)
        mask[:, :P] = 1
        for i, s in enumerate(chunk):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, P : P + len(s)] = 1
        self.prompt_tokens += B * L  # tokens run, pads included
        cache = copy.deepcopy(prefix_cache)
        if B > 1:
            cache.batch_repeat_interleave(B)
        h = self.model.base_model(
            input_ids=ids.to(dev),
            attention_mask=mask.to(dev),
            use_cache=True,
            **{("cache" if _new_cache_api() else "past_key_values"): cache},
        ).last_hidden_state
        hl = h[torch.arange(B, device=dev), torch.tensor([len(s) - 1 for s in chunk], device=dev)]
        results.extend(self._read(self.model.get_output_embeddings()(hl)))
    return results


def sample_pairs(n_docs: int) -> list[Pair]:
    from lmtx.evaluation.teacher_eval import candidate_pairs
    from lmtx.search.encoder import load_encoder

    labels = load_labels(ROOT / "data" / "sample" / "labels.jsonl")
    docs = load_docs(ROOT / "data" / "sample" / "docs.jsonl", labels)[:n_docs]
    pairs, _ = candidate_pairs(load_encoder("all-MiniLM-L6-v2"), docs, labels, 5, cache_for=None)
    return pairs


def pypi_pairs(n_docs: int) -> list[Pair]:
    bench = ROOT.parent / "shared" / "benchmarks" / "pypi-sources"
    rows = [json.loads(x) for x in gzip.open(ROOT / "benchmarks" / "answers" / "pypi-describe-pairs.jsonl.gz", "rt")]
    keep = set(list(dict.fromkeys(r["doc_id"] for r in rows))[:n_docs])
    rows = [r for r in rows if r["doc_id"] in keep]
    want = {r["label_id"] for r in rows}
    labels = {lab.id: lab for lab in load_labels(bench / "labels.jsonl.gz").labels if lab.id in want}
    docs = {d["id"]: d for d in map(json.loads, open(bench / "docs.jsonl"))}
    return [
        Pair(
            r["doc_id"],
            docs[r["doc_id"]]["text"],
            r["label_id"],
            labels[r["label_id"]].name,
            labels[r["label_id"]].description,
        )
        for r in rows
    ]


def timed(t: HFTeacher, prompts: list[Pair], packed: bool) -> tuple[float, int, np.ndarray]:
    t.prompt_tokens = 0
    t._with_prefix = (
        (lambda seqs: HFTeacher._with_prefix(t, seqs)) if packed else (lambda seqs: padded_with_prefix(t, seqs))
    )
    t0 = time.perf_counter()
    got = t.score(prompts)
    return time.perf_counter() - t0, t.prompt_tokens, np.array([a.p_yes for a in got])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--teacher", default="qwen0.5b")
    a = ap.parse_args()
    import torch

    rows = []
    for name, prompt, get in (("sample", "paper-desc", sample_pairs), ("pypi-sources", "sources", pypi_pairs)):
        tpl = load_template(prompt)
        t = make_teacher(a.teacher, tpl, threads=torch.get_num_threads(), progress=None)
        pairs = get(a.docs)
        for form in ("yes", "both"):
            forms = describe_forms(pairs, form, tpl)
            prompts = forms[0] if len(forms) == 1 else _grouped(forms)
            timed(t, prompts[:10], True)  # warm-up
            secs = {"padded": [], "packed": []}
            toks, p = {}, {}
            for _ in range(a.repeats):
                for way in ("padded", "packed"):
                    s, n, py = timed(t, prompts, way == "packed")
                    secs[way].append(round(s, 2))
                    toks[way], p[way] = n, py
            row = {
                "prompts": name,
                "template": prompt,
                "describe": form,
                "documents": len({q.doc_id for q in prompts}),
                "prompts_run": len(prompts),
                "tokens_padded": toks["padded"],
                "tokens_packed": toks["packed"],
                "seconds_padded": secs["padded"],
                "seconds_packed": secs["packed"],
                "speedup": round(min(secs["padded"]) / min(secs["packed"]), 2),
                "max_abs_p_yes_diff": float(np.abs(p["padded"] - p["packed"]).max()),
                "threads": torch.get_num_threads(),
                "teacher": t.model_id,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    lines = [
        "# The local teacher's suffixes: padded batches against one packed sequence",
        "",
        "Written by `python benchmarks/teacher_packing.py`: the same prompts through the transformers teacher with "
        "prefix reuse, suffixes padded (lmtx before 2026-12-06) and packed (now), alternating in one process on "
        "one 2-core host; seconds of each repeat, speedup = best padded / best packed; tokens = tokens run through "
        "the model (prefixes once a document, pads included). Answers differ only by float rounding "
        "(max |P(yes) difference|).",
        "",
        "| prompts | template | describe | documents | prompts run | tokens padded | tokens packed | seconds padded "
        "| seconds packed | speedup | max abs P(yes) diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['prompts']} | {r['template']} | {r['describe']} | {r['documents']} | {r['prompts_run']} | "
            f"{r['tokens_padded']:,} | {r['tokens_packed']:,} | {' / '.join(map(str, r['seconds_padded']))} | "
            f"{' / '.join(map(str, r['seconds_packed']))} | {r['speedup']:.2f} | {r['max_abs_p_yes_diff']:.1e} |"
        )
    lines += ["", f"Teacher: {rows[0]['teacher']}, {rows[0]['threads']} torch threads."]
    OUT.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
