"""Tiny models built from configs (random weights): fast, offline. Quality is never measured with them."""

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"

WORDS = """document is the tag relevant to answer yes or no a an of and for in on with to by from this that
package game games audio sound video image text editor library tool server client network web mail file
system data database science math font fonts python perl java c documentation development debug shell
player music graphics plugin desktop terminal strategy puzzle kernel driver hardware security test""".split()


def _word_tokenizer(path: Path, extra_words=()):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<s>", "</s>", "<|user|>", "<|assistant|>"]
    vocab = {t: i for i, t in enumerate(specials + sorted(set(WORDS) | set(extra_words)) + list(".,:;\"'?!()=-/"))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        bos_token="<s>",
        eos_token="</s>",
    )


def build_tiny_encoder(d: Path) -> str:
    """A 2-layer, 32-d BERT sentence-transformer (random weights) saved as an ST folder under d."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    hf = d / "hf"
    tok = _word_tokenizer(hf)
    cfg = BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
    )
    BertModel(cfg).save_pretrained(hf)
    tok.save_pretrained(hf)
    t = models.Transformer(str(hf), max_seq_length=128)
    st = SentenceTransformer(modules=[t, models.Pooling(32, "mean")], device="cpu")
    st.save(str(d / "st"))
    return str(d / "st")


def build_tiny_teacher(d: Path) -> str:
    """A 2-layer Llama causal LM (random weights) with a chat template, saved as a HF folder d."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = _word_tokenizer(d)
    tok.chat_template = (
        "{% for m in messages %}<|user|> {{ m['content'] }} </s>{% endfor %}"
        "{% if add_generation_prompt %} <|assistant|>{% endif %}"
    )
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=1024,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
    )
    LlamaForCausalLM(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return str(d)


def write_small_data(d: Path) -> dict:
    """40 real sample docs, their labels plus distractors (60 labels), and 40 eval docs, as jsonl files in d."""
    labels = [json.loads(l) for l in open(SAMPLE / "labels.jsonl")]
    docs = [json.loads(l) for l in open(SAMPLE / "docs.jsonl")][:40]
    ev = [json.loads(l) for l in open(SAMPLE / "eval.jsonl")][:40]
    used = {l for d in docs + ev for l in d["labels"]}
    keep = [l for l in labels if l["id"] in used]
    keep += [l for l in labels if l["id"] not in used][: max(0, 60 - len(keep))]
    ids = {l["id"] for l in keep}
    out = {}
    for name, rows in (("docs", docs), ("eval", ev)):
        p = d / f"{name}.jsonl"
        p.write_text("".join(json.dumps({**x, "labels": [y for y in x["labels"] if y in ids]}) + "\n" for x in rows))
        out[name] = str(p)
    p = d / "labels.jsonl"
    p.write_text("".join(json.dumps(l) + "\n" for l in keep))
    out["labels"] = str(p)
    return out


def sim_config(small_data, enc, rounds, name="simulated:0", **kw):
    """A run config over write_small_data's files with encoder ``enc`` (sections as dicts in kw)."""
    from lmtx import config as c

    return c.RunConfig(
        encoder=c.EncoderConfig(model=enc),
        retrieval=c.RetrievalConfig(**kw.pop("retrieval", {})),
        teacher=c.TeacherConfig(name=name, **kw.pop("teacher", {})),
        select=c.SelectConfig(**kw.pop("select", {})),
        train=c.TrainConfig(batch_size=8, **kw.pop("train", {})),
        loop=c.LoopConfig(
            rounds=rounds,
            docs=small_data["docs"],
            labels=small_data["labels"],
            eval_docs=small_data["eval"],
            **kw.pop("loop", {}),
        ),
    )


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> str:
    return build_tiny_encoder(tmp_path_factory.mktemp("enc"))


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory) -> str:
    return build_tiny_teacher(tmp_path_factory.mktemp("teacher"))


@pytest.fixture()
def small_data(tmp_path) -> dict:
    return write_small_data(tmp_path)


@pytest.fixture(autouse=True)
def _quiet(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if "LMTX_HOME" not in os.environ:
        monkeypatch.setenv("LMTX_HOME", str(ROOT / ".lmtx"))
