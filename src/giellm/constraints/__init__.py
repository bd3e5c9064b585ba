"""Constrained decoding: the byte automaton of the target layout, the vocabulary walk that
keeps generation inside it, the output-vocabulary subset, and the same layout as EBNF for vLLM."""
