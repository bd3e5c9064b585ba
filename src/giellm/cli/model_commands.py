"""The model commands of `giellm` (extract, predict, train, report, serve), registered by
`giellm.cli`: thin wrappers that parse arguments and call the library."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from giellm.errors import GiellmError
from giellm.progress import logger, record_progress

ModelOption = Annotated[
    Path | None,
    typer.Option(
        "--model",
        "-m",
        help="giellm model directory, or a base: gemma-3-270m, a .gguf file, an HF directory "
        "or hub id (default: Gemma 3 270M + the shipped giellm-ja adapter; 'tiny': the "
        "from-scratch test model)",
    ),
]
SchemaOption = Annotated[
    str | None,
    typer.Option("--schema", help="constrain to this dataset's label sets (default: the model's)"),
]
LabelsOption = Annotated[
    str | None,
    typer.Option(
        "--labels",
        help="comma-separated subset of the task's labels to allow (e.g. 人名,地名); "
        "restricts the model's set, cannot add to it",
    ),
]
ThresholdOption = Annotated[
    float | None,
    typer.Option(
        "--threshold",
        min=0.0,
        max=1.0,
        help="leave out entities, relations and event arguments scored below it (each item "
        "carries a score: its tokens' geometric-mean probability)",
    ),
]
ConstrainOption = Annotated[
    bool, typer.Option("--constrain/--no-constrain", help="grammar-constrained decoding")
]
BatchOption = Annotated[int, typer.Option(min=1, max=65536, help="windows generated together")]
MaxNewOption = Annotated[
    int | None, typer.Option(help="generation budget per window (default: the model's)")
]
DeviceOption = Annotated[str, typer.Option(help="cpu, cuda, cuda:1, …")]
BackendOption = Annotated[
    str, typer.Option(help="hf (transformers: CPU or GPU) or vllm (GPU; the vllm extra)")
]
DtypeOption = Annotated[
    str,
    typer.Option(
        help="auto (bfloat16 on GPUs, and for GGUF bases on CPUs with native bfloat16; "
        "else float32), float32 or bfloat16"
    ),
]


def _extractor(
    model: Path | str | None,
    constrain: bool,
    batch_size: int,
    device: str,
    max_new_tokens: int | None,
    backend: str = "hf",
    dtype: str = "auto",
) -> Any:
    from transformers.utils import logging as hf_logging

    from giellm.inference.extractor import open_extractor

    hf_logging.disable_progress_bar()
    return open_extractor(
        model,
        backend=backend,
        device=device,
        constrained=constrain,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        dtype=dtype,
    )


def _label_list(labels: str) -> list[str]:
    return [label.strip() for label in labels.split(",")]


def extract(
    texts: Annotated[list[str], typer.Argument(help="text(s) to analyse; '-' reads stdin lines")],
    task: Annotated[str, typer.Option("--task", "-t", help="TC SA NER RE EE PAS")],
    model: ModelOption = None,
    schema: SchemaOption = None,
    labels: LabelsOption = None,
    label_scores: Annotated[
        bool,
        typer.Option(
            "--label-scores",
            help="add each text-level label's probability (a closed label set: TC, SA, "
            "fkc genres) as label_scores",
        ),
    ] = False,
    threshold: ThresholdOption = None,
    constrain: ConstrainOption = True,
    batch_size: BatchOption = 64,
    max_new_tokens: MaxNewOption = None,
    device: DeviceOption = "cpu",
    backend: BackendOption = "hf",
    dtype: DtypeOption = "auto",
) -> None:
    """Extract one task from text and print one JSON record per text."""
    from giellm.data.jsonl import dumps
    from giellm.schema import example_to_dict
    from giellm.tasks import get_task, restrict

    get_task(task)  # fail on a bad task before loading the model
    from giellm.schema import unpaired_surrogate

    if texts == ["-"]:  # bytes that are not UTF-8 are caught below; CRLF leaves no "\r"
        raw = sys.stdin.buffer.read().decode("utf-8", errors="surrogateescape")
        texts = [line.rstrip("\r") for line in raw.split("\n") if line.strip()]
    for number, text in enumerate(texts, start=1):
        if bad := unpaired_surrogate(text):  # bytes that were not UTF-8 (surrogate-escaped)
            raise GiellmError(f"text {number} is not valid UTF-8: {bad}")
    if not texts or not all(t.strip() for t in texts):
        raise GiellmError("give at least one non-empty text")
    extractor = _extractor(model, constrain, batch_size, device, max_new_tokens, backend, dtype)
    chosen = extractor.schema(task, schema)
    if labels is not None:
        chosen = restrict(chosen, task, _label_list(labels))
    if label_scores and not chosen.labels:
        raise GiellmError(
            f"--label-scores: {get_task(task).name} has no closed label set here; "
            "give --schema (e.g. --schema livedoor)"
        )
    records = extractor.extract(texts, task=task, schema=chosen, threshold=threshold)
    scores = extractor.label_scores(records, schema=chosen) if label_scores else None
    for i, record in enumerate(records):
        if scores is None:
            print(dumps(record))
        else:  # the record's keys, then its label distribution
            line = example_to_dict(record) | {"label_scores": scores[i]}
            print(json.dumps(line, ensure_ascii=False))


def predict(
    input: Annotated[Path, typer.Argument(help="records to predict (unified JSONL or --from)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="predicted JSONL to write")],
    model: ModelOption = None,
    from_format: Annotated[
        str, typer.Option("--from", help="input format (see `giellm datasets`)")
    ] = "jsonl",
    task: Annotated[
        str | None, typer.Option("--task", "-t", help="task (default: each record's own)")
    ] = None,
    schema: SchemaOption = None,
    labels: LabelsOption = None,
    threshold: ThresholdOption = None,
    constrain: ConstrainOption = True,
    batch_size: BatchOption = 64,
    max_new_tokens: MaxNewOption = None,
    device: DeviceOption = "cpu",
    backend: BackendOption = "hf",
    dtype: DtypeOption = "auto",
    on_error: Annotated[
        str, typer.Option(help="a bad input line: fail (nothing written) or skip (to --rejects)")
    ] = "fail",
    rejects: Annotated[
        Path | None, typer.Option(help="where skipped lines go (default: OUT.rejects.jsonl)")
    ] = None,
) -> None:
    """Predict every record of a file in batches; same ids, same order, written atomically.

    A killed run resumes where it stopped when run again with the same input and output (its
    progress is in OUT.partial until the last record is written).
    """
    from giellm.data.jsonl import partial_path
    from giellm.inference.jobs import PredictJob, plan_job, run_job

    chosen = None if labels is None else tuple(_label_list(labels))
    job = PredictJob(input, output, from_format, task, schema, on_error, rejects, chosen, threshold)
    plan = plan_job(job)
    if plan.skipped:
        logger.warning(
            f"skipped {len(plan.skipped)} bad lines (first: {plan.skipped[0].error}); "
            f"see {job.rejects_path}"
        )
    settings = {
        "model": None if model is None else str(model),
        "constrain": constrain,
        "max_new_tokens": max_new_tokens,
        "dtype": dtype,
    }
    options = (model, constrain, batch_size, device, max_new_tokens, backend, dtype)
    with record_progress() as bar:
        records = bar.add_task(f"predicting {input.name}", total=len(plan.records))
        windows = bar.add_task("  windows (long texts are cut)", total=0)
        planned = [0]

        def resumed(done: int) -> None:
            logger.info(f"resuming after {done} records already in {partial_path(output)}")
            bar.update(records, completed=done)

        def window_progress(new: int, generated: int) -> None:
            planned[0] += new
            bar.update(windows, total=planned[0], advance=generated)

        result = run_job(
            job,
            plan,
            lambda: _extractor(*options),
            settings=settings,
            on_resume=resumed,
            on_record=lambda _: bar.advance(records),
            on_windows=window_progress,
        )
    seconds, stats = result.seconds, result.stats
    logger.info(
        f"wrote {len(plan.records)} predictions to {output} in {seconds:.1f} s "
        f"({result.predicted / seconds:.1f} rec/s, "
        f"{stats.generated_tokens / seconds:,.0f} generated tok/s; "
        f"{stats.windows} windows, {stats.dropped} items dropped by the decoder, "
        f"{stats.truncated} windows cut at max_new_tokens)"
    )


def _pool(spec: str) -> dict[str, Any]:
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise GiellmError(f"--data {spec!r}: expected DATASET:TASK or DATASET:TASK:WEIGHT")
    pool: dict[str, Any] = {"dataset": parts[0], "task": parts[1]}
    if len(parts) == 3:
        try:
            pool["weight"] = float(parts[2])
        except ValueError:
            raise GiellmError(f"--data {spec!r}: weight {parts[2]!r} is not a number") from None
    return pool


def train(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML training config (configs/*.yaml)")
    ] = None,
    data: Annotated[
        list[str] | None,
        typer.Option("--data", "-d", help="pool DATASET:TASK[:WEIGHT]; repeat for a mix"),
    ] = None,
    lora: Annotated[
        bool | None, typer.Option("--lora/--full", help="LoRA adapters, or every weight")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="continue a killed run from its newest checkpoint")
    ] = False,
    ablation: Annotated[
        Path | None,
        typer.Option(
            help="train every run of an MRE ablation config not trained yet "
            "(configs/ablation-gemma.yaml); `giellm report --ablation` then scores them"
        ),
    ] = None,
) -> None:
    """Fine-tune a causal LM on a multi-task mix (LoRA or full); see configs/ for examples.

    Every setting of the config is also a flag, e.g. --base-model gemma-3-270m --lr 2e-4
    --lora-r 32 --max-steps 500 --output-dir build/x (the list is below); flags override the
    config file.
    """
    from giellm.training.config import apply_flags, config_from_dict, read_yaml
    from giellm.training.run import run

    if ablation is not None:
        if config is not None or data or ctx.args:
            raise GiellmError("--ablation takes its settings from its file: no other options")
        from giellm.training.ablation import load_ablation, train_variants

        plan = load_ablation(ablation)
        trained = train_variants(plan)
        runs = sum(map(len, trained.values()))
        logger.info(f"{runs} ablation runs trained, in {plan.output_dir}")
        return
    settings: dict[str, Any] = {} if config is None else read_yaml(config)
    if not isinstance(settings, dict):
        raise GiellmError(f"{config}: expected a mapping, got {type(settings).__name__}")
    apply_flags(settings, list(ctx.args))
    if data:
        settings["data"] = [_pool(d) for d in data]
    if resume:
        settings["resume"] = True
    if lora is False:
        settings["lora"] = None
    elif lora and not settings.get("lora"):
        settings["lora"] = {}
    if config is None and ("output_dir" not in settings or not settings.get("data")):
        raise GiellmError("give --config, or --output-dir and at least one --data")
    final = run(config_from_dict(settings, str(config or "flags")))
    logger.info(f"model saved to {final}")


def _cases(spec: str | None) -> list[tuple[str, str]]:
    from giellm.evaluation.systems import DEFAULT_CASES, parse_case

    if not spec:
        return DEFAULT_CASES
    try:
        return [parse_case(part) for part in spec.split(",")]
    except GiellmError as err:
        raise GiellmError(f"--cases: {err}") from None


def report(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="folder for report.md, PNGs, JSON")
    ] = Path("reports/latest"),
    systems: Annotated[
        str, typer.Option(help="comma list of giellm, ginza, fewshot, tiny")
    ] = "giellm,ginza,fewshot,tiny",
    cases: Annotated[
        str | None, typer.Option(help="DATASET:TASK,… (default: every shared dev case, 9)")
    ] = None,
    model: ModelOption = None,
    also: Annotated[
        list[str] | None,
        typer.Option(
            "--also", help="another giellm model as NAME=DIR (repeatable), e.g. ablations"
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="N dev records per case, spread over the split")
    ] = None,
    ablation: Annotated[
        Path | None,
        typer.Option(help="MRE ablation config (configs/ablation.yaml): trains and adds its rows"),
    ] = None,
    fewshot_url: Annotated[
        str | None,
        typer.Option(help="OpenAI-compatible base URL (…/v1); default: a local giellm server"),
    ] = None,
    fewshot_model: Annotated[str, typer.Option(help="model name sent to the endpoint")] = "giellm",
    shots: Annotated[
        str, typer.Option(help="in-context examples per query: one few-shot row per number")
    ] = "3,5",
    fewshot_mode: Annotated[
        str,
        typer.Option(
            help="chat, completions, or auto: completions for the local base (a pretrained "
            "model continues text), chat for --fewshot-url"
        ),
    ] = "auto",
    fewshot_limit: Annotated[
        int | None,
        typer.Option(help="records per case for the few-shot rows (long prompts are slow)"),
    ] = 100,
    fewshot_base: Annotated[
        str,
        typer.Option(
            help="the model the local few-shot server runs (default: the untuned base; "
            "'default': the shipped model)"
        ),
    ] = "gemma-3-270m",
) -> None:
    """Run systems on shared dev splits; write a Markdown report with tables, plots and JSON."""
    import contextlib

    from giellm.evaluation.report import check_report_folder, write_report
    from giellm.evaluation.systems import FewShotOptions, choose_systems, ours_name, run_cases

    check_report_folder(output)  # before any system runs
    chosen = [s.strip().lower() for s in systems.split(",") if s.strip()]
    others = []
    for entry in also or []:
        name, _, directory = entry.partition("=")
        if not directory:
            raise GiellmError(f"--also: {entry!r} is not NAME=DIR")
        others.append((name, Path(directory)))
    try:
        counts = tuple(int(k) for k in shots.split(","))
    except ValueError:
        raise GiellmError(f"--shots {shots!r}: expected numbers such as 3,5") from None
    if not counts or min(counts) < 0:
        raise GiellmError(f"--shots {shots!r}: expected numbers such as 3,5")
    base = None if fewshot_base == "default" else fewshot_base
    fewshot = FewShotOptions(fewshot_url, fewshot_model, counts, fewshot_mode, base, fewshot_limit)
    chosen_cases = _cases(cases)
    context: dict[str, Any] = {"limit": limit, "cases": [f"{d}:{t}" for d, t in chosen_cases]}
    variants = []
    if ablation is not None:  # trained (or found trained) before any system runs
        from giellm.training.ablation import load_ablation, train_variants
        from giellm.training.ablation import systems as ablation_systems

        settings = load_ablation(ablation)
        variants = ablation_systems(settings, train_variants(settings))
    with contextlib.ExitStack() as stack:
        runners, said = choose_systems(
            chosen,
            stack,
            model=model,
            also=others,
            trained=variants,
            fewshot=fewshot,
            local_extractor=lambda base: _extractor(base, True, 16, "cpu", None),
        )

        with record_progress(transient=False) as bar:

            def track(description: str, total: int) -> Any:
                job = bar.add_task(description, total=total)
                return lambda: bar.advance(job)

            rows = run_cases(runners, chosen_cases, limit, track)
    written = write_report(output, rows, ours=ours_name(model), context=context | said)
    logger.info(f"wrote {written} ({len(rows)} rows)")


def _self_test(extractor: Any) -> None:
    """One short extraction per task the model knows, before the port opens."""
    for task in sorted(extractor.meta.schemas) or ["NER"]:
        try:
            extractor.configured(max_new_tokens=8).extract("東京で会見した。", task=task)
        except GiellmError:
            raise
        except Exception as err:  # a model that loads but cannot generate
            raise GiellmError(
                f"the model fails a first {task} extraction ({type(err).__name__}: {err}); "
                "not serving it"
            ) from None


def serve(
    model: ModelOption = None,
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="port to listen on")] = 8000,
    max_batch: Annotated[
        int, typer.Option(min=1, max=65536, help="most inputs generated in one batch")
    ] = 64,
    max_wait_ms: Annotated[
        float,
        typer.Option(min=0, max=10_000, help="how long a request waits for others to batch with"),
    ] = 10.0,
    max_request_inputs: Annotated[
        int,
        typer.Option(
            min=1, max=2**31, help="most model inputs (text windows or prompts) in one request"
        ),
    ] = 1024,
    max_queued_inputs: Annotated[
        int, typer.Option(min=1, max=2**31, help="most inputs queued at once; more get 503")
    ] = 8192,
    grace_seconds: Annotated[
        int,
        typer.Option(
            min=1, max=86400, help="seconds in which SIGTERM answers every accepted request"
        ),
    ] = 60,
    constrain: ConstrainOption = True,
    max_new_tokens: MaxNewOption = None,
    device: DeviceOption = "cpu",
    backend: BackendOption = "hf",
    dtype: DtypeOption = "auto",
) -> None:
    """Serve the model over HTTP: /extract, /health and OpenAI-style /v1/* routes."""
    from giellm.service.app import create_app
    from giellm.service.server import run_server

    if max_batch < 1 or max_wait_ms < 0:
        raise GiellmError("--max-batch must be at least 1 and --max-wait-ms at least 0")
    extractor = _extractor(model, constrain, max_batch, device, max_new_tokens, backend, dtype)
    _self_test(extractor)  # never report healthy for a model that fails every request
    name = "giellm-default" if model is None else model.name
    application = create_app(
        extractor,
        model_name=name,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_request_inputs=max_request_inputs,
        max_queued_inputs=max_queued_inputs,
    )
    run_server(application, host=host, port=port, grace_seconds=grace_seconds)


def export(
    gguf: Annotated[Path, typer.Option("--gguf", help="the GGUF file to write (NAME.gguf)")],
    model: ModelOption = None,
    encoding: Annotated[
        str, typer.Option(help="encoding of the merged weights: q8_0 or f16")
    ] = "q8_0",
) -> None:
    """Write the model as one GGUF file for llama.cpp: its base with the adapter merged."""
    from giellm.models.export import export_gguf

    def shown(done: int, total: int) -> None:
        if done == total or done % 50 == 0:
            logger.info(f"export: {done}/{total} tensors written")

    written = export_gguf(model, gguf, encoding=encoding, progress=shown)
    logger.info(
        f"wrote {written['output']}: {written['tensors_merged']} merged tensors "
        f"({encoding}), {written['tensors_copied']} copied from the base, "
        f"{written['bytes'] / 2**20:.0f} MiB"
    )
