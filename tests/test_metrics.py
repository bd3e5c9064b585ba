"""Metrics: hand-checked cases, gold vs gold, and strict span scores cross-checked with seqeval."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from seqeval.metrics import classification_report
from seqeval.scheme import IOB2

from conftest import shared_path
from giellm.data.registry import get_format
from giellm.evaluation.metrics import Counts, pair_by_id, score
from giellm.schema import Entity, Example


def perturb(records: list[Example], seed: int = 7) -> list[Example]:
    """A realistic wrong prediction: drop, retype, shift or invent entities; flip labels."""
    rng = random.Random(seed)
    out = []
    for ex in records:
        entities = []
        for e in ex.entities:
            roll = rng.random()
            if roll < 0.15:
                continue
            if roll < 0.25:
                entities.append(
                    e.model_copy(update={"type": "地名" if e.type != "地名" else "人名"})
                )
            elif roll < 0.35 and e.end < len(ex.text):
                entities.append(
                    Entity(
                        type=e.type, text=ex.text[e.start : e.end + 1], start=e.start, end=e.end + 1
                    )
                )
            else:
                entities.append(e)
        if rng.random() < 0.2 and len(ex.text) > 2:
            start = rng.randrange(len(ex.text) - 1)
            entities.append(
                Entity(type="人名", text=ex.text[start : start + 2], start=start, end=start + 2)
            )
        out.append(ex.model_copy(update={"entities": tuple(entities)}))
    return out


def bio(ex: Example) -> list[str]:
    """Character-level IOB2 tags; overlapping spans cannot be tagged, so keep the first."""
    tags = ["O"] * len(ex.text)
    for e in ex.entities:
        if all(t == "O" for t in tags[e.start : e.end]):
            tags[e.start] = f"B-{e.type}"
            for i in range(e.start + 1, e.end):
                tags[i] = f"I-{e.type}"
    return tags


def without_overlaps(ex: Example) -> Example:
    kept: list[Entity] = []
    for e in ex.entities:
        if all(e.start >= k.end or e.end <= k.start for k in kept):
            kept.append(e)
    return ex.model_copy(update={"entities": tuple(kept)})


def test_hand_checked_scores() -> None:
    text = "山田は東京の日立に勤める。"

    def ner(id: str, label: str, *entities: tuple[str, str, int]) -> Example:
        spans = [Entity(text=t, type=k, start=s, end=s + len(t)) for t, k, s in entities]
        return Example(id=id, task="NER", text=text, label=label, entities=spans)

    gold = [ner("1", "a", ("山田", "人名", 0), ("東京", "地名", 3)), ner("2", "b")]
    pred = [ner("1", "a", ("山田", "人名", 0), ("日立", "法人名", 6)), ner("2", "c")]
    report = score(gold, pred)
    assert report.text_accuracy == 0.5
    assert report.word_accuracy == 0.5  # record 2 has no items on both sides
    assert report.overall_accuracy == 0.0
    assert report.micro == Counts(tp=1, pred=2, gold=2)
    assert report.micro.f1 == pytest.approx(0.5)
    assert report.per_type["entity:法人名"].precision == 0.0
    assert report.per_type["entity:地名"].recall == 0.0
    assert report.per_type["entity:地名"].precision is None


def test_pairing_by_id_counts_missing_as_wrong() -> None:
    gold = [Example(id=str(i), task="SA", text="良い。", label="ポジティブ") for i in range(3)]
    pred = [gold[2], Example(id="zz", task="SA", text="良い。", label="ポジティブ")]
    golds, preds, missing, unmatched = pair_by_id(gold, pred)
    assert missing == ["0", "1"] and unmatched == ["zz"]
    assert score(golds, preds).text_accuracy == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("name", "task"), [("stockmark", "NER"), ("fkc", "PAS"), ("jacred", "RE"), ("fkc", "NER")]
)
def test_gold_against_gold_is_perfect(data_dir: Path, name: str, task: str) -> None:
    gold = list(get_format(name).read(shared_path(data_dir, name, "dev"), task))
    report = score(gold, gold).as_dict()
    for key in ("word_accuracy", "overall_accuracy", "precision", "recall", "f1"):
        assert report[key] == 1.0, key
    assert report["text_accuracy"] in (None, 1.0)


@pytest.mark.parametrize("name", ["stockmark", "kwdlc"])
def test_span_scores_match_seqeval(data_dir: Path, name: str) -> None:
    gold = [
        without_overlaps(ex)
        for ex in get_format(name).read(shared_path(data_dir, name, "dev"), "NER")
    ]
    pred = [without_overlaps(ex) for ex in perturb(gold)]
    ours = score(gold, pred)
    reference = classification_report(
        [bio(ex) for ex in gold],
        [bio(ex) for ex in pred],
        mode="strict",
        scheme=IOB2,
        output_dict=True,
        zero_division=0,
    )
    micro = reference["micro avg"]
    assert ours.micro.precision == pytest.approx(micro["precision"])
    assert ours.micro.recall == pytest.approx(micro["recall"])
    assert ours.micro.f1 == pytest.approx(micro["f1-score"])
    assert 0.5 < ours.micro.f1 < 0.95  # the perturbation really changed things
    for key, counts in ours.per_type.items():
        etype = key.removeprefix("entity:")
        if counts.gold:
            assert counts.recall == pytest.approx(reference[etype]["recall"]), etype
            assert counts.gold == reference[etype]["support"], etype
        if counts.pred and counts.gold:
            assert counts.precision == pytest.approx(reference[etype]["precision"]), etype
