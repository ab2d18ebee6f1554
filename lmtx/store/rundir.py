"""The run folder: layout, atomic writes, manifest.

OUT/config.json            the run's RunConfig (a resumed run must match it)
OUT/manifest.json          finished rounds, teacher, versions
OUT/teacher-cache.sqlite   every teacher answer (shared by rounds and reruns)
OUT/round-00/metrics.json  the initial encoder's metrics (when gold labels exist)
OUT/round-NN/encoder/      the round's encoder, a plain SentenceTransformer folder
OUT/round-NN/candidates.parquet, judgments.parquet (every pair judged so far), guard.parquet, metrics.json
manifest.json also holds best_round (the guard's choice: what evaluate/tag use) and the guard scores
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from ..config import ConfigError, config_diff
from .files import replacing


def read_json(path: Path) -> dict:
    """A run folder's JSON file; a damaged one is a ConfigError naming it (not a traceback)."""
    try:
        return json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(
            f"{path}: not valid JSON ({e}); the run folder is damaged: restore the file or start "
            f"a new run with another --out"
        ) from None


def read_parquet(path: Path):
    """A run folder's Parquet file; a damaged one is a ConfigError naming it."""
    import pandas as pd

    try:
        return pd.read_parquet(path)
    except Exception as e:  # noqa: BLE001 (pyarrow raises several types for a damaged file)
        raise ConfigError(
            f"{path}: not a readable Parquet file ({type(e).__name__}: {str(e)[:120]}); the run "
            f"folder is damaged: remove round folders from this one on to redo them"
        ) from None


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically (a temporary sibling, then a rename)."""
    with replacing(path, f"write:{Path(path).name}") as tmp:
        tmp.write_text(text)


def peak_rss_gb() -> float:
    """Peak resident memory of this process or of its largest finished child (encoding workers), in GiB
    (Linux ru_maxrss is in KiB). Every round's metrics.json records it as `peak_rss_gb`."""
    import resource

    return round(
        max(resource.getrusage(w).ru_maxrss for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 2**20, 3
    )


def process_memory_gb() -> dict | None:
    """This process's resident memory now and its high-water mark (/proc/self/status VmRSS, VmHWM), in GiB;
    None where /proc is absent."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        key, _, val = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out["rss" if key == "VmRSS" else "hwm"] = round(int(val.split()[0]) / 2**20, 3)
    return out or None


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=1, sort_keys=False, default=str))


def write_parquet(path: Path, df) -> None:
    with replacing(path, f"write:{Path(path).name}") as tmp:
        df.to_parquet(tmp, index=False)


def save_encoder(model, path: Path) -> None:
    from .assets import record_folder

    with replacing(path, "write:encoder", "swap:encoder") as tmp:
        model.save(str(tmp))
        record_folder(tmp, ".verified", "written by lmtx after training")  # sizes and sha256, checked on load


class RunDir:
    def __init__(self, out: str | Path):
        self.out = Path(out)

    def round_dir(self, r: int) -> Path:
        return self.out / f"round-{r:02d}"

    @property
    def cache_path(self) -> Path:
        return self.out / "teacher-cache.sqlite"

    def manifest(self) -> dict:
        p = self.out / "manifest.json"
        return read_json(p) if p.exists() else {"rounds": {}}

    def finished_rounds(self) -> list[int]:
        m = self.manifest()
        return sorted(int(r) for r in m["rounds"] if (self.round_dir(int(r)) / "metrics.json").exists())

    def last_encoder(self) -> Path | None:
        done = [r for r in self.finished_rounds() if r > 0]
        return self.round_dir(done[-1]) / "encoder" if done else None

    def prepare(self, config: dict) -> None:
        """Create the folder, or check that it belongs to the same config (refuse otherwise)."""
        self.out.mkdir(parents=True, exist_ok=True)
        p = self.out / "config.json"
        if p.exists():
            old = read_json(p)
            diff = config_diff(old, config)
            if diff:
                raise ConfigError(
                    f"{self.out} holds a run with a different config; use another --out or the same options:\n  "
                    + "\n  ".join(diff)
                )
        write_json(p, config)

    def save_optimizer(self, r: int, state: dict) -> None:
        """The optimizer state after round r (train.carry_optimizer), written atomically."""
        import torch

        with replacing(self.round_dir(r) / "optimizer.pt", "write:optimizer.pt") as tmp:
            torch.save(state, tmp)

    def load_optimizer(self, r: int) -> dict | None:
        import torch

        p = self.round_dir(r) / "optimizer.pt"
        return torch.load(p, weights_only=True) if p.exists() else None

    def trained_dir(self, r: int) -> Path:
        """Round r's unmerged weights (train.merge_init), which the next round trains on from."""
        return self.round_dir(r) / "trained"

    def drop_training_state(self, keep: int) -> None:
        """Only the best round's training state (its optimizer.pt and unmerged weights) is ever used again."""
        for p in [*self.out.glob("round-*/optimizer.pt"), *self.out.glob("round-*/trained")]:
            if p.parent != self.round_dir(keep):
                shutil.rmtree(p) if p.is_dir() else p.unlink()

    def set_manifest(self, **kv) -> None:
        m = self.manifest()
        m.update(kv)
        write_json(self.out / "manifest.json", m)

    def best_encoder(self) -> str | None:
        """The encoder to use from this run: the guard's best round (round 0 is the initial encoder of
        config.json); for runs made before the guard, early stopping's choice, else the last round's."""
        m = self.manifest()
        best = m.get("best_round", m.get("stopped_early", {}).get("best_round"))
        if best == 0:
            return read_json(self.out / "config.json")["encoder"]["model"]
        if best:
            return str(self.round_dir(best) / "encoder")
        last = self.last_encoder()
        return str(last) if last else None

    def finish_round(self, r: int, summary: dict, extra: dict) -> None:
        m = self.manifest()
        m.update(extra)
        m["rounds"][str(r)] = summary
        m["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        write_json(self.out / "manifest.json", m)
