"""Bad input and faults lose nothing: skipped lines are reported, killed runs resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import GIELLM, run_cli
from giellm.data.jsonl import dumps, read_jsonl, resume_count, write_jsonl
from giellm.data.registry import load
from giellm.inference.extractor import Extractor
from giellm.schema import Example

GOOD = [
    Example(id="a", task="NER", text="トヨタ自動車は名古屋で会見した。"),
    Example(id="b", task="SA", text="とても楽しかった！"),
    Example(id="c", task="NER", text="<p>ＳＯＮＹと任天堂</p>\u0007\t全角ＡＢＣ半角abc"),
]


def test_skip_keeps_every_good_record_and_reports_every_bad_line(tmp_path: Path) -> None:
    lines = [
        dumps(GOOD[0]),
        "{not json",
        '{"id": "x", "task": "NER", "text": 5}',
        '{"id": "y", "task": "POS", "text": "東京"}',
        '{"id": "z", "task": "NER", "text": "   "}',
        dumps(GOOD[1]),
        '{"id": "s", "task": "NER", "text": "東京\\ud800"}',
        "[1, 2]",
        dumps(GOOD[0]),  # duplicate id
        "",
        dumps(GOOD[2]),
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"

    failed = run_cli("predict", str(src), "-o", str(out))
    assert failed.returncode == 2
    assert failed.stderr.startswith(f"error: {src}:2: not valid JSON")
    assert not out.exists()

    done = run_cli("predict", str(src), "-o", str(out), "--on-error", "skip")
    assert done.returncode == 0, done.stderr
    assert [r.id for r in read_jsonl(out)] == ["a", "b", "c"]
    assert [r.text for r in read_jsonl(out)] == [g.text for g in GOOD]
    rejects = (tmp_path / "out.jsonl.rejects.jsonl").read_text(encoding="utf-8")
    rejected = [json.loads(line) for line in rejects.splitlines()]
    assert [r["line"] for r in rejected] == [2, 3, 4, 5, 7, 8, 9]
    reasons = " | ".join(r["error"] for r in rejected)
    expected = [
        "not valid JSON", "field 'text'", "unknown task 'POS'", "text is empty",
        "unpaired surrogate U+D800", "expected a JSON object", "duplicate id 'a'",
    ]  # fmt: skip
    assert all(e in reasons for e in expected), reasons
    assert rejected[0]["raw"] == "{not json"
    assert "skipped 7 bad lines" in done.stderr


def test_killed_predict_resumes_without_losing_or_repeating_records(
    data_dir: Path, tmp_path: Path
) -> None:
    records = load("stockmark", "dev", "NER", data_dir)[:200]
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(src, records)
    command = [GIELLM, "predict", str(src), "-o", str(out), "--batch-size", "4"]
    command += ["--max-new-tokens", "24"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    partial = tmp_path / "out.jsonl.partial"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if partial.exists() and partial.read_text(encoding="utf-8").count("\n") >= 3:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not out.exists()  # no complete-looking output from a killed run
    written = partial.read_text(encoding="utf-8").count("\n")
    assert 0 < written < len(records)
    with partial.open("a", encoding="utf-8") as torn:  # as if the kill hit mid-line
        torn.write('{"id": "stockmark-dev-0')

    resumed = run_cli(*command[1:])
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming after {written} records" in resumed.stderr
    ids = [r.id for r in read_jsonl(out)]
    assert ids == [r.id for r in records]  # each once, in order
    assert not partial.exists()


def test_a_partial_file_of_other_records_is_never_merged(tmp_path: Path) -> None:
    partial = tmp_path / "out.jsonl.partial"
    partial.write_text(dumps(GOOD[1]) + "\n", encoding="utf-8")
    assert resume_count(tmp_path / "none.partial", ["a"]) == 0
    src = tmp_path / "in.jsonl"
    write_jsonl(src, GOOD)
    result = run_cli("predict", str(src), "-o", str(tmp_path / "out.jsonl"))
    assert result.returncode == 2
    assert "holds predictions of other records" in result.stderr
    assert partial.read_text(encoding="utf-8") == dumps(GOOD[1]) + "\n"  # left as it was


def test_killed_training_resumes_to_the_same_weights(
    base_models: dict[str, Path], tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    def config(out: Path) -> Path:
        path = tmp_path / f"{out.name}.yaml"
        path.write_text(
            f"output_dir: {out}\nbase_model: {base_models['llama']}\n"
            "data: [{dataset: jrte, task: SA}, {dataset: stockmark, task: NER}]\n"
            "lora: {r: 4, alpha: 8, dropout: 0.1}\n"  # dropout: the RNG state must resume too
            "max_steps: 60\nbatch_size: 4\nsave_every: 10\nsave_total_limit: 2\neval_every: 0\n",
            encoding="utf-8",
        )
        return path

    whole = run_cli("train", "--config", str(config(tmp_path / "whole")))
    assert whole.returncode == 0, whole.stderr

    killed_out = tmp_path / "killed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [GIELLM, "train", "--config", str(config(killed_out))]
    process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if list(killed_out.glob("checkpoint-*/state/position.json")):
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed_out / "final").exists(), "finished before the kill; make it longer"

    resumed = run_cli("train", "--config", str(config(killed_out)), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    log = (killed_out / "train_log.jsonl").read_text(encoding="utf-8")
    assert '"resumed_from"' in log
    expected = load_file(tmp_path / "whole" / "final" / "adapter_model.safetensors")
    got = load_file(killed_out / "final" / "adapter_model.safetensors")
    assert expected.keys() == got.keys()
    for name in expected:
        assert (expected[name] - got[name]).abs().max() <= 1e-6, name


def test_python_api_bad_input_raises_clear_errors_and_odd_text_works(embedded: Extractor) -> None:
    import pytest

    from giellm.errors import GiellmError

    ex = embedded.configured(batch_size=4, max_new_tokens=24)
    with pytest.raises(ValueError, match="text is empty"):
        ex.extract(["東京", "   "], task="NER")
    with pytest.raises(GiellmError, match="unknown task 'POS'"):
        ex.extract("東京", task="POS")
    with pytest.raises(ValueError, match="unpaired surrogate U\\+D800"):
        ex.extract("東京\ud800", task="NER")
    with pytest.raises(GiellmError, match="nope"):
        ex.extract("東京", task="NER", schema="nope")
    odd = [g.text for g in GOOD] + ["ｶﾀｶﾅ＆ＡＳＣＩＩ mixed 😀\r\n", "。"]
    for text, record in zip(odd, ex.extract(odd, task="NER"), strict=True):
        assert record.text == text
        assert all(text[e.start : e.end] == e.text for e in record.entities)


def test_a_long_text_is_windowed_and_mapped_back(data_dir: Path, tmp_path: Path) -> None:
    sentences = [r.text for r in load("stockmark", "dev", "NER", data_dir)]
    text = "".join(sentences)[:20_000]  # ~100 windows
    src, out = tmp_path / "long.jsonl", tmp_path / "out.jsonl"
    write_jsonl(src, [Example(id="long", task="NER", text=text)])
    done = run_cli("predict", str(src), "-o", str(out), "--batch-size", "32")
    assert done.returncode == 0, done.stderr
    (record,) = list(read_jsonl(out))
    assert record.text == text and record.entities
    assert max(e.end for e in record.entities) > 10_000  # found all along, offsets in the whole
    assert all(text[e.start : e.end] == e.text for e in record.entities)


def test_outputs_to_special_files_write_through_and_keep_the_node(
    data_dir: Path, tmp_path: Path
) -> None:
    """`-o /dev/null` or a FIFO is written to, never replaced by a regular file."""
    import os
    import stat
    import threading

    from giellm.data.jsonl import write_jsonl
    from giellm.data.registry import load

    records = load("stockmark", "dev", "NER", data_dir)[:3]
    assert write_jsonl("/dev/null", records) == 3
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    write_jsonl(fifo, records)
    reader.join(timeout=30)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert got and got[0].count(b"\n") == 3


def test_outputs_follow_the_umask(data_dir: Path, tmp_path: Path) -> None:
    import os

    from giellm.data.jsonl import write_jsonl
    from giellm.data.registry import load

    old = os.umask(0o022)
    try:
        write_jsonl(tmp_path / "out.jsonl", load("stockmark", "dev", "NER", data_dir)[:1])
    finally:
        os.umask(old)
    assert (tmp_path / "out.jsonl").stat().st_mode & 0o777 == 0o644


def test_extractor_settings_are_checked_before_loading(embedded: Extractor) -> None:
    from giellm.errors import GiellmError

    for options in ({"batch_size": 0}, {"batch_size": -1}, {"max_new_tokens": 0}):
        with pytest.raises(GiellmError, match="at least 1"):
            Extractor("/nonexistent/model", **options)  # type: ignore[arg-type]
        with pytest.raises(GiellmError, match="at least 1"):
            embedded.configured(**options)  # type: ignore[arg-type]
    extractor = embedded.configured(batch_size=2, max_new_tokens=4)
    with pytest.raises(GiellmError, match="chunk"):
        list(extractor.predict([], chunk=0))


def test_repeated_arguments_are_dropped_once_each() -> None:
    from giellm.layout.format import decode
    from giellm.schema import Example
    from giellm.tasks import LabelSchema

    source = Example(id="x", task="PAS", text="トヨタが東京で車を売った。")
    decoded = decode("<>売った(ガ:トヨタ,ガ:トヨタ,ヲ:車,ガ:トヨタ)", source, LabelSchema())
    (event,) = decoded.example.events
    assert [(a.role, a.text) for a in event.arguments] == [("ガ", "トヨタ"), ("ヲ", "車")]
    assert decoded.dropped == ("repeated argument: 'ガ:トヨタ'",) * 2


def test_an_output_that_is_an_input_is_refused(data_dir: Path, tmp_path: Path) -> None:
    """`-o INPUT` and `--rejects INPUT` would overwrite the input: one line, input intact."""
    source = tmp_path / "in.jsonl"
    write_jsonl(source, GOOD)
    before = source.read_bytes()
    for args in (
        ["convert", str(source), "--from", "jsonl", "--task", "NER", "-o", str(source)],
        ["predict", str(source), "-o", str(source)],
        ["predict", str(source), "-o", str(tmp_path / "p.jsonl"), "--rejects", str(source)],
    ):
        result = run_cli(*args)
        assert result.returncode == 2, result.stderr
        assert "is also an input" in result.stderr and "Traceback" not in result.stderr
        assert source.read_bytes() == before


def test_two_runs_never_write_one_output(tmp_path: Path) -> None:
    from giellm.data.jsonl import open_locked

    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(source, GOOD)
    with open_locked(tmp_path / "out.jsonl.partial"):  # a run in progress
        result = run_cli("predict", str(source), "-o", str(out), "--max-new-tokens", "4")
    assert result.returncode == 2 and "another giellm run is writing it" in result.stderr
    assert not out.exists()


def test_a_partial_resumes_only_under_its_own_settings(tmp_path: Path) -> None:
    from giellm.data.jsonl import check_run_settings
    from giellm.errors import DataError

    partial = tmp_path / "out.jsonl.partial"
    partial.write_text(dumps(GOOD[0]) + "\n", encoding="utf-8")
    check_run_settings(partial, {"task": "NER", "model": None})
    check_run_settings(partial, {"task": "NER", "model": None})  # the same run again
    with pytest.raises(DataError, match="task='NER', not 'SA'"):
        check_run_settings(partial, {"task": "SA", "model": None})


def test_a_partial_line_with_only_an_id_is_not_done(tmp_path: Path) -> None:
    partial = tmp_path / "out.jsonl.partial"
    partial.write_text(dumps(GOOD[0]) + "\n" + json.dumps({"id": GOOD[1].id}) + "\n")
    assert resume_count(partial, [g.id for g in GOOD]) == 1
    assert partial.read_text().count("\n") == 1  # the bad line is cut, the good one kept


def test_an_unknown_schema_fails_before_the_model_loads(tmp_path: Path) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(source, GOOD)
    result = run_cli("predict", str(source), "-o", str(out), "--schema", "nosuch")
    assert result.returncode == 2 and "nosuch" in result.stderr
    assert not (tmp_path / "out.jsonl.partial").exists()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"id": "a", "task": "NER", "text": "x", "n": ' + "9" * 5000 + "}", "not usable JSON"),
    ],
)
def test_parser_limits_are_one_line_errors(tmp_path: Path, line: str, message: str) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(line + "\n", encoding="utf-8")
    result = run_cli("convert", str(source), "--from", "jsonl", "--task", "NER", "-o", "x.jsonl")
    assert result.returncode == 2 and message in result.stderr and ":1:" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('input,output\n"東京の会社,<>\n', "not valid CSV"),  # unterminated quote
        ("input,output\n東京の会社\n", "no output column"),
        ("input,output\n" + "あ" * 140_000 + ",<>\n", "not valid CSV"),  # over the field limit
    ],
)
def test_corrupt_csv_is_refused_with_its_line(tmp_path: Path, text: str, message: str) -> None:
    source = tmp_path / "in.csv"
    source.write_text(text, encoding="utf-8")
    result = run_cli("convert", str(source), "--from", "mre-csv", "--task", "NER", "-o", "x.jsonl")
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_jacred_negative_indices_are_refused(data_dir: Path, tmp_path: Path) -> None:
    docs = json.loads((data_dir / "jacred" / "dev.json").read_text(encoding="utf-8"))[:1]
    docs[0]["labels"][0]["h"] = -1
    source = tmp_path / "bad.json"
    source.write_text(json.dumps(docs, ensure_ascii=False), encoding="utf-8")
    result = run_cli("convert", str(source), "--from", "jacred", "--task", "RE", "-o", "x.jsonl")
    assert result.returncode == 2 and "h = -1, not an index" in result.stderr


def test_evaluate_refuses_pairs_of_different_texts(tmp_path: Path) -> None:
    gold, pred = tmp_path / "gold.jsonl", tmp_path / "pred.jsonl"
    write_jsonl(gold, GOOD[:1])
    write_jsonl(pred, [GOOD[0].model_copy(update={"text": GOOD[0].text + "。"})])
    result = run_cli("evaluate", "--gold", str(gold), "--pred", str(pred))
    assert result.returncode == 2 and "text differs" in result.stderr


def test_unwritable_outputs_fail_before_any_work(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    write_jsonl(source, GOOD)
    for out in (str(tmp_path), "", "/proc/version"):
        result = run_cli("predict", str(source), "-o", out, "--max-new-tokens", "2")
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr


def test_predict_with_task_checks_ids_and_refuses_skip(tmp_path: Path) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(source, [GOOD[0], GOOD[0]])
    result = run_cli("predict", str(source), "-o", str(out), "--from", "jsonl", "--task", "NER")
    assert result.returncode == 2 and "duplicate id" in result.stderr
    skip = run_cli("predict", str(source), "-o", str(out), "--task", "NER", "--on-error", "skip")
    assert skip.returncode == 2 and "unified JSONL only" in skip.stderr
    assert not out.exists()


def test_command_line_odds_are_one_line_errors(tmp_path: Path) -> None:

    bad_bytes = subprocess.run(
        [GIELLM, "extract", "-", "--task", "NER", "--max-new-tokens", "2"],
        input=b"\xff\xfe\xfa\n",
        capture_output=True,
        check=False,
    )
    assert bad_bytes.returncode == 2 and b"not valid UTF-8" in bad_bytes.stderr
    for args in (
        ["extract", "x", "--task", "NER", "--batch-size", str(1 << 70)],
        ["serve", "--port", "70000"],
    ):
        result = run_cli(*args)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    crlf = subprocess.run(
        [GIELLM, "extract", "-", "--task", "SA", "--max-new-tokens", "4"],
        input="とても良い。\r\n".encode(),
        capture_output=True,
        check=False,
    )
    assert crlf.returncode == 0 and json.loads(crlf.stdout)["text"] == "とても良い。"
    source = tmp_path / "bom.jsonl"
    source.write_bytes(b"\xef\xbb\xbf" + dumps(GOOD[0]).encode() + b"\n")
    result = run_cli("convert", str(source), "--from", "jsonl", "--task", "NER", "-o", "/dev/null")
    assert result.returncode == 0, result.stderr


def test_a_schema_without_the_records_task_is_refused(embedded: Extractor) -> None:
    from giellm.errors import GiellmError

    extractor = embedded.configured(max_new_tokens=2)
    with pytest.raises(GiellmError, match="no label sets for TC"):
        extractor.extract("東京の会社。", task="TC", schema="stockmark")


def test_records_are_handed_over_as_they_finish_not_per_chunk(
    data_dir: Path, embedded: Extractor
) -> None:
    """`on_record` sees the first records before the chunk's last windows are generated."""
    extractor = embedded.configured(batch_size=4, max_new_tokens=16)
    records = load("stockmark", "dev", "NER", data_dir)[:24]
    events: list[str] = []
    predictions = list(
        extractor.predict(
            records,
            chunk=24,
            on_record=lambda p: events.append("record"),
            on_windows=lambda planned, done: events.append("window") if done else None,
        )
    )
    assert [p.example.id for p in predictions] == [r.id for r in records]  # still in order
    assert events.count("record") == 24 and events.count("window") == 24
    assert events.index("record") < len(events) - 1 - events[::-1].index("window")
