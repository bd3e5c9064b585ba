"""Models: base-model sources (HF directory, GGUF, the packaged Gemma), loading with adapters,
the batched greedy loop, tokenizers, and the tiny models the tests build."""
