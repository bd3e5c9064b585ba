"""The training loss over the training vocabulary: the output head as one 2-D matmul.

Gemma's vocabulary has 262,144 rows, and a mix's targets use a few thousand of them. Computing
logits over every row for every position (the transformers head path) spends most of a CPU
LoRA step on the head, its softmax and their backward. Here the decoder body runs once, the
hidden states of the positions that predict a target token are gathered, and they meet only
the rows of a fixed output index (the ids that occur in the training targets, plus EOS): one
(N × d) @ (d × K) matmul and a K-way cross-entropy. Under LoRA the head is frozen, so the
adapter is the same object at inference, where decoding restricts the vocabulary anyway.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from giellm.models.sequences import IGNORE


def output_index(labels: Iterable[Sequence[int]], extra: Iterable[int | None] = ()) -> list[int]:
    """The sorted token ids of every target (labels other than `IGNORE`) and of `extra`."""
    ids = {t for row in labels for t in row if t != IGNORE}
    ids.update(t for t in extra if t is not None)
    return sorted(ids)


def decoder_of(model: Any) -> Any:
    """The transformer body (embeddings, layers, final norm) of a causal LM, peft or not."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder()


class VocabularyHead:
    """Loss of a causal LM over the rows of a fixed output index.

    `index` lists the token ids the loss ranks (a target outside it is an error at training
    time, and is skipped in dev loss); None ranks every row (the whole-vocabulary loss, still
    computed at the target positions only). A frozen head's rows are gathered once; a trained
    one's (full fine-tuning) every step, so its gradient reaches exactly those rows.
    """

    def __init__(self, model: Any, index: Sequence[int] | None) -> None:
        import torch

        self.head = model.get_output_embeddings()
        vocab = self.head.weight.shape[0]
        self.whole = index is None
        chosen = torch.arange(vocab) if index is None else torch.tensor(list(index))
        self.index = chosen.long()
        if len(self.index) and int(self.index.max()) >= vocab:
            raise ValueError(f"token id {int(self.index.max())} is outside the vocabulary")
        self.position = torch.full((vocab,), IGNORE, dtype=torch.long)
        self.position[self.index] = torch.arange(len(self.index))
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.softcap = getattr(base.config, "final_logit_softcapping", None)
        self.bias = getattr(self.head, "bias", None)
        self._rows = None if self.head.weight.requires_grad else self._gather()

    def _gather(self) -> tuple[Any, Any]:
        if self.whole:  # every row, in order: the head itself, no copy
            return self.head.weight, self.bias
        weight = self.head.weight.index_select(0, self.index.to(self.head.weight.device))
        bias = None if self.bias is None else self.bias[self.index.to(self.bias.device)]
        return weight, bias

    def loss(self, model: Any, batch: dict[str, Any], *, strict: bool = True) -> Any:
        """Mean cross-entropy over the target tokens of a left- or right-padded batch."""
        import torch

        labels = batch["labels"]
        hidden = decoder_of(model)(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            position_ids=batch.get("position_ids"),
            use_cache=False,
        ).last_hidden_state
        following = labels[:, 1:]
        chosen = following != IGNORE
        states = hidden[:, :-1][chosen]
        target = self.position.to(labels.device)[following[chosen]]
        if strict and bool((target == IGNORE).any()):
            missing = following[chosen][target == IGNORE][0]
            raise ValueError(f"target token {int(missing)} is not in the output index")
        weight, bias = self._rows if self._rows is not None else self._gather()
        logits = torch.nn.functional.linear(states, weight.to(states.dtype), bias)
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return torch.nn.functional.cross_entropy(logits.float(), target, ignore_index=IGNORE)
