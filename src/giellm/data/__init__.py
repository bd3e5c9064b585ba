"""Readers (one per source format), the unified JSONL, and multi-task mixing."""

from giellm.data.jsonl import read_jsonl, write_jsonl
from giellm.data.mix import mix
from giellm.data.registry import FORMATS, get_format, load

__all__ = ["FORMATS", "get_format", "load", "mix", "read_jsonl", "write_jsonl"]
