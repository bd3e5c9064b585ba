"""Extraction on a GPU with vLLM: paged attention, continuous batching, LoRA adapters, bf16.

`VllmBackend` is the `Backend` whose generation runs in a `vllm.LLM`: the `Extractor` keeps
the same windows, prompts, decoding and merging, so records are the same shape as the CPU
path's. Constraints
go through vLLM's structured outputs as the EBNF layout grammar of each window
(`giellm.constraints.ebnf.layout_grammar`). A LoRA output directory of `giellm train` is served
as an adapter on its base model (`LoRARequest`), not merged, so several adapters can share one
base.

Needs the `vllm` extra and a CUDA GPU: `pip install -e '.[vllm]'`; then
`giellm predict IN.jsonl -o OUT.jsonl --model DIR --backend vllm` or
`giellm serve --model DIR --backend vllm`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from giellm.constraints.automaton import VocabIndex
from giellm.constraints.ebnf import layout_grammar
from giellm.errors import GiellmError
from giellm.inference.backends import Layout, OnDone, Rows
from giellm.models.loading import resolve_model


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise GiellmError(
            "the vllm backend needs vLLM and a CUDA GPU: pip install -e '.[vllm]'"
        ) from exc
    return vllm


class VllmBackend:
    """Generation with vLLM (greedy, bf16 by default); `batch_size` is vLLM's most sequences
    in flight."""

    device = "cuda"

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        batch_size: int = 256,
        dtype: str = "bfloat16",
        gpu_memory_utilization: float = 0.85,
        **engine: Any,
    ) -> None:
        vllm = _import_vllm()
        resolved = resolve_model(model)
        source = resolved.source
        self.lora: Any = None
        options: dict[str, Any] = {
            "dtype": dtype,
            "gpu_memory_utilization": gpu_memory_utilization,
            "max_num_seqs": batch_size,
            "seed": 0,
            "tokenizer": resolved.tokenizer_location,
            **engine,
        }
        if resolved.adapter is not None:
            from vllm.lora.request import LoRARequest

            rank = 8
            while rank < int(resolved.adapter.get("r", 16)):  # vLLM takes powers of two
                rank *= 2
            options |= {"enable_lora": True, "max_lora_rank": rank}
            self.lora = LoRARequest("giellm", 1, str(resolved.path))
        if source.kind == "gguf":  # vLLM reads the GGUF; config and tokenizer come prepared
            options["hf_config_path"] = str(source.prepared)
        self.tokenizer = resolved.load_tokenizer()
        self.llm = vllm.LLM(model=str(source.path or source.name), **options)
        self.meta = resolved.meta

    def position_limit(self) -> int | None:
        config = getattr(self.llm.llm_engine, "model_config", None)
        return getattr(config, "max_model_len", None)

    def _run(
        self, prompts: list[list[int]], max_tokens: int, grammars: list[str | None]
    ) -> list[tuple[list[int], bool]]:
        """(new ids before EOS, ended) per prompt; vLLM batches them continuously itself."""
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        limit = self.position_limit()
        params = [
            SamplingParams(
                temperature=0.0,  # greedy, as on the CPU path
                # prompt + output stay inside the model's positions
                max_tokens=max_tokens
                if limit is None
                else max(1, min(max_tokens, limit - len(ids))),
                structured_outputs=None if g is None else StructuredOutputsParams(grammar=g),
            )
            for ids, g in zip(prompts, grammars, strict=True)
        ]
        requests = [{"prompt_token_ids": ids} for ids in prompts]
        outputs = self.llm.generate(requests, params, lora_request=self.lora, use_tqdm=False)
        stops = {self.tokenizer.eos_token_id}
        out = []
        for result in outputs:
            completion = result.outputs[0]
            ids = [t for t in completion.token_ids if t not in stops]
            out.append((ids, completion.finish_reason == "stop"))
        return out

    def window_rows(
        self,
        prompts: list[list[int]],
        layouts: Sequence[Layout] | None,
        max_tokens: int,
        batch_size: int,
        index: VocabIndex,
        on_done: OnDone | None,
    ) -> Rows:
        grammars: list[str | None] = [None] * len(prompts)
        if layouts is not None:
            grammars = [layout_grammar(w.task, w.schema, w.text) for w in layouts]
        rows = self._run(prompts, max_tokens, grammars)
        if on_done is not None:  # vLLM hands the rows back together
            for k, (ids, ended) in enumerate(rows):
                on_done(k, ids, ended, None)  # no logprobs asked of vLLM: items go unscored
        return rows

    def free_rows(
        self,
        prompts: list[list[int]],
        max_tokens: int,
        batch_size: int,
        end_ids: frozenset[int] = frozenset(),
    ) -> Rows:
        return self._run(prompts, max_tokens, [None] * len(prompts))  # the text is cut after
