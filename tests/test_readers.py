"""Readers against the counts their SOURCE.md states, reader errors, the MRE CSV and the mixer."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from conftest import shared_path
from giellm.data import mix
from giellm.data.registry import get_format, load
from giellm.errors import DataError, GiellmError
from giellm.layout.format import encode_target
from giellm.schema import Example

# (format, split, task) -> (records, word-level items), from each dataset's SOURCE.md
COUNTS = {
    ("stockmark", "train", "NER"): (4274, 10447),
    ("stockmark", "dev", "NER"): (534, 1372),
    ("kwdlc", "train", "NER"): (3915, 6278),
    ("kwdlc", "dev", "NER"): (512, 976),
    ("kwdlc", "dev", "PAS"): (512, 3910),
    ("wac", "train", "NER"): (3679, 15035),
    ("wac", "dev", "NER"): (100, 430),
    ("wac", "dev", "PAS"): (100, 950),
    ("fkc", "train", "NER"): (454, 72),
    ("fkc", "dev", "PAS"): (100, 576),
    ("jacred", "train", "NER"): (240, 5588),
    ("jacred", "dev", "NER"): (60, 1409),
    ("jacred", "train", "RE"): (240, 4721),
    ("jacred", "dev", "RE"): (60, 1436),
    ("livedoor", "train", "TC"): (5894, 0),
    ("livedoor", "dev", "TC"): (737, 0),
    ("jrte", "train", "SA"): (3888, 0),
    ("jrte", "dev", "SA"): (1112, 0),
}


@pytest.mark.parametrize(("key", "expected"), COUNTS.items(), ids=["-".join(k) for k in COUNTS])
def test_counts_match_source_md(
    data_dir: Path, key: tuple[str, str, str], expected: tuple[int, int]
) -> None:
    name, split, task = key
    records = load(name, split, task, data_dir)
    words = sum(len(r.entities) + len(r.relations) + len(r.events) for r in records)
    assert (len(records), words) == expected
    assert len({r.id for r in records}) == len(records)


def test_label_distributions(data_dir: Path) -> None:
    fkc = Counter(r.label for r in load("fkc", "dev", "NER", data_dir))
    assert fkc == {
        "it": 26,
        "hospital": 20,
        "consumer_electronics": 19,
        "super": 18,
        "traffic": 10,
        "trip": 7,
    }
    jrte = Counter(r.label for r in load("jrte", "dev", "SA", data_dir))
    assert jrte == {"ポジティブ": 691, "ニュートラル": 261, "ネガティブ": 160}
    livedoor = Counter(r.label for r in load("livedoor", "dev", "TC", data_dir))
    assert livedoor["sports-watch"] == 104 and len(livedoor) == 9


def test_pas_keeps_cross_sentence_arguments_with_real_offsets(data_dir: Path) -> None:
    docs = load("fkc", "train", "PAS", data_dir)
    doc = next(d for d in docs if d.id == "fuman-trip-0000000746")  # SOURCE.md's example
    assert doc.text == "1000円はぼったくり。\n高すぎる。"
    second = next(ev for ev in doc.events if ev.trigger.text == "高すぎる。")
    assert [(a.role, a.text, a.start) for a in second.arguments] == [("ガ", "1000円", 0)]


def test_unknown_task_for_a_reader(data_dir: Path) -> None:
    with pytest.raises(GiellmError, match="has no RE annotation"):
        list(get_format("stockmark").read(shared_path(data_dir, "stockmark", "dev"), "RE"))


def test_reader_errors_name_file_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "kw.jsonl"
    good_doc = {
        "doc_id": "d1",
        "sentences": [{"sid": "d1-1", "text": "東京へ行く。", "entities": [], "pas": []}],
    }
    bad.write_text(json.dumps(good_doc, ensure_ascii=False) + "\n{oops\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"kw.jsonl:2: not valid JSON"):
        list(get_format("kwdlc").read(bad, "NER"))

    wrong_span = {
        "curid": "1",
        "text": "東京へ行く。",
        "entities": [{"name": "大阪", "span": [0, 2], "type": "地名"}],
    }
    array = tmp_path / "st.json"
    array.write_text(json.dumps([wrong_span], ensure_ascii=False), encoding="utf-8")
    with pytest.raises(DataError, match=r"st.json: record 0: .*text\[0:2\] is '東京', not '大阪'"):
        list(get_format("stockmark").read(array, "NER"))

    empty = tmp_path / "pn.tsv"
    empty.write_text("a1\t1\t良い\t{}\ttrain\na2\t1\t \t{}\ttrain\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"pn.tsv:2: field 'text': .*text is empty"):
        list(get_format("jrte").read(empty, "SA"))


def test_mre_csv_reader_parses_paper_layout(tmp_path: Path, data_dir: Path) -> None:
    """SCNM-style rows (text + IW, `<label>;type:span;…`) built from real stockmark sentences."""
    gold = load("stockmark", "dev", "NER", data_dir)[:50]
    path = tmp_path / "scnm.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["input", "output"])
        for i, ex in enumerate(gold):
            target = encode_target(ex.model_copy(update={"label": "社会"}))
            if i % 2:  # also accept the reversed `span:type` order and a leading ';'
                items = [f"{e.text}:{e.type}" for e in ex.entities]
                target = "<社会>;" + ";".join(items) if "#" not in target else target
            writer.writerow([ex.text + "SCNM", target])
    records = list(get_format("mre-csv").read(path, "NER"))
    assert [r.text for r in records] == [g.text for g in gold]
    assert all(r.label == "社会" for r in records)
    assert [r.entities for r in records] == [g.entities for g in gold]


def test_mre_csv_reader_refuses_to_lose_gold_items(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("input,output\n東京に行く。SCNM,<旅行>地名:大阪\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.csv:2: field 'output': cannot use span not in text"):
        list(get_format("mre-csv").read(path, "NER"))


def test_mixer_is_seeded_and_weighted() -> None:
    def pool(task: str, n: int) -> list[Example]:
        return [Example(id=f"{task}{i}", task=task, text="文。") for i in range(n)]

    pools = {"NER": pool("NER", 10), "SA": pool("SA", 100)}
    first = mix(pools, {"NER": 1, "SA": 1}, total=60, seed=3)
    assert [e.id for e in first] == [
        e.id for e in mix(pools, {"NER": 1, "SA": 1}, total=60, seed=3)
    ]
    by_task = Counter(e.task for e in first)
    assert by_task == {"NER": 30, "SA": 30}
    assert Counter(e.id for e in first if e.task == "NER") == {f"NER{i}": 3 for i in range(10)}
    assert len({e.id for e in first if e.task == "SA"}) == 30  # sampled without replacement
    assert [e.id for e in first] != [
        e.id for e in mix(pools, {"NER": 1, "SA": 1}, total=60, seed=4)
    ]
    with pytest.raises(GiellmError, match="unknown pools"):
        mix(pools, {"RE": 1})
