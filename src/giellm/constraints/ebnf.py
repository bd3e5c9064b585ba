"""The target layout as an EBNF grammar, for engines with grammar-constrained decoding (vLLM).

`layout_grammar(task, schema, text)` writes the same layout `constrain.Grammar` walks byte by
byte — `<label>`, then items whose types, relations and roles come from the schema — in the
GBNF-style EBNF that vLLM's structured outputs take (`StructuredOutputsParams(grammar=…)`, the
xgrammar backend). Spans must be substrings of the text: they are written as the text's suffix
automaton, one rule per state, so the grammar grows linearly with the text. Separators inside
spans are escaped as `format.escape` does and a span may carry a `#k` marker.

What the byte automaton adds and a grammar cannot say cheaply (entities in text order) is left
to the decoder, which drops what it cannot place.
"""

from __future__ import annotations

from giellm.families import get_family
from giellm.layout.text import escape
from giellm.tasks import LabelSchema, get_task

# characters an open (schema-less) name cannot hold: separators, the label brackets, newlines
_OPEN_NAME = "[^\\\\;,()#:<>\\n]"


def _quote(value: str) -> str:
    """An EBNF string literal."""
    out = []
    for c in value:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def _choice(names: frozenset[str] | None, *, escaped: bool, empty: bool) -> str:
    """A closed set of names as alternatives, or any plain name when the set is open."""
    if names is None:
        return f"{_OPEN_NAME}{'*' if empty else '+'}"
    values = sorted(escape(n) if escaped else n for n in names)
    if empty:
        values = ["", *values]
    return "(" + " | ".join(_quote(v) for v in values) + ")" if values else '""'


def _suffix_automaton(text: str) -> list[dict[str, int]]:
    """Transitions of the smallest automaton that accepts exactly the substrings of `text`."""
    trans: list[dict[str, int]] = [{}]
    link, length, last = [-1], [0], 0
    for c in text:
        cur = len(trans)
        trans.append({})
        length.append(length[last] + 1)
        link.append(0)
        p = last
        while p != -1 and c not in trans[p]:
            trans[p][c] = cur
            p = link[p]
        if p != -1:
            q = trans[p][c]
            if length[p] + 1 == length[q]:
                link[cur] = q
            else:
                clone = len(trans)
                trans.append(dict(trans[q]))
                length.append(length[p] + 1)
                link.append(link[q])
                while p != -1 and trans[p].get(c) == q:
                    trans[p][c] = clone
                    p = link[p]
                link[q] = link[cur] = clone
        last = cur
    return trans


def _span_rules(text: str) -> list[str]:
    """`span ::= …`: a non-empty substring of `text`, separators escaped."""
    trans = _suffix_automaton(text)

    def edges(state: int) -> list[str]:
        return [f"{_quote(escape(c))} s{target}" for c, target in sorted(trans[state].items())]

    if not text:
        raise ValueError("a span grammar needs a non-empty text")
    rules = ["span ::= " + " | ".join(edges(0))]
    for state in range(1, len(trans)):
        rules.append(f"s{state} ::= " + " | ".join(['""', *edges(state)]))
    return rules


# a span of an unknown text: any characters but a newline, separators escaped
_OPEN_SPAN = r'span ::= ([^\\;,()#\n] | "\\" [\\;,()#])+'


def layout_grammar(task: str, schema: LabelSchema, text: str | None) -> str:
    """The EBNF grammar (root rule `root`) of every target `decode` accepts for this text;
    with no text, spans may be any escaped string (a grammar for every input, for engines
    that take one grammar per request such as llama.cpp's server)."""
    spec = get_task(task)
    label = _choice(schema.labels, escaped=False, empty=spec.family != "labels")
    rules = [f"label ::= {label}"]
    item = get_family(spec.family).ebnf_item
    if item is None:
        return "\n".join([r'root ::= " "* "<" label ">"', *rules]) + "\n"
    rules += [
        f"item ::= {item}",
        'marker ::= "#" [0-9] [0-9]? [0-9]?',
        f"etype ::= {_choice(schema.entity_types, escaped=True, empty=False)}",
        f"rtype ::= {_choice(schema.relation_types, escaped=True, empty=False)}",
        f"evtype ::= {_choice(schema.event_types, escaped=True, empty=False)}",
        f"role ::= {_choice(schema.roles, escaped=True, empty=False)}",
        'arg ::= role ":" span marker?',
        *(_span_rules(text) if text is not None else [_OPEN_SPAN]),
    ]
    return "\n".join([r'root ::= " "* "<" label ">" (item (";" item)*)?', *rules]) + "\n"
