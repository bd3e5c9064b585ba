"""Fine-tuning one causal LM on the multi-task mix (full or LoRA), and tiny-model pretraining.

Stages, each optional but the last:
1. base: a local HF model (`base_model`), or a from-scratch tokenizer and tiny model;
2. pretrain: plain next-token prediction on unlabeled text (only for a from-scratch model);
3. fine-tune: the MRE mix of tasks, loss on the target only, dev loss as it goes.

The loop runs through `accelerate`, so `accelerate launch -m giellm.cli train …` (with or without
the DeepSpeed config in `configs/`) trains on several GPUs with no code change.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from giellm.data.mix import mix
from giellm.data.registry import dataset_path, get_format, shared_data_dir
from giellm.errors import GiellmError
from giellm.layout.windows import crop, window_bounds
from giellm.models.bases import load_base, load_base_tokenizer, resolve_base
from giellm.models.loading import ModelMeta, merge_schemas, with_pad_token
from giellm.models.sequences import IGNORE, pad_batch, training_pair
from giellm.models.tiny import build_tiny
from giellm.models.tokenizer import train_tokenizer
from giellm.schema import Example
from giellm.tasks import LabelSchema, get_task, label_only
from giellm.training.config import DataSource, TrainConfig

Log = Callable[[dict[str, Any]], None]


# --- data --------------------------------------------------------------------------------------


def _source_path(source: DataSource, split: str) -> Path:
    explicit = source.train if split == "train" else source.dev
    if explicit is not None:
        return Path(explicit)
    data_dir = shared_data_dir()
    if data_dir is None:
        raise GiellmError(f"{source.dataset}: no file given and no shared data directory found")
    return dataset_path(get_format(source.dataset), split, data_dir)


def read_source(source: DataSource, split: str) -> list[Example]:
    """All records of one pool's split, projected on its task."""
    fmt = get_format(source.dataset)
    records = fmt.read(_source_path(source, split), get_task(source.task).name)
    if not source.text_label:
        return [r.model_copy(update={"label": None}) for r in records]
    return list(records)


def windowed(
    examples: Sequence[Example], size: int, overlap: int, label_windows: int = 1
) -> list[Example]:
    """Long records cut into windows; label-only tasks keep the first few (title and lead)."""
    out = []
    for ex in examples:
        bounds = window_bounds(len(ex.text), size, overlap)
        if label_only(ex.task):
            bounds = bounds[:label_windows]
        for k, (start, end) in enumerate(bounds):
            part = crop(ex, start, end)
            if part.text.strip():
                out.append(
                    part if len(bounds) == 1 else part.model_copy(update={"id": f"{ex.id}#w{k}"})
                )
    return out


def schemas_of(sources: Sequence[DataSource]) -> dict[str, LabelSchema]:
    """Per task, the union of the pools' label sets: what constrained decoding may emit."""
    by_task: dict[str, list[LabelSchema]] = {}
    for s in sources:
        schema = get_format(s.dataset).schema(s.task)
        if not s.text_label:
            schema = replace(schema, labels=frozenset())
        by_task.setdefault(get_task(s.task).name, []).append(schema)
    return {task: merge_schemas(schemas) for task, schemas in by_task.items()}


@dataclass
class Encoded:
    ids: list[list[int]]
    labels: list[list[int]]
    skipped: int


def encode_all(tokenizer: Any, examples: Sequence[Example], max_len: int) -> Encoded:
    ids, labels, skipped = [], [], 0
    for ex in examples:
        x, y = training_pair(tokenizer, ex)
        if len(x) > max_len:
            skipped += 1
            continue
        ids.append(x)
        labels.append(y)
    return Encoded(ids, labels, skipped)


