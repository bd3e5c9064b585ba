"""Training data: the pools of a config read and projected on their tasks, mixed, cut into
windows, tokenized into (prompt + target, target-only labels) rows, and batched by length."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from giellm.data.mix import mix
from giellm.data.registry import dataset_path, get_format, shared_data_dir
from giellm.errors import GiellmError
from giellm.layout.windows import crop, task_window_bounds
from giellm.models.loading import merge_schemas
from giellm.models.sequences import IGNORE, pad_batch, training_pair
from giellm.schema import Example
from giellm.tasks import LabelSchema, get_task
from giellm.training.config import DataSource, TrainConfig


def source_path(source: DataSource, split: str) -> Path:
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
    records = fmt.read(source_path(source, split), get_task(source.task).name)
    if not source.text_label:
        return [r.model_copy(update={"label": None}) for r in records]
    return list(records)


def windowed(
    examples: Sequence[Example], size: int, overlap: int, label_windows: int = 1
) -> list[Example]:
    """Long records cut into windows; label-only tasks keep the first few (title and lead)."""
    out = []
    for ex in examples:
        bounds = task_window_bounds(ex.text, ex.task, size, overlap, label_windows)
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


def length_batches(
    lengths: Sequence[int], batch_size: int, seed: int, max_tokens: int | None = None
) -> list[list[int]]:
    """Batches of similar length (little padding, faster on CPU), in a seeded random order.

    Rows are sorted by length within chunks of 32 batches; with `max_tokens` a batch also ends
    before its padded size (rows × longest row) would pass it, so long rows come in smaller
    batches and memory stays bounded whatever the mix.
    """
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * 32
    batches: list[list[int]] = []
    for i in range(0, len(order), chunk):
        batch: list[int] = []
        for j in sorted(order[i : i + chunk], key=lambda j: lengths[j]):
            full = len(batch) == batch_size
            if batch and (full or (max_tokens and (len(batch) + 1) * lengths[j] > max_tokens)):
                batches.append(batch)
                batch = []
            batch.append(j)
        if batch:
            batches.append(batch)
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


def has_dev(source: DataSource) -> bool:
    try:
        return source_path(source, "dev").exists()
    except GiellmError:
        return False


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


def loader(
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


def pool_names(sources: Sequence[DataSource]) -> list[str]:
    """One name per pool, "dataset:task"; a repeated one gets "#2", "#3" (two jsonl:NER files,
    or one dataset at two weights, are two pools, never one overwriting the other)."""
    seen: Counter[str] = Counter()
    names = []
    for s in sources:
        name = f"{s.dataset}:{s.task}"
        seen[name] += 1
        names.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return names


def read_pools(sources: Sequence[DataSource], split: str) -> dict[str, list[Example]]:
    """Each pool's records of `split`, by `pool_names` (dev: only pools that have one)."""
    named = zip(pool_names(sources), sources, strict=True)
    return {n: read_source(s, split) for n, s in named if split == "train" or has_dev(s)}


@dataclass(frozen=True)
class TrainingSets:
    train: Encoded
    dev: Encoded
    tasks: dict[str, int]  # records per task in the mix


def training_sets(
    config: TrainConfig,
    tokenizer: Any,
    pools: dict[str, list[Example]],
    dev_pools: dict[str, list[Example]],
) -> TrainingSets:
    """The mixed, windowed, tokenized train rows of `pools`, and dev-loss rows of `dev_pools`."""
    weights = dict(zip(pool_names(config.data), (s.weight for s in config.data), strict=True))
    size, overlap = config.window_chars, config.window_overlap
    mixed = mix(pools, weights, total=config.total, seed=config.seed)
    train = windowed(mixed, size, overlap, config.label_windows)
    dev = mix(dev_pools, total=config.eval_records, seed=config.seed) if dev_pools else []
    return TrainingSets(
        encode_all(tokenizer, train, config.max_len),
        encode_all(tokenizer, windowed(dev, size, overlap), config.max_len),
        dict(Counter(ex.task for ex in train)),
    )
