"""The training loop: loss on the target tokens only, through `accelerate` (one CPU, one GPU,
several GPUs, DeepSpeed), with checkpoints that resume exactly (weights, optimizer, schedule,
RNG and the position in the batch order)."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from giellm.allocator import active_allocator
from giellm.errors import GiellmError
from giellm.models.sequences import IGNORE
from giellm.training.config import TrainConfig
from giellm.training.data import Encoded, length_batches, loader
from giellm.training.head import VocabularyHead, output_index
from giellm.training.precision import mixed_precision, on_cpu
from giellm.training.rundir import save_settings

Log = Callable[[dict[str, Any]], None]
POSITION_FILE = "position.json"


@dataclass(frozen=True)
class Stage:
    """One training stage's own settings (the rest come from the config)."""

    name: str  # "pretrain" or "finetune"
    lr: float
    batch_size: int
    epochs: float
    max_steps: int | None
    train_tokens: int | None = None  # a token budget: sets the steps (see `steps_for`)


@dataclass(frozen=True)
class Checkpoints:
    """How a stage saves: `save(model, step)` writes the weights and returns the folder;
    `done(folder)` runs once its accelerate state is complete too (rotation)."""

    save: Callable[[Any, int], Path]
    done: Callable[[Path], None]


def steps_for(
    stage: Stage, batches: int, epoch_tokens: int, processes: int, config: TrainConfig
) -> int:
    """Optimiser steps of a stage: `max_steps`, else the token budget at an epoch's mean tokens
    per step, else `epochs` passes. Accelerate hands each of N processes every N-th batch."""
    if stage.max_steps:
        return stage.max_steps
    per_epoch = math.ceil(batches / processes) / config.grad_accum  # steps per pass
    if stage.train_tokens is not None:
        return max(1, math.ceil(stage.train_tokens / epoch_tokens * per_epoch))
    return max(1, math.ceil(per_epoch * stage.epochs))


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
    # no KV cache: training never reads it, and compiled layers would recompile per layer index
    logits = model(**inputs, logits_to_keep=keep, use_cache=False).logits
    predicted = logits[:, -keep:-1]
    target = labels[:, width - predicted.shape[1] :]
    return torch.nn.functional.cross_entropy(
        predicted.reshape(-1, predicted.shape[-1]).float(),
        target.reshape(-1),
        ignore_index=IGNORE,
    )


def _fusable(params: list[Any]) -> bool:
    """AdamW's fused kernel (one pass over every parameter instead of a dozen small ops per
    tensor: LoRA has hundreds) where the parameters are floating tensors on one CPU or GPU."""
    devices = {p.device for p in params}
    return (
        len(devices) == 1
        and next(iter(devices)).type in ("cpu", "cuda")
        and all(p.is_floating_point() for p in params)
    )


def is_main_process() -> bool:
    """True except in the non-zero ranks of a multi-process (accelerate/torchrun) launch."""
    from accelerate import PartialState

    return bool(PartialState(cpu=on_cpu()).is_main_process)


def newest_state(out: Path) -> Path | None:
    """The accelerate state of the newest complete checkpoint in `out`, if any."""
    states = [p.parent for p in out.glob(f"checkpoint-*/state/{POSITION_FILE}")]
    return max(states, key=lambda p: int(p.parent.name.split("-")[1]), default=None)


def fit(
    model: Any,
    stage: Stage,
    *,
    train: Encoded,
    dev: Encoded | None,
    config: TrainConfig,
    pad_id: int,
    log: Log,
    checkpoints: Checkpoints | None = None,
    resume_from: Path | None = None,
) -> Any:
    """Train `model` on encoded rows; returns the unwrapped model. Logs loss and tokens/s.

    Each checkpoint also holds the accelerate state (optimizer, scheduler, RNG) and the position
    in the batch order, so `resume_from` continues exactly where that checkpoint was taken.
    """
    if not train.ids:
        raise GiellmError(
            f"{stage.name}: no training records (all longer than max_len={config.max_len}?)"
        )
    loop = _Loop(model, stage, train, dev, config, pad_id, log, checkpoints)
    return loop.run(resume_from)


