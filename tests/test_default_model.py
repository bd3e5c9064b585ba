"""The shipped default model (Gemma 3 270M + the giellm-ja adapter), as a user meets it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli
from giellm.data.registry import get_format, load
from giellm.evaluation.systems import spread
from giellm.inference.extractor import Extractor
from giellm.models.bases import resolve_base
from giellm.models.loading import DEFAULT_MODEL_DIR, adapter_config

SENTENCE = "ソフトバンクグループの孫正義会長は福岡市で記者会見を開いた。"
# the default knows two NER type sets: stockmark's and IREX's (kwdlc, wac, fkc)
COMPANY, PERSON, CITY = {"法人名", "ORGANIZATION"}, {"人名", "PERSON"}, {"地名", "LOCATION"}


@pytest.fixture(scope="module")
def default_extractor() -> Extractor:
    return Extractor(DEFAULT_MODEL_DIR, batch_size=32)


def test_the_adapter_names_the_hub_base_and_resolves_offline() -> None:
    adapter = adapter_config(DEFAULT_MODEL_DIR)
    assert adapter is not None and adapter["base_model_name_or_path"] == "google/gemma-3-270m"
    source = resolve_base("google/gemma-3-270m")
    assert source.kind == "gguf" and source.path is not None and source.path.exists()
    size = sum(f.stat().st_size for f in DEFAULT_MODEL_DIR.iterdir())
    assert size < 40 * 2**20  # an adapter and its tokenizer, never merged weights


def test_extract_with_no_model_finds_the_company_the_person_and_the_city(
    shipped_default: None,
) -> None:
    done = run_cli("extract", SENTENCE, "--task", "NER")
    record = json.loads(done.stdout)
    found = {(e["text"], e["type"]) for e in record["entities"]}
    for text, types in (("ソフトバンクグループ", COMPANY), ("孫正義", PERSON), ("福岡市", CITY)):
        assert any(t == text and kind in types for t, kind in found), (text, found)
    for entity in record["entities"]:
        assert SENTENCE[entity["start"] : entity["end"]] == entity["text"]


@pytest.mark.parametrize(("dataset", "task"), [("jrte", "SA"), ("livedoor", "TC")])
def test_label_only_predictions_always_carry_a_label_of_the_schema(
    default_extractor: Extractor, dataset: str, task: str, data_dir: Path
) -> None:
    gold = spread(load(dataset, "dev", task, data_dir), 24)
    labels = get_format(dataset).schema(task).labels
    assert labels
    predicted = [p.example.label for p in default_extractor.predict(gold, schema=dataset)]
    assert all(label in labels for label in predicted)  # never null, never outside the schema
    right = sum(p == g.label for p, g in zip(predicted, gold, strict=True))
    assert right >= len(gold) * 0.6  # a trained model, far above the untuned base's null
