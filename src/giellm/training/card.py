"""The model card `giellm train` writes beside the weights (README.md), instead of peft's template.

A card says what a user needs before using or sharing the model: the base and its terms, every
training pool with its license (the strictest one binds the weights), the settings, how long it
trained on what, the dev figures it reached, and the command that rebuilds it. Pure: it reads
only what it is given.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from giellm.training.config import TrainConfig

# licenses of the shared datasets (the registry's), and what they mean for the weights
NON_COMMERCIAL = ("NC", "research use", "none stated")


def _license_note(licenses: Sequence[str | None]) -> str:
    note = _commercial_note(licenses)
    if any(text and re.search(r"\bND\b", text) for text in licenses):
        note += (
            " A pool is no-derivatives (ND): whether trained weights are a derivative of it is "
            "unsettled; read its terms before you share the weights."
        )
    return note


def _commercial_note(licenses: Sequence[str | None]) -> str:
    if any(text is None for text in licenses):
        return "Some pools are your own files: their terms bind the weights too."
    if any(mark in text for text in licenses if text for mark in NON_COMMERCIAL):
        return (
            "At least one pool is non-commercial or research-only: treat the weights as "
            "research-only, or retrain without those pools."
        )
    return "Every pool allows commercial use on its license's terms (attribution, share-alike)."


def _length(config: TrainConfig) -> str:
    if config.max_steps:
        return f"{config.max_steps} steps"
    if config.train_tokens:
        return f"{config.train_tokens:,} training tokens"
    return f"{config.epochs:g} epochs"


def model_card(
    config: TrainConfig,
    licenses: Mapping[str, str | None],
    log: Sequence[dict[str, Any]],
    base_terms: str | None = None,
) -> str:
    """The card's Markdown (YAML front matter for the hub, then the sections)."""
    adapter = config.lora is not None
    front = {
        "library_name": "peft" if adapter else "transformers",
        "base_model": config.base_model or "giellm tiny (from scratch)",
        "language": ["ja"],
        "pipeline_tag": "text-generation",
        "tags": ["giellm", "information-extraction", "japanese", *(["lora"] if adapter else [])],
        "license": "other",
    }
    pools = [
        f"| {p.dataset} | {p.task} | {p.weight:g} | {licenses.get(p.dataset) or 'your data'} |"
        for p in config.data
    ]
    done = next((e for e in reversed(log) if "seconds" in e and "dev_loss" in e), None)
    setup = next((e for e in log if "threads" in e), {})
    figures = [e for e in log if e.get("stage") == "eval" and "dev" in e]
    lora = config.lora
    shape = f"; LoRA r={lora.r}, alpha {lora.alpha}" if lora else "; every weight"
    lines = [
        "---",
        yaml.safe_dump(front, allow_unicode=True, sort_keys=False).strip(),
        "---",
        "",
        f"# giellm model: {', '.join(sorted({p.task for p in config.data}))} in Japanese",
        "",
        "A giellm model (GIELLM, arXiv 2311.06838): one causal LM that",
        "writes every task as text, `<text-level label>` then word-level items, decoded back to",
        "records with character offsets.",
        "",
        "```bash",
        'giellm extract --model THIS_DIR "テキスト" --task ' + config.data[0].task,
        "```",
        "",
        "## Data",
        "",
        "| dataset | task | weight | license |",
        "|---|---|---|---|",
        *pools,
        "",
        _license_note([licenses.get(p.dataset) for p in config.data]),
        *(["", f"Base model terms: {base_terms}."] if base_terms else []),
        "",
        "## Training",
        "",
        f"- base: `{config.base_model or 'tiny from scratch'}`{shape}",
        f"- length: {_length(config)}, batch {config.batch_size}"
        + (f" (at most {config.batch_tokens} tokens)" if config.batch_tokens else "")
        + f", lr {config.lr:g}, seed {config.seed}",
        f"- precision: {setup.get('mixed_precision', '?')}, {setup.get('threads', '?')} threads, "
        f"loss over {config.loss_vocab}",
    ]
    if done is not None:
        loss = done.get("dev_loss")  # None: no pool had a dev split
        lines.append(
            f"- trained {done['seconds'] / 60:.0f} min to step {done['step']}"
            + ("" if loss is None else f"; dev loss {loss:.3f}")
        )
    if figures:
        last = figures[-1]
        heading = f"## Dev figures (step {last['step']}, {config.eval_generate} records a pool)"
        lines += ["", heading, ""]
        lines += ["| pool | figure |", "|---|---|"]
        lines += [f"| {name} | {value:.3f} |" for name, value in last["dev"].items()]
    settings = {k: v for k, v in dataclasses.asdict(config).items() if v is not None}
    lines += [
        "",
        "## Reproduce",
        "",
        "Save this as a config and run `giellm train --config CONFIG.yaml`:",
        "",
        "```yaml",
        yaml.safe_dump(settings, allow_unicode=True, sort_keys=False).strip(),
        "```",
        "",
    ]
    return "\n".join(lines)
