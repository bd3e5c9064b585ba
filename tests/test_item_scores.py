"""Item scores: each entity, relation, event and argument carries the geometric mean of its
tokens' probabilities; the probabilities are the model's own (teacher-forced forward), and a
threshold leaves out what scores below it on every surface (API, CLI)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from conftest import run_cli
from giellm.errors import GiellmError
from giellm.inference.extractor import Extractor
from giellm.layout.format import decode
from giellm.layout.scores import at_least, check_threshold, piece_ranges, scorer, token_spans
from giellm.models.decoding import greedy
from giellm.models.sequences import prompt_ids
from giellm.schema import Argument, Entity, Event, Example, Span

SENTENCE = "ソフトバンクグループの孫正義会長は福岡市で記者会見を開いた。"


def test_token_spans_cover_characters_split_across_tokens() -> None:
    # 会 is three UTF-8 bytes, cut over two byte-fallback tokens: both cover it
    pieces = [b"<", b">", "\u4eba\u540d:".encode(), "会".encode()[:2], "会".encode()[2:], b";"]
    assert token_spans(pieces) == [(0, 1), (1, 2), (2, 5), (5, 6), (5, 6), (6, 7)]
    # a character cut short at the end (the budget ran out) covers nothing; others keep theirs
    assert token_spans([b"<>", "会".encode()[:2]]) == [(0, 2), (2, 2)]
    assert token_spans([b"\xff", b"<>"]) is None  # not UTF-8: no offsets, no scores


def test_piece_ranges_follow_the_layout() -> None:
    generated = "<社会>人名:山田\\;太郎;法人名:日立"
    label, pieces = piece_ranges(generated)
    assert label is not None and generated[slice(*label)] == "社会"
    assert [(p, generated[s:e]) for p, s, e in pieces] == [
        ("人名:山田\\;太郎", "人名:山田\\;太郎"),  # an escaped separator stays inside its span
        ("法人名:日立", "法人名:日立"),
    ]
    event = "<>買収:買収した(買収者:A社,対象:B社)"
    _, pieces = piece_ranges(event)
    assert [p for p, _, _ in pieces] == [
        "買収:買収した(買収者:A社,対象:B社)",
        "買収者:A社",
        "対象:B社",
    ]
    assert all(event[s:e] == p for p, s, e in pieces)


def test_decoded_items_carry_the_geometric_mean_of_their_tokens() -> None:
    generated = "<>人名:山田;人名:山田;地名:東京"
    source = Example(id="1", task="NER", text="山田と山田は東京へ")
    tokens = ["<", ">", "人名:", "山田", ";", "人名:", "山田", ";", "地名:", "東京"]
    spans = token_spans([t.encode() for t in tokens])
    assert spans is not None
    probs = [0.9, 0.9, 0.8, 0.5, 0.9, 0.8, 0.2, 0.9, 0.6, 0.6]
    logprobs = [math.log(p) for p in probs]
    record = decode(generated, source, score=scorer(spans, logprobs)).example
    first, second, tokyo = record.entities
    # scores keep 4 decimals
    assert first.score == pytest.approx(math.sqrt(0.8 * 0.5), abs=1e-4)  # its own tokens only
    assert second.score == pytest.approx(math.sqrt(0.8 * 0.2), abs=1e-4)  # its own, too
    assert (second.start, tokyo.score) == (3, pytest.approx(0.6, abs=1e-4))
    assert decode(generated, source).example.entities[0].score is None  # unscored text


def test_a_threshold_drops_low_items_and_keeps_unscored_ones_and_the_label() -> None:
    span = Span(text="A", start=0, end=1)
    record = Example(
        id="1",
        task="EE",
        text="A B",
        label="x",
        label_score=0.1,
        events=[
            Event(
                trigger=span,
                type="t",
                score=0.9,
                arguments=[
                    Argument(text="B", start=2, end=3, role="r", score=0.2),
                    Argument(text="A", start=0, end=1, role="s"),
                ],
            ),
            Event(trigger=Span(text="B", start=2, end=3), type="t", score=0.3),
        ],
    )
    kept = at_least(record, 0.5)
    assert kept.label == "x"
    (event,) = kept.events
    assert [a.role for a in event.arguments] == ["s"]
    entities = Example(
        id="2",
        task="NER",
        text="AB",
        entities=[
            Entity(text="A", start=0, end=1, type="t", score=0.4),
            Entity(text="B", start=1, end=2, type="t"),
        ],
    )
    assert [e.text for e in at_least(entities, 0.5).entities] == ["B"]
    with pytest.raises(GiellmError, match="within"):
        check_threshold(1.5)


class _First:
    """A guide that allows every token: the output head's subset alone limits the choice."""

    def choose(self, ranked: list[int], scores: object) -> int:
        return ranked[0]


