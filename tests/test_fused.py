"""Fused inference kernels compute what the model's own modules compute."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

from giellm.models.fused import fuse_norms


def _random_gemma() -> Gemma3ForCausalLM:
    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, head_dim=16, sliding_window=32,
    )  # fmt: skip
    model = Gemma3ForCausalLM(config).eval()
    with torch.no_grad():  # trained norms are not all zeros: give them weights of that size
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight"):
                parameter.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_norms_give_the_models_logits_and_greedy_tokens(dtype: torch.dtype) -> None:
    plain = _random_gemma().to(dtype)
    fused = copy.deepcopy(plain)
    assert fuse_norms(fused) == 2 * 6 + 1  # four norms and q/k norms a layer, the final one
    ids = torch.randint(0, 512, (3, 20))
    with torch.inference_mode():
        expected, got = plain(input_ids=ids).logits.float(), fused(input_ids=ids).logits.float()
        tolerance = 1e-4 if dtype == torch.float32 else 0.1  # bfloat16: rounding flips
        assert (expected - got).abs().max() < tolerance
        if dtype == torch.float32:  # a random model's near ties flip under bfloat16 rounding
            assert torch.equal(
                plain.generate(ids, max_new_tokens=8, do_sample=False),
                fused.generate(ids, max_new_tokens=8, do_sample=False),
            )
    assert set(fused.state_dict()) == set(plain.state_dict())  # export sees the same weights
