"""Training configs: the shipped ones load, and mistakes name the key and the file."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from giellm.errors import GiellmError
from giellm.training.config import TrainConfig, load_config

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))
TRAIN_CONFIGS = [c for c in CONFIGS if not c.name.startswith(("accelerate", "ablation"))]


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load(path: Path) -> None:
    config = load_config(path)
    assert isinstance(config, TrainConfig) and config.data
    assert all(source.weight > 0 for source in config.data)


def test_shipped_ablation_config_loads() -> None:
    from giellm.training.ablation import load_ablation

    for name in ("ablation.yaml", "ablation-gemma.yaml"):
        ablation = load_ablation(CONFIGS[0].parent / name)
        assert (ablation.max_steps or ablation.train_tokens or 0) > 0
        assert len(ablation.variants) >= 4
        split = next(v for v in ablation.variants if v.label_task)
        assert any(not d.text_label for d in split.data)
    # seeds tell an effect from noise: at least two (trained runs are reused when more are added)
    assert len(set(ablation.seeds)) >= 2 and ablation.train["lora"]["r"] >= 32


def test_overrides_replace_top_level_keys(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "output_dir: a\ndata: [{dataset: jrte, task: SA}]\nlora: {r: 4}\n", encoding="utf-8"
    )
    config = load_config(path, output_dir="b", max_steps=3, lr=None)
    assert (config.output_dir, config.max_steps, config.lr) == ("b", 3, 2e-4)
    assert config.lora is not None and (config.lora.r, config.lora.alpha) == (4, 32)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("output_dir: a\nlora: {rank: 4}\n", "c.yaml.lora: unknown key 'rank'"),
        ("output_dir: a\ndata: [{dataset: jrte}]\n", "c.yaml.data[0]:"),
        ("output_dir: a\nepochs: many\n", "c.yaml.epochs: expected float, got 'many'"),
        ("output_dir: [a\n", "c.yaml: not valid YAML"),
    ],
)
def test_config_mistakes_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(GiellmError) as err:
        load_config(path)
    assert message in str(err.value)


def test_every_setting_is_a_flag() -> None:
    from giellm.training.config import FLAGS, TrainConfig, apply_flags, config_from_dict

    names = {f.name for f in dataclasses.fields(TrainConfig)} - {"data", "resume", "tiny"}
    names -= {"lora", "pretrain"}
    assert {n.replace("_", "-") for n in names} <= set(FLAGS)
    assert {"lora-r", "lora-target-modules", "tiny-hidden", "pretrain-lr"} <= set(FLAGS)
    data = {"output_dir": "x", "data": [{"dataset": "stockmark", "task": "NER"}]}
    args = ["--lr", "2e-4", "--lora-r=32", "--lora-targets", "q_proj,v_proj", "--max-steps"]
    args += ["5", "--gradient-checkpointing", "true", "--base-model", "gemma-3-270m"]
    config = config_from_dict(apply_flags(data, args))
    assert config.lr == 2e-4 and config.max_steps == 5 and config.gradient_checkpointing
    assert config.lora is not None and config.lora.r == 32  # a LoRA flag switches LoRA on
    assert config.lora.target_modules == ["q_proj", "v_proj"]
    assert config.base_model == "gemma-3-270m"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--learning-rate", "1"], "unknown flag --learning-rate"),
        (["--lr", "fast"], "--lr: 'fast' is not a number"),
        (["--max-steps"], "--max-steps needs a value"),
        (["--save-dtype", "fp8"], "save_dtype: 'fp8' is not one of"),
    ],
)
def test_flag_mistakes_are_named(args: list[str], message: str) -> None:
    from giellm.errors import GiellmError
    from giellm.training.config import apply_flags, config_from_dict

    data = {"output_dir": "x", "data": [{"dataset": "stockmark", "task": "NER"}]}
    with pytest.raises(GiellmError, match=re.escape(message)):
        config_from_dict(apply_flags(data, args))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-size", "-2"], "batch_size: -2 must be at least 1"),  # looped forever
        (["--batch-size", "0"], "batch_size: 0 must be at least 1"),
        (["--grad-accum", "0"], "grad_accum: 0 must be at least 1"),
        (["--log-every", "0"], "log_every: 0 must be at least 1"),
        (["--lr", "-1"], "lr: -1.0 must be above 0"),
        (["--lr", "nan"], "lr: nan must be a finite number"),
        (["--window-overlap", "256"], "window_overlap: 256 must be below window_chars (256)"),
        (["--max-steps", "-3"], "max_steps: -3 must be at least 1"),
        (["--max-new-tokens", "0"], "max_new_tokens: 0 must be at least 1"),
        (["--total", "-5"], "total: -5 must be at least 1"),
        (["--epochs", "0"], "epochs: 0.0 must be above 0"),
        (["--save-total-limit", "0"], "save_total_limit: 0 must be at least 1"),
        (["--label-windows", "0"], "label_windows: 0 must be at least 1"),  # TC/SA vanished
        (["--lora-r", "0"], "lora: r: 0 must be at least 1"),
        (["--lora-dropout", "1"], "lora: dropout: 1.0 must be below 1"),
        (["--warmup-ratio", "1.5"], "warmup_ratio: 1.5 must be below 1"),
    ],
)
def test_settings_outside_their_range_are_refused_before_any_work(
    args: list[str], message: str
) -> None:
    from giellm.training.config import apply_flags, config_from_dict

    data = {"output_dir": "x", "data": [{"dataset": "stockmark", "task": "NER"}]}
    with pytest.raises(GiellmError, match=re.escape(message)):
        config_from_dict(apply_flags(data, args), "flags")


def test_a_pool_weight_of_zero_is_named(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("output_dir: a\ndata: [{dataset: jrte, task: SA, weight: 0}]\n")
    with pytest.raises(GiellmError, match=re.escape("c.yaml.data[0]: weight: 0.0 must be above 0")):
        load_config(path)


def test_out_of_range_settings_fail_on_the_command_line_in_a_line(tmp_path: Path) -> None:
    from conftest import run_cli

    result = run_cli("train", "--output-dir", str(tmp_path / "o"), "--data", "jrte:SA",
                     "--batch-size", "-2")  # fmt: skip
    assert result.returncode == 2 and "batch_size: -2 must be at least 1" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "o").exists()


def test_two_pools_of_one_dataset_and_task_are_both_used(
    data_dir: Path, tokenizer_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    from giellm.models.sequences import training_pair
    from giellm.training.config import DataSource
    from giellm.training.data import pool_names, read_pools, read_source, training_sets

    lines = (data_dir / "jrte_pn" / "train.tsv").read_text(encoding="utf-8").splitlines(True)
    (tmp_path / "a.tsv").write_text("".join(lines[:100]), encoding="utf-8")
    (tmp_path / "b.tsv").write_text("".join(lines[100:200]), encoding="utf-8")
    sources = [
        DataSource("jrte", "SA", weight=3.0, train=str(tmp_path / "a.tsv")),
        DataSource("jrte", "SA", weight=1.0, train=str(tmp_path / "b.tsv")),
    ]
    assert pool_names(sources) == ["jrte:SA", "jrte:SA#2"]
    pools = read_pools(sources, "train")
    assert list(pools) == ["jrte:SA", "jrte:SA#2"]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = TrainConfig(output_dir="x", data=sources, total=80)
    rows = training_sets(config, tokenizer, pools, {}).train.ids
    of = [
        {tuple(training_pair(tokenizer, ex)[0]) for ex in read_source(s, "train")} for s in sources
    ]
    # 60 rows from the first file and 20 from the second, not 80 from the last pool alone
    assert [sum(tuple(r) in rows_of for r in rows) for rows_of in of] == [60, 20]


def test_a_token_budget_sets_the_steps_from_the_mean_tokens_per_step() -> None:
    from giellm.training.loop import Stage, steps_for

    config = TrainConfig(output_dir="x", train_tokens=30_000)
    budget = Stage("finetune", 1e-4, 8, 1.0, None, 30_000)
    # 100 batches holding 10,000 tokens: 100 tokens a step, so 300 steps; 2 processes: 150
    assert steps_for(budget, 100, 10_000, 1, config) == 300
    assert steps_for(budget, 100, 10_000, 2, config) == 150
    assert steps_for(Stage("finetune", 1e-4, 8, 2.0, None), 100, 10_000, 1, config) == 200
    assert steps_for(Stage("finetune", 1e-4, 8, 2.0, 7), 100, 10_000, 1, config) == 7
    with pytest.raises(GiellmError, match="train_tokens and max_steps"):
        TrainConfig(output_dir="x", train_tokens=1000, max_steps=5)
