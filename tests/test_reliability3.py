"""Round three of the hostile-user findings: each test failed before its fix."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import threading
from pathlib import Path

import pytest

from conftest import run_cli
from giellm.data.jsonl import write_jsonl
from giellm.data.registry import load
from giellm.errors import GiellmError
from giellm.inference.extractor import Extractor
from giellm.models.loading import TINY_MODEL_DIR, ModelMeta
from giellm.tasks import LabelSchema


def test_predict_writes_through_a_device_and_a_fifo(data_dir: Path, tmp_path: Path) -> None:
    """`predict -o /dev/null` renamed OUT.partial over /dev/null (as root: the machine's)."""
    source = tmp_path / "in.jsonl"
    write_jsonl(source, load("stockmark", "dev", "NER", data_dir)[:4])
    result = run_cli("predict", str(source), "-o", "/dev/null", "--model", "tiny")
    assert result.returncode == 0, result.stderr
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert not Path("/dev/null.partial").exists()
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    result = run_cli("predict", str(source), "-o", str(fifo), "--model", "tiny")
    reader.join(timeout=60)
    assert result.returncode == 0, result.stderr
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    lines = got[0].decode().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [
        json.loads(line)["id"] for line in source.read_text().splitlines()
    ]
    assert not (tmp_path / "pipe.partial").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "giellm.json: Expecting property name"),
        ("[1, 2]", "giellm.json: expected a JSON object, got list"),
        ('{"window": 3}', "giellm.json: unknown key 'window'"),
        ('{"schemas": {"TC": {"labels": 5}}}', "giellm.json: labels: expected a list of strings"),
        ('{"schemas": {"TC": {"colours": []}}}', "giellm.json: schemas: "),
        ('{"window_chars": 0}', "giellm.json: window_chars: 0 must be at least 1"),
        ('{"max_new_tokens": "many"}', "giellm.json: max_new_tokens: expected a whole number"),
        ('{"window_chars": 40, "window_overlap": 40}', "window_overlap: 40 must be below"),
    ],
)
def test_a_damaged_giellm_json_is_one_line_naming_it(
    tmp_path: Path, text: str, message: str
) -> None:
    model = tmp_path / "model"
    shutil.copytree(TINY_MODEL_DIR, model)
    (model / "giellm.json").write_text(text, encoding="utf-8")
    with pytest.raises(GiellmError, match=r"giellm\.json: ") as err:
        ModelMeta.load(model)
    assert message in str(err.value)
    result = run_cli("extract", "東京に行った。", "--task", "NER", "--model", str(model))
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"labels": "abc"}, "labels: expected a list of strings, got 'abc'"),
        ({"entity_types": 5}, "entity_types: expected a list of strings, got 5"),
        ({"roles": ["ガ", 3]}, "roles: expected a list of strings, found 3"),
    ],
)
def test_label_sets_are_lists_of_strings(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(GiellmError, match=message):
        LabelSchema.of(**kwargs)  # type: ignore[arg-type]
    assert LabelSchema.of(labels=["a", "b"]).labels == frozenset({"a", "b"})


def test_a_partial_never_resumes_over_a_changed_input(
    data_dir: Path, tmp_path: Path, embedded: Extractor
) -> None:
    """Same ids, edited texts: the resumed run kept 512 of 534 old predictions."""
    from giellm.errors import DataError
    from giellm.inference.jobs import PredictJob, plan_job, run_job

    records = load("stockmark", "dev", "NER", data_dir)[:6]
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(source, records)
    job = PredictJob(source, out)
    seen: list[str] = []

    def stop_after_two(prediction: object) -> None:
        seen.append("x")
        if len(seen) == 2:
            raise KeyboardInterrupt  # a kill after two records were written

    with pytest.raises(KeyboardInterrupt):
        run_job(job, plan_job(job), lambda: embedded, settings={}, on_record=stop_after_two)
    edited = [r.model_copy(update={"text": r.text + "。"}) for r in records]
    write_jsonl(source, edited)
    with pytest.raises(DataError, match="its input file has changed since it was written"):
        run_job(job, plan_job(job), lambda: embedded, settings={})
    write_jsonl(source, records)  # the very input again: it resumes
    result = run_job(job, plan_job(job), lambda: embedded, settings={})
    assert (result.resumed, result.predicted) == (2, 4)


def _train_config(tmp_path: Path, out: Path, base: Path, extra: str = "") -> Path:
    path = tmp_path / f"{out.name}-{len(list(tmp_path.glob('*.yaml')))}.yaml"
    path.write_text(
        f"output_dir: {out}\nbase_model: {base}\ndata: [{{dataset: jrte, task: SA}}]\n"
        "lora: {r: 4, alpha: 8, dropout: 0.0}\ntotal: 24\nbatch_size: 4\n"
        f"max_steps: 2\nsave_every: 1\neval_every: 0\n{extra}",
        encoding="utf-8",
    )
    return path


def test_one_output_folder_holds_one_run(base_models: dict[str, Path], tmp_path: Path) -> None:
    """--resume took whichever run's checkpoint was newest, under any settings; two runs into
    one folder both succeeded; a new run appended to an old run's log."""
    from giellm.training.rundir import lock

    out = tmp_path / "run"
    nothing = run_cli("train", "--config", str(_train_config(tmp_path, out, base_models["llama"])),
                      "--resume")  # fmt: skip
    assert nothing.returncode == 2 and "no complete checkpoint to resume from" in nothing.stderr
    assert "Traceback" not in nothing.stderr

    config = _train_config(tmp_path, out, base_models["llama"])
    first = run_cli("train", "--config", str(config))
    assert first.returncode == 0, first.stderr
    again = run_cli("train", "--config", str(config))
    assert again.returncode == 2 and "holds an earlier run (checkpoint-1" in again.stderr

    other = _train_config(tmp_path, out, base_models["llama"], "lr: 1.0e-3\n")
    refused = run_cli("train", "--config", str(other), "--resume")
    assert refused.returncode == 2
    assert "was trained with lr=0.0002, not 0.001" in refused.stderr

    longer = run_cli("train", "--config", str(config), "--resume", "--max-steps", "3")
    assert longer.returncode == 0, longer.stderr  # training longer is what resume is for
    assert (out / "checkpoint-3" / "state" / "settings.json").exists()

    held = lock(out)  # a run in progress
    try:
        second = run_cli("train", "--config", str(config), "--resume", "--max-steps", "4")
    finally:
        held.close()
    assert second.returncode == 2 and "another giellm train is writing to it" in second.stderr


def test_an_untested_transformers_is_named_in_one_line() -> None:
    """The pin said >=5.0,<6 while decoding relies on one minor release's cache internals."""
    import transformers

    from giellm.models.decoding import check_transformers

    check_transformers(transformers.__version__)  # the installed one is a tested one
    with pytest.raises(GiellmError, match=r"transformers 5\.30\.1 is installed; .* 5\.24\.x"):
        check_transformers("5.30.1")
    with pytest.raises(GiellmError, match=r"transformers 4\.57\.0 is installed"):
        check_transformers("4.57.0")


def test_python_entry_points_name_the_wrong_parameter(embedded: Extractor) -> None:
    import torch

    with pytest.raises(GiellmError, match="schema: expected a dataset name or a LabelSchema"):
        embedded.extract("東京に行った。", task="NER", schema=5)  # type: ignore[arg-type]
    with pytest.raises(GiellmError, match=r"prompts: expected a list of strings"):
        embedded.complete("東京")  # one completion per character before
    with pytest.raises(GiellmError, match="max_tokens must be a whole number of at least 1"):
        embedded.complete(["東京"], max_tokens=0)
    with pytest.raises(GiellmError, match="batch_size must be a whole number"):
        Extractor("tiny", batch_size="8")  # type: ignore[arg-type]
    with pytest.raises(GiellmError, match="device: 'gpu' is not a device"):
        Extractor("tiny", device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(GiellmError, match="device: 'cuda' asked for, but torch sees no CUDA"):
            Extractor("tiny", device="cuda")  # an AssertionError from inside torch before
    (one,) = embedded.complete(["東京"], max_tokens=2)  # one prompt in a list: one completion
    assert one.completion_tokens <= 2


def test_a_full_disk_is_one_line_and_loses_nothing(data_dir: Path, tmp_path: Path) -> None:
    """/dev/full fails every write with ENOSPC, as a full disk does."""
    source = tmp_path / "in.jsonl"
    write_jsonl(source, load("jrte", "dev", "SA", data_dir)[:3])
    tsv = data_dir / "jrte_pn" / "dev.tsv"
    for args in (
        ["convert", str(tsv), "--from", "jrte", "--task", "SA", "-o", "/dev/full"],
        ["predict", str(source), "-o", "/dev/full", "--model", "tiny"],
    ):
        result = run_cli(*args)
        assert result.returncode == 2, result.stderr
        assert "error: No space left on device" in result.stderr
        assert "Traceback" not in result.stderr


def test_report_checks_its_folder_before_any_system_runs(tmp_path: Path) -> None:
    taken = tmp_path / "report.md"
    taken.write_text("mine", encoding="utf-8")
    result = run_cli("report", "-o", str(taken), "--systems", "giellm", "--model", "tiny")
    assert result.returncode == 2 and "exists and is not a folder" in result.stderr
    assert taken.read_text(encoding="utf-8") == "mine"
    assert "stockmark NER" not in result.stderr and "wrote" not in result.stderr  # none ran


# --- the server -------------------------------------------------------------------------------


def _raw(url: str, request: bytes, wait: float = 10.0) -> bytes:
    """Send raw bytes; what the server answers before closing or `wait` seconds pass."""
    import socket

    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        sock.sendall(request)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
                if b"\r\n\r\n" in answer and b"}" in answer:
                    break
        except TimeoutError:
            pass
    return answer


def test_the_server_refuses_what_it_accepted_before(embedded: Extractor) -> None:
    import httpx

    from giellm.service.app import create_app
    from giellm.service.server import background_server

    with pytest.raises(GiellmError, match="max_wait_ms must be within 0 and 10000"):
        create_app(embedded, max_wait_ms=float("inf"))  # a lone request would wait for ever
    app = create_app(embedded, max_body_bytes=1000, body_seconds=1.0)
    with background_server(app) as url:
        assert httpx.head(f"{url}/health", timeout=10).status_code == 200  # was 405
        assert httpx.get(f"{url}/docs", timeout=10).status_code == 404  # a blank CDN page
        assert httpx.get(f"{url}/openapi.json", timeout=10).status_code == 200
        plain = httpx.post(f"{url}/extract", content=b'{"texts": "a", "task": "NER"}',
                           headers={"content-type": "text/plain"}, timeout=10)  # fmt: skip
        assert plain.status_code == 415 and "Content-Type: application/json" in plain.text
        head = b"POST /extract HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        declared = _raw(url, head + b"Content-Length: 999999999\r\n\r\n")  # no body sent
        assert declared.startswith(b"HTTP/1.1 413") and b"over 1000 bytes" in declared
        slow = _raw(url, head + b"Content-Length: 40\r\n\r\n{", wait=20)  # 39 bytes never come
        assert slow.startswith(b"HTTP/1.1 408") and b"did not arrive within 1 s" in slow
        good = httpx.post(f"{url}/extract", json={"texts": "東京", "task": "NER"}, timeout=60)
        assert good.status_code == 200


def test_serve_refuses_an_unbounded_wait() -> None:
    result = run_cli("serve", "--model", "tiny", "--max-wait-ms", "inf")
    assert result.returncode == 2 and "--max-wait-ms" in result.stderr


def test_connections_that_never_send_a_request_are_closed(embedded: Extractor) -> None:
    """A fresh connection sending nothing, or headers that never end, was held for ever."""
    import socket
    import time

    import httpx

    from giellm.service.app import create_app
    from giellm.service.server import background_server

    with background_server(create_app(embedded), header_seconds=1.0) as url:
        host, port = url.removeprefix("http://").split(":")
        for sent in (b"", b"POST /extract HTTP/1.1\r\nHost: x\r\n"):
            with socket.create_connection((host, int(port)), timeout=15) as sock:
                sock.sendall(sent)
                started = time.monotonic()
                assert sock.recv(100) == b""  # closed by the server, not by the 15 s timeout
                assert time.monotonic() - started < 10
        with httpx.Client(timeout=60) as client:  # a keep-alive client is still served
            for _ in range(2):
                assert client.post(
                    url + "/extract", json={"texts": "東京", "task": "NER"}
                ).is_success


# --- input edge cases ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "a", "task": "TC", "text": "東京", "label": "\\ud800"}', "label has an unpaired"),
        (
            '{"id": "a", "task": "NER", "text": "東京", "entities": '
            '[{"start": 0, "end": 2, "type": "L\\udc00", "text": "東京"}]}',
            "entities.0.type",  # pydantic refuses it in nested records itself
        ),
        (
            '{"id": "a", "task": "NER", "text": "東京", "entities": '
            '[{"start": true, "end": 2, "type": "LOC", "text": "東京"}]}',
            "field 'entities.0.start': Input should be a valid integer",
        ),
        (
            '{"id": "a", "task": "NER", "text": "東京", "entities": '
            '[{"start": "0", "end": 2, "type": "LOC", "text": "東京"}]}',
            "field 'entities.0.start': Input should be a valid integer",
        ),
    ],
)
def test_records_are_valid_unicode_everywhere_and_offsets_are_integers(
    tmp_path: Path, line: str, message: str
) -> None:
    from giellm.data.jsonl import read_jsonl
    from giellm.errors import DataError

    path = tmp_path / "in.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message):
        list(read_jsonl(path))


