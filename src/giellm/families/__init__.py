"""Task families, one unit each (labels, entities, relations, events, predicates): encode,
decode, grammar, EBNF and metric items together, registered by name (`Task.family`)."""

from giellm.families import entities, events, labels, predicates, relations  # noqa: F401
from giellm.families.base import FAMILIES, Family, Item, Reading, get_family
from giellm.schema import Example
from giellm.tasks import get_task


def family_of(task: str) -> Family:
    """The family of a task (by the task's name)."""
    return get_family(get_task(task).family)


def project(example: Example, task: str) -> Example:
    """The record as `task` sees it: same text and label, only the task's word-level field."""
    spec = get_task(task)
    keep = get_family(spec.family).field
    cleared = {f: () for f in ("entities", "relations", "events") if f != keep}
    return example.model_copy(update={"task": spec.name, **cleared})


__all__ = ["FAMILIES", "Family", "Item", "Reading", "family_of", "get_family", "project"]
