"""lmtx past one machine: Ray Data as the engine for label encoding (here) and tagging (lmtx.tag).

The in-process path stays the default: a Ray session costs seconds to start and pays off only on big jobs. With
``--engine ray`` lmtx joins the cluster at ``--ray-address`` (else ``RAY_ADDRESS``, else a local instance it starts
and stops itself). Work runs in Ray Data pipelines whose stateful stages are actor pools (one model load per actor);
actors hold one CPU each and the pool stays below the cluster's CPUs, so read tasks are never starved. Row order is
not kept by Ray: every result carries its key (a label's position, a document's id) and is put back in order by it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

ENGINES = ("local", "ray")


class EngineError(RuntimeError):
    pass


def require_ray():
    """The ray module, or one line saying how to get it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise EngineError("--engine ray needs Ray Data: pip install 'lmtx[ray]' (or pip install 'ray[data]')") from None
    return ray


@dataclass
class RayEngine:
    """A Ray session for one lmtx command: joined (an address) or started locally, shut down when lmtx started it.
    ``actors``: the actor pool's size (default: the cluster's CPUs minus one, at least 1)."""

    address: str | None = None
    actors: int | None = None
    log: object = print
    _started: bool = field(default=False, repr=False)
    _watch: object = field(default=None, repr=False)

    def __enter__(self) -> "RayEngine":
        ray = require_ray()
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if not ray.is_initialized():
            address = self.address or os.environ.get("RAY_ADDRESS") or None
            kw = {"include_dashboard": False, "log_to_driver": False}
            ray.init(address=address, **({} if address else {"num_cpus": os.cpu_count()}), **kw)
            self._started = True
            if not address:  # a local instance lmtx started: it dies with lmtx, even with a SIGKILLed lmtx
                self._watch = start_watchdog(_local_ray_pids())
        import logging

        for name in ("ray", "ray.data"):  # Ray's INFO lines (execution plans, progress) stay out of lmtx's output
            logging.getLogger(name).setLevel(logging.WARNING)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.actors = self.actors or max(1, cpus - 1)  # one CPU stays free for the read and write tasks
        self.log(f"[lmtx] engine ray: {cpus} CPUs in the cluster, {self.actors} actor(s)")
        return self

    def __exit__(self, *exc) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
        if self._watch is not None:
            stop_watchdog(self._watch)
            self._watch = None

    def pool(self):
        """The actor pool strategy of lmtx's stateful stages (sized to ``actors``; autoscaling from one actor, so a
        dead actor is replaced rather than waited for)."""
        import ray.data

        return ray.data.ActorPoolStrategy(min_size=1, max_size=self.actors)

    # -- label encoding ----------------------------------------------------------------------------------------
    def encode_labels(
        self, model_spec: str, texts: list[str], backend: str, batch_size: int = 64, chunk: int = 4096
    ) -> np.ndarray:
        """Every text's embedding by an actor pool that loads the encoder ``model_spec`` once per actor and
        encodes chunks with ``backend`` (resolved for the whole set by the caller: torch, onnx-int8 or torch-pool);
        rows back in text order. torch gives the local engine's vectors to float tolerance. onnx-int8 quantizes
        activations per batch, so its chunks are the local engine's (fast_encode.int8_chunks, cut here and sent
        whole, one row each) and each actor exports the model once: the vectors are the local engine's too."""
        import time

        import ray.data

        t0 = time.time()
        int8 = backend == "onnx-int8"
        if int8:
            from .fast_encode import int8_chunks

            rows = [{"i": c, "text": [texts[i] for i in c]} for c in int8_chunks(texts)]
            per_call, blocks = 1, len(rows)
        else:
            rows = [{"i": i, "text": t} for i, t in enumerate(texts)]
            per_call, blocks = chunk, len(texts) // chunk + 1
        ds = ray.data.from_items(rows, override_num_blocks=max(1, min(blocks, 4 * self.actors)))
        out = ds.map_batches(
            _LabelEncoder,
            # torch-pool's processes would oversubscribe an actor's one CPU: the actors are the pool
            fn_constructor_args=(model_spec, "torch" if backend == "torch-pool" else backend, batch_size),
            batch_size=per_call,
            batch_format="numpy",
            compute=self.pool(),
            num_cpus=1,
        )
        emb = None
        for b in out.iter_batches(batch_size=None, batch_format="numpy"):
            e = np.stack(b["emb"]) if b["emb"].dtype == object else b["emb"]
            if emb is None:
                emb = np.empty((len(texts), e.shape[1]), np.float32)
            emb[b["i"]] = e
        dt = time.time() - t0
        self.log(
            f"[lmtx] encoded {len(texts)} labels with {backend} on Ray ({self.actors} actor(s)) in {dt:.0f}s "
            f"({len(texts) / max(dt, 1e-9):.0f}/s)"
        )
        return emb if emb is not None else np.zeros((0, 0), np.float32)