def test_skip_rejects_a_line_that_is_not_utf8_and_keeps_the_rest(tmp_path: Path) -> None:
    from giellm.data.jsonl import read_or_reject

    path = tmp_path / "in.jsonl"
    good = '{"id": "a", "task": "NER", "text": "東京"}\n'
    path.write_bytes(good.encode() + b"\xff\xfe broken\n" + good.replace('"a"', '"b"').encode())
    records, rejects = read_or_reject(path)
    assert [r.id for r in records] == ["a", "b"]
    assert [(r.line, r.raw) for r in rejects] == [(2, "\\xff\\xfe broken")]
    assert "not UTF-8 text" in rejects[0].error


def test_a_byte_order_mark_is_accepted_by_every_reader(data_dir: Path, tmp_path: Path) -> None:
    source = data_dir / "stockmark_ner_wikipedia" / "dev.json"
    marked = tmp_path / "dev.json"
    marked.write_bytes(b"\xef\xbb\xbf" + source.read_bytes())
    out = tmp_path / "out.jsonl"
    result = run_cli("convert", str(marked), "--from", "stockmark", "--task", "NER", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert len(out.read_text(encoding="utf-8").splitlines()) == len(
        load("stockmark", "dev", "NER", data_dir)
    )


def test_convert_refuses_records_with_one_id(tmp_path: Path) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(
        '{"id": "a", "task": "NER", "text": "東京"}\n{"id": "a", "task": "NER", "text": "大阪"}\n',
        encoding="utf-8",
    )
    result = run_cli("convert", str(source), "--from", "jsonl", "--task", "NER", "-o", str(out))
    assert (
        result.returncode == 2 and "two records have the id 'a' (records 1 and 2)" in result.stderr
    )
    assert not out.exists()


# --- damaged model directories ----------------------------------------------------------------


def _damaged(tmp_path: Path, how: str) -> Path:
    model = tmp_path / how
    shutil.copytree(TINY_MODEL_DIR, model)
    weights = model / "model.safetensors"
    config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    if how == "truncated-header":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif how == "truncated-data":
        weights.write_bytes(weights.read_bytes()[:-4096])
    elif how == "no-weights":
        weights.unlink()
    elif how == "config-not-json":
        (model / "config.json").write_text("{", encoding="utf-8")
    elif how == "unknown-model-type":
        (model / "config.json").write_text(json.dumps(config | {"model_type": "nonesuch"}))
    elif how == "sizes-do-not-fit":
        (model / "config.json").write_text(json.dumps(config | {"vocab_size": 100}))
    elif how == "no-tokenizer-json":
        (model / "tokenizer.json").unlink()
    return model


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("truncated-header", "model.safetensors: truncated or not a safetensors file"),
        ("truncated-data", "model.safetensors: truncated ("),
        ("no-weights", "model.safetensors: missing"),
        ("config-not-json", "config.json: not valid JSON"),
        ("unknown-model-type", "config.json: model_type 'nonesuch' is not one transformers knows"),
        ("sizes-do-not-fit", "cannot load the model (RuntimeError"),
        ("no-tokenizer-json", "tokenizer.json: missing (tokenizer_config.json is there)"),
    ],
)
def test_a_damaged_model_directory_is_one_line_naming_the_file(
    tmp_path: Path, how: str, message: str
) -> None:
    from giellm.models.loading import load_model

    model = _damaged(tmp_path, how)
    with pytest.raises(GiellmError, match=re.escape(message)):
        load_model(model)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("[", "adapter_config.json: not valid JSON"),
        ('{"peft_type": "LORA"}', "adapter_config.json: base_model_name_or_path is missing"),
        (
            '{"peft_type": "LORA", "base_model_name_or_path": "google/gemma-3-270m"}',
            "adapter_model.safetensors: missing",
        ),
    ],
)
def test_a_damaged_adapter_is_one_line_naming_the_file(
    tmp_path: Path, config: str, message: str
) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(config, encoding="utf-8")
    result = run_cli("extract", "東京に行った。", "--task", "NER", "--model", str(adapter))
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr


