"""giellm: unified Japanese information extraction with one fine-tuned LLM (GIELLM)."""

from giellm.inference.extractor import Extractor, Prediction
from giellm.layout.format import decode, encode
from giellm.schema import Argument, Entity, Event, Example, Relation, Span
from giellm.tasks import TASKS, LabelSchema, get_task

__version__ = "0.1.0"
__all__ = [
    "TASKS",
    "Argument",
    "Entity",
    "Event",
    "Example",
    "Extractor",
    "LabelSchema",
    "Prediction",
    "Relation",
    "Span",
    "decode",
    "encode",
    "get_task",
]
