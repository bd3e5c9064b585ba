"""Do two extractors decode the same model greedily under the same constraints? Outputs may part
on near ties (bf16 against fp32, other kernels); a broken backend (other weights, an adapter not
applied, a wrong mask) parts on clear choices. So for each window where the two differ, look at
the first token where they part: the reference model's logit gap there (its own pick minus the
other's pick, which its grammar also allows) must be a near tie. `TIE` is calibrated on the CPU,
bf16 against fp32 (tests/test_decoding.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from giellm.constraints.automaton import Grammar, TokenGuide
from giellm.inference.extractor import Extractor
from giellm.schema import Example

TIE = 0.25  # logit gap below which two picks count as a near tie (see the calibration test)


@dataclass
class Parting:
    windows: int = 0
    identical: int = 0
    gaps: list[float] = field(default_factory=list)  # reference pick minus other pick, >= 0
    outside: int = 0  # the other's pick is one the reference grammar forbids there


def first_partings(
    reference: Extractor, other: Extractor, records: Sequence[Example], schema: str | None
) -> Parting:
    """Decode `records` with both; measure where their outputs first part."""
    windows = reference._windows(records)
    schemas = {r.task: reference.schema(r.task, schema) for r in records}
    ours = reference._window_rows(windows, schemas, None)
    theirs = other._window_rows(windows, schemas, None)
    eos = reference.tokenizer.eos_token_id
    found = Parting(windows=len(windows))
    for window, (a, a_ended), (b, b_ended) in zip(windows, ours, theirs, strict=True):
        a, b = a + [eos] * a_ended, b + [eos] * b_ended
        parted = [k for k in range(min(len(a), len(b))) if a[k] != b[k]]
        if not parted:  # the same, or one cut short by the token budget
            found.identical += 1
            continue
        k = parted[0]
        task, text = window.source.task, window.source.text
        guide = TokenGuide(reference.trie, Grammar(task, schemas[task], text))
        for token in a[:k]:
            guide.state = guide.after(token)
        if guide.after(b[k]) is None:
            found.outside += 1
            continue
        prefix = torch.tensor([window.ids + a[:k]], device=reference.model.device)
        with torch.no_grad():
            logits = reference.model(prefix).logits[0, -1].float()
        found.gaps.append(float(logits[a[k]] - logits[b[k]]))
    return found
