"""giellm's exported model in llama.cpp (llama-cpp-python): the same records as giellm.

    giellm export --gguf giellm-ja.gguf
    llm = open_llama("giellm-ja.gguf")
    records = llama_extract(llm, ["ソニーは東京に本社を置く。"], "NER", schema="stockmark")

Each text is prompted as giellm prompts it, decoded greedily under the layout grammar (GBNF,
`giellm grammar`) built for that text, and read back by giellm's decoder, so the output has
giellm's offsets and label checks. llama.cpp is an optional dependency (`giellm[llama]`; it
builds from source). Items carry no scores: llama-cpp-python's completion does not return the
chosen tokens' probabilities under a grammar.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from giellm.errors import GiellmError
from giellm.schema import Example
from giellm.tasks import LabelSchema, get_task


def open_llama(path: str | Path, *, n_ctx: int = 2048, n_threads: int | None = None) -> Any:
    """A `llama_cpp.Llama` on `path`, without llama.cpp's extra (repacked, AMX) weight buffers:
    on CPUs with AMX inside a VM that path segfaults at the first decode (the base GGUF too),
    while the plain CPU kernels run. Greedy and seeded."""
    try:
        import llama_cpp
        import llama_cpp.llama as module
    except ImportError:
        raise GiellmError(
            "llama.cpp is not installed: pip install 'giellm[llama]' (it builds from source)"
        ) from None
    defaults = llama_cpp.llama_model_default_params

    def plain() -> Any:
        params = defaults()
        params.use_extra_bufts = False
        return params

    module.llama_cpp.llama_model_default_params = plain  # Llama() reads it once, when loading
    try:
        return llama_cpp.Llama(str(path), n_ctx=n_ctx, n_threads=n_threads, verbose=False, seed=0)
    finally:
        module.llama_cpp.llama_model_default_params = defaults


def llama_extract(
    llm: Any,
    texts: Sequence[str],
    task: str,
    schema: LabelSchema | str | None = None,
    *,
    max_tokens: int = 256,
) -> tuple[list[Example], int]:
    """One record per text (ids "0", "1", …) and the number of tokens generated."""
    import llama_cpp

    from giellm.constraints.ebnf import layout_grammar
    from giellm.inference.extractor import dataset_schema
    from giellm.layout.format import build_prompt, decode

    name = get_task(task).name
    labels = dataset_schema(schema, name) if isinstance(schema, str) else schema or LabelSchema()
    out, generated = [], 0
    for i, text in enumerate(texts):
        grammar = llama_cpp.LlamaGrammar.from_string(
            layout_grammar(name, labels, text), verbose=False
        )
        answer = llm(
            build_prompt(text, name), max_tokens=max_tokens, temperature=0.0, grammar=grammar
        )
        generated += int(answer["usage"]["completion_tokens"])
        source = Example(id=str(i), task=name, text=text)
        out.append(decode(answer["choices"][0]["text"], source, labels).example)
    return out, generated