def length_batches(lengths: Sequence[int], batch_size: int, seed: int) -> list[list[int]]:
    """Batches of similar length (less padding, faster on CPU), in a seeded random order."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * 32
    batches = []
    for i in range(0, len(order), chunk):
        group = sorted(order[i : i + chunk], key=lambda j: lengths[j])
        batches += [group[k : k + batch_size] for k in range(0, len(group), batch_size)]
    rng.shuffle(batches)
    return batches


def pack(tokenizer: Any, texts: Sequence[str], seq_len: int) -> list[list[int]]:
    """Texts joined by EOS and cut into `seq_len` blocks (the last partial block dropped)."""
    stream: list[int] = []
    for text in texts:
        stream += tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return [stream[i : i + seq_len] for i in range(0, len(stream) - seq_len + 1, seq_len)]


def corpus_texts(datasets: Sequence[str]) -> list[str]:
    """The train-split texts of shared datasets (never dev: the dev figures stay honest)."""
    texts: list[str] = []
    for name in datasets:
        fmt = get_format(name)
        texts += [
            ex.text for ex in read_source(DataSource(dataset=name, task=fmt.tasks[0]), "train")
        ]
    return texts


# --- the loop ----------------------------------------------------------------------------------


def _collate(rows: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, Any]:
    """Left-padded: every row's target ends in the last column (see `target_loss`)."""
    import torch

    ids, mask = pad_batch([r[0] for r in rows], pad_id, left=True)
    labels, _ = pad_batch([r[1] for r in rows], pad_id, left=True, value=IGNORE)
    attention = torch.tensor(mask)
    return {
        "input_ids": torch.tensor(ids),
        "attention_mask": attention,
        "position_ids": (attention.cumsum(-1) - 1).clamp(min=0),
        "labels": torch.tensor(labels),
    }


def target_loss(model: Any, batch: dict[str, Any]) -> Any:
    """Mean cross-entropy over the target tokens, with logits computed for the target only.

    Rows are left-padded, so the targets sit in the last columns and `logits_to_keep` skips
    the output projection over the prompts: with Gemma's 262k-row vocabulary that projection
    is most of the model's arithmetic.
    """
    import torch

    labels = batch["labels"]
    width = labels.shape[1]
    first = int((labels != IGNORE).float().argmax(dim=1).min()) if labels.numel() else 0
    keep = min(width, width - first + 1)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, logits_to_keep=keep).logits
    predicted = logits[:, -keep:-1]
    target = labels[:, width - predicted.shape[1] :]
    return torch.nn.functional.cross_entropy(
        predicted.reshape(-1, predicted.shape[-1]).float(),
        target.reshape(-1),
        ignore_index=IGNORE,
    )


def _loader(
    ids: list[list[int]], labels: list[list[int]], batches: list[list[int]], pad_id: int
) -> Any:
    import torch
    from torch.utils.data import DataLoader

    rows = list(zip(ids, labels, strict=True))
    # its own generator: iterating must not draw from the global RNG that dropout uses, or a
    # resumed run would see other dropout masks than the run it continues
    return DataLoader(
        rows,
        batch_sampler=batches,
        collate_fn=lambda b: _collate(b, pad_id),
        generator=torch.Generator().manual_seed(0),
    )


POSITION_FILE = "position.json"


