"""`giellm export --gguf`: a trained adapter merged into its GGUF base, read back by `gguf` and
loaded again as a base by giellm's own GGUF loader."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import GIELLM
from giellm.errors import GiellmError
from giellm.models import gguf_weights
from giellm.models.bases import load_base, resolve_base
from giellm.models.export import export_gguf
from giellm.models.loading import load_model
from giellm.training.config import DataSource, LoraSettings, TrainConfig
from giellm.training.run import run


@pytest.fixture(scope="module")
def adapter(tiny_gemma: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = TrainConfig(
        output_dir=str(tmp_path_factory.mktemp("adapter") / "out"),
        base_model=str(tiny_gemma),
        data=[DataSource("stockmark", "NER")],
        lora=LoraSettings(r=8, alpha=16, dropout=0.0),
        total=64,
        max_steps=4,
        batch_size=8,
        lr=5e-2,  # large: the merged weights must differ visibly from the base's
        eval_every=0,
        eval_records=8,
        max_new_tokens=32,
    )
    return run(config)


def test_the_exported_gguf_holds_the_merged_weights_and_the_base_rest(
    adapter: Path, tiny_gemma: Path, tmp_path: Path
) -> None:
    from gguf import GGMLQuantizationType, GGUFReader
    from gguf.quants import dequantize

    out = tmp_path / "merged.gguf"
    done = subprocess.run(
        [GIELLM, "export", "--model", str(adapter), "--gguf", str(out)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "merged tensors" in done.stderr and out.is_file()
    assert not list(tmp_path.glob(".*partial"))

    merged = load_model(adapter, dtype="float32")[0].state_dict()
    base, written = GGUFReader(tiny_gemma), GGUFReader(out)
    architecture = "gemma3"
    before = {t.name: t for t in base.tensors}
    assert [t.name for t in written.tensors] == list(before)
    for name in ("tokenizer.ggml.tokens", "gemma3.block_count", "gemma3.context_length"):
        assert written.fields[name].contents() == base.fields[name].contents()
    moved = 0
    for tensor in written.tensors:
        hf = gguf_weights.hf_name(tensor.name, architecture)
        if tensor.tensor_type == GGMLQuantizationType.Q8_0 and hf.endswith("_proj.weight"):
            values = dequantize(tensor.data, tensor.tensor_type).reshape(merged[hf].shape)
            scale = float(merged[hf].abs().max())
            assert np.abs(values - merged[hf].numpy()).max() <= scale / 100  # Q8_0 rounding
            original = dequantize(before[tensor.name].data, before[tensor.name].tensor_type)
            moved += not np.allclose(original.reshape(values.shape), values, atol=scale / 50)
        else:  # embeddings, norms: the base's bytes
            assert tensor.tensor_type == before[tensor.name].tensor_type
            assert np.array_equal(tensor.data, before[tensor.name].data)
    assert moved > 0  # the adapter really changed the projections it was merged into

    # the file is a base llama.cpp and giellm can load: same next-token logits as the merge
    ids = torch.tensor([[2, 10, 20, 30, 40]])
    reloaded = load_base(resolve_base(str(out)), dtype=torch.float32).eval()
    original_lm = load_model(adapter, dtype="float32")[0].eval()
    with torch.no_grad():
        a, b = reloaded(ids).logits, original_lm(ids).logits
    assert torch.allclose(a, b, atol=0.05 * float(b.abs().max()))


def test_export_refuses_what_it_cannot_write(
    adapter: Path, tiny_gemma: Path, tmp_path: Path
) -> None:
    with pytest.raises(GiellmError, match="bare base"):
        export_gguf(str(tiny_gemma), tmp_path / "x.gguf")
    with pytest.raises(GiellmError, match=r"NAME\.gguf"):
        export_gguf(adapter, tmp_path / "x.bin")
    with pytest.raises(GiellmError, match="q8_0, f16"):
        export_gguf(adapter, tmp_path / "x.gguf", encoding="q4")
    with pytest.raises(GiellmError, match="no such folder"):
        export_gguf(adapter, tmp_path / "missing" / "x.gguf")
