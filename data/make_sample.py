"""Rebuild data/sample/ from the debtags benchmark (../shared/benchmarks/debtags).

train docs: 300 'dev' documents (gold kept, for evaluation only); eval docs: 600 'test' documents;
labels: all 411 tags (the ones the sample uses plus the rest as distractors). Chosen by md5 of the id.
"""

import hashlib
import json
import sys
from pathlib import Path

src = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared/benchmarks/debtags")
out = Path(__file__).resolve().parent / "sample"
out.mkdir(exist_ok=True)
docs = [json.loads(l) for l in open(src / "docs.jsonl")]
key = lambda d: hashlib.md5(d["id"].encode()).hexdigest()
dev = sorted((d for d in docs if d["split"] == "dev"), key=key)[:300]
test = sorted((d for d in docs if d["split"] == "test"), key=key)[:600]
for name, part in (("docs.jsonl", dev), ("eval.jsonl", test)):
    with open(out / name, "w") as f:
        for d in sorted(part, key=lambda d: d["id"]):
            f.write(json.dumps({"id": d["id"], "text": d["text"], "labels": d["labels"]}) + "\n")
with open(out / "labels.jsonl", "w") as f:
    for l in map(json.loads, open(src / "labels.jsonl")):
        f.write(json.dumps({"id": l["id"], "name": l["name"], "description": l["description"]}) + "\n")
print(f"{len(dev)} train docs, {len(test)} eval docs -> {out}")
