"""Generation backends behind one small Protocol: transformers (CPU/GPU, in `Extractor`) and
vLLM (GPU)."""
