"""Continuous batching and lazy grammar checks give what the plain ways give, token for token."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from giellm.constraints.automaton import OPEN, Grammar, TokenGuide, VocabIndex
from giellm.data.registry import get_format, load
from giellm.inference.extractor import Extractor
from giellm.layout.format import encode_target
from giellm.models.decoding import _joinable, _new_cache, greedy
from giellm.models.sequences import prompt_ids
from giellm.models.tiny import ARCHITECTURES
from giellm.models.tokenizer import token_bytes
from greedy_agreement import TIE, first_partings


@pytest.fixture(scope="module")
def texts(data_dir: Path) -> list[str]:
    records = load("stockmark", "dev", "NER", data_dir)
    return [r.text for r in records[:: len(records) // 11][:11]]  # lengths vary


def _one_by_one(model: object, tok: object, prompts: list[list[int]], budget: int) -> list:
    """Hugging Face `generate`, one prompt at a time: the reference."""
    out = []
    for ids in prompts:
        x = torch.tensor([ids])
        with torch.inference_mode():
            row = model.generate(  # type: ignore[attr-defined]
                input_ids=x,
                attention_mask=torch.ones_like(x),
                max_new_tokens=budget,
                do_sample=False,
                pad_token_id=tok.pad_token_id,  # type: ignore[attr-defined]
                eos_token_id=tok.eos_token_id,  # type: ignore[attr-defined]
            )[0, len(ids) :].tolist()
        eos = tok.eos_token_id  # type: ignore[attr-defined]
        out.append((row[: row.index(eos)], True) if eos in row else (row, False))
    return out


def _greedy(model: object, tok: object, prompts: list[list[int]], **options: object) -> list:
    return greedy(
        model,
        prompts,
        pad_id=tok.pad_token_id,  # type: ignore[attr-defined]
        eos_id=tok.eos_token_id,  # type: ignore[attr-defined]
        **options,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_continuous_batching_matches_one_by_one_generate(
    arch: str, base_models: dict[str, Path], texts: list[str]
) -> None:
    tok = AutoTokenizer.from_pretrained(base_models[arch])
    model = AutoModelForCausalLM.from_pretrained(base_models[arch]).eval()
    prompts = [prompt_ids(tok, t, "NER") for t in texts]
    budget = 12
    expected = _one_by_one(model, tok, prompts, budget)
    # batch 4: rows finish and leave, waiting prompts join caches of other widths
    got = _greedy(model, tok, prompts, max_tokens=budget, batch_size=4)
    assert got == expected
    assert {len(p) for p in prompts} != {len(prompts[0])}  # the batches really were padded


def test_budget_counts_each_rows_own_prompt(base_models: dict[str, Path], texts: list[str]) -> None:
    tok = AutoTokenizer.from_pretrained(base_models["llama"])
    model = AutoModelForCausalLM.from_pretrained(base_models["llama"]).eval()
    prompts = [prompt_ids(tok, t, "NER") for t in texts[:3]]
    limit = max(len(p) for p in prompts) + 3
    done: list[int] = []
    got = _greedy(
        model,
        tok,
        prompts,
        max_tokens=50,
        batch_size=2,
        position_limit=limit,
        on_done=lambda i, ids, ended, logprobs: done.append(i),
    )
    for ids, (row, ended) in zip(prompts, got, strict=True):
        assert len(ids) + len(row) <= limit
        assert ended or len(row) == min(50, limit - len(ids))
    assert sorted(done) == [0, 1, 2]


def test_guide_picks_the_argmax_of_the_masked_row(tokenizer_dir: Path, data_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    trie = VocabIndex(token_bytes(tok), tok.eos_token_id)
    schema = get_format("stockmark").schema("NER")
    generator = torch.Generator().manual_seed(0)
    checked = 0
    for ex in load("stockmark", "dev", "NER", data_dir)[:20]:
        gold = tok(encode_target(ex), add_special_tokens=False)["input_ids"]
        guide = TokenGuide(trie, Grammar("NER", schema, ex.text))
        for token in gold:  # walk the gold target, checking a random choice at each state
            scores = torch.randn(trie.size, generator=generator)
            allowed = guide.allowed_ids(trie.size)
            expected = allowed[int(scores[allowed].argmax())]
            state = guide.state
            ranked = scores.topk(8).indices.tolist()
            assert guide.choose(ranked, scores) == expected
            guide.state = trie.allowed(guide.grammar, state)[token]  # back on the gold path
            checked += 1
    assert checked > 300
    assert guide.state is not None and guide.state != OPEN


def test_sliding_window_caches_run_batch_after_batch(
    base_models: dict[str, Path], texts: list[str]
) -> None:
    """A cache that cannot be joined (sliding-window layers) still gives generate's tokens."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(base_models["qwen2"])
    config.use_sliding_window, config.sliding_window, config.max_window_layers = True, 16, 0
    config.layer_types = ["sliding_attention"] * config.num_hidden_layers
    tok = AutoTokenizer.from_pretrained(base_models["qwen2"])
    model = AutoModelForCausalLM.from_pretrained(base_models["qwen2"], config=config).eval()
    assert not _joinable(_new_cache(model, 40))  # sequences longer than the window slide
    assert _joinable(_new_cache(model, 15))  # shorter ones never do: plain layers
    prompts = [prompt_ids(tok, t, "NER") for t in texts]
    # more than one prefill group's worth, and more prompts than one batch
    got = _greedy(model, tok, prompts, max_tokens=10, batch_size=10)
    assert got == _one_by_one(model, tok, prompts, 10)


def test_greedy_agreement_check_tells_near_ties_from_real_differences(
    embedded: Extractor, data_dir: Path
) -> None:
    """Calibrates `greedy_agreement.TIE` (the vLLM test's bound) on the CPU: the same model
    in bf16 parts from fp32 only on near ties; other weights, or no constraints, do not."""
    gold = load("stockmark", "dev", "NER", data_dir)[:64]
    fp32 = embedded.configured(batch_size=32, max_new_tokens=64)
    bf16 = Extractor(batch_size=32, max_new_tokens=64, dtype="bfloat16")
    near = first_partings(fp32, bf16, gold, "stockmark")
    assert near.identical < near.windows  # they do part somewhere, so gaps were measured
    assert near.outside == 0 and max(near.gaps) < TIE / 4  # seen: 4 of 64 part, gap <= 0.033

    noisy = Extractor(batch_size=32, max_new_tokens=64)  # an adapter not applied, say
    torch.manual_seed(0)
    with torch.no_grad():
        for weight in noisy.model.parameters():
            weight.add_(torch.randn_like(weight) * weight.std() * 0.2)
    far = first_partings(fp32, noisy, gold, "stockmark")
    assert len(far.gaps) > 3 * len(near.gaps) and max(far.gaps) > 2 * TIE  # seen: 44, 0.64

    free = first_partings(fp32, fp32.configured(constrained=False), gold, "stockmark")
    assert free.outside > free.windows // 2  # what the vLLM test's `outside` bound catches
