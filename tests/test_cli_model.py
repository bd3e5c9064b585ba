"""The real `giellm` command with models: train, extract, predict, and their one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli, shared_path
from giellm.data.jsonl import read_jsonl, write_jsonl
from giellm.data.registry import get_format, load


def test_train_from_flags_then_predict_a_shared_file(
    base_models: dict[str, Path], data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    trained = run_cli(
        "train", "--base-model", str(base_models["gpt2"]), "--output-dir", str(out),
        "--data", "stockmark:NER:3", "--data", "jrte:SA", "--lora", "--lora-r", "4",
        "--max-steps", "2", "--batch-size", "4",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert "model saved to" in trained.stderr
    assert (out / "final" / "adapter_config.json").exists()

    dev = shared_path(data_dir, "stockmark", "dev")
    gold = load("stockmark", "dev", "NER", data_dir)
    small = tmp_path / "small.jsonl"
    write_jsonl(small, gold[:12])
    pred = tmp_path / "pred.jsonl"
    result = run_cli("predict", str(small), "-o", str(pred), "--model", str(out / "final"))
    assert result.returncode == 0, result.stderr
    assert "wrote 12 predictions" in result.stderr
    predictions = list(read_jsonl(pred))
    assert [p.id for p in predictions] == [g.id for g in gold[:12]]
    assert all(p.text == g.text for p, g in zip(predictions, gold, strict=False))

    # a shared file in its own format works the same way with --from and --task
    whole = run_cli(
        "predict", str(dev), "--from", "stockmark", "--task", "NER",
        "-o", str(tmp_path / "all.jsonl"), "--model", str(out / "final"),
        "--batch-size", "64", "--max-new-tokens", "3",
    )  # fmt: skip
    assert whole.returncode == 0, whole.stderr
    assert len(list(read_jsonl(tmp_path / "all.jsonl"))) == len(gold) == 534


def test_extract_prints_json_records(base_models: dict[str, Path]) -> None:
    texts = ["トヨタ自動車の豊田章男社長が名古屋で会見した。", "ソニーは東京に本社を置く。"]
    result = run_cli(
        "extract",
        *texts,
        "--task",
        "ner",
        "--model",
        str(base_models["llama"]),
        "--schema",
        "stockmark",
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in records] == texts
    types = get_format("stockmark").schema("NER").entity_types or set()
    for record, text in zip(records, texts, strict=True):
        assert record["task"] == "NER"
        for e in record["entities"]:
            assert text[e["start"] : e["end"]] == e["text"] and e["type"] in types


def test_model_commands_fail_in_one_line(base_models: dict[str, Path], tmp_path: Path) -> None:
    missing = run_cli("extract", "テキスト", "--task", "NER", "--model", str(tmp_path))
    assert missing.returncode == 2
    assert (
        missing.stderr.strip()
        == f"error: {tmp_path}: not a model directory (no config.json or adapter_config.json)"
    )

    bad_task = run_cli("extract", "テキスト", "--task", "XYZ")
    assert bad_task.returncode == 2 and "unknown task 'XYZ'" in bad_task.stderr

    broken = tmp_path / "broken.jsonl"
    broken.write_text(
        '{"id": "a", "task": "NER", "text": "東京"}\n{"id": "b", "task": "NER"}\n', encoding="utf-8"
    )
    out = tmp_path / "out.jsonl"
    result = run_cli("predict", str(broken), "-o", str(out), "--model", str(base_models["llama"]))
    assert result.returncode == 2
    assert result.stderr == f"error: {broken}:2: field 'text': Field required\n"
    assert not out.exists()  # nothing half-written

    config = tmp_path / "bad.yaml"
    config.write_text(
        "output_dir: x\ndata: [{dataset: stockmark, task: NER}]\nlearning_rate: 1\n",
        encoding="utf-8",
    )
    bad = run_cli("train", "--config", str(config))
    assert bad.returncode == 2
    assert "unknown key 'learning_rate'" in bad.stderr and str(config) in bad.stderr


def test_embedded_model_is_used_without_model_and_finds_real_entities(
    data_dir: Path, tmp_path: Path
) -> None:
    """The shipped default model: no --model, real dev sentences, spans that are in the text."""
    text = "トヨタ自動車の豊田章男社長は名古屋市で新型車を発表した。"
    result = run_cli("extract", text, "--task", "NER", "--schema", "stockmark")
    assert result.returncode == 0, result.stderr
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert record["text"] == text and record["task"] == "NER"
    for e in record["entities"]:
        assert text[e["start"] : e["end"]] == e["text"]

    gold = load("stockmark", "dev", "NER", data_dir)[:40]
    small = tmp_path / "small.jsonl"
    write_jsonl(small, gold)
    pred = tmp_path / "pred.jsonl"
    done = run_cli("predict", str(small), "-o", str(pred), "--schema", "stockmark")
    assert done.returncode == 0, done.stderr
    assert "0 items dropped by the decoder" in done.stderr
    predictions = list(read_jsonl(pred))
    assert [p.id for p in predictions] == [g.id for g in gold]
    from giellm.evaluation.metrics import score

    report = score(gold, predictions)
    assert report.micro.tp > 0  # it really finds entities, not only well-formed output


@pytest.mark.usefixtures("shipped_default")
def test_labels_restrict_extract_and_predict_to_a_subset(data_dir: Path, tmp_path: Path) -> None:
    """`--labels` on the default model: only the chosen types come out, and the person is found;
    a label the model lacks or a file of several tasks is a one-line error."""
    text = "ソフトバンクグループの孫正義会長は福岡市で記者会見を開いた。"
    result = run_cli("extract", text, "--task", "NER", "--schema", "stockmark", "--labels", "人名")
    assert result.returncode == 0, result.stderr
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    found = [(e["text"], e["type"]) for e in record["entities"]]
    # only 人名 can be written; the grammar may also push another span into it (福岡市)
    assert ("孫正義", "人名") in found and {t for _, t in found} == {"人名"}

    review = "部屋が広くて清潔で、スタッフの対応もとても親切でした。また泊まりたいです。"
    scored = run_cli("extract", review, "--task", "SA", "--schema", "jrte", "--label-scores")
    assert scored.returncode == 0, scored.stderr
    (line,) = [json.loads(row) for row in scored.stdout.splitlines()]
    assert set(line["label_scores"]) == {"ポジティブ", "ネガティブ", "ニュートラル"}
    assert abs(sum(line["label_scores"].values()) - 1) < 1e-6
    assert max(line["label_scores"], key=line["label_scores"].get) == line["label"] == "ポジティブ"

    unknown = run_cli("extract", text, "--task", "NER", "--schema", "stockmark", "--labels", "惑星")
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1
    assert "惑星 not among the entity_types NER knows here" in unknown.stderr

    gold = load("stockmark", "dev", "NER", data_dir)[:6]
    small = tmp_path / "small.jsonl"
    write_jsonl(small, gold)
    pred = tmp_path / "pred.jsonl"
    done = run_cli(
        "predict", str(small), "-o", str(pred), "--schema", "stockmark", "--labels", "地名"
    )
    assert done.returncode == 0, done.stderr
    types = {e.type for p in read_jsonl(pred) for e in p.entities}
    assert types <= {"地名"}

    mixed = tmp_path / "mixed.jsonl"
    write_jsonl(mixed, [*gold[:2], *load("jrte", "dev", "SA", data_dir)[:2]])
    refused = run_cli("predict", str(mixed), "-o", str(tmp_path / "m.jsonl"), "--labels", "地名")
    assert refused.returncode == 2
    assert (
        "--labels restricts one task's labels" in refused.stderr and "give --task" in refused.stderr
    )
    assert not (tmp_path / "m.jsonl").exists()
