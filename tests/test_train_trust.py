"""Training to trust: checkpoints leave the weights alone, schedules count per process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from giellm.training import run as training
from giellm.training.config import DataSource, TrainConfig
from giellm.training.run import iter_log, run


def _config(out: Path, base: Path, **kw: object) -> TrainConfig:
    settings: dict[str, object] = {
        "output_dir": str(out),
        "data": [DataSource("stockmark", "NER")],
        "base_model": str(base),
        "total": 48,
        "max_steps": 6,
        "batch_size": 4,
        "lr": 5e-3,
        "eval_every": 0,
        "eval_records": 4,
        "log_every": 1,
    }
    settings.update(kw)
    return TrainConfig(**settings)  # type: ignore[arg-type]


def test_a_checkpoint_does_not_touch_the_weights(
    base_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bfloat16 checkpoints of a full fine-tune: the fp32 weights stay bit-identical."""
    seen: list[bool] = []
    save = training.save_model

    def checked_save(model: object, *args: object, **kw: object) -> None:
        before = {k: v.clone() for k, v in model.state_dict().items()}  # type: ignore[attr-defined]
        save(model, *args, **kw)  # type: ignore[arg-type]
        after = model.state_dict()  # type: ignore[attr-defined]
        seen.append(all(torch.equal(before[k], after[k]) for k in before))

    monkeypatch.setattr(training, "save_model", checked_save)
    base = base_models["llama"]
    with_checkpoints = run(
        _config(tmp_path / "a", base, save_every=2, save_total_limit=5, save_dtype="bfloat16")
    )
    without = run(_config(tmp_path / "b", base, save_dtype="bfloat16"))
    assert len(seen) == 3 + 2 and all(seen)  # 3 checkpoints, 2 final saves
    a = load_file(with_checkpoints / "model.safetensors")
    b = load_file(without / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # checkpoints change nothing
    assert next(iter(a.values())).dtype == torch.bfloat16


def test_grad_accum_counts_optimizer_steps(base_models: dict[str, Path], tmp_path: Path) -> None:
    run(_config(tmp_path / "run", base_models["llama"], max_steps=None, epochs=1.0, grad_accum=2))
    steps = [e["step"] for e in iter_log(tmp_path / "run" / "train_log.jsonl") if "loss" in e]
    assert steps[-1] == 6  # 48 records / batch 4 = 12 batches = 6 optimizer steps


def test_two_processes_train_the_epochs_asked_for(
    base_models: dict[str, Path], tmp_path: Path
) -> None:
    """`accelerate launch` with 2 CPU processes (gloo): each trains half the batches, once."""
    config = _config(tmp_path / "run", base_models["llama"], max_steps=None, epochs=1.0)
    path = tmp_path / "config.json"
    fields = {k: v for k, v in vars(config).items() if k not in ("data", "tiny")}
    fields["data"] = [{"dataset": "stockmark", "task": "NER"}]
    path.write_text(json.dumps(fields))  # YAML is a superset of JSON
    # torchrun-style launch; with no GPU accelerate takes the multi-CPU (gloo) backend
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    launch += ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    launch += ["--dynamo_backend", "no"]
    result = subprocess.run(
        [*launch, "-m", "giellm.cli", "train", "--config", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    log = [e for e in iter_log(tmp_path / "run" / "train_log.jsonl") if "loss" in e]
    assert log[-1]["step"] == 6  # 12 batches over 2 processes, one epoch
    assert log[-1]["lr"] == pytest.approx(0.0, abs=1e-9)  # the cosine schedule ended on time


@pytest.mark.parametrize(
    ("key", "value"),
    [("save_dtype", "fp8"), ("mixed_precision", "bf17"), ("attn_implementation", "fast")],
)
def test_string_settings_are_checked(tmp_path: Path, key: str, value: str) -> None:
    from conftest import run_cli

    config = tmp_path / "c.yaml"
    config.write_text(f"output_dir: x\ndata: [{{dataset: stockmark, task: NER}}]\n{key}: {value}\n")
    result = run_cli("train", "--config", str(config))
    assert result.returncode == 2 and f"{key}: '{value}' is not one of" in result.stderr


def test_gradient_checkpointing_and_attention_settings_train(
    base_models: dict[str, Path], tmp_path: Path
) -> None:
    config = _config(
        tmp_path / "run",
        base_models["llama"],
        gradient_checkpointing=True,
        attn_implementation="eager",
        max_steps=3,
    )
    run(config)
    losses = [e["loss"] for e in iter_log(tmp_path / "run" / "train_log.jsonl") if "loss" in e]
    assert len(losses) == 3 and all(loss > 0 for loss in losses)
