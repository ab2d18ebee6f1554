"""Offline weight assets: the registry is consistent and archives unpack safely (no download here)."""

import hashlib
import zipfile

import pytest

from lmtx.store.assets import ASSETS, AssetError, _check, _unzip, get_asset


def test_every_asset_records_a_sha256_for_what_it_produces():
    for a in ASSETS.values():
        assert a.sha256, a.name
        if a.parts:
            assert a.joined in a.sha256, a.name
            assert len(a.parts) == len(a.packages), a.name
        for rel, digest in a.sha256.items():
            assert len(digest) == 64 and int(digest, 16) >= 0, (a.name, rel)
    with pytest.raises(AssetError, match="unknown asset"):
        get_asset("no-such-model")


def test_unzip_takes_the_prefixed_files_only(tmp_path):
    archive = tmp_path / "m.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("model/config.json", "{}")
        z.writestr("model/1_Pooling/config.json", '{"a": 1}')
        z.writestr("model/desktop.ini", "junk")
        z.writestr("model/../evil.txt", "escape")
        z.writestr("other/file.txt", "not ours")
    out = tmp_path / "out"
    out.mkdir()
    _unzip(archive, "model/", out)
    got = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert got == ["1_Pooling/config.json", "config.json"]
    assert not (tmp_path / "evil.txt").exists()


def test_sha256_mismatch_is_refused(tmp_path):
    (tmp_path / "w.bin").write_bytes(b"weights")
    _check("x", tmp_path, "w.bin", hashlib.sha256(b"weights").hexdigest())
    with pytest.raises(AssetError, match="sha256 mismatch for w.bin"):
        _check("x", tmp_path, "w.bin", "0" * 64)


def test_a_fetched_asset_is_checked_again_on_every_load(tmp_path, monkeypatch):
    """Flipped bytes in a fetched (or dequantized) asset are caught when it is next loaded, naming the file and
    how to refetch; an intact folder loads; a marker of an older lmtx is upgraded, not trusted blindly forever."""
    import lmtx.store.assets as A

    monkeypatch.setenv("LMTX_HOME", str(tmp_path))
    folder = A.asset_dir("all-MiniLM-L6-v2")
    (folder / "1_Pooling").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"\x00" * 1000)
    (folder / "1_Pooling" / "config.json").write_text("{}")
    A.record_folder(folder, ".verified", "test")
    assert A.fetch("all-MiniLM-L6-v2") == folder  # intact: no download, no error
    A._VERIFIED.clear()
    with open(folder / "model.safetensors", "r+b") as f:  # one flipped byte, same size
        f.seek(500)
        f.write(b"\x01")
    with pytest.raises(AssetError, match=r"model.safetensors does not match the sha256.*lmtx fetch all-MiniLM-L6-v2"):
        A.fetch("all-MiniLM-L6-v2")
    (folder / "model.safetensors").unlink()
    with pytest.raises(AssetError, match="is missing"):
        A.fetch("all-MiniLM-L6-v2")
    # an older marker (plain text): recorded now, checked from then on
    (folder / "model.safetensors").write_bytes(b"\x00" * 1000)
    (folder / ".verified").write_text("sha256 checked\n")
    A.fetch("all-MiniLM-L6-v2")
    assert "model.safetensors" in (folder / ".verified").read_text()
    # the dequantized teacher folder has its own record
    hf = A.asset_dir("smollm2-135m") / "hf"
    hf.mkdir(parents=True)
    (hf / "model.safetensors").write_bytes(b"abc")
    A.record_folder(hf, ".complete", "test")
    (hf / "model.safetensors").write_bytes(b"abd")
    A._VERIFIED.clear()
    monkeypatch.setattr(A, "fetch", lambda name, progress=print: A.asset_dir(name))
    with pytest.raises(AssetError, match=r"dequantized.*rebuilt from the verified GGUF"):
        A.hf_folder("smollm2-135m")
