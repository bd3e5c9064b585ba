"""Constrained decoding: every gold target is allowed, and nothing the grammar allows is lost.

Soundness is checked two ways: random walks through the grammar (hypothesis picks the tokens)
and real generation by an untrained random model, whose unconstrained output is garbage.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from giellm.constraints.automaton import OPEN, Grammar, VocabIndex
from giellm.data.registry import get_format, load
from giellm.inference.extractor import Extractor
from giellm.layout.format import decode, encode_target
from giellm.models.tokenizer import token_bytes
from giellm.schema import Example
from giellm.tasks import LabelSchema

CASES = [
    ("stockmark", "NER"),
    ("jrte", "SA"),
    ("kwdlc", "NER"),
    ("kwdlc", "PAS"),
    ("jacred", "RE"),
    ("fkc", "NER"),
    ("fkc", "PAS"),
]


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir: Path) -> object:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="module")
def trie(tokenizer: object) -> VocabIndex:
    return VocabIndex(token_bytes(tokenizer), tokenizer.eos_token_id)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def dev_records(data_dir: Path) -> dict[tuple[str, str], list[Example]]:
    return {(name, task): load(name, "dev", task, data_dir)[:40] for name, task in CASES}


def _walk(trie: VocabIndex, grammar: Grammar, tokens: list[int]) -> tuple[list[int], bool]:
    """Follow the grammar token by token; False if a token is not allowed."""
    state = OPEN
    for token in tokens:
        allowed = trie.allowed(grammar, state)
        if token not in allowed:
            return tokens, False
        state = allowed[token]
    return tokens, trie.eos_id in trie.allowed(grammar, state)


@pytest.mark.parametrize(("name", "task"), CASES)
def test_every_gold_target_is_allowed(
    name: str, task: str, tokenizer: object, trie: VocabIndex, dev_records: dict
) -> None:
    schema = get_format(name).schema(task)
    for ex in dev_records[name, task]:
        ids = tokenizer(encode_target(ex), add_special_tokens=False)["input_ids"]  # type: ignore[operator]
        _, ok = _walk(trie, Grammar(task, schema, ex.text), ids)
        assert ok, f"{ex.id}: gold target rejected: {encode_target(ex)}"


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    case=st.sampled_from(CASES),
    pick=st.integers(0, 39),
    choices=st.lists(st.integers(0, 10**6), max_size=40),
)
def test_random_walks_decode_without_losses(
    case: tuple[str, str],
    pick: int,
    choices: list[int],
    tokenizer: object,
    trie: VocabIndex,
    dev_records: dict,
) -> None:
    name, task = case
    records = dev_records[case]
    source = records[pick % len(records)]
    schema = get_format(name).schema(task)
    grammar = Grammar(task, schema, source.text)
    state, out = OPEN, []
    for choice in choices:
        allowed = trie.allowed(grammar, state)
        assert allowed, "a state with no way forward"
        token = sorted(allowed)[choice % len(allowed)]
        if token == trie.eos_id:
            break
        out.append(token)
        state = allowed[token]
    else:
        if trie.eos_id not in trie.allowed(grammar, state):
            return  # unfinished: generation would go on
    decoded = decode(tokenizer.decode(out), source, schema)  # type: ignore[attr-defined]
    assert decoded.dropped == ()
    for e in decoded.example.entities:
        assert source.text[e.start : e.end] == e.text and e.type in (
            schema.entity_types or {e.type}
        )


def test_escaped_and_marked_spans(trie: VocabIndex, tokenizer: object) -> None:
    text = "A;B社はA;B社の子会社(仮)だ"
    schema = LabelSchema.of(labels=(), entity_types=["法人名"])
    grammar = Grammar("NER", schema, text)
    good = "<>法人名:A\\;B社#2;法人名:子会社\\(仮\\)"
    ids = tokenizer(good, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    assert _walk(trie, grammar, ids)[1]
    for bad in [
        "<>法人名:A;B社",
        "<>法人名:子会社(仮)",
        "<>人名:A\\;B社",
        "<x>法人名:A\\;B社",
        "<>法人名:",
    ]:
        ids = tokenizer(bad, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
        assert not _walk(trie, grammar, ids)[1], bad


def test_label_only_tasks_must_name_a_label(trie: VocabIndex, tokenizer: object) -> None:
    schema = LabelSchema.of(labels=["ポジティブ", "ネガティブ"])
    for task, target, ok in [
        ("SA", "<ポジティブ>", True),
        ("SA", "<>", False),  # a classifier that names no class answered nothing
        ("NER", "<>", True),  # word-level tasks may carry no text-level label
    ]:
        ids = tokenizer(target, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
        assert _walk(trie, Grammar(task, schema, "楽しい旅行"), ids)[1] is ok, (task, target)


def test_random_model_constrained_vs_free(base_models: dict[str, Path], data_dir: Path) -> None:
    """An untrained model writes nothing usable on its own; constrained, every item parses."""
    dev = load("stockmark", "dev", "NER", data_dir)[:8]
    types = get_format("stockmark").schema("NER").entity_types
    constrained = Extractor(base_models["qwen2"], batch_size=4, max_new_tokens=40)
    predictions = list(constrained.predict(dev, schema="stockmark"))
    # only an item cut off by the token budget can be incomplete
    assert all(len(p.dropped) <= p.truncated for p in predictions)
    assert sum(len(p.example.entities) for p in predictions) > 0
    for p, gold in zip(predictions, dev, strict=True):
        for e in p.example.entities:
            assert gold.text[e.start : e.end] == e.text and e.type in types  # type: ignore[operator]
    free = constrained.configured(constrained=False)
    assert all(not p.example.entities for p in free.predict(dev, schema="stockmark"))
