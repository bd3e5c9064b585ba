"""Fine-tuning one causal LM on the multi-task mix (full or LoRA), and tiny-model pretraining.

Stages, each optional but the last:
1. base: a local HF model (`base_model`), or a from-scratch tokenizer and tiny model;
2. pretrain: plain next-token prediction on unlabeled text (only for a from-scratch model);
3. fine-tune: the MRE mix of tasks, loss on the target only, dev loss as it goes.

The loop (`giellm.training.loop`) runs through `accelerate`, so `accelerate launch -m giellm.cli
train …` (with or without the DeepSpeed config in `configs/`) trains on several GPUs with no code
change.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from giellm.errors import GiellmError
from giellm.models.bases import load_base, load_base_tokenizer, resolve_base
from giellm.models.loading import ModelMeta, with_pad_token
from giellm.models.tiny import build_tiny
from giellm.models.tokenizer import train_tokenizer
from giellm.training.config import TrainConfig
from giellm.training.data import (
    Encoded,
    corpus_texts,
    pack,
    read_pools,
    read_source,
    schemas_of,
    training_sets,
)
from giellm.training.generation_eval import dev_figures
from giellm.training.head import decoder_of
from giellm.training.loop import Checkpoints, Log, Stage, fit, is_main_process, newest_state
from giellm.training.precision import load_dtype, mixed_precision
from giellm.training.rundir import check_fresh, check_resumable, lock

BEST_FILE = "dev_figures.json"  # in best/: the step and figures that made it the best


def save_model(
    model: Any, tokenizer: Any, out: Path, dtype: str, meta: ModelMeta | None = None
) -> None:
    """Save weights (a `dtype` copy; LoRA: the adapter), tokenizer and giellm metadata (last:
    its presence marks a complete folder)."""
    import torch

    if not is_main_process():
        return
    out.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "peft_config"):  # the embeddings are not adapted: no lookup of the base
        model.save_pretrained(out, save_embedding_layers=False)
    else:  # a cast copy: casting the live model would round the weights being trained
        target = getattr(torch, dtype)
        state = {k: v.detach().to(target) for k, v in model.state_dict().items()}
        model.save_pretrained(out, state_dict=state)
    tokenizer.save_pretrained(out)
    if meta is not None:
        meta.save(out)


def prepare_base(config: TrainConfig, out: Path, log: Log) -> tuple[Any, Any, Path]:
    """(model, tokenizer, directory) to fine-tune: the given base or a fresh tiny model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(config.seed)
    if config.base_model is not None:
        source = resolve_base(config.base_model)
        options = {}
        if config.attn_implementation is not None:
            options["attn_implementation"] = config.attn_implementation
        model = load_base(source, dtype=getattr(torch, load_dtype(config)), **options)
        return model, with_pad_token(load_base_tokenizer(source)), Path(source.name)
    base = out / "base"
    if config.resume and (base / "config.json").exists():  # pretrained before the kill
        tokenizer = AutoTokenizer.from_pretrained(base)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        return model, tokenizer, base.resolve()
    corpus = corpus_texts(config.pretrain.datasets) if config.pretrain else []
    corpus += [ex.text for s in config.data for ex in read_source(s, "train")]
    started = time.perf_counter()
    tokenizer = train_tokenizer(corpus, config.vocab_size, base)
    log(
        {
            "stage": "tokenizer",
            "vocab": len(tokenizer),
            "texts": len(corpus),
            "seconds": time.perf_counter() - started,
        }
    )
    model = build_tiny(config.tiny, tokenizer, seed=config.seed)
    log({"stage": "base", "parameters": sum(p.numel() for p in model.parameters())})
    if config.pretrain:
        p = config.pretrain
        blocks = pack(tokenizer, corpus_texts(p.datasets), p.seq_len)
        log({"stage": "pretrain", "blocks": len(blocks), "tokens": len(blocks) * p.seq_len})
        stage = Stage("pretrain", p.lr, p.batch_size, p.epochs, p.max_steps)
        blocks_set = Encoded(blocks, blocks, 0)
        pad = tokenizer.pad_token_id
        model = fit(model, stage, train=blocks_set, dev=None, config=config, pad_id=pad, log=log)
    save_model(model, tokenizer, base, "float32")
    model.config.name_or_path = str(base.resolve())
    return model, tokenizer, base.resolve()


