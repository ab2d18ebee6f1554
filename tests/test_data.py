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


def _xc_write(path, rows):
    import gzip

    with gzip.open(path, "wt", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


@pytest.fixture
def xc_dir(tmp_path):
    """A few lines in the Extreme Classification Repository's raw-text layout (LF-Amazon-131K as downloaded)."""
    d = tmp_path / "LF-Tiny-3"
    d.mkdir()
    _xc_write(
        d / "lbl.json.gz",
        [
            {"uid": "B001", "title": "Ballet tutu", "content": ""},
            {"uid": "B002", "title": "Dance shoes", "content": "Leather shoes for ballet"},
            {"uid": "B003", "title": "Hair clips", "content": ""},
        ],
    )
    _xc_write(
        d / "trn.json.gz",
        [
            {
                "uid": "0001",
                "title": "Girls Ballet Tutu Neon Pink",
                "content": "3 layer tutu",
                "target_ind": [0, 1],
                "target_rel": [1.0, 1.0],
            },
            {"uid": "0002", "title": "Adult Ballet Slippers", "content": "", "target_ind": [1], "target_rel": [1.0]},
            {
                "uid": "0001",
                "title": "Girls Ballet Tutu Neon Pink",
                "content": "",
                "target_ind": [0],
                "target_rel": [1.0],
            },
        ],
    )
    return d


def test_xc_repository_layout_reads_as_downloaded(xc_dir):
    from lmtx.store.data import load_docs, load_labels

    ls = load_labels(xc_dir / "lbl.json.gz")
    assert ls.ids == ["B001", "B002", "B003"]
    assert (ls[1].name, ls[1].description, ls[0].description) == ("Dance shoes", "Leather shoes for ballet", "")
    docs = load_docs(xc_dir / "trn.json.gz", ls)
    assert [d.id for d in docs] == ["0001", "0002", "0001@3"]  # a repeated uid keeps its own gold, named by line
    assert docs[0].text == "Girls Ballet Tutu Neon Pink\n3 layer tutu" and docs[1].text == "Adult Ballet Slippers"
    assert [d.labels for d in docs] == [["B001", "B002"], ["B002"], ["B001"]]


def test_xc_layout_errors_name_file_line_field(xc_dir):
    from lmtx.store.data import load_docs

    _xc_write(xc_dir / "tst.json.gz", [{"uid": "9", "title": "x", "content": "", "target_ind": [0, 7]}])
    with pytest.raises(DataError, match=r"tst.json.gz:1: field 'target_ind': position\(s\) \[7\] outside .* 3 lines"):
        load_docs(xc_dir / "tst.json.gz")
    _xc_write(xc_dir / "tst.json.gz", [{"uid": "9", "title": "", "content": "", "target_ind": [0]}])
    with pytest.raises(DataError, match=r"tst.json.gz:1: field 'text' is empty"):
        load_docs(xc_dir / "tst.json.gz")
    (xc_dir / "lbl.json.gz").unlink()
    _xc_write(xc_dir / "tst.json.gz", [{"uid": "9", "title": "x", "content": "", "target_ind": [0]}])
    with pytest.raises(DataError, match=r"need the label file lbl.json.gz beside them"):
        load_docs(xc_dir / "tst.json.gz")


def test_xc_layout_through_lmtx_evaluate(xc_dir, tmp_path):
    """A researcher points lmtx at the files as downloaded: evaluate reads docs, gold and labels from them."""
    from typer.testing import CliRunner

    from lmtx.cli import app

    out = tmp_path / "m.json"
    args = ["evaluate", "--baseline", "bm25", "--docs", str(xc_dir / "trn.json.gz")]
    r = CliRunner().invoke(app, args + ["--labels", str(xc_dir / "lbl.json.gz"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    m = json.loads(out.read_text())
    assert m["n_docs"] == 3 and m["P@1"] >= 1 / 3  # "Girls Ballet Tutu" finds the tutu, a gold label of its own
