"""Task families, one unit each (labels, entities, relations, events, predicates): encode,
decode, grammar, EBNF and metric items together, registered by name (`Task.family`)."""

from giellm.families import entities, events, labels, predicates, relations  # noqa: F401
from giellm.families.base import FAMILIES, Family, Item, Reading, get_family
from giellm.tasks import get_task


def family_of(task: str) -> Family:
    """The family of a task (by the task's name)."""
    return get_family(get_task(task).family)


__all__ = ["FAMILIES", "Family", "Item", "Reading", "family_of", "get_family"]
