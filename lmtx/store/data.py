"""Load and validate documents and labels from JSONL, CSV or Parquet.

Documents: ``id``, ``text``, optional gold ``labels`` (a list; in CSV a ``|``-separated string).
Labels: ``id``, ``name``, optional ``description`` (the name is used where it is missing).
Also the Extreme Classification Repository's raw-text layout, as its LF-* datasets ship (LF-Amazon-131K,
LF-Wikipedia-500K): ``trn.json.gz`` / ``tst.json.gz`` lines with ``uid``, ``title``, ``content`` and
``target_ind`` (positions in ``lbl.json.gz``, which lies beside them), and ``lbl.json.gz`` lines with ``uid``,
``title``, ``content`` (the label's name and description). Read as they are downloaded; see ``xc_doc``.
Every error names the file, the line (or row) and the field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator


class DataError(ValueError):
    pass


@dataclass
class Doc:
    id: str
    text: str
    labels: list[str] | None = None  # gold, for evaluation only; never used to train
    split: str | None = None  # optional, e.g. dev / test (``--split`` filters on it)


@dataclass
class Label:
    id: str
    name: str
    description: str = ""

    def text(self, mode: str = "description") -> str:
        """The text that the encoder embeds for this label."""
        if mode == "name":
            return self.name
        if mode == "name+description":  # the name once: not repeated when the description already says it
            if not self.description:
                return self.name
            if self.name.lower() in self.description.lower():
                return self.description
            return f"{self.name}: {self.description}"
        return self.description or self.name


@dataclass
class LabelSet:
    labels: list[Label]
    index: dict[str, int] = field(init=False)
    ids: list[str] = field(init=False, repr=False)  # label ids by position (built once: 783k labels are common)

    def __post_init__(self):
        self.index = {l.id: i for i, l in enumerate(self.labels)}
        self.ids = [l.id for l in self.labels]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i: int) -> Label:
        return self.labels[i]


FORMATS = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def _format(path: Path) -> str:
    suffixes = [x.lower() for x in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    fmt = FORMATS.get(suffixes[-1] if suffixes else "")
    if fmt is None:
        raise DataError(
            f"{path}: unsupported file type {path.suffix!r}; use .jsonl, .csv or .parquet "
            f"(.jsonl and .csv may be gzipped: .jsonl.gz)"
        )
    if fmt == "parquet" and path.suffix.lower() == ".gz":
        raise DataError(f"{path}: Parquet is compressed inside; give the .parquet file itself")
    return fmt


def _open_bytes(path: Path):
    if path.suffix.lower() == ".gz":
        import gzip

        return gzip.open(path, "rb")
    return open(path, "rb")


def iter_records(path: str | Path, chunk_rows: int = 10_000) -> Iterator[tuple[str, dict]]:
    """Yield (where, record) with where = 'FILE:line N' (JSONL, CSV) or 'FILE:row N' (Parquet). Streams."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a file (a directory?)")
    fmt = _format(path)
    if fmt == "jsonl":
        import gzip
        import zlib

        n = 0
        try:
            with _open_bytes(path) as f:
                for n, raw in enumerate(f, 1):  # bytes, decoded per line: a bad byte is reported at its line
                    try:
                        line = raw.decode("utf-8")
                    except UnicodeDecodeError as e:
                        raise DataError(
                            f"{path}:{n}: not UTF-8 text (byte {raw[e.start : e.start + 1]!r} at column "
                            f"{e.start + 1}); convert the file to UTF-8"
                        ) from None
                    if not line.strip():
                        continue
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise DataError(f"{path}:{n}: bad JSON ({e.msg} at column {e.colno})") from None
                    if not isinstance(rec, dict):
                        raise DataError(f"{path}:{n}: expected a JSON object, got {type(rec).__name__}")
                    yield f"{path}:{n}", rec
        except (gzip.BadGzipFile, EOFError, zlib.error) as e:
            raise DataError(f"{path}: broken gzip file after line {n} ({e})") from None
    elif fmt == "csv":
        import pandas as pd

        row = 0
        try:
            reader = pd.read_csv(path, dtype=str, keep_default_na=False, chunksize=chunk_rows, encoding="utf-8")
            for chunk in reader:
                for rec in chunk.to_dict("records"):
                    row += 1
                    yield f"{path}:{row + 1}", rec  # line numbers count the header
        except pd.errors.ParserError as e:
            raise DataError(f"{path}: bad CSV: {e}") from None
        except pd.errors.EmptyDataError:
            raise DataError(f"{path}: empty CSV file (no header)") from None
        except UnicodeDecodeError:
            raise DataError(f"{path}: near line {row + 2}: not UTF-8 text; convert the file to UTF-8") from None
    else:
        import pyarrow.parquet as pq

        row = 0
        try:
            pf = pq.ParquetFile(path)
        except Exception as e:  # pyarrow raises ArrowInvalid / OSError for a file that is not Parquet
            raise DataError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e})") from None
        for batch in pf.iter_batches(batch_size=chunk_rows):
            for rec in batch.to_pylist():
                row += 1
                yield f"{path}:row {row}", rec


