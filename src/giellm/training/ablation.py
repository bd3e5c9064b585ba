"""The Mutual Reinforcement Effect ablation: same base model, same budget, different data.

Variants (configs/ablation.yaml, configs/ablation-gemma.yaml): each task trained alone, all
tasks as one mix, and the fkc records with text-level and word-level labels together (one
record) versus split into a TC record and a label-free NER record. Every variant fine-tunes the
same base with the same settings and budget (steps, or training tokens: an equal amount of
data whatever its records' lengths), so only the data differs; each runs once per seed, so a
difference can be told from seed noise. A run already trained (its `final/` is complete) is
reused, so a killed ablation continues where it stopped.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from giellm.errors import GiellmError
from giellm.evaluation.systems import GiellmSystem, parse_case
from giellm.training.config import (
    DataSource,
    _build,
    _help,
    config_from_dict,
    load_config,
    read_yaml,
)


@dataclass
class Variant:
    """One training run of the ablation and the report row it feeds."""

    name: str = _help("folder name under output_dir")
    system: str = _help("report row name (variants with one row name share it)")
    data: list[DataSource] = _help("the pools it trains on", default_factory=list)
    label_task: str | None = _help("take the text-level label from this task's output", None)
    cases: list[str] | None = _help("DATASET:TASK cases it is scored on; default: its pools", None)
    schema: str | None = _help(
        "dataset whose label sets it is asked under; default: each case's own "
        "(livedoor-joint: a livedoor case asked for categories and entities)",
        None,
    )


@dataclass
class Ablation:
    """configs/ablation.yaml."""

    base_model: str = _help(
        "the base every variant starts from: a folder or a packaged name (gemma-3-270m)"
    )
    base_config: str | None = _help(
        "training config whose pretrain stage builds a missing base folder", None
    )
    output_dir: str = _help("where the variants are trained", "build/ablation")
    max_steps: int | None = _help("optimiser steps per variant (the shared budget)", None)
    train_tokens: int | None = _help(
        "or: training tokens per variant (the same data budget whatever the records' lengths)",
        None,
    )
    batch_size: int = _help("records per step", 16)
    lr: float = _help("peak learning rate", 5e-4)
    seeds: list[int] = _help(
        "one run per variant and seed: the seeds' spread tells an effect from noise",
        default_factory=lambda: [0],
    )
    train: dict[str, Any] = _help(
        "further training settings every variant shares (lora, batch_tokens, mixed_precision…)",
        default_factory=dict,
    )
    variants: list[Variant] = _help("the runs", default_factory=list)

    def __post_init__(self) -> None:
        if (self.max_steps is None) == (self.train_tokens is None):
            raise GiellmError("give the variants' budget as max_steps or as train_tokens (one)")
        if not self.seeds or len(set(self.seeds)) < len(self.seeds):
            raise GiellmError("seeds: give one or more different seeds")
        fixed = {"output_dir", "data", "seed", "max_steps", "train_tokens", "base_model"}
        fixed |= {"batch_size", "lr", "resume"}
        if clash := sorted(fixed & set(self.train)):
            raise GiellmError(f"train: {clash[0]} is set by the ablation itself, not here")


def load_ablation(path: str | Path) -> Ablation:
    """The ablation file, every variant's training config checked (nothing trains yet)."""
    ablation: Ablation = _build(Ablation, read_yaml(path), str(path))
    for variant in ablation.variants:
        try:
            variant_config(ablation, variant, ablation.seeds[0])
        except GiellmError as err:
            raise GiellmError(f"{path}: {err}") from None
    return ablation


def _ensure_base(ablation: Ablation) -> str:
    """The base to fine-tune: a packaged name as it is, a folder (built when missing)."""
    from giellm.models.bases import PACKAGED

    if ablation.base_model in PACKAGED:
        return ablation.base_model
    base = Path(ablation.base_model)
    if (base / "config.json").exists():
        return str(base)
    if ablation.base_config is None:
        raise GiellmError(f"{base}: no pretrained base here and no base_config to build it")
    from giellm.training.run import prepare_base

    config = load_config(ablation.base_config)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    _, _, built = prepare_base(config, out, lambda entry: None)
    if built.resolve() != base.resolve():
        raise GiellmError(f"{ablation.base_config} builds its base in {built}, not {base}")
    return str(base)


def run_folder(ablation: Ablation, variant: Variant, seed: int) -> Path:
    """Where one variant's run for one seed trains (its model: `final/`)."""
    return Path(ablation.output_dir) / variant.name / f"seed{seed}"


def variant_config(ablation: Ablation, variant: Variant, seed: int, *, resume: bool = False) -> Any:
    """The training config of one (variant, seed) run: the shared settings, its own data."""
    settings = {"save_dtype": "bfloat16", "eval_every": 0, "save_every": 0, **ablation.train}
    return config_from_dict(
        {
            **settings,  # save_dtype bfloat16: float16 overflows on Gemma
            "output_dir": str(run_folder(ablation, variant, seed)),
            "base_model": ablation.base_model,
            "data": [vars(d) for d in variant.data],
            "max_steps": ablation.max_steps,
            "train_tokens": ablation.train_tokens,
            "batch_size": ablation.batch_size,
            "lr": ablation.lr,
            "seed": seed,
            "resume": resume,
        },
        where=f"variant {variant.name} (seed {seed})",
    )


def _run_apart(config: Any, where: str) -> None:
    """Train one run in a fresh process: memory a run leaves behind (model copies, compiled
    kernels, allocator pools) goes with it; in one process 9 Gemma runs grew to 23 GB."""
    import multiprocessing

    from giellm.training.run import run

    child = multiprocessing.get_context("spawn").Process(target=run, args=(config,), name=where)
    child.start()
    child.join()
    if child.exitcode != 0:
        raise GiellmError(
            f"{where}: training stopped (exit code {child.exitcode}); run again "
            "to resume it from its newest checkpoint"
        )


def train_variants(ablation: Ablation) -> dict[str, list[Path]]:
    """Train every (variant, seed) run not trained yet; returns name -> final model per seed."""
    from giellm.training.loop import newest_state

    _ensure_base(ablation)  # a missing base folder is built first
    done: dict[str, list[Path]] = {v.name: [] for v in ablation.variants}
    for seed in ablation.seeds:  # seeds outermost: a partial ablation has every variant once
        for v in ablation.variants:
            folder = run_folder(ablation, v, seed)
            final = folder / "final"
            if not (final / "giellm.json").exists():  # written last: the folder is complete
                resume = newest_state(folder) is not None
                if not resume and folder.exists():  # killed before its first checkpoint
                    shutil.rmtree(folder)
                config = variant_config(ablation, v, seed, resume=resume)
                _run_apart(config, f"variant {v.name} (seed {seed})")
            done[v.name].append(final)
    return done


def systems(ablation: Ablation, trained: dict[str, list[Path]]) -> list[GiellmSystem]:
    """One report system per variant and seed, limited to the cases it is scored on; the
    report pools a variant's seeds (mean and spread)."""
    out = []
    for v in ablation.variants:
        specs = v.cases or [f"{d.dataset}:{d.task}" for d in v.data if d.text_label]
        cases = frozenset(parse_case(spec) for spec in specs)
        for seed, final in zip(ablation.seeds, trained[v.name], strict=True):
            out.append(
                GiellmSystem(
                    v.system,
                    final,
                    cases=cases,
                    label_task=v.label_task,
                    group="ablation",
                    batch_size=32,
                    seed=seed,
                    schema=v.schema,
                )
            )
    return out
