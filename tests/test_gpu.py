"""GPU paths: bf16 on CUDA, the vLLM backend (constraints, LoRA adapters, serving), multi-GPU
training. Marked `gpu` and skipped without CUDA; run them with `pytest -m gpu` on a GPU machine
after `pip install -e '.[dev,vllm]'` (see docs/serve.md)."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch

from conftest import GIELLM, run_cli
from giellm.data.jsonl import write_jsonl
from giellm.data.registry import get_format, load
from giellm.inference.extractor import Extractor
from giellm.models.loading import TINY_MODEL_DIR as DEFAULT_MODEL_DIR
from greedy_agreement import TIE, first_partings
from test_serve import _start, _stop

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

SCHEMA = get_format("stockmark").schema("NER")


def _check_records(predictions: list, gold: list) -> None:
    """Every record comes back in order with spans that are really in its text."""
    assert [p.example.id for p in predictions] == [g.id for g in gold]
    for p, g in zip(predictions, gold, strict=True):
        assert p.dropped == ()
        for e in p.example.entities:
            assert g.text[e.start : e.end] == e.text and e.type in SCHEMA.entity_types


def test_hf_backend_runs_bf16_on_cuda(data_dir: Path) -> None:
    gold = load("stockmark", "dev", "NER", data_dir)[:64]
    extractor = Extractor(device="cuda")
    assert next(extractor.model.parameters()).dtype == torch.bfloat16
    _check_records(list(extractor.predict(gold, schema="stockmark")), gold)


def _vllm(model: Path | None = None) -> Extractor:
    pytest.importorskip("vllm")
    from giellm.inference.backends.vllm import VllmBackend

    # eager mode: no CUDA-graph capture or compilation, so the tests start quickly
    backend = VllmBackend(model, gpu_memory_utilization=0.3, enforce_eager=True)
    return Extractor(backend=backend, batch_size=256)


def test_vllm_constrained_extraction_agrees_with_the_cpu_path(
    data_dir: Path, embedded: Extractor
) -> None:
    gold = load("stockmark", "dev", "NER", data_dir)[:200]
    fast = _vllm()
    got = list(fast.predict(gold, schema="stockmark"))
    _check_records(got, gold)
    # vLLM (bf16, its kernels, the EBNF grammar) is greedy decoding of the same model under
    # the same layout: where its outputs part from the CPU's (fp32), it is on a near tie
    parting = first_partings(embedded, fast, gold, "stockmark")
    print(f"vLLM vs CPU: {parting}")
    assert max(parting.gaps, default=0.0) < TIE
    # the EBNF grammar leaves entity order free (the CPU grammar keeps text order): that is
    # the only way vLLM may pick what the CPU forbids; without constraints nearly all windows
    # would (90 of 96 on the CPU, tests/test_decoding.py)
    assert parting.outside <= parting.windows // 20


def test_vllm_serves_a_lora_adapter(data_dir: Path, tmp_path: Path, embedded: Extractor) -> None:
    out = tmp_path / "lora"
    result = run_cli(
        "train", "--base-model", str(DEFAULT_MODEL_DIR), "--data", "stockmark:NER",
        "--lora", "--lora-r", "8", "--lr", "5e-3", "--max-steps", "40", "--output-dir", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    adapter = out / "final"
    assert (adapter / "adapter_config.json").exists()
    fast = _vllm(adapter)
    gold = load("stockmark", "dev", "NER", data_dir)[:50]
    got = list(fast.predict(gold, schema="stockmark"))
    _check_records(got, gold)

    def agree(other: Extractor) -> int:
        theirs = other.predict(gold, schema="stockmark")
        return sum(a.example == b.example for a, b in zip(got, theirs, strict=True))

    # vLLM really applies the adapter: it agrees with the merged adapter on the CPU more than
    # with the bare base (an ignored LoRARequest would make it the base)
    assert agree(Extractor(adapter)) > agree(embedded)


def test_vllm_predict_and_serve_from_the_command_line(data_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("vllm")
    gold = load("stockmark", "dev", "NER", data_dir)[:100]
    write_jsonl(tmp_path / "in.jsonl", gold)
    command = [
        GIELLM, "predict", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"),
        "--schema", "stockmark", "--backend", "vllm",
    ]  # fmt: skip
    # vLLM's start-up (compilation, CUDA graphs) takes minutes, more than run_cli allows
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["id"] for line in lines] == [g.id for g in gold]

    server = _start("--backend", "vllm", timeout=600)
    try:
        texts = [g.text for g in gold[:32]]

        def ask(text: str) -> dict:
            body = {"texts": [text], "task": "NER", "schema": "stockmark"}
            response = httpx.post(f"{server.url}/extract", json=body, timeout=120)
            assert response.status_code == 200, response.text
            return response.json()

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(ask, texts))
        for text, answer in zip(texts, answers, strict=True):
            (record,) = answer["records"]
            assert record["text"] == text
            for e in record["entities"]:
                assert text[e["start"] : e["end"]] == e["text"]
    finally:
        _stop(server)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_multi_gpu_training_with_deepspeed(tmp_path: Path) -> None:
    pytest.importorskip("deepspeed")
    root = Path(__file__).resolve().parent.parent
    command = [
        "accelerate", "launch", "--config_file",
        str(root / "configs" / "accelerate_deepspeed_zero2.yaml"), "--num_processes", "2",
        "-m", "giellm.cli", "train", "--base-model", str(DEFAULT_MODEL_DIR),
        "--data", "stockmark:NER", "--max-steps", "10", "--output-dir", str(tmp_path / "ds"),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    log = [json.loads(line) for line in (tmp_path / "ds" / "train_log.jsonl").open()]
    plan = next(e for e in log if "processes" in e)
    assert (plan["processes"], plan["steps"]) == (2, 10)  # two ranks in one group, 10 steps
    losses = [e for e in log if "loss" in e]
    assert losses[-1]["step"] == 10 and losses[-1]["lr"] == pytest.approx(0.0, abs=1e-9)
    from safetensors.torch import load_file

    base = load_file(DEFAULT_MODEL_DIR / "model.safetensors")
    trained = load_file(tmp_path / "ds" / "final" / "model.safetensors")
    changed = [k for k in base if not torch.equal(base[k].float(), trained[k].float())]
    assert changed == list(base)  # every weight was trained, on both ranks alike
