"""Models: tokenizer training, tiny configs of each architecture, loading any HF causal LM."""
