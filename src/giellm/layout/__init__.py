"""The Format Converter: records to plain-text prompts and targets and back, and long texts
cut into windows and merged. Pure functions of `Example` and text, no I/O."""