@pytest.mark.parametrize(("subset", "cap"), [(False, None), (True, None), (True, 5.0)])
def test_chosen_token_logprobs_are_the_models_own(
    gemma_extractor: Extractor, subset: bool, cap: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batched continuous decoding (rows join and leave the cache) records, for each chosen
    token, the log-probability the model's plain forward over prompt + output gives it: over
    the whole vocabulary, or over the output head's tokens (after Gemma's soft-capping)."""
    model, tok = gemma_extractor.model, gemma_extractor.tokenizer
    monkeypatch.setattr(model.config.get_text_config(), "final_logit_softcapping", cap)
    texts = [SENTENCE, "とても良いホテルでした。", "トヨタ自動車は愛知県に本社を置く。"]
    prompts = [prompt_ids(tok, t, "NER") for t in texts]
    vocab = sorted({t for p in prompts for t in p} | {tok.eos_token_id}) if subset else None
    got: dict[int, tuple[list[int], list[float]]] = {}
    greedy(
        model,
        prompts,
        pad_id=tok.pad_token_id,
        eos_id=tok.eos_token_id,
        max_tokens=8,
        batch_size=2,
        guides=[_First() for _ in prompts] if subset else None,
        vocab=vocab,
        on_done=lambda i, ids, ended, logprobs: got.setdefault(i, (list(ids), list(logprobs))),
    )
    assert sorted(got) == [0, 1, 2]
    for i, (ids, logprobs) in got.items():
        assert len(ids) == len(logprobs) > 0
        row = torch.tensor([[*prompts[i], *ids]])
        with torch.inference_mode():
            steps = model(input_ids=row).logits[0, len(prompts[i]) - 1 : -1].float()
        columns = torch.tensor(ids)
        if vocab is not None:  # the softmax runs over the head's tokens alone
            steps = steps[:, vocab]
            columns = torch.tensor([vocab.index(t) for t in ids])
        expected = steps.log_softmax(-1).gather(-1, columns[:, None])[:, 0]
        assert logprobs == pytest.approx(expected.tolist(), abs=1e-3)


def test_every_predicted_item_is_scored_and_a_threshold_filters(embedded: Extractor) -> None:
    extractor = embedded.configured(batch_size=8)
    for task in ("NER", "PAS"):
        (record,) = extractor.extract([SENTENCE], task)
        items = [*record.entities, *record.events, *(a for e in record.events for a in e.arguments)]
        assert items, f"the tiny model finds something for {task}"
        assert all(i.score is not None and 0.0 < i.score <= 1.0 for i in items)
        scores = sorted(i.score for i in record.entities or record.events)  # type: ignore[misc]
        cut = scores[len(scores) // 2]
        (kept,) = extractor.extract([SENTENCE], task, threshold=cut)
        left = kept.entities or kept.events
        assert [i.score for i in left] == [
            i.score for i in (record.entities or record.events) if i.score >= cut
        ]  # type: ignore[operator]
    (label,) = extractor.extract([SENTENCE], "SA", schema="jrte")
    assert label.label is not None and 0.0 < (label.label_score or 0.0) <= 1.0


def test_cli_threshold_prints_scores_and_refuses_a_bad_value(tmp_path: Path) -> None:
    shown = run_cli("extract", SENTENCE, "--task", "NER", "--model", "tiny")
    assert shown.returncode == 0, shown.stderr
    everything = json.loads(shown.stdout)["entities"]
    assert everything and all(0 < e["score"] <= 1 for e in everything)
    cut = sorted(e["score"] for e in everything)[-1]
    strict = run_cli(
        "extract", SENTENCE, "--task", "NER", "--model", "tiny", "--threshold", str(cut)
    )
    assert strict.returncode == 0, strict.stderr
    assert json.loads(strict.stdout)["entities"] == [e for e in everything if e["score"] >= cut]
    bad = run_cli("extract", SENTENCE, "--task", "NER", "--model", "tiny", "--threshold", "2")
    assert bad.returncode != 0 and "threshold" in bad.stderr and "Traceback" not in bad.stderr


def test_a_records_scores_do_not_depend_on_what_shares_its_batch(embedded: Extractor) -> None:
    """The output head covers the whole batch's tokens; each row's probabilities are still
    normalised over its own grammar's share, so batch-mates change nothing."""
    extractor = embedded.configured(batch_size=4)
    (alone,) = extractor.extract([SENTENCE], "NER")
    others = ["Appleのティム・クックCEOがサンフランシスコで新製品を発表した。", "東京都渋谷区"]
    together = extractor.extract([others[0], SENTENCE, others[1]], "NER")[1]
    assert [(e.start, e.end, e.type) for e in together.entities] == [
        (e.start, e.end, e.type) for e in alone.entities
    ]
    assert [e.score for e in together.entities] == pytest.approx(
        [e.score for e in alone.entities], abs=1e-4
    )