class _LabelEncoder:
    """A Ray actor: the encoder loaded once (for onnx-int8, exported once); each batch of (i, text) comes back as
    (i, emb). An onnx-int8 batch is one row holding a whole chunk (its positions and texts), flattened on return."""

    def __init__(self, model_spec: str, backend: str, batch_size: int):
        import torch

        from .encoder import load_encoder

        torch.set_num_threads(1)
        self.model = load_encoder(model_spec, progress=lambda s: None)
        self.batch_size = batch_size
        self.int8 = None
        if backend == "onnx-int8":
            from .fast_encode import Int8Session

            self.int8 = Int8Session(self.model, threads=1)

    def __call__(self, batch: dict) -> dict:
        if self.int8 is not None:
            idx = np.concatenate([np.asarray(i, dtype=np.int64) for i in batch["i"]])
            emb = np.concatenate([self.int8([str(t) for t in texts]) for texts in batch["text"]])
            return {"i": idx, "emb": emb}
        from .fast_encode import embed

        return {"i": batch["i"], "emb": embed(self.model, [str(t) for t in batch["text"]], self.batch_size)}


# -- a local Ray instance shares lmtx's fate (lmtx.search.watchdog) ------------------------------------------------
def _local_ray_pids() -> list[int]:
    """PIDs of the head processes (GCS, raylet, ...) of the local Ray instance this process started."""
    try:
        from ray._private import worker
    except ImportError:
        return []
    node = getattr(worker, "_global_node", None)
    pids = []
    for infos in (getattr(node, "all_processes", None) or {}).values():
        for info in infos:
            proc = getattr(info, "process", None)
            if proc is not None and getattr(proc, "pid", None):
                pids.append(int(proc.pid))
    return pids


def start_watchdog(pids: list[int]):
    """A watchdog over ``pids`` (and their descendants) that stops them if this process dies
    (lmtx.search.watchdog); None on a platform without /proc or when there is nothing to watch."""
    import subprocess
    import sys

    if not pids or not os.path.isdir("/proc"):
        return None
    from . import watchdog

    return subprocess.Popen(
        [sys.executable, watchdog.__file__, *map(str, pids)],  # a script: no lmtx import in the watchdog
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a signal to lmtx's process group (Ctrl-C) does not reach it
        close_fds=True,
    )


def stop_watchdog(proc) -> None:
    """lmtx ended Ray itself: tell the watchdog so, and let it go."""
    try:
        proc.stdin.write(b"done")
        proc.stdin.close()
        proc.wait(timeout=10)
    except Exception:
        proc.kill()


# -- HTTP requests (a served teacher) ---------------------------------------------------------------------------
def _http_pre(row: dict) -> dict:
    return {"payload": row["body"], "key": row["key"]}


class _HttpPost:
    """Ray's HTTP processor's post-processing: the caller's reader turns each response into scalars (Ray keeps
    row data in Arrow blocks; raw logprob dicts with token-string keys do not belong there)."""

    def __init__(self, read):
        self.read = read

    def __call__(self, row: dict) -> dict:
        try:
            out = self.read(row.get("http_response"))
            return {"key": row["key"], "ok": True, "error": "", **out}
        except Exception as e:  # a refused or malformed answer comes back as a row; the caller retries it its way
            return {"key": row["key"], "ok": False, "error": f"{type(e).__name__}: {e}"[:300]}


def http_requests(
    engine: "RayEngine",
    requests: list[tuple[int, str, dict]],
    read,
    headers: dict | None = None,
    concurrency: int = 4,
    batch_size: int = 8,
    max_retries: int = 3,
):
    """POST every (key, url, JSON body) with Ray Data's HTTP request processor (ray.data.llm; one processor per
    URL, the URLs' datasets unioned) and yield ``{"key", "ok", "error", **read(response)}`` rows as Ray finishes
    them (not in order). Transient failures (429, 5xx, timeouts) are retried by Ray with backoff up to
    ``max_retries``; an answer ``read`` cannot use comes back with ok False for the caller to handle."""
    try:
        from ray.data.llm import HttpRequestProcessorConfig, build_processor
    except ImportError as e:
        raise EngineError(
            f"the served teacher on Ray needs Ray Data's HTTP processor: pip install 'lmtx[ray]' ({e})"
        ) from None
    import ray.data

    by_url: dict[str, list[dict]] = {}
    for key, url, body in requests:
        by_url.setdefault(url, []).append({"key": key, "body": body})
    outs = []
    for url, rows in by_url.items():
        cfg = HttpRequestProcessorConfig(
            url=url,
            headers=headers or {},
            concurrency=max(1, min(concurrency, engine.actors or 1)),
            batch_size=batch_size,
            max_retries=max_retries,
        )
        proc = build_processor(cfg, preprocess=_http_pre, postprocess=_HttpPost(read))
        outs.append(proc(ray.data.from_items(rows)))
    if not outs:
        return
    ds = outs[0].union(*outs[1:]) if len(outs) > 1 else outs[0]
    yield from ds.iter_rows()
