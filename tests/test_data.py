import json

import pandas as pd
import pytest

from lmtx.store.data import DataError, load_docs, load_labels


def write(p, lines):
    p.write_text("\n".join(lines) + "\n")
    return p


@pytest.fixture()
def labels(tmp_path):
    return write(
        tmp_path / "labels.jsonl",
        [json.dumps({"id": "a", "name": "A", "description": "about a"}), json.dumps({"id": "b", "name": "B"})],
    )


def test_loads_jsonl_csv_parquet(tmp_path, labels):
    ls = load_labels(labels)
    assert ls.ids == ["a", "b"] and ls[1].text() == "B"
    rows = [{"id": "1", "text": "hello", "labels": ["a"]}, {"id": "2", "text": "world", "labels": ["a", "b"]}]
    j = write(tmp_path / "d.jsonl", [json.dumps(r) for r in rows])
    c = tmp_path / "d.csv"
    pd.DataFrame([{**r, "labels": "|".join(r["labels"])} for r in rows]).to_csv(c, index=False)
    q = tmp_path / "d.parquet"
    pd.DataFrame(rows).to_parquet(q)
    for p in (j, c, q):
        docs = load_docs(p, ls)
        assert [d.id for d in docs] == ["1", "2"] and docs[1].labels == ["a", "b"], p


@pytest.mark.parametrize(
    "lines,msg",
    [
        (['{"id": "1", "text": "x"}', '{"id": "1", "text": "y"}'], r"d.jsonl:2: field 'id': duplicate document id '1'"),
        (['{"id": "1", "text": "x"}', '{"id": "2", "text": "  "}'], r"d.jsonl:2: field 'text' is empty"),
        (
            ['{"id": "1", "text": "x"}', '{"id": "2", "text": "x", "labels": ["zz"]}'],
            r"d.jsonl:2: field 'labels': unknown label id",
        ),
        (['{"id": "1", "text": "x"}', '{"id": "2", "text": '], r"d.jsonl:2: bad JSON"),
        (['{"id": "1", "body": "x"}'], r"d.jsonl:1: missing field\(s\) \['text'\]"),
    ],
)
def test_bad_docs_name_file_line_field(tmp_path, labels, lines, msg):
    p = write(tmp_path / "d.jsonl", lines)
    with pytest.raises(DataError, match=msg):
        load_docs(p, load_labels(labels))


def test_bad_csv_labels(tmp_path):
    p = tmp_path / "l.csv"
    p.write_text("id,title\na,A\n")
    with pytest.raises(DataError, match=r"l.csv:2: missing field\(s\) \['name'\]"):
        load_labels(p)
    p.write_text("id,name\na,A\na,B\n")
    with pytest.raises(DataError, match=r"l.csv:3: field 'id': duplicate label id 'a' \(first at .*l.csv:2\)"):
        load_labels(p)


def test_unsupported_and_missing(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_docs(tmp_path / "nope.jsonl")
    p = write(tmp_path / "d.txt", ["x"])
    with pytest.raises(DataError, match="unsupported file type"):
        load_docs(p)