def _columns_check(path: Path, rec: dict, required: tuple[str, ...], where: str):
    missing = [c for c in required if c not in rec]
    if missing:
        raise DataError(f"{where}: missing field(s) {missing} (found: {sorted(rec)})")


def _str_field(rec: dict, name: str, where: str, required: bool = True, ints: bool = True) -> str:
    """A text field; ``ints``: an integer is accepted (ids), never a boolean."""
    v = rec.get(name)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        v = ""
    if isinstance(v, bool) or not isinstance(v, (str, int) if ints else str):
        raise DataError(f"{where}: field '{name}' must be a string, got {type(v).__name__} {v!r}"[:200])
    v = str(v).strip()
    if required and not v:
        raise DataError(f"{where}: field '{name}' is empty")
    return v


def _labels_field(rec: dict, where: str) -> list[str] | None:
    if "labels" not in rec:
        return None
    v = rec["labels"]
    if v is None:
        return None
    if isinstance(v, str):
        v = v.strip()
        if v.startswith("["):
            try:
                v = json.loads(v)
            except json.JSONDecodeError:
                raise DataError(f"{where}: field 'labels' is not a valid JSON list") from None
        else:
            v = [x.strip() for x in v.split("|") if x.strip()]
    if hasattr(v, "tolist"):
        v = v.tolist()
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise DataError(f"{where}: field 'labels' must be a list of label ids")
    return v


def parse_doc(where: str, rec: dict) -> Doc:
    _columns_check(Path(where), rec, ("id", "text"), where)
    split = _str_field(rec, "split", where, required=False) or None
    return Doc(
        _str_field(rec, "id", where), _str_field(rec, "text", where, ints=False), _labels_field(rec, where), split
    )


def labels_of(records: Iterable[tuple[str, dict]], source: str = "<labels>") -> LabelSet:
    """A label set from (where, record) pairs, from a file or from memory: ``id``, ``name``, optional
    ``description`` (or an XC ``lbl.json.gz`` line: ``uid``, ``title``, ``content``); a repeated id is refused,
    naming where both are."""
    labels: list[Label] = []
    seen: dict[str, str] = {}
    for where, rec in records:
        if "uid" in rec and "id" not in rec:  # the XC repository's label file
            rec = {"id": rec["uid"], "name": rec.get("title"), "description": rec.get("content")}
        _columns_check(Path(source), rec, ("id", "name"), where)
        lid = _str_field(rec, "id", where)
        if lid in seen:
            raise DataError(f"{where}: field 'id': duplicate label id {lid!r} (first at {seen[lid]})")
        seen[lid] = where
        labels.append(
            Label(
                lid,
                _str_field(rec, "name", where, ints=False),
                _str_field(rec, "description", where, required=False, ints=False),
            )
        )
    if not labels:
        raise DataError(f"{source}: no labels")
    return LabelSet(labels)


def load_labels(path: str | Path) -> LabelSet:
    return labels_of(iter_records(path), str(path))


def iter_docs(path: str | Path, chunk_rows: int = 10_000) -> Iterator[tuple[str, Doc]]:
    """(where, document) for every record of a documents file, streamed; an id seen earlier in the file is refused
    (file:line of both). A file in the XC repository's layout is read as ``xc_doc`` says."""
    records = iter_records(path, chunk_rows=chunk_rows)
    first = next(records, None)
    if first is None:
        return iter(())
    import itertools

    records = itertools.chain([first], records)
    if is_xc_record(first[1]):
        records = _xc_docs(Path(path), records)
    return docs_of(records)