def with_lora(model: Any, config: TrainConfig) -> Any:
    from peft import LoraConfig, get_peft_model
    from transformers.pytorch_utils import Conv1D

    lora = config.lora
    assert lora is not None
    peft_config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules or "all-linear",
        task_type="CAUSAL_LM",
        # GPT-2 style models store linear weights transposed (Conv1D)
        fan_in_fan_out=any(isinstance(m, Conv1D) for m in model.modules()),
    )
    model = get_peft_model(model, peft_config)
    if config.init_adapter is not None:
        load_adapter_weights(model, adapter_dir(config.init_adapter), peft_config)
    if mixed_precision(config) != "no":
        # peft casts each adapter's input to the adapter's float32 (a copy of every activation,
        # per adapted layer, per step); under autocast the matmul picks its dtype anyway
        for module in model.modules():
            if hasattr(module, "cast_input_dtype_enabled"):
                module.cast_input_dtype_enabled = False
    return model


def adapter_dir(name: str) -> Path:
    """The folder of `init_adapter`: `default` is the shipped default model."""
    from giellm.models.loading import DEFAULT_MODEL_DIR

    folder = DEFAULT_MODEL_DIR if name == "default" else Path(name)
    if not (folder / "adapter_config.json").is_file():
        raise GiellmError(f"init_adapter: {folder} holds no LoRA adapter (adapter_config.json)")
    return folder


def load_adapter_weights(model: Any, folder: Path, wanted: Any) -> None:
    """Start the fresh LoRA of `model` from the adapter in `folder`: same rank, scale and
    adapted modules, or a clear error (a different shape would not load, a different scale
    would silently change what the weights mean)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    saved = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    for key, ours in (("r", wanted.r), ("lora_alpha", wanted.lora_alpha)):
        if saved.get(key) != ours:
            raise GiellmError(
                f"init_adapter: {folder} has {key}={saved.get(key)!r}, this config {ours!r}; "
                "set lora to the adapter's settings"
            )
    result = set_peft_model_state_dict(model, load_file(folder / "adapter_model.safetensors"))
    missing = [k for k in result.missing_keys if "lora_" in k]
    if result.unexpected_keys or missing:
        names = (result.unexpected_keys or missing)[:3]
        raise GiellmError(
            f"init_adapter: {folder} adapts other modules than this config ({', '.join(names)} "
            "…); set lora.target_modules to the adapter's"
        )


def run(config: TrainConfig, log: Log | None = None) -> Path:
    """All stages of `config`; returns the directory of the final model (or adapter)."""
    if not config.data:
        raise GiellmError("config has no data: list at least one {dataset, task} pool")
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not is_main_process():  # other ranks train in step but neither log nor save
        return _run(config, out, lambda entry: None, _resume_state(config, out))
    held = lock(out)  # before anything is read or written: one run per folder
    try:
        resume_from = _resume_state(config, out)
        if resume_from is None:
            check_fresh(out)
        log_file = (out / "train_log.jsonl").open("a", encoding="utf-8")

        def write(entry: dict[str, Any]) -> None:
            log_file.write(json.dumps(entry, ensure_ascii=False) + "\n")
            log_file.flush()
            if log is not None:
                log(entry)

        try:
            return _run(config, out, write, resume_from)
        finally:
            log_file.close()
    finally:
        held.close()


def _resume_state(config: TrainConfig, out: Path) -> Path | None:
    """With --resume, the newest checkpoint's state, saved under the same settings; checked
    before any model is built."""
    if not config.resume:
        return None
    state = newest_state(out)
    if state is None:
        raise GiellmError(f"{out}: no complete checkpoint to resume from (save_every > 0?)")
    check_resumable(config, state)
    return state


def _run(config: TrainConfig, out: Path, log: Log, resume_from: Path | None) -> Path:
    pools = read_pools(config.data, "train")  # a missing file fails before any model work
    dev_pools = read_pools(config.data, "dev")  # dev loss and, with eval_generate, dev figures
    model, tokenizer, base = prepare_base(config, out, log)
    if config.gradient_checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})
        model.config.use_cache = False
    if config.lora is not None:
        model = with_lora(model, config)
    if config.compile:
        for layer in decoder_of(model).layers:  # in place: parameter names stay the same
            layer.compile(dynamic=True)
    sets = training_sets(config, tokenizer, pools, dev_pools)
    log(
        {
            "stage": "finetune",
            "records": len(sets.train.ids),
            "skipped_too_long": sets.train.skipped,
            "dev_records": len(sets.dev.ids),
            "pools": sets.tasks,
        }
    )
    meta = ModelMeta(
        schemas_of(config.data),
        config.window_chars,
        config.window_overlap,
        config.max_new_tokens,
        config.label_windows,
    )
    stage = Stage(
        "finetune", config.lr, config.batch_size, config.epochs, config.max_steps,
        config.train_tokens,
    )  # fmt: skip
    model = fit(
        model,
        stage,
        train=sets.train,
        dev=sets.dev,
        config=config,
        pad_id=tokenizer.pad_token_id,
        log=log,
        checkpoints=_checkpoints(config, out, tokenizer, meta, dev_pools, log),
        resume_from=resume_from,
    )
    final = out / "final"
    save_model(model, tokenizer, final, config.save_dtype, meta)
    if is_main_process():
        write_card(config, final, out / "train_log.jsonl")
    log({"stage": "done", "model": str(final), "base": str(base)})
    return final


def write_card(config: TrainConfig, folder: Path, log_file: Path) -> None:
    """The model card (README.md) over peft's template: data and licenses, settings, time."""
    from giellm.data.registry import LICENSES
    from giellm.models.bases import PACKAGED
    from giellm.training.card import model_card

    log = list(iter_log(log_file)) if log_file.exists() else []
    packaged = PACKAGED.get(config.base_model or "")
    terms = packaged.license if packaged is not None else None
    card = model_card(config, LICENSES, log, terms)
    (folder / "README.md").write_text(card, encoding="utf-8")


