"""Training, saving, reloading and predicting with tiny real models of every architecture.

The tokenizer is trained here on shared Japanese text and the models are built here from seeded
random weights (HF_HUB_OFFLINE: nothing is downloaded), then trained a few steps on real data.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from giellm.data.registry import get_format, load
from giellm.inference.extractor import Extractor
from giellm.models.tiny import ARCHITECTURES, TinySpec
from giellm.models.tokenizer import token_bytes
from giellm.training.config import DataSource, LoraSettings, TrainConfig
from giellm.training.run import iter_log, run

STOCKMARK_TYPES = get_format("stockmark").schema("NER").entity_types


def _config(out: Path, base: Path | None, **kw: object) -> TrainConfig:
    settings: dict[str, object] = {
        "output_dir": str(out),
        "data": [DataSource("stockmark", "NER", 2.0), DataSource("jrte", "SA", 1.0)],
        "base_model": None if base is None else str(base),
        "total": 24,
        "max_steps": 3,
        "batch_size": 4,
        "lr": 5e-3,
        "eval_every": 2,
        "eval_records": 8,
        "log_every": 1,
        "max_new_tokens": 24,
    }
    settings.update(kw)
    return TrainConfig(**settings)  # type: ignore[arg-type]


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(model_dir / "model.safetensors")


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_lora_trains_saves_reloads_and_predicts(
    arch: str, base_models: dict[str, Path], data_dir: Path, tmp_path: Path
) -> None:
    base = base_models[arch]
    before = _weights(base)
    final = run(_config(tmp_path / "run", base, lora=LoraSettings(r=4, alpha=8, dropout=0.0)))

    log = list(iter_log(tmp_path / "run" / "train_log.jsonl"))
    losses = [e["loss"] for e in log if e.get("stage") == "finetune" and "loss" in e]
    assert len(losses) == 3 and all(loss > 0 for loss in losses)
    assert any(e.get("dev_loss") for e in log)

    # only the adapter is saved; its B matrices start at zero, so non-zero means it learned
    adapter = load_file(final / "adapter_model.safetensors")
    lora_b = [t for name, t in adapter.items() if "lora_B" in name]
    assert lora_b and any(t.abs().sum() > 0 for t in lora_b)
    assert not any("lora" not in name for name in adapter)
    assert json.loads((final / "adapter_config.json").read_text())["base_model_name_or_path"]
    after = _weights(base)  # the base model on disk is untouched (it was frozen)
    assert all(torch.equal(before[k], after[k]) for k in before)

    extractor = Extractor(final, batch_size=4, max_new_tokens=24)
    dev = list(load("stockmark", "dev", "NER", data_dir))[:6]
    predictions = list(extractor.predict(dev))
    assert [p.example.id for p in predictions] == [ex.id for ex in dev]
    for p, gold in zip(predictions, dev, strict=True):
        assert p.example.text == gold.text
        assert p.example.label is None  # stockmark has no text-level label: only `<>` allowed
        for e in p.example.entities:
            assert gold.text[e.start : e.end] == e.text and e.type in STOCKMARK_TYPES


def test_full_finetune_changes_weights_and_reloads(
    base_models: dict[str, Path], tmp_path: Path
) -> None:
    base = base_models["llama"]
    final = run(_config(tmp_path / "run", base))
    before, after = _weights(base), _weights(final)
    changed = [k for k in before if not torch.equal(before[k], after[k].to(before[k].dtype))]
    assert changed == list(before)  # full fine-tuning: every weight tensor was trained
    (sa,) = Extractor(final, max_new_tokens=40).extract("とても楽しい旅行でした。", task="SA")
    assert sa.label in get_format("jrte").schema("SA").labels  # type: ignore[operator]


def test_from_scratch_pretrains_and_records_schemas(tmp_path: Path) -> None:
    from giellm.training.config import PretrainSettings

    config = _config(
        tmp_path / "run",
        None,
        tiny=TinySpec(hidden=32, layers=1, heads=2, intermediate=64),
        vocab_size=400,
        pretrain=PretrainSettings(datasets=["jrte"], seq_len=64, max_steps=2, batch_size=4),
    )
    final = run(config)
    stages = {e["stage"] for e in iter_log(tmp_path / "run" / "train_log.jsonl")}
    assert {"tokenizer", "base", "pretrain", "finetune", "done"} <= stages
    meta = json.loads((final / "giellm.json").read_text(encoding="utf-8"))
    assert set(meta["schemas"]["NER"]["entity_types"]) == STOCKMARK_TYPES
    assert set(meta["schemas"]) == {"NER", "SA"}


def test_token_bytes_cover_every_byte(tokenizer_dir: Path) -> None:
    from transformers import AutoTokenizer

    pieces = token_bytes(AutoTokenizer.from_pretrained(tokenizer_dir))
    singles = {p for p in pieces if p is not None and len(p) == 1}
    assert len(singles) == 256  # byte-level BPE: any text can be written token by token


def test_checkpoints_rotate_only_after_the_new_one_is_complete(
    base_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With save_total_limit 1 a complete checkpoint exists at every moment of the run."""
    import giellm.training.run as train_module

    seen: list[list[str]] = []
    real_rmtree = train_module.shutil.rmtree

    def recording_rmtree(path: Path, **kw: object) -> None:
        # what is complete on disk at the moment an old checkpoint is deleted
        seen.append(sorted(p.parent.parent.name for p in path.parent.glob("*/state/position.json")))
        real_rmtree(path, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(train_module.shutil, "rmtree", recording_rmtree)
    run(_config(tmp_path / "run", base_models["llama"], save_every=1, save_total_limit=1))
    assert seen == [["checkpoint-1", "checkpoint-2"], ["checkpoint-2", "checkpoint-3"]]
    left = sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*"))
    assert left == ["checkpoint-3"]
    assert (tmp_path / "run" / "checkpoint-3" / "state" / "position.json").exists()
