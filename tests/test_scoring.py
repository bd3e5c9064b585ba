"""Label probabilities: teacher-forced continuation scores equal the model's own full forward,
and a closed label set's distribution sums to 1 (tiny Gemma: soft-capped logits)."""

from __future__ import annotations

import math

import pytest
import torch

from giellm.data.registry import get_format, load
from giellm.errors import GiellmError
from giellm.inference.extractor import Extractor
from giellm.models.scoring import continuation_logprobs
from giellm.models.sequences import prompt_ids
from giellm.schema import Example


def _naive(model: object, prompt: list[int], continuation: list[int]) -> float:
    """The same log-probability from the model's ordinary forward over the whole vocabulary."""
    ids = torch.tensor([[*prompt, *continuation]])
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0].float()  # type: ignore[operator]
    steps = logits[len(prompt) - 1 : -1].log_softmax(-1)
    return float(steps.gather(-1, torch.tensor(continuation)[:, None]).sum())


@pytest.mark.parametrize("cap", [None, 5.0])
def test_continuations_score_as_the_full_forward_does(
    gemma_extractor: Extractor, cap: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batched and right-padded, with and without Gemma's final logit soft-capping (Gemma 2
    caps; Gemma 3 270M does not), the scores are those of the model's own forward."""
    model, tokenizer = gemma_extractor.model, gemma_extractor.tokenizer
    monkeypatch.setattr(model.config.get_text_config(), "final_logit_softcapping", cap)
    texts = ["ソニーは東京に本社を置く。", "とても良いホテルでした。朝食も美味しかった。"]
    label = tokenizer("<ポジティブ>", add_special_tokens=False)["input_ids"]
    pairs = [(prompt_ids(tokenizer, t, "SA"), label) for t in texts]
    batched = continuation_logprobs(model, pairs, pad_id=tokenizer.pad_token_id, batch_size=2)
    one_by_one = [_naive(model, list(p), list(c)) for p, c in pairs]
    assert batched == pytest.approx(one_by_one, abs=1e-3)  # right padding changes nothing
    assert all(v < 0 for v in batched)


def test_label_scores_are_a_distribution_over_the_closed_set(gemma_extractor: Extractor) -> None:
    reviews = load("jrte", "dev", "SA")[:3]
    labels = sorted(get_format("jrte").schema("SA").labels or ())
    scores = gemma_extractor.label_scores(reviews, schema="jrte")
    assert len(scores) == 3
    tokenizer = gemma_extractor.tokenizer
    for record, dist in zip(reviews, scores, strict=True):
        assert list(dist) == labels and math.isclose(sum(dist.values()), 1.0, abs_tol=1e-9)
        ends = [tokenizer.eos_token_id]
        prompt = prompt_ids(tokenizer, record.text, "SA")
        raw = [
            _naive(
                gemma_extractor.model,
                prompt,
                [*tokenizer(f"<{label}>", add_special_tokens=False)["input_ids"], *ends],
            )
            for label in labels
        ]
        expected = torch.tensor(raw, dtype=torch.float64).softmax(-1).tolist()
        assert list(dist.values()) == pytest.approx(expected, abs=1e-3)


def test_an_open_label_set_cannot_be_scored(gemma_extractor: Extractor) -> None:
    record = Example(id="a", task="SA", text="良い。")
    with pytest.raises(GiellmError, match="no closed label set here; give a schema"):
        gemma_extractor.label_scores([record])
