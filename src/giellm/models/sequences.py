"""Token sequences for training and generation: prompt ids, (input, labels) pairs, batches.

Prompt and target are tokenized separately and joined, so the prompt ids at training time are
exactly the ids generation starts from; the loss covers the target and the end-of-sequence token
only (`IGNORE` elsewhere).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from giellm.layout.format import build_prompt, encode_target
from giellm.schema import Example

IGNORE = -100


def prompt_ids(tokenizer: Any, text: str, task: str) -> list[int]:
    """BOS (when the tokenizer has one) + the prompt of `text` for `task`."""
    ids: list[int] = tokenizer(build_prompt(text, task), add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    return ids if bos is None else [bos, *ids]


def training_pair(tokenizer: Any, example: Example) -> tuple[list[int], list[int]]:
    """(input ids, labels) for one record: the loss sees only the target and EOS."""
    prompt = prompt_ids(tokenizer, example.text, example.task)
    target = tokenizer(encode_target(example), add_special_tokens=False)["input_ids"]
    target = [*target, tokenizer.eos_token_id]
    return prompt + target, [IGNORE] * len(prompt) + target


def pad_batch(
    rows: Sequence[Sequence[int]], pad_id: int, *, left: bool = False, value: int | None = None
) -> tuple[list[list[int]], list[list[int]]]:
    """Pad rows to one length; returns (padded rows, attention masks)."""
    width = max(len(r) for r in rows)
    fill = pad_id if value is None else value
    padded, masks = [], []
    for row in rows:
        gap = [fill] * (width - len(row))
        padded.append([*gap, *row] if left else [*row, *gap])
        ones, zeros = [1] * len(row), [0] * len(gap)
        masks.append([*zeros, *ones] if left else [*ones, *zeros])
    return padded, masks
