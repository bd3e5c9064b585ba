"""The Gemma path: GGUF loading, SentencePiece-style vocabularies, training and extraction.

Everything here runs on a tiny random Gemma 3 written as a GGUF (`model.tiny_gguf`) except the
two tests marked for the real packaged base: the loader-equality check on the real file (slow)
and `giellm extract --model gemma-3-270m`, the issue's must-show.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import run_cli
from giellm.data.registry import load
from giellm.errors import GiellmError
from giellm.inference.extractor import Extractor
from giellm.models import bases
from giellm.models.bases import PackagedGGUF, load_base, load_base_tokenizer, resolve_base
from giellm.models.tokenizer import token_bytes
from giellm.schema import Example
from giellm.training.config import DataSource, LoraSettings, TrainConfig
from giellm.training.run import iter_log, run


def _same_as_transformers(gguf: Path) -> None:
    """Our GGUF->HF mapping gives exactly the tensors and config of transformers' own loader."""
    from transformers import AutoModelForCausalLM

    ours = load_base(resolve_base(gguf), dtype=torch.float32)
    theirs = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    a, b = ours.state_dict(), theirs.state_dict()
    assert set(a) == set(b)
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, differ[:5]
    mine, other = ours.config.to_diff_dict(), theirs.config.to_diff_dict()
    other.pop("quantization_config")  # transformers notes where the weights came from
    assert mine == other


def test_loader_gives_transformers_tensors(tiny_gemma: Path) -> None:
    _same_as_transformers(tiny_gemma)


@pytest.mark.slow
def test_loader_gives_transformers_tensors_on_the_real_base() -> None:
    """The packaged Q4_K_M file (Q4_K, Q5_0, Q6_K, Q8_0 tensors); ~2 minutes on 2 cores."""
    _same_as_transformers(bases.packaged_gguf(bases.GEMMA_3_270M))


def test_tokenizer_bytes_follow_sentencepiece(tiny_gemma: Path) -> None:
    tok = load_base_tokenizer(resolve_base(tiny_gemma))
    pieces = token_bytes(tok)
    ids = tok.convert_tokens_to_ids(["<start_of_turn>", "<unused0>", "<0xE3>", "<mask>"])
    assert [pieces[i] for i in ids] == [None, None, b"\xe3", None]  # control tokens are not text
    spaced = [i for i, p in enumerate(tok.convert_ids_to_tokens(range(len(tok)))) if "▁" in p]
    assert spaced and all(b" " in (pieces[i] or b"") for i in spaced)
    text = "トヨタ自動車 と 日立製作所。"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert b"".join(pieces[i] or b"" for i in ids).decode() == text


def test_packaged_base_errors_name_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GIELLM_HOME", str(tmp_path))
    missing = PackagedGGUF("x", "x.gguf", "0" * 64, ("no_such_module_xyz",), ("x-pkg==1",), "")
    with pytest.raises(GiellmError, match="pip install 'x-pkg==1'"):
        bases.packaged_gguf(missing)
    real = bases.GEMMA_3_270M
    corrupt = PackagedGGUF("g", real.file, "0" * 64, real.modules, real.requirements, "")
    with pytest.raises(GiellmError, match="corrupt: sha256"):
        bases.packaged_gguf(corrupt)
    assert list((tmp_path / "bases").iterdir()) == []  # nothing half-written is left


def test_unusable_base_specs_are_one_clear_error(tmp_path: Path) -> None:
    for spec in [str(tmp_path / "none.gguf"), str(tmp_path), "no/such/thing"]:
        with pytest.raises(GiellmError):
            resolve_base(spec)
    hub = resolve_base("google/gemma-3-1b-pt")
    assert hub.kind == "hub"
    assert resolve_base("google/gemma-3-270m").kind == "gguf"  # the packaged one, offline
    with pytest.raises(GiellmError, match="hub"):  # no network here or in CI
        load_base(hub, dtype=torch.float32)


