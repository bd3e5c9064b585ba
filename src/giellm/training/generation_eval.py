"""Dev figures by generation while training: what the dev loss does not say.

At each checkpoint the model being trained extracts N dev records of every pool (spread over
the split) with constrained greedy decoding, as `giellm predict` would, and they are scored:
accuracy for label-only tasks, strict span F1 otherwise. The run keeps the checkpoint with the
best mean figure as `best/`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from giellm.data.registry import get_format
from giellm.models.loading import ModelMeta
from giellm.schema import Example


def dev_figures(
    model: Any,
    tokenizer: Any,
    meta: ModelMeta,
    pools: Mapping[str, Sequence[Example]],
    *,
    limit: int,
    batch_size: int,
    autocast: bool,
) -> dict[str, float]:
    """Each pool's headline figure on `limit` of its dev records ("dataset:task" -> value)."""
    import torch

    from giellm.evaluation.metrics import score
    from giellm.evaluation.systems import main_metric, spread
    from giellm.inference.backends.hf import HFBackend
    from giellm.inference.extractor import Extractor

    device = next(model.parameters()).device.type
    # the transformers model itself (peft injects its layers in place): its forward's keywords
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    extractor = Extractor(backend=HFBackend(lm, tokenizer, meta, device), batch_size=batch_size)
    was_training = model.training
    model.eval()
    figures: dict[str, float] = {}
    try:
        # compiled training layers would recompile for every decoding shape: run them eagerly
        with (
            torch.no_grad(),
            torch.autocast(device, dtype=torch.bfloat16, enabled=autocast),
            torch.compiler.set_stance("force_eager"),
        ):
            for name, records in pools.items():
                gold = spread(records, limit)
                if not gold:
                    continue
                dataset, task = name.partition("#")[0].split(":")  # "#2": a repeated pool
                schema = dataset if task in get_format(dataset).schemas else None
                predicted = [p.example for p in extractor.predict(gold, schema=schema)]
                figures[name] = float(score(gold, predicted).as_dict()[main_metric(task)] or 0.0)
    finally:
        model.train(was_training)
    return figures
