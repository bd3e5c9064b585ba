"""Shared fixtures: the real datasets in ../shared/data and helpers to run the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from giellm.data.registry import FORMATS, DatasetFormat, dataset_path, load, shared_data_dir
from giellm.inference.extractor import Extractor
from giellm.models.tiny import ARCHITECTURES, TinySpec, build_tiny
from giellm.models.tokenizer import train_tokenizer

GIELLM = str(Path(sys.executable).parent / "giellm")

# giellm's cache (joined packaged GGUF, prepared GGUF folders) for the tests and the CLI they run:
# one per machine, so the real Gemma base is joined and prepared once, not once per run
os.environ.setdefault("GIELLM_HOME", str(Path(tempfile.gettempdir()) / "giellm-test-home"))
# no --model means the from-scratch tiny model in the tests (and the CLI they run): seconds per
# command instead of a Gemma load. Tests of the shipped default clear it (`shipped_default`).
os.environ["GIELLM_DEFAULT_MODEL"] = "tiny"


@pytest.fixture
def shipped_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """No --model means the shipped default (Gemma 3 270M + adapter), as for users."""
    monkeypatch.delenv("GIELLM_DEFAULT_MODEL")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared data; CI always has it, so its absence fails there and skips elsewhere."""
    found = shared_data_dir()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("../shared/data is missing in CI")
        pytest.skip("no shared data directory (set GIELLM_DATA)")
    return found


def shared_cases() -> list[tuple[DatasetFormat, str, str]]:
    """Every (format, task, split) of the shared datasets."""
    return [
        (fmt, task, split)
        for fmt in FORMATS.values()
        if fmt.folder
        for task in fmt.tasks
        for split in fmt.splits
    ]


def shared_path(data_dir: Path, fmt_name: str, split: str) -> Path:
    return dataset_path(FORMATS[fmt_name], split, data_dir)


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed `giellm` command for real (no tight time limit: a loaded CI machine
    may be slow; the bound only stops a hung process)."""
    return subprocess.run(
        [GIELLM, *args], capture_output=True, text=True, cwd=cwd, timeout=1800, check=False
    )


@pytest.fixture(scope="session")
def tokenizer_dir(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = [ex.text for ex in load("stockmark", "train", "NER", data_dir)][:800]
    texts += [ex.text for ex in load("jrte", "train", "SA", data_dir)][:400]
    out = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(texts, vocab_size=600, out_dir=out)
    return out


@pytest.fixture(scope="session")
def tiny_gemma(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random Gemma 3 GGUF with a SentencePiece-style vocabulary (byte fallback, controls)."""
    from giellm.models.tiny_gguf import write_tiny_gemma_gguf

    texts = [ex.text for ex in load("stockmark", "train", "NER", data_dir)][:800]
    texts += [ex.text for ex in load("kwdlc", "train", "NER", data_dir)][:100]
    return write_tiny_gemma_gguf(texts, tmp_path_factory.mktemp("gemma") / "tiny-gemma.gguf")


@pytest.fixture(scope="session")
def base_models(tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One saved random base model per architecture, sharing the trained tokenizer."""
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("bases")
    out = {}
    for arch in ARCHITECTURES:
        build_tiny(
            TinySpec(arch=arch), AutoTokenizer.from_pretrained(tokenizer_dir), root / arch, seed=1
        )
        out[arch] = root / arch
    return out


@pytest.fixture(scope="session")
def embedded() -> Extractor:
    """The embedded default model, loaded once per session; a test takes its own settings
    with `embedded.configured(batch_size=…, max_new_tokens=…)` (same model, no reload)."""
    return Extractor("tiny")


@pytest.fixture(scope="session")
def gemma_extractor(tiny_gemma: Path) -> Extractor:
    """The tiny Gemma GGUF loaded once per session (use `.configured(...)` for settings).
    In float32: a random model has near ties that bfloat16 rounding would flip between two
    ways of computing the same logits (the output-vocabulary test compares such ways)."""
    return Extractor(str(tiny_gemma), dtype="float32")
