"""The model's probability of given continuations (teacher-forced), for closed label sets.

Greedy decoding yields one label; a user ranking or thresholding wants the model's whole
distribution over the labels, which is each label's full token sequence scored after the prompt
(not the greedy path's token probabilities, which cover one label only). Only the continuation
positions are projected onto the vocabulary, so memory stays at rows x continuation x vocab.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from giellm.models.sequences import pad_batch


def continuation_logprobs(
    model: Any,
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    pad_id: int,
    batch_size: int = 16,
) -> list[float]:
    """log P(continuation | prompt) for each (prompt ids, continuation ids) pair: the sum of
    the continuation tokens' log-probabilities over the whole vocabulary (with the model's
    final logit soft-capping, as Gemma applies it)."""
    body, head = model.base_model, model.get_output_embeddings()
    cap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    device = next(model.parameters()).device
    out: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            padded, masks = pad_batch([[*p, *c] for p, c in chunk], pad_id)  # right-padded
            hidden = body(
                input_ids=torch.tensor(padded, device=device),
                attention_mask=torch.tensor(masks, device=device),
            ).last_hidden_state
            for row, (prompt, continuation) in enumerate(chunk):
                # the state at position i predicts token i + 1
                at = torch.arange(len(prompt) - 1, len(prompt) + len(continuation) - 1)
                logits = head(hidden[row, at.to(device)]).float()
                if cap:
                    logits = torch.tanh(logits / cap) * cap
                wanted = torch.tensor(continuation, device=device)
                picked = logits.log_softmax(-1).gather(-1, wanted[:, None])
                out.append(float(picked.sum()))
    return out
