"""Offline weight assets: the registry is consistent and archives unpack safely (no download here)."""
import hashlib
import zipfile

import pytest

from lmtx.assets import ASSETS, AssetError, _check, _unzip, get_asset


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
