"""Baselines and the report: GiNZA on real records, the few-shot client against a real giellm
server on loopback, the MRE ablation machinery on a tiny base, and `giellm report` end to end."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import run_cli
from giellm.data.registry import get_format, load
from giellm.errors import GiellmError
from giellm.evaluation.baselines.fewshot import (
    FewShotClient,
    chat_messages,
    completion_prompt,
    pick_shots,
)
from giellm.evaluation.baselines.ginza import MAPPINGS, GinzaNER
from giellm.evaluation.metrics import score
from giellm.evaluation.report import (
    ablation_findings,
    comparisons,
    pool_seeds,
    results_table,
    write_report,
)
from giellm.evaluation.systems import spread
from giellm.inference.extractor import Extractor
from giellm.service.app import create_app
from giellm.service.server import background_server
from giellm.training.ablation import Ablation, Variant, systems, train_variants
from giellm.training.config import DataSource


def test_ginza_maps_only_types_it_really_tags_onto_the_dataset_types() -> None:
    import spacy

    tagged = set(spacy.load("ja_ginza").get_pipe("ner").labels)
    for dataset, table in MAPPINGS.items():
        assert set(table) <= tagged, dataset
        assert set(table.values()) <= (get_format(dataset).schema("NER").entity_types or set())


def test_ginza_baseline_finds_real_entities(data_dir: Path) -> None:
    gold = load("stockmark", "dev", "NER", data_dir)[:80]
    predicted = list(GinzaNER("stockmark").predict(gold))
    assert [p.id for p in predicted] == [g.id for g in gold]
    report = score(gold, predicted)
    assert report.micro.f1 is not None and report.micro.f1 > 0.25  # 0.41 on the whole dev split


def test_fewshot_prompts_hold_the_examples_in_giellm_layout(data_dir: Path) -> None:
    pool = load("jrte", "train", "SA", data_dir)
    shots = pick_shots(pool, 3, seed=0)
    assert shots == pick_shots(pool, 3, seed=0)
    query = load("jrte", "dev", "SA", data_dir)[0]
    messages = chat_messages(shots, query, get_format("jrte").schema("SA"))
    assert [m["role"] for m in messages] == ["system", *["user", "assistant"] * 3, "user"]
    assert "ポジティブ" in messages[0]["content"]
    assert messages[2]["content"] == f"<{shots[0].label}>"
    assert completion_prompt(shots, query).endswith(f"{query.text}\n感情分析:\n")


@pytest.mark.parametrize("mode", ["chat", "completions"])
def test_fewshot_client_against_a_real_local_endpoint(
    data_dir: Path, mode: str, embedded: Extractor
) -> None:
    gold = load("stockmark", "dev", "NER", data_dir)[:6]
    shots = pick_shots(load("stockmark", "train", "NER", data_dir), 2)
    schema = get_format("stockmark").schema("NER")
    app = create_app(embedded.configured(batch_size=8), max_wait_ms=20)
    with background_server(app) as url:
        client = FewShotClient(f"{url}/v1", "giellm", shots, schema=schema, mode=mode)  # type: ignore[arg-type]
        predicted = [p.example for p in client.predict(gold)]
    stats = app.state.batcher.stats
    assert stats.requests == len(gold) and stats.errors == 0
    assert [p.id for p in predicted] == [g.id for g in gold]
    for p, g in zip(predicted, gold, strict=True):
        assert p.text == g.text
        assert all(g.text[e.start : e.end] == e.text for e in p.entities)
        assert all(e.type in (schema.entity_types or ()) for e in p.entities)


def test_ablation_trains_each_variant_once_and_scores_its_cases(
    base_models: dict[str, Path], tmp_path: Path
) -> None:
    ablation = Ablation(
        base_model=str(base_models["llama"]),
        output_dir=str(tmp_path / "abl"),
        max_steps=2,
        batch_size=4,
        variants=[
            Variant("joint", "joint", [DataSource("fkc", "NER")]),
            Variant(
                "split",
                "split",
                [DataSource("fkc", "TC"), DataSource("fkc", "NER", text_label=False)],
                label_task="TC",
                cases=["fkc:NER"],
            ),
        ],
    )
    (tmp_path / "abl" / "split" / "seed0").mkdir(parents=True)  # killed before a checkpoint
    (tmp_path / "abl" / "split" / "seed0" / "train_log.jsonl").write_text("{}\n")
    trained = train_variants(ablation)
    assert set(trained) == {"joint", "split"}
    (split,), (joint,) = trained["split"], trained["joint"]
    meta = json.loads((split / "giellm.json").read_text(encoding="utf-8"))
    assert meta["schemas"]["NER"]["labels"] == []  # the split NER records carry no label
    assert meta["schemas"]["TC"]["labels"]
    stamp = (joint / "config.json").stat().st_mtime_ns
    assert train_variants(ablation) == trained
    assert (joint / "config.json").stat().st_mtime_ns == stamp  # reused, not retrained
    rows = systems(ablation, trained)
    assert [r.supports("fkc", "NER") for r in rows] == [True, True]
    assert not rows[0].supports("stockmark", "NER")
    gold = load("fkc", "dev", "NER")[:3]
    labels = get_format("fkc").schema("NER").labels or set()
    for system in rows:
        system.batch_size = 4
        predicted = system.predict("fkc", gold, lambda: None)
        assert all(p.label in labels for p in predicted)  # split: label from its TC pass


def test_a_joint_variant_is_asked_for_its_label_through_its_word_level_task(
    base_models: dict[str, Path], tmp_path: Path
) -> None:
    """livedoor-joint: categories with entities, trained as NER, scored on livedoor TC through
    the NER output's label, reading the same first window a TC model reads."""
    from giellm.data.jsonl import write_jsonl
    from giellm.schema import Entity, Example

    joint = tmp_path / "joint.jsonl"
    news = load("livedoor", "train", "TC")[:8]
    write_jsonl(
        joint,
        [
            Example(
                id=r.id,
                task="NER",
                text=r.text[:120],
                label=r.label,
                entities=[Entity(text=r.text[:2], start=0, end=2, type="人名")],
            )
            for r in news
        ],
    )
    variant = Variant(
        "words",
        "words",
        [DataSource("livedoor-joint", "NER", train=str(joint))],
        label_task="NER",
        cases=["livedoor:TC"],
        schema="livedoor-joint",
    )
    ablation = Ablation(
        base_model=str(base_models["llama"]),
        output_dir=str(tmp_path / "abl"),
        max_steps=2,
        batch_size=4,
        seeds=[0, 1],
        variants=[variant],
    )
    trained = train_variants(ablation)
    assert [p.parent.name for p in trained["words"]] == ["seed0", "seed1"]
    meta = json.loads((trained["words"][0] / "giellm.json").read_text(encoding="utf-8"))
    assert set(meta["schemas"]["NER"]["labels"]) == set(
        get_format("livedoor").schema("TC").labels or ()
    )
    (system, _) = systems(ablation, trained)
    assert system.supports("livedoor", "TC") and not system.supports("livedoor-joint", "NER")
    system.batch_size = 4
    gold = load("livedoor", "dev", "TC")[:3]
    predicted = system.predict("livedoor", gold, lambda: None)
    assert [(p.id, p.task, p.text) for p in predicted] == [(g.id, "TC", g.text) for g in gold]
    labels = get_format("livedoor").schema("TC").labels or set()
    assert all(p.label in labels for p in predicted)


