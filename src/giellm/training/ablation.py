"""The Mutual Reinforcement Effect ablation: same base model, same step budget, different data.

Variants (configs/ablation.yaml): each task trained alone, all tasks as one mix, and the fkc
records with text-level and word-level labels together (one record) versus split into a TC
record and a label-free NER record. Every variant fine-tunes the same pretrained base for the
same number of steps with the same batch size, so only the data differs. A variant already
trained (its `final/` exists) is reused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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


@dataclass
class Ablation:
    """configs/ablation.yaml."""

    base_model: str = _help("the pretrained base every variant starts from")
    base_config: str | None = _help(
        "training config whose pretrain stage builds a missing base", None
    )
    output_dir: str = _help("where the variants are trained", "build/ablation")
    max_steps: int = _help("optimiser steps per variant (the shared budget)", 250)
    batch_size: int = _help("records per step", 16)
    lr: float = _help("peak learning rate", 5e-4)
    seed: int = _help("seed of every variant", 0)
    variants: list[Variant] = _help("the runs", default_factory=list)


def load_ablation(path: str | Path) -> Ablation:
    ablation: Ablation = _build(Ablation, read_yaml(path), str(path))
    return ablation


def _ensure_base(ablation: Ablation) -> Path:
    base = Path(ablation.base_model)
    if (base / "config.json").exists():
        return base
    if ablation.base_config is None:
        raise GiellmError(f"{base}: no pretrained base here and no base_config to build it")
    from giellm.training.run import prepare_base

    config = load_config(ablation.base_config)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    _, _, built = prepare_base(config, out, lambda entry: None)
    if built.resolve() != base.resolve():
        raise GiellmError(f"{ablation.base_config} builds its base in {built}, not {base}")
    return base


def train_variants(ablation: Ablation) -> dict[str, Path]:
    """Train every variant that is not trained yet; returns name -> final model directory."""
    from giellm.training.run import run

    base = _ensure_base(ablation)
    done = {}
    for v in ablation.variants:
        final = Path(ablation.output_dir) / v.name / "final"
        if not (final / "config.json").exists():
            config = config_from_dict(
                {
                    "output_dir": str(final.parent),
                    "base_model": str(base),
                    "data": [vars(d) for d in v.data],
                    "max_steps": ablation.max_steps,
                    "batch_size": ablation.batch_size,
                    "lr": ablation.lr,
                    "seed": ablation.seed,
                    "eval_every": 0,
                    "save_every": 0,
                    "save_dtype": "bfloat16",  # float16 overflows on Gemma
                },
                where=f"variant {v.name}",
            )
            run(config)
        done[v.name] = final
    return done


def systems(ablation: Ablation, trained: dict[str, Path]) -> list[GiellmSystem]:
    """One report system per variant, limited to the cases it is scored on."""
    out = []
    for v in ablation.variants:
        specs = v.cases or [f"{d.dataset}:{d.task}" for d in v.data if d.text_label]
        cases = frozenset(parse_case(spec) for spec in specs)
        out.append(
            GiellmSystem(
                v.system,
                trained[v.name],
                cases=cases,
                label_task=v.label_task,
                group="ablation",
                batch_size=32,
            )
        )
    return out