def _checkpoints(
    config: TrainConfig,
    out: Path,
    tokenizer: Any,
    meta: ModelMeta,
    dev_pools: dict[str, list[Any]],
    log: Log,
) -> Checkpoints:
    """checkpoint-N folders, at most `save_total_limit` of them (and `best/` with
    `eval_generate`)."""
    kept: list[Path] = []

    def save(unwrapped: Any, step: int) -> Path:
        target = out / f"checkpoint-{step}"
        if is_main_process():
            save_model(unwrapped, tokenizer, target, config.save_dtype, meta)
            if config.eval_generate and dev_pools:
                _keep_if_best(unwrapped, target, step)
        return target

    def _keep_if_best(unwrapped: Any, target: Path, step: int) -> None:
        started = time.perf_counter()
        figures = dev_figures(
            unwrapped,
            tokenizer,
            meta,
            dev_pools,
            limit=config.eval_generate,
            batch_size=config.batch_size,
            autocast=mixed_precision(config) == "bf16",
        )
        mean = sum(figures.values()) / max(len(figures), 1)
        seconds = time.perf_counter() - started
        log({"stage": "eval", "step": step, "dev": figures, "mean": mean, "seconds": seconds})
        best = out / "best"
        record = best / BEST_FILE
        previous = json.loads(record.read_text())["mean"] if record.exists() else None
        if previous is None or mean > previous:
            shutil.rmtree(best, ignore_errors=True)
            shutil.copytree(target, best, ignore=shutil.ignore_patterns("state"))
            record.write_text(json.dumps({"step": step, "mean": mean, "dev": figures}) + "\n")

    def done(target: Path) -> None:
        """Rotate only once the new checkpoint is complete: a kill never leaves none to resume."""
        kept.append(target)
        while len(kept) > config.save_total_limit:
            shutil.rmtree(kept.pop(0), ignore_errors=True)

    return Checkpoints(save, done)


def iter_log(path: Path) -> Iterator[dict[str, Any]]:
    """Entries of a `train_log.jsonl` (for reports and tests)."""
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)