def test_limited_cases_are_spread_over_the_whole_split(data_dir: Path) -> None:
    news = load("livedoor", "dev", "TC", data_dir)  # sorted by category
    sample = spread(news, 90)
    assert len(sample) == 90 and len({r.id for r in sample}) == 90
    assert len({r.label for r in sample}) == 9  # the first 90 would hold one or two categories
    assert spread(news, None) == news and spread(news, 10_000) == news


def test_report_tables_say_plainly_who_wins() -> None:
    base = {"records": 10, "word_accuracy": None, "overall_accuracy": None, "precision": None}
    rows = [
        {**base, "system": "giellm", "dataset": "jrte", "task": "SA", "text_accuracy": 0.6,
         "recall": None, "f1": None, "seconds": 1.0, "records_per_second": 10.0},
        {**base, "system": "3-shot", "dataset": "jrte", "task": "SA", "text_accuracy": 0.7,
         "recall": None, "f1": None, "seconds": 2.0, "records_per_second": 5.0},
    ]  # fmt: skip
    assert comparisons(rows, "giellm") == [
        "- jrte SA: giellm loses to 3-shot on text accuracy (0.600 vs 0.700)."
    ]
    table = results_table(rows)
    assert "| jrte | SA | giellm | 10 | 0.600 | – |" in table


def test_ablation_rows_get_their_own_table_and_ranking(tmp_path: Path) -> None:
    def row(system: str, group: str, acc: float) -> dict[str, object]:
        return {"system": system, "group": group, "dataset": "fkc", "task": "NER",
                "records": 100, "text_accuracy": acc, "word_accuracy": 0.9,
                "overall_accuracy": acc - 0.01, "precision": 0.2, "recall": 0.1, "f1": acc / 2,
                "seconds": 1.0, "records_per_second": 100.0}  # fmt: skip

    rows = [
        row("giellm", "main", 0.3),
        row("joint", "ablation", 0.48),
        row("split", "ablation", 0.44),
    ]
    assert ablation_findings(rows[1:]) == [
        "- fkc NER (overall accuracy): joint 0.470 > split 0.430; one seed each: no noise estimate."
    ]
    report = write_report(tmp_path, rows, ours="giellm", context={"limit": 100})
    text = report.read_text(encoding="utf-8")
    main, ablation = text.split("## Mutual Reinforcement Effect ablation")
    assert "| fkc | NER | giellm |" in main and "| fkc | NER | joint |" not in main
    assert "| fkc | NER | joint |" in ablation and "| fkc | NER | split |" in ablation
    assert (tmp_path / "ablation.png").exists()