def is_xc_record(rec: dict) -> bool:
    """A record in the XC repository's raw-text layout (uid, title, content) rather than lmtx's (id, text)."""
    return "uid" in rec and "id" not in rec and "text" not in rec


XC_LABEL_FILES = ("lbl.json.gz", "lbl.json")


def xc_label_ids(path: Path) -> list[str]:
    """The uids of the label file beside an XC documents file, by line position (what ``target_ind`` counts)."""
    for name in XC_LABEL_FILES:
        lbl = path.parent / name
        if lbl.is_file():
            return [_str_field(rec, "uid", where) for where, rec in iter_records(lbl)]
    raise DataError(
        f"{path}: documents in the XC repository's layout (uid, title, content, target_ind) need the label file "
        f"{XC_LABEL_FILES[0]} beside them: target_ind counts its lines"
    )


def xc_doc(where: str, rec: dict, label_ids: list[str] | None) -> dict:
    """One XC line as an lmtx document record: id = uid; text = title and content (each when not empty, on two
    lines, as the LF-* papers read them); labels = the uids of lbl.json.gz's lines at ``target_ind``."""
    title = _str_field(rec, "title", where, required=False, ints=False)
    content = _str_field(rec, "content", where, required=False, ints=False)
    out = {"id": rec["uid"], "text": "\n".join(x for x in (title, content) if x)}
    tind = rec.get("target_ind")
    if tind is not None and label_ids is not None:
        if hasattr(tind, "tolist"):
            tind = tind.tolist()
        if not isinstance(tind, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in tind):
            raise DataError(f"{where}: field 'target_ind' must be a list of label positions (integers)")
        bad = [i for i in tind if not 0 <= i < len(label_ids)]
        if bad:
            raise DataError(
                f"{where}: field 'target_ind': position(s) {bad[:5]} outside the label file's {len(label_ids)} lines"
            )
        out["labels"] = [label_ids[i] for i in tind]
    return out


def _xc_docs(path: Path, records: Iterable[tuple[str, dict]]) -> Iterator[tuple[str, dict]]:
    """XC records as lmtx records. The LF-* training files repeat some uids (one product listed twice): a repeated
    uid gets its line appended (``uid@LINE``), so every document keeps its own gold labels."""
    label_ids = None
    seen: set[str] = set()
    for where, rec in records:
        if not is_xc_record(rec):
            _columns_check(path, rec, ("uid", "title", "content"), where)
        if label_ids is None and rec.get("target_ind") is not None:
            label_ids = xc_label_ids(path)
        out = xc_doc(where, rec, label_ids)
        uid = str(out["id"])
        if uid in seen:
            out["id"] = f"{uid}@{where.rsplit(':', 1)[-1]}"
        seen.add(uid)
        yield where, out


def docs_of(records: Iterable[tuple[str, dict]]) -> Iterator[tuple[str, Doc]]:
    """(where, document) for (where, record) pairs, from a file or from memory; a repeated id is refused, naming
    where both are."""
    seen: dict[str, str] = {}
    for where, rec in records:
        d = parse_doc(where, rec)
        if d.id in seen:
            raise DataError(f"{where}: field 'id': duplicate document id {d.id!r} (first at {seen[d.id]})")
        seen[d.id] = where
        yield where, d


def stable_key(*parts: str) -> int:
    """The one stable hash behind lmtx's fixed samples (the guard's documents, the per-round eval sample), tag
    shards and replica choice: md5 of the parts joined by NUL, its first 8 bytes big-endian. The same on every
    machine and run."""
    import hashlib

    return int.from_bytes(hashlib.md5("\x00".join(parts).encode()).digest()[:8], "big")


def load_docs(
    path: str | Path, labels: LabelSet | None = None, limit: int | None = None, split: str | None = None
) -> list[Doc]:
    docs: list[Doc] = []
    for where, d in iter_docs(path):
        if split is not None and d.split != split:
            continue
        if labels is not None and d.labels:
            unknown = [l for l in d.labels if l not in labels.index]
            if unknown:
                raise DataError(f"{where}: field 'labels': unknown label id(s) {unknown[:5]}")
        docs.append(d)
        if limit and len(docs) >= limit:
            break
    if not docs:
        raise DataError(f"{path}: no documents" + (f" in split {split!r}" if split else ""))
    return docs


def gold_of(docs: list[Doc]) -> dict[str, set[str]]:
    return {d.id: set(d.labels) for d in docs if d.labels}