class _Loop:
    """One stage's accelerator, optimizer and schedule, and where the loop stands."""

    def __init__(
        self,
        model: Any,
        stage: Stage,
        train: Encoded,
        dev: Encoded | None,
        config: TrainConfig,
        pad_id: int,
        log: Log,
        checkpoints: Checkpoints | None,
    ) -> None:
        import torch
        from accelerate import Accelerator
        from transformers import get_cosine_schedule_with_warmup
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.stage, self.train, self.dev, self.config = stage, train, dev, config
        self.pad_id, self.log, self.checkpoints = pad_id, log, checkpoints
        acc = Accelerator(
            cpu=on_cpu(),
            gradient_accumulation_steps=config.grad_accum,
            mixed_precision=mixed_precision(config),
        )
        deepspeed = acc.state.deepspeed_plugin
        if deepspeed is not None:  # batches come from our sampler, so DeepSpeed is told the size
            deepspeed.deepspeed_config["train_micro_batch_size_per_gpu"] = stage.batch_size
        self.lengths = [len(x) for x in train.ids]
        # accelerate hands each of N processes every N-th batch: an epoch is 1/N of them each
        batches = len(self._batches(0))
        self.steps = steps_for(stage, batches, sum(self.lengths), acc.num_processes, config)
        self.params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            self.params, lr=stage.lr, weight_decay=config.weight_decay, fused=_fusable(self.params)
        )
        ticks = acc.num_processes  # the prepared scheduler steps once per process per step
        warmup = math.ceil(self.steps * config.warmup_ratio)
        scheduler = get_cosine_schedule_with_warmup(optimizer, warmup * ticks, self.steps * ticks)
        self.model, self.optimizer, self.scheduler = acc.prepare(model, optimizer, scheduler)
        self.acc = acc
        self.head = self._vocabulary_head(train, config)
        self.step = self.epoch = self.skip = self.tokens = 0
        self.records = self.targets = self.cells = 0  # cells: tokens plus padding
        self.window_loss, self.window_n = 0.0, 0
        log(
            {
                "stage": stage.name,
                "processes": acc.num_processes,
                "steps": self.steps,
                "mixed_precision": acc.mixed_precision,
                "threads": torch.get_num_threads(),
                "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                "gomp_spincount": os.environ.get("GOMP_SPINCOUNT"),
                "allocator": active_allocator(),
                "attention": getattr(model.config, "_attn_implementation", None),
                "loss_vocab": "lm_head" if self.head is None else config.loss_vocab,
                "output_index": None if self.head is None else len(self.head.index),
                # an epoch's records and tokens: records/s over an epoch, from tokens/s
                "train_records": len(train.ids),
                "train_tokens": sum(len(row) for row in train.ids),
            }
        )

    def _vocabulary_head(self, train: Encoded, config: TrainConfig) -> VocabularyHead | None:
        """The loss over the training vocabulary (or every row, at the target positions only),
        where the body can be called unwrapped (one process: no DDP or DeepSpeed engine whose
        forward hooks would be skipped)."""
        if config.loss_vocab == "lm_head" or self.acc.num_processes > 1:
            return None
        unwrapped = self.acc.unwrap_model(self.model)
        index = None if config.loss_vocab == "whole" else output_index(train.labels)
        return VocabularyHead(unwrapped, index)

    def _loss(self, batch: dict[str, Any], *, strict: bool = True) -> Any:
        if self.head is None:
            return target_loss(self.model, batch)
        with self.acc.autocast():  # the body is called past the prepared forward's autocast
            return self.head.loss(self.model, batch, strict=strict)

    def run(self, resume_from: Path | None) -> Any:
        from giellm.progress import training_progress

        if resume_from is not None:
            position = json.loads((resume_from / POSITION_FILE).read_text(encoding="utf-8"))
            self.step, self.epoch, self.skip = (
                position["step"],
                position["epoch"],
                position["batch"],
            )
            self.log(
                {"stage": self.stage.name, "resumed_from": str(resume_from), "step": self.step}
            )
        self.started = time.perf_counter()
        self.model.train()
        main = self.acc.is_main_process
        with training_progress(self.stage.name, self.steps, enabled=main) as bar:
            while self.step < self.steps:
                self._epoch(bar, resume_from)
                resume_from = None
                self.epoch += 1
        seconds = time.perf_counter() - self.started
        self.log(
            {
                "stage": self.stage.name,
                "step": self.step,
                "dev_loss": self._dev_loss(),
                "seconds": seconds,
            }
        )
        self.acc.wait_for_everyone()
        return self.acc.unwrap_model(self.model)

    def _epoch(self, bar: Any, resume_from: Path | None) -> None:
        batches = self._batches(self.epoch)
        rows = self.acc.prepare(loader(self.train.ids, self.train.labels, batches, self.pad_id))
        if self.skip:  # the batches this epoch had already trained on before the checkpoint
            rows = self.acc.skip_first_batches(rows, self.skip)
        if resume_from is not None:  # last: weights, optimizer, schedule and RNG as saved
            self.acc.load_state(str(resume_from))
        index, self.skip = self.skip, 0
        for batch in rows:
            index += 1
            if self._train_on(batch):
                self._after_step(bar, index)
                if self.step >= self.steps:
                    return

    def _batches(self, epoch: int) -> list[list[int]]:
        size, seed = self.stage.batch_size, self.config.seed + epoch
        return length_batches(self.lengths, size, seed, self.config.batch_tokens)

    def _train_on(self, batch: dict[str, Any]) -> bool:
        """One micro-batch; True when it completed an optimizer step."""
        with self.acc.accumulate(self.model):
            loss = self._loss(batch)
            self.acc.backward(loss)
            if self.acc.sync_gradients:
                self.acc.clip_grad_norm_(self.params, 1.0)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad()
        self.tokens += int(batch["attention_mask"].sum())
        self.records += int(batch["attention_mask"].shape[0])
        self.targets += int((batch["labels"] != IGNORE).sum())
        self.cells += int(batch["attention_mask"].numel())
        self.window_loss += float(loss.detach())
        self.window_n += 1
        if not self.acc.sync_gradients:
            return False
        self.step += 1
        return True

    def _after_step(self, bar: Any, index: int) -> None:
        """Progress, the loss log, dev loss and checkpoints at their intervals."""
        config, name = self.config, self.stage.name
        elapsed = time.perf_counter() - self.started
        rate = self.tokens / elapsed
        loss = self.window_loss / self.window_n
        bar.update(step=self.step, loss=loss, rate=rate)
        if self.step % config.log_every == 0 or self.step == self.steps:
            lr = self.scheduler.get_last_lr()[0]
            self.log(
                {
                    "stage": name,
                    "step": self.step,
                    "loss": loss,
                    "lr": lr,
                    "tokens_per_s": rate,
                    "elapsed": elapsed,  # seconds since this run (or resume) started
                    "records": self.records,
                    "tokens": self.tokens,  # prompts and targets, padding not counted
                    "target_tokens": self.targets,
                    "padding": 1 - self.tokens / max(self.cells, 1),
                }
            )
            self.window_loss, self.window_n = 0.0, 0
        due = config.eval_every and self.step % config.eval_every == 0 and self.step < self.steps
        if self.dev is not None and due:
            self.log({"stage": name, "step": self.step, "dev_loss": self._dev_loss()})
        if self.checkpoints and config.save_every and self.step % config.save_every == 0:
            self._checkpoint(self.checkpoints, index)

    def _checkpoint(self, checkpoints: Checkpoints, index: int) -> None:
        self.acc.wait_for_everyone()
        target = checkpoints.save(self.acc.unwrap_model(self.model), self.step)
        self.acc.save_state(str(target / "state"))
        if self.acc.is_main_process:  # written last: marks the state complete
            save_settings(self.config, target / "state")
            position = {"step": self.step, "epoch": self.epoch, "batch": index}
            (target / "state" / POSITION_FILE).write_text(json.dumps(position))
            checkpoints.done(target)

    def _dev_loss(self) -> float | None:
        import torch

        if self.dev is None or not self.dev.ids:
            return None
        self.model.eval()
        total, count = 0.0, 0
        lengths = [len(x) for x in self.dev.ids]
        batches = length_batches(lengths, self.stage.batch_size, 0, self.config.batch_tokens)
        with torch.no_grad():
            rows = loader(self.dev.ids, self.dev.labels, batches, self.pad_id)
            for batch in self.acc.prepare(rows):
                n = int((batch["labels"] != IGNORE).sum())
                total += float(self._loss(batch, strict=False)) * n
                count += n
        self.model.train()
        return total / max(count, 1)