def test_ablation_seeds_are_pooled_and_a_gap_inside_their_spread_is_noise() -> None:
    def row(system: str, seed: int, f1: float) -> dict[str, object]:
        return {"system": system, "group": "ablation", "seed": seed, "dataset": "stockmark",
                "task": "NER", "records": 10, "text_accuracy": None, "word_accuracy": 0.5,
                "overall_accuracy": 0.5, "precision": f1, "recall": f1, "f1": f1,
                "seconds": 1.0, "records_per_second": 10.0}  # fmt: skip

    close = [row("mix", 0, 0.70), row("mix", 1, 0.74), row("alone", 0, 0.69), row("alone", 1, 0.72)]
    pooled = pool_seeds(close)
    assert [(p["system"], p["seeds"], p["spread"]) for p in pooled] == [
        ("mix", 2, [0.70, 0.74]),
        ("alone", 2, [0.69, 0.72]),
    ]
    assert pooled[0]["f1"] == pytest.approx(0.72) and pooled[0]["records_per_second"] == 10.0
    (finding,) = ablation_findings(close)
    assert finding == (
        "- stockmark NER (f1): mix 0.720 (2 seeds: 0.700–0.740) > alone 0.705 (2 seeds: "
        "0.690–0.720); mix vs alone: within the seeds' spread (noise)."
    )
    apart = [row("mix", 0, 0.80), row("mix", 1, 0.82), row("alone", 0, 0.69), row("alone", 1, 0.72)]
    assert ablation_findings(apart)[0].endswith("mix is ahead of alone on every seed.")


def test_ablation_settings_are_checked_before_anything_trains() -> None:
    with pytest.raises(GiellmError, match="max_steps or as train_tokens"):
        Ablation(base_model="gemma-3-270m", max_steps=10, train_tokens=1000)
    with pytest.raises(GiellmError, match="train: seed is set by the ablation itself"):
        Ablation(base_model="gemma-3-270m", max_steps=10, train={"seed": 3})
    with pytest.raises(GiellmError, match="different seeds"):
        Ablation(base_model="gemma-3-270m", max_steps=10, seeds=[1, 1])


def test_report_command_writes_markdown_plots_and_json(tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = run_cli(
        "report", "--systems", "giellm,ginza,fewshot,tiny", "--cases", "stockmark:NER,jrte:SA",
        "--limit", "6", "--shots", "1,2", "--fewshot-base", "tiny", "--fewshot-limit", "4",
        "-o", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    got = {(r["dataset"], r["system"]) for r in data["rows"]}
    assert got == {
        ("stockmark", "giellm"), ("stockmark", "GiNZA"), ("stockmark", "1-shot"),
        ("stockmark", "2-shot"), ("jrte", "giellm"), ("jrte", "1-shot"), ("jrte", "2-shot"),
        ("stockmark", "tiny (5.5M)"), ("jrte", "tiny (5.5M)"),
    }  # fmt: skip
    # few-shot rows score 4 of the 6 records (spread), the others all 6
    assert all(r["records"] == (4 if "shot" in r["system"] else 6) for r in data["rows"])
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "| stockmark | NER | GiNZA | 6 |" in markdown
    assert "## Where giellm wins and loses" in markdown
    for png in ("scores.png", "throughput.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_rejects_unknown_systems_and_cases(tmp_path: Path) -> None:
    bad = run_cli("report", "--systems", "giellm,bert", "-o", str(tmp_path))
    assert bad.returncode == 2 and "unknown bert" in bad.stderr
    bad = run_cli("report", "--cases", "stockmark", "-o", str(tmp_path))
    assert bad.returncode == 2 and "not DATASET:TASK" in bad.stderr
    bad = run_cli("report", "--shots", "3,five", "-o", str(tmp_path))
    assert bad.returncode == 2 and "--shots '3,five'" in bad.stderr


def test_a_system_lets_its_model_go_after_its_last_case(data_dir: Path) -> None:
    # a report over an ablation's many runs must not hold every model at once (24 Gemma runs
    # filled 13 GB and the kernel killed the report)
    from giellm.evaluation.systems import GiellmSystem, run_cases

    early = GiellmSystem("early", "tiny", cases=frozenset({("jrte", "SA")}))
    late = GiellmSystem("late", "tiny")
    held = []

    def track(description: str, total: int) -> Callable[[], None]:
        held.append((description, early._extractor is not None, late._extractor is not None))
        return lambda: None

    rows = run_cases([early, late], [("jrte", "SA"), ("livedoor", "TC")], limit=4, track=track)
    assert [(r["system"], r["dataset"]) for r in rows] == [
        ("early", "jrte"),
        ("late", "jrte"),
        ("late", "livedoor"),
    ]
    # when `late` starts livedoor, `early` (jrte only) has been let go; `late` still runs
    assert held[-1] == ("late: livedoor TC", False, True)
    assert early._extractor is None and late._extractor is None
    assert all(r["records"] == 4 for r in rows)
