"""The `giellm` spaCy component in a real GiNZA pipeline (ja_ginza), on shared sentences, with
the embedded model: entities, categories, the record extension, serialisation, the entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

spacy = pytest.importorskip("spacy")
pytest.importorskip("ja_ginza")

from giellm.data.registry import get_format, load  # noqa: E402
from giellm.errors import GiellmError  # noqa: E402
from giellm.integrations.spacy_component import GiellmComponent  # noqa: E402
from giellm.schema import Entity, Example  # noqa: E402

SA_LABELS = get_format("jrte").schema("SA").labels


@pytest.fixture(scope="module")
def ginza() -> spacy.Language:
    return spacy.load("ja_ginza")


@pytest.fixture(scope="module")
def texts(data_dir: Path) -> list[str]:
    ner = [r.text for r in load("stockmark", "dev", "NER", data_dir)[:12]]
    return ner + [r.text for r in load("jrte", "dev", "SA", data_dir)[:4]]


@pytest.fixture(scope="module")
def nlp() -> spacy.Language:
    pipeline = spacy.load("ja_ginza")
    pipeline.add_pipe(
        "giellm",
        config={"task": "NER", "schema": "stockmark", "batch_size": 8, "overwrite_ents": True},
    )
    pipeline.add_pipe("giellm", name="giellm_sa", config={"task": "SA", "schema": "jrte"})
    return pipeline


def _entities(record: dict[str, object]) -> set[tuple[int, int, str]]:
    return {(e["start"], e["end"], e["type"]) for e in record.get("entities", [])}  # type: ignore[attr-defined, index]


def test_ginza_then_giellm_sets_ents_cats_and_the_record(
    nlp: spacy.Language, texts: list[str]
) -> None:
    docs = list(nlp.pipe(texts, batch_size=8))
    assert [d.text for d in docs] == texts  # in order
    component: GiellmComponent = nlp.get_pipe("giellm")
    fallback = 0
    for doc in docs:
        ner, sa = doc._.giellm["giellm"], doc._.giellm["giellm_sa"]
        assert ner["text"] == doc.text and ner["task"] == "NER" and sa["task"] == "SA"
        predicted = _entities(ner)
        for e in ner.get("entities", []):
            assert doc.text[e["start"] : e["end"]] == e["text"]
        # every predicted entity is a token-aligned doc.ents span or, as the documented
        # fallback, in doc.spans["giellm"]: expanded to tokens (or overlapping another)
        ents = {(s.start_char, s.end_char, s.label_) for s in doc.ents}
        assert ents <= predicted  # GiNZA's own entities were replaced (overwrite_ents)
        for start, end, label in predicted - ents:
            assert any(
                s.start_char <= start and end <= s.end_char and s.label_ == label
                for s in doc.spans["giellm"]
            )
        fallback += len(doc.spans["giellm"])
        # cats: the model's distribution over the SA labels
        assert set(doc.cats) == set(SA_LABELS)
        assert sum(doc.cats.values()) == pytest.approx(1.0)
        assert all(0.0 <= v <= 1.0 for v in doc.cats.values())
    assert component.counts["docs"] == len(texts)
    assert component.counts["misaligned"] + component.counts["overlapping"] == fallback
    assert component.counts["entities"] == sum(len(_entities(d._.giellm["giellm"])) for d in docs)


def test_ginza_entities_are_kept_by_default(ginza: spacy.Language, texts: list[str]) -> None:
    own = [{(e.start_char, e.end_char, e.label_) for e in d.ents} for d in ginza.pipe(texts)]
    assert any(own)  # GiNZA finds entities in these sentences
    ginza.add_pipe("giellm", name="keep", config={"task": "NER"})  # overwrite_ents: false
    try:
        for doc, before in zip(ginza.pipe(texts), own, strict=True):
            after = {(e.start_char, e.end_char, e.label_) for e in doc.ents}
            assert before <= after  # nothing of GiNZA's lost; giellm's added where free
            assert after - before <= _entities(doc._.giellm["keep"])
    finally:
        ginza.remove_pipe("keep")


def test_labels_restrict_the_entity_types(ginza: spacy.Language, texts: list[str]) -> None:
    config = {"task": "NER", "schema": "stockmark", "labels": ["人名"], "overwrite_ents": True}
    ginza.add_pipe("giellm", name="people", config=config)
    try:
        for doc in ginza.pipe(texts):
            assert {e["type"] for e in doc._.giellm["people"].get("entities", [])} <= {"人名"}
            assert {e.label_ for e in doc.ents} <= {"人名"}  # overwrite_ents: giellm's alone
        with pytest.raises(GiellmError, match="not among the entity_types"):
            ginza.add_pipe("giellm", name="planets", config=config | {"labels": ["惑星"]})
    finally:
        ginza.remove_pipe("people")


def test_spans_that_do_not_align_fall_back_to_expanded_spans(ginza: spacy.Language) -> None:
    """A record whose entity edge falls inside a token (the model's spans are characters)."""
    component: GiellmComponent = spacy.blank("ja").add_pipe("giellm", config={"task": "NER"})
    doc = ginza.make_doc("東京都に住む田中太郎はトヨタ自動車に勤めている。")
    tokens = [t.text for t in doc]
    assert "トヨタ" in tokens or "トヨタ自動車" in tokens
    record = Example(
        id="0",
        task="NER",
        text=doc.text,
        entities=(
            Entity(text="東京都", start=0, end=3, type="地名"),
            Entity(text="ヨタ自", start=12, end=15, type="法人名"),  # inside tokens
        ),
    )
    before = component.counts["misaligned"]
    component.annotate(doc, record)
    assert [(e.text, e.label_) for e in doc.ents] == [("東京都", "地名")]
    (expanded,) = doc.spans["giellm"]
    assert expanded.start_char <= 12 and expanded.end_char >= 15 and expanded.label_ == "法人名"
    assert component.counts["misaligned"] == before + 1


def test_blank_docs_and_bad_config(nlp: spacy.Language) -> None:
    doc = nlp("   ")
    assert doc._.giellm == {"giellm": None, "giellm_sa": None} and not doc.ents
    with pytest.raises(GiellmError, match="unknown task 'POS'"):
        spacy.blank("ja").add_pipe("giellm", config={"task": "POS"})
    with pytest.raises(GiellmError, match="no label sets for TC"):
        spacy.blank("ja").add_pipe("giellm", config={"task": "TC", "schema": "stockmark"})
    with pytest.raises(GiellmError, match="device: 'tpu'"):
        spacy.blank("ja").add_pipe("giellm", config={"device": "tpu"})


def test_two_components_of_one_task_keep_their_own_results(ginza: spacy.Language) -> None:
    """Keyed by task, the second NER component overwrote the first's record and spans."""
    ginza.add_pipe("giellm", name="open", config={"task": "NER"})
    ginza.add_pipe("giellm", name="stockmark", config={"task": "NER", "schema": "stockmark"})
    try:
        doc = ginza("日立製作所の山田太郎社長が会見した。")
        assert {"open", "stockmark"} <= set(doc._.giellm)
        assert all(doc._.giellm[name]["task"] == "NER" for name in ("open", "stockmark"))
        assert {"open", "stockmark"} <= set(doc.spans)
    finally:
        ginza.remove_pipe("open")
        ginza.remove_pipe("stockmark")


def test_pipe_with_several_processes_is_refused_not_hung(tmp_path: Path) -> None:
    """After one nlp(...) call, nlp.pipe(n_process=2) hung for ever in torch's threads."""
    script = (
        "import spacy\n"
        "nlp = spacy.load('ja_ginza')\n"
        "nlp.add_pipe('giellm', config={'task': 'NER'})\n"
        "nlp('東京に行った。')\n"
        "try:\n"
        "    list(nlp.pipe(['大阪に行った。', '京都に行った。'], n_process=2))\n"
        "except Exception as err:\n"
        "    print('refused:', err)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert "nlp.pipe(n_process>1) is not supported" in done.stdout + done.stderr


def test_to_disk_and_back_keeps_the_config(nlp: spacy.Language, tmp_path: Path) -> None:
    nlp.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline")
    assert loaded.pipe_names == nlp.pipe_names
    for name in ("giellm", "giellm_sa"):
        assert loaded.get_pipe_config(name) == nlp.get_pipe_config(name)
    doc = loaded("日立製作所の山田太郎社長が会見した。")
    assert set(doc._.giellm) == {"giellm", "giellm_sa"} and set(doc.cats) == set(SA_LABELS)


def test_the_factory_is_found_through_its_entry_point() -> None:
    """A fresh interpreter that never imports giellm: `add_pipe("giellm")` works."""
    code = (
        "import json, spacy; nlp = spacy.blank('ja');"
        "nlp.add_pipe('giellm', config={'task': 'SA'});"
        "print(json.dumps(nlp('とても楽しい旅行でした。')._.giellm, ensure_ascii=False))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=600
    )
    record = json.loads(out.stdout)["giellm"]
    assert record["text"] == "とても楽しい旅行でした。" and record["label"] is not None


def test_entity_spans_carry_scores_and_a_threshold_drops_low_ones(
    ginza: spacy.Language, texts: list[str]
) -> None:
    nlp = spacy.load("ja_ginza", exclude=["ner"])  # giellm's entities alone, to compare
    nlp.add_pipe("giellm", config={"task": "NER", "schema": "stockmark"})
    docs = list(nlp.pipe(texts[:8]))
    scored = [(s, s._.giellm_score) for d in docs for s in [*d.ents, *d.spans["giellm"]]]
    assert scored and all(score is not None and 0 < score <= 1 for _, score in scored)
    with_ginza = spacy.load("ja_ginza")  # GiNZA's own entities have no giellm score
    with_ginza.add_pipe("giellm", config={"task": "NER", "schema": "stockmark"})
    for doc in with_ginza.pipe(texts[:8]):
        ours = {
            (e["start"], e["end"], e["type"]) for e in doc._.giellm["giellm"].get("entities", [])
        }
        for span in doc.ents:
            if (span.start_char, span.end_char, span.label_) not in ours:
                assert span._.giellm_score is None, span
    cut = sorted(score for _, score in scored)[len(scored) // 2]
    strict = spacy.load("ja_ginza", exclude=["ner"])
    strict.add_pipe("giellm", config={"task": "NER", "schema": "stockmark", "threshold": cut})
    for doc, again in zip(docs, strict.pipe(texts[:8]), strict=True):
        record, kept = doc._.giellm["giellm"], again._.giellm["giellm"]
        expected = [e for e in record.get("entities", []) if e["score"] >= cut]
        assert list(kept.get("entities", [])) == expected
    with pytest.raises(GiellmError, match="threshold"):
        GiellmComponent(task="NER", model="tiny", threshold=1.5)