# --- giellm's cache ---------------------------------------------------------------------------


def test_a_damaged_gguf_cache_is_rebuilt(
    tiny_gemma: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deleted tokenizer.json loaded a 5-token tokenizer; a deleted index failed for ever."""
    from giellm.models.bases import load_base_tokenizer, resolve_base

    monkeypatch.setenv("GIELLM_HOME", str(tmp_path / "home"))
    os.umask(0o022)
    source = resolve_base(str(tiny_gemma))
    assert source.prepared is not None
    vocab = len(load_base_tokenizer(source))
    assert vocab > 100
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in source.prepared.iterdir()}
    assert set(modes.values()) == {0o644}  # readable by the other users of a shared cache
    assert stat.S_IMODE(source.prepared.stat().st_mode) == 0o755
    for lost in ("tokenizer.json", "gguf_index.json", "config.json"):
        (source.prepared / lost).unlink()
        again = resolve_base(str(tiny_gemma))
        assert again.prepared == source.prepared and (again.prepared / lost).exists()
        assert len(load_base_tokenizer(again)) == vocab
    (source.prepared / "config.json").write_text("{", encoding="utf-8")
    assert json.loads((resolve_base(str(tiny_gemma)).prepared / "config.json").read_text())


def test_an_unwritable_cache_is_one_line(
    tiny_gemma: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from giellm.models.bases import resolve_base

    home = tmp_path / "home"
    home.write_text("a file, not a folder", encoding="utf-8")
    monkeypatch.setenv("GIELLM_HOME", str(home))
    with pytest.raises(GiellmError, match="cannot write giellm's cache here"):
        resolve_base(str(tiny_gemma))
    result = run_cli("extract", "東京", "--task", "NER", "--model", str(tiny_gemma))
    assert result.returncode == 2 and "set GIELLM_HOME to a writable folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_overwritten_bytes_in_the_joined_base_are_found_and_mended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same size, same mtime, other bytes: used silently before."""
    from giellm.files import sha256_of
    from giellm.models.bases import GEMMA_3_270M, packaged_gguf

    monkeypatch.setenv("GIELLM_HOME", str(tmp_path / "home"))
    joined = packaged_gguf(GEMMA_3_270M)
    before = joined.stat()
    with joined.open("r+b") as handle:
        handle.seek(50_000_000)
        handle.write(b"\x00" * 4096)
    os.utime(joined, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert joined.stat().st_size == before.st_size
    mended = packaged_gguf(GEMMA_3_270M)
    assert sha256_of(mended) == GEMMA_3_270M.sha256


def test_serve_never_reports_healthy_for_a_model_that_cannot_answer(tmp_path: Path) -> None:
    """A tokenizer without EOS loaded, served /health 200 and answered 500 to every /extract."""
    model = tmp_path / "no-eos"
    shutil.copytree(TINY_MODEL_DIR, model)
    config = json.loads((model / "tokenizer_config.json").read_text(encoding="utf-8"))
    config |= {"eos_token": None, "pad_token": None}
    (model / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    for args in (["extract", "東京", "--task", "NER"], ["serve", "--port", "0"]):
        result = run_cli(*args, "--model", str(model))
        assert result.returncode == 2, result.stderr
        assert "its tokenizer has no end-of-sequence token" in result.stderr
        assert "Traceback" not in result.stderr


def test_training_on_a_full_disk_is_one_line(base_models: dict[str, Path], tmp_path: Path) -> None:
    """A file-size limit fails writes as a full disk does (EFBIG instead of ENOSPC)."""
    import resource
    import signal
    import subprocess

    from conftest import GIELLM

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))  # the adapter is larger

    config = _train_config(tmp_path, tmp_path / "run", base_models["llama"])
    done = subprocess.run(
        [GIELLM, "train", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=limit,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "error: File too large" in done.stderr and "Traceback" not in done.stderr


def test_a_packaged_base_has_one_prepared_folder_whatever_its_mtime(
    tiny_gemma: Path, tmp_path: Path
) -> None:
    """Two cold first uses joined the base twice; the second join's new mtime keyed a second
    33 MB folder, an orphan. A packaged base is keyed by its sha256."""
    from giellm.models.bases import GEMMA_3_270M, _prepared_dir

    tiny_gemma = Path(shutil.copy(tiny_gemma, tmp_path / "copy.gguf"))
    first = _prepared_dir(tiny_gemma, key=GEMMA_3_270M.sha256)
    os.utime(tiny_gemma, ns=(0, 10**18))
    assert _prepared_dir(tiny_gemma, key=GEMMA_3_270M.sha256) == first
    assert _prepared_dir(tiny_gemma) != first  # any other GGUF: path, size and mtime