def fit(
    model: Any,
    *,
    stage: str,
    train: Encoded,
    dev: Encoded | None,
    config: TrainConfig,
    lr: float,
    batch_size: int,
    epochs: float,
    max_steps: int | None,
    pad_id: int,
    log: Log,
    checkpoint: Callable[[Any, int], Path] | None = None,
    checkpoint_done: Callable[[Path], None] | None = None,
    resume_from: Path | None = None,
) -> Any:
    """Train `model` on encoded rows; returns the unwrapped model. Logs loss and tokens/s.

    Each checkpoint also holds the accelerate state (optimizer, scheduler, RNG) and the position
    in the batch order, so `resume_from` continues exactly where that checkpoint was taken.
    """
    import torch
    from accelerate import Accelerator
    from transformers import get_cosine_schedule_with_warmup
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    from giellm.progress import training_progress

    if not train.ids:
        raise GiellmError(
            f"{stage}: no training records (all longer than max_len={config.max_len}?)"
        )
    accelerator = Accelerator(
        cpu=_on_cpu(),
        gradient_accumulation_steps=config.grad_accum,
        mixed_precision=config.mixed_precision,
    )
    deepspeed = accelerator.state.deepspeed_plugin
    if deepspeed is not None:  # our batches come from a sampler, so DeepSpeed is told the size
        deepspeed.deepspeed_config["train_micro_batch_size_per_gpu"] = batch_size
    lengths = [len(x) for x in train.ids]
    # accelerate hands each of N processes every N-th batch: an epoch is 1/N of the batches each
    per_epoch = math.ceil(math.ceil(len(lengths) / batch_size) / accelerator.num_processes)
    steps = max_steps or max(1, math.ceil(per_epoch * epochs / config.grad_accum))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay)
    # the prepared scheduler steps once per process at each optimizer step
    ticks = accelerator.num_processes
    scheduler = get_cosine_schedule_with_warmup(
        optimizer, math.ceil(steps * config.warmup_ratio) * ticks, steps * ticks
    )
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    log({"stage": stage, "processes": accelerator.num_processes, "steps": steps})

    def epoch_loader(epoch: int) -> Any:
        batches = length_batches(lengths, batch_size, config.seed + epoch)
        return accelerator.prepare(_loader(train.ids, train.labels, batches, pad_id))

    def dev_loss() -> float | None:
        if dev is None or not dev.ids:
            return None
        model.eval()
        total, count = 0.0, 0
        dev_lengths = [len(x) for x in dev.ids]
        batches = length_batches(dev_lengths, batch_size, 0)
        with torch.no_grad():
            for batch in accelerator.prepare(_loader(dev.ids, dev.labels, batches, pad_id)):
                n = int((batch["labels"] != IGNORE).sum())
                total += float(target_loss(model, batch)) * n
                count += n
        model.train()
        return total / max(count, 1)

    model.train()
    step, epoch, skip, tokens, window_loss, window_n = 0, 0, 0, 0, 0.0, 0
    if resume_from is not None:
        position = json.loads((resume_from / POSITION_FILE).read_text(encoding="utf-8"))
        step, epoch, skip = position["step"], position["epoch"], position["batch"]
        log({"stage": stage, "resumed_from": str(resume_from), "step": step})
    started = time.perf_counter()
    with training_progress(stage, steps, enabled=accelerator.is_main_process) as bar:
        while step < steps:
            loader = epoch_loader(epoch)
            if skip:  # the batches this epoch had already trained on before the checkpoint
                loader = accelerator.skip_first_batches(loader, skip)
            if resume_from is not None:  # last: weights, optimizer, schedule and RNG as saved
                accelerator.load_state(str(resume_from))
                resume_from = None
            batch_index, skip = skip, 0
            for batch in loader:
                batch_index += 1
                with accelerator.accumulate(model):
                    loss = target_loss(model, batch)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(params, 1.0)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad()
                tokens += int(batch["attention_mask"].sum())
                window_loss += float(loss.detach())
                window_n += 1
                if not accelerator.sync_gradients:
                    continue
                step += 1
                rate = tokens / (time.perf_counter() - started)
                bar.update(step=step, loss=window_loss / window_n, rate=rate)
                if step % config.log_every == 0 or step == steps:
                    log(
                        {
                            "stage": stage,
                            "step": step,
                            "loss": window_loss / window_n,
                            "lr": scheduler.get_last_lr()[0],
                            "tokens_per_s": rate,
                        }
                    )
                    window_loss, window_n = 0.0, 0
                if (
                    dev is not None
                    and config.eval_every
                    and step % config.eval_every == 0
                    and step < steps
                ):
                    log({"stage": stage, "step": step, "dev_loss": dev_loss()})
                if checkpoint and config.save_every and step % config.save_every == 0:
                    accelerator.wait_for_everyone()
                    target = checkpoint(accelerator.unwrap_model(model), step)
                    accelerator.save_state(str(target / "state"))
                    if accelerator.is_main_process:  # written last: marks the state complete
                        position = {"step": step, "epoch": epoch, "batch": batch_index}
                        (target / "state" / POSITION_FILE).write_text(json.dumps(position))
                        if checkpoint_done is not None:
                            checkpoint_done(target)
                if step >= steps:
                    break
            epoch += 1
    log(
        {
            "stage": stage,
            "step": step,
            "dev_loss": dev_loss(),
            "seconds": time.perf_counter() - started,
        }
    )
    accelerator.wait_for_everyone()
    return accelerator.unwrap_model(model)


def newest_state(out: Path) -> Path | None:
    """The accelerate state of the newest complete checkpoint in `out`, if any."""
    states = [p.parent for p in out.glob(f"checkpoint-*/state/{POSITION_FILE}")]
    return max(states, key=lambda p: int(p.parent.name.split("-")[1]), default=None)


# --- stages ------------------------------------------------------------------------------------


def _is_main_process() -> bool:
    """True except in the non-zero ranks of a multi-process (accelerate/torchrun) launch."""
    from accelerate import PartialState

    return bool(PartialState(cpu=_on_cpu()).is_main_process)


def _on_cpu() -> bool:
    """Train on CPUs: asked for (`accelerate launch --cpu`) or no GPU. The first
    `PartialState` fixes the backend, so every caller must agree: several processes on CPUs
    then join one gloo group instead of each training alone."""
    import torch
    from accelerate.utils import parse_flag_from_env

    return bool(parse_flag_from_env("ACCELERATE_USE_CPU")) or not torch.cuda.is_available()


