"""Inference: the `Extractor` (windows, batched constrained generation, decoding, merging),
prediction jobs over files with resume, and the generation backends."""