def test_lora_on_a_gguf_base_lowers_the_loss_and_predicts(
    tiny_gemma: Path, tmp_path: Path, data_dir: Path
) -> None:
    config = TrainConfig(
        output_dir=str(tmp_path / "out"),
        base_model=str(tiny_gemma),
        data=[DataSource(dataset="stockmark", task="NER")],
        lora=LoraSettings(r=16, alpha=32),
        total=320,
        max_steps=40,
        batch_size=8,
        lr=2e-2,
        log_every=5,
        eval_every=0,
        eval_records=16,
        max_new_tokens=48,
    )
    final = run(config)
    losses = [e["loss"] for e in iter_log(tmp_path / "out" / "train_log.jsonl") if "loss" in e]
    # random tiny body: LoRA learns, slowly (the best of the later logged losses, not the last
    # batch's alone: one batch's loss moves a few percent between CPUs' rounding)
    assert min(losses[len(losses) // 2 :]) < 0.92 * losses[0]
    adapter = json.loads((final / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(tiny_gemma.resolve())
    from safetensors.torch import load_file

    weights = load_file(final / "adapter_model.safetensors")
    assert weights and all("lora_" in k for k in weights)  # the base is not saved: it stayed frozen
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in weights.items())  # B starts at 0

    records = load("stockmark", "dev", "NER", data_dir)[:24]
    extractor = Extractor(final, batch_size=8, max_new_tokens=48)
    for prediction in extractor.predict(records):
        record = prediction.example
        for entity in record.entities:
            assert record.text[entity.start : entity.end] == entity.text
        if not prediction.truncated:  # whatever ended is fully parsed
            assert prediction.dropped == ()


def test_constrained_gemma_output_parses_and_maps_windows_back(
    gemma_extractor: Extractor, data_dir: Path
) -> None:
    """A random Gemma under the grammar: every span is in its text, also across windows."""
    extractor = gemma_extractor.configured(batch_size=8, max_new_tokens=40)
    extractor.meta.window_chars, extractor.meta.window_overlap = 60, 12
    records = [r for r in load("kwdlc", "dev", "NER", data_dir) if len(r.text) > 150][:4]
    records += load("stockmark", "dev", "NER", data_dir)[:8]
    predictions = list(extractor.predict(records, schema="kwdlc"))
    assert extractor.stats.windows > len(records)  # long texts really were cut
    found = 0
    for prediction in predictions:
        record = prediction.example
        for entity in record.entities:
            assert record.text[entity.start : entity.end] == entity.text
            found += 1
        if not prediction.truncated:
            assert prediction.dropped == ()
    assert found > 0


def _unscored(record: Example) -> Example:
    return record.model_copy(
        update={"entities": tuple(e.model_copy(update={"score": None}) for e in record.entities)}
    )


@pytest.mark.parametrize("model", ["gemma", "llama"])
def test_output_vocabulary_keeps_the_greedy_choice(
    model: str, gemma_extractor: Extractor, base_models: dict[str, Path], data_dir: Path
) -> None:
    """Logits over the batch's output vocabulary alone: the same predictions as over all."""
    loaded = gemma_extractor if model == "gemma" else Extractor(base_models["llama"])
    records = load("stockmark", "dev", "NER", data_dir)[:10]
    subset = loaded.configured(batch_size=4, max_new_tokens=24)
    full = Extractor(backend=loaded.backend.without_output_vocab(), batch_size=4, max_new_tokens=24)
    got = [p.example for p in subset.predict(records, schema="stockmark")]
    expected = [p.example for p in full.predict(records, schema="stockmark")]
    assert [_unscored(r) for r in got] == [_unscored(r) for r in expected]
    # scores: a softmax over the row's emittable tokens, not the whole vocabulary, so never lower
    for mine, theirs in zip(got, expected, strict=True):
        for a, b in zip(mine.entities, theirs.entities, strict=True):
            assert a.score is not None and b.score is not None and a.score >= b.score - 1e-4
    from giellm.constraints.automaton import Grammar

    grammars = [Grammar("NER", subset.schema("NER", "stockmark"), r.text) for r in records]
    pruned = subset.backend._output_vocab(grammars, subset.trie)  # type: ignore[attr-defined]
    assert len(pruned) < len(subset.tokenizer)  # real pruning happened


def test_extract_with_the_packaged_gemma_base() -> None:
    """The issue's must-show: the untuned packaged base answers with a valid record."""
    text = "東京都に住む田中太郎はトヨタ自動車に勤めている。"
    result = run_cli(
        "extract", "--model", "gemma-3-270m", text, "--task", "NER", "--max-new-tokens", "24"
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["text"] == text and record["task"] == "NER"
    for entity in record.get("entities", []):
        assert text[entity["start"] : entity["end"]] == entity["text"]
