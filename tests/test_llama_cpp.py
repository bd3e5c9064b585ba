"""llama.cpp runs giellm's default model: `giellm export --gguf` merged into one Q8_0 file, the
layout grammar from `giellm grammar` as GBNF, greedy decoding; the NER records on 20 stockmark
dev sentences match giellm's own. Needs llama-cpp-python (it builds llama.cpp from source:
`pip install llama-cpp-python`), so it is slow and skipped where that is not installed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import GIELLM
from giellm.constraints.ebnf import layout_grammar
from giellm.data.registry import load
from giellm.inference.extractor import Extractor, dataset_schema
from giellm.layout.format import build_prompt, decode
from giellm.schema import Example

pytestmark = pytest.mark.slow


def _entities(record: Example) -> list[tuple[int, int, str]]:
    return [(e.start, e.end, e.type) for e in record.entities]  # llama.cpp's carry no scores


@pytest.mark.usefixtures("shipped_default")
def test_llama_cpp_with_the_grammar_finds_what_giellm_finds(tmp_path: Path) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    out = tmp_path / "giellm-ja.q8_0.gguf"
    done = subprocess.run([GIELLM, "export", "--gguf", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    gold = load("stockmark", "dev", "NER")[:20]
    schema = dataset_schema("stockmark", "NER")
    ours = Extractor().predict(
        [Example(id=g.id, task="NER", text=g.text) for g in gold], schema=schema
    )
    llm = llama_cpp.Llama(str(out), n_ctx=1024, n_threads=2, verbose=False, seed=0)
    same = 0
    for record, mine in zip(gold, ours, strict=True):
        grammar = llama_cpp.LlamaGrammar.from_string(
            layout_grammar("NER", schema, record.text), verbose=False
        )
        answer = llm(
            build_prompt(record.text, "NER"), max_tokens=256, temperature=0.0, grammar=grammar
        )
        theirs = decode(answer["choices"][0]["text"], record, schema).example
        assert all(record.text[e.start : e.end] == e.text for e in theirs.entities)
        same += _entities(theirs) == _entities(mine.example)
    # Q8_0 rounds the weights, and llama.cpp's kernels sum in another order: a near tie may
    # flip on a sentence or two; the rest must be the very same records
    assert same >= 18, f"{same} of 20 records identical"