def _save(model: Any, tokenizer: Any, out: Path, dtype: str, meta: ModelMeta | None = None) -> None:
    import torch

    if not _is_main_process():
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
        model = load_base(source, dtype=getattr(torch, config.load_dtype), **options)
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
        model = fit(
            model,
            stage="pretrain",
            train=Encoded(blocks, blocks, 0),
            dev=None,
            config=config,
            lr=p.lr,
            batch_size=p.batch_size,
            epochs=p.epochs,
            max_steps=p.max_steps,
            pad_id=tokenizer.pad_token_id,
            log=log,
        )
    _save(model, tokenizer, base, "float32")
    model.config.name_or_path = str(base.resolve())
    return model, tokenizer, base.resolve()


def _with_lora(model: Any, config: TrainConfig) -> Any:
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
    return get_peft_model(model, peft_config)


def run(config: TrainConfig, log: Log | None = None) -> Path:
    """All stages of `config`; returns the directory of the final model (or adapter)."""
    if not config.data:
        raise GiellmError("config has no data: list at least one {dataset, task} pool")
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not _is_main_process():  # other ranks train in step but neither log nor save
        return _run(config, out, lambda entry: None)
    log_file = (out / "train_log.jsonl").open("a", encoding="utf-8")

    def write(entry: dict[str, Any]) -> None:
        log_file.write(json.dumps(entry, ensure_ascii=False) + "\n")
        log_file.flush()
        if log is not None:
            log(entry)

    try:
        return _run(config, out, write)
    finally:
        log_file.close()


def _run(config: TrainConfig, out: Path, log: Log) -> Path:
    pools = {f"{s.dataset}:{s.task}": read_source(s, "train") for s in config.data}
    weights = {f"{s.dataset}:{s.task}": s.weight for s in config.data}
    model, tokenizer, base = prepare_base(config, out, log)
    if config.gradient_checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})
        model.config.use_cache = False
    if config.lora is not None:
        model = _with_lora(model, config)
    size, overlap = config.window_chars, config.window_overlap
    mixed = windowed(
        mix(pools, weights, total=config.total, seed=config.seed),
        size,
        overlap,
        config.label_windows,
    )
    train = encode_all(tokenizer, mixed, config.max_len)
    dev_pools = {
        s.dataset + ":" + s.task: read_source(s, "dev") for s in config.data if _has_dev(s)
    }
    dev_records = windowed(
        mix(dev_pools, total=config.eval_records, seed=config.seed) if dev_pools else [],
        size,
        overlap,
    )
    dev = encode_all(tokenizer, dev_records, config.max_len)
    log(
        {
            "stage": "finetune",
            "records": len(train.ids),
            "skipped_too_long": train.skipped,
            "dev_records": len(dev.ids),
            "pools": dict(Counter(ex.task for ex in mixed)),
        }
    )
    meta = ModelMeta(
        schemas_of(config.data), size, overlap, config.max_new_tokens, config.label_windows
    )
    trained_dirs: list[Path] = []

    def checkpoint(unwrapped: Any, step: int) -> Path:
        target = out / f"checkpoint-{step}"
        if _is_main_process():
            _save(unwrapped, tokenizer, target, config.save_dtype, meta)
        return target

    def checkpoint_done(target: Path) -> None:
        """Rotate only once the new checkpoint is complete: a kill never leaves none to resume."""
        trained_dirs.append(target)
        while len(trained_dirs) > config.save_total_limit:
            shutil.rmtree(trained_dirs.pop(0), ignore_errors=True)

    resume_from = None
    if config.resume:
        resume_from = newest_state(out)
        if resume_from is None:
            raise GiellmError(f"{out}: no complete checkpoint to resume from (save_every > 0?)")

    model = fit(
        model,
        stage="finetune",
        train=train,
        dev=dev,
        config=config,
        lr=config.lr,
        batch_size=config.batch_size,
        epochs=config.epochs,
        max_steps=config.max_steps,
        pad_id=tokenizer.pad_token_id,
        log=log,
        checkpoint=checkpoint,
        checkpoint_done=checkpoint_done,
        resume_from=resume_from,
    )
    final = out / "final"
    _save(model, tokenizer, final, config.save_dtype, meta)
    log({"stage": "done", "model": str(final), "base": str(base)})
    return final


def _has_dev(source: DataSource) -> bool:
    try:
        return _source_path(source, "dev").exists()
    except GiellmError:
        return False


def iter_log(path: Path) -> Iterator[dict[str, Any]]:
    """Entries of a `train_log.jsonl` (for reports and tests)."""
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)
