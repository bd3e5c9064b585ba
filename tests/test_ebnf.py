"""The EBNF layout grammar (what vLLM gets) checked with xgrammar, vLLM's grammar engine, on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import xgrammar as xgr
from xgrammar.testing import _is_grammar_accept_string as accepts

from giellm.constraints.ebnf import layout_grammar
from giellm.data.registry import get_format, load
from giellm.layout.format import decode, encode_target
from giellm.tasks import LabelSchema

CASES = [
    ("stockmark", "NER"),
    ("kwdlc", "NER"),
    ("kwdlc", "PAS"),
    ("jacred", "RE"),
    ("fkc", "NER"),
    ("fkc", "PAS"),
    ("livedoor", "TC"),
    ("jrte", "SA"),
]


def _grammar(task: str, schema: LabelSchema, text: str) -> object:
    return xgr.Grammar.from_ebnf(layout_grammar(task, schema, text))


@pytest.mark.parametrize(("name", "task"), CASES)
def test_every_gold_target_is_accepted(name: str, task: str, data_dir: Path) -> None:
    schema = get_format(name).schema(task)
    records = load(name, "dev", task, data_dir)
    for ex in records[:: max(1, len(records) // 25)]:
        if len(ex.text) > 2000:  # whole documents: the model sees windows, the grammar one each
            continue
        target = encode_target(ex)
        assert accepts(_grammar(task, schema, ex.text), target), f"{ex.id}: {target[:200]}"


@pytest.mark.parametrize(("name", "task"), CASES)
def test_the_text_free_grammar_accepts_every_gold_target(
    name: str, task: str, data_dir: Path
) -> None:
    """What `giellm grammar` prints without --text: one grammar for every input."""
    schema = get_format(name).schema(task)
    grammar = xgr.Grammar.from_ebnf(layout_grammar(task, schema, None))
    records = load(name, "dev", task, data_dir)
    for ex in records[:: max(1, len(records) // 25)]:
        assert accepts(grammar, encode_target(ex)), ex.id


def test_the_grammar_command_prints_what_xgrammar_compiles() -> None:
    import subprocess

    from conftest import GIELLM

    done = subprocess.run(
        [GIELLM, "grammar", "--task", "NER", "--schema", "stockmark", "--format", "gbnf"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    grammar = xgr.Grammar.from_ebnf(done.stdout)
    assert accepts(grammar, "<>人名:孫正義;地名:福岡市")
    assert not accepts(grammar, "<>惑星:火星")  # not a stockmark entity type
    assert not accepts(grammar, "<>人名:孫;正義")  # an unescaped separator inside a span


def test_spans_must_come_from_the_text_and_names_from_the_schema() -> None:
    text = "A;B社はA;B社の子会社(仮)だ"
    schema = LabelSchema.of(labels=(), entity_types=["法人名"])
    grammar = _grammar("NER", schema, text)
    assert accepts(grammar, "<>法人名:A\\;B社#2;法人名:子会社\\(仮\\)")
    assert accepts(grammar, "<>")
    for bad in [
        "<>法人名:A;B社",  # unescaped separator
        "<>法人名:子会社(仮)",
        "<>人名:A\\;B社",  # type not in the schema
        "<x>法人名:A\\;B社",  # label not in the schema
        "<>法人名:",  # empty span
        "<>法人名:東京",  # not in the text
        "<>法人名:社はA\\;B社の子会社だ",  # not a substring
    ]:
        assert not accepts(grammar, bad), bad


def test_label_only_tasks_must_name_a_label() -> None:
    schema = LabelSchema.of(labels=["ポジティブ", "ネガティブ"])
    assert accepts(_grammar("SA", schema, "楽しい旅行"), "<ポジティブ>")
    assert not accepts(_grammar("SA", schema, "楽しい旅行"), "<>")
    assert not accepts(_grammar("SA", schema, "楽しい旅行"), "<ポジティブ>人名:旅行")


def test_relations_and_events_layouts() -> None:
    schema = LabelSchema.of(
        labels=(), relation_types=["OwnedBy"], event_types=["買収"], roles=["買収者", "対象"]
    )
    text = "A社がB社を買収した。ソニー銀行はソニーの子会社。"
    assert accepts(_grammar("RE", schema, text), "<>ソニー銀行,OwnedBy,ソニー#2")
    assert not accepts(_grammar("RE", schema, text), "<>ソニー銀行,Owns,ソニー")
    ee = _grammar("EE", schema, text)
    assert accepts(ee, "<>買収:買収(買収者:A社,対象:B社)")
    assert accepts(ee, "<>買収:買収()")
    assert not accepts(ee, "<>買収:買収(売却者:A社)")


@pytest.mark.parametrize("model", ["tiny", "gemma"])
def test_xgrammar_constrained_generation_decodes_cleanly(
    model: str, request: pytest.FixtureRequest
) -> None:
    """Byte-level BPE (embedded model) and SentencePiece with byte fallback (a tiny Gemma)
    under xgrammar's HF logits processor, as vLLM runs them: every output decodes whole."""
    import torch
    from xgrammar.contrib.hf import LogitsProcessor

    from giellm.models.sequences import prompt_ids

    ex = request.getfixturevalue("gemma_extractor" if model == "gemma" else "embedded")
    info = xgr.TokenizerInfo.from_huggingface(ex.tokenizer, vocab_size=ex.model.config.vocab_size)
    compiler = xgr.GrammarCompiler(info)
    schema = get_format("stockmark").schema("NER")
    ended = 0
    for source in load("stockmark", "dev", "NER")[:6]:
        compiled = compiler.compile_grammar(layout_grammar("NER", schema, source.text))
        ids = torch.tensor([prompt_ids(ex.tokenizer, source.text, "NER")])
        out = ex.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=80,
            do_sample=False,
            logits_processor=[LogitsProcessor(compiled)],
            pad_token_id=ex.tokenizer.pad_token_id,
            eos_token_id=ex.tokenizer.eos_token_id,
        )
        row = out[0, ids.shape[1] :].tolist()
        decoded = decode(ex.text_of(row), source, schema)
        if ex.tokenizer.eos_token_id in row:  # a row cut at max_new_tokens may end mid-item
            assert decoded.dropped == ()
            ended += 1
        for e in decoded.example.entities:
            assert source.text[e.start : e.end] == e.text and e.type in schema.entity_types
    assert ended > 0
