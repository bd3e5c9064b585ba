"""A text + word joint set from data we have: livedoor categories joined with entities.

livedoor news has gold categories and no entities. This labels the opening of N train articles
(title and first sentences, up to one 256-character window) with the shipped default model's
stockmark entities, found sentence by sentence, and writes unified JSONL records that carry
both: the gold category as the text-level label and the silver entities as word-level items.
The MRE ablation (configs/ablation-gemma.yaml) trains on it twice, with the entities (task
NER) and without them (the same file projected onto TC), so only the word-level labels differ.

The output stays under build/: livedoor's articles are CC BY-ND 2.1 JP (no derivatives), so
the annotated set is rebuilt locally, never shipped.

Run: .venv/bin/python scripts/livedoor_joint.py [--records 1500] [--out FILE]
(default FILE: build/livedoor-joint/train.jsonl)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from giellm.data.jsonl import write_jsonl
from giellm.data.registry import load
from giellm.evaluation.systems import spread
from giellm.inference.extractor import Extractor
from giellm.progress import record_progress
from giellm.schema import Entity, Example
from giellm.threads import configure_threads


def opening(text: str, limit: int) -> str:
    """The article's start, cut after the last sentence end (。 or a line break) in `limit`."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    cut = max(head.rfind("。"), head.rfind("\n"))
    return head[: cut + 1] if cut > limit // 2 else head


def sentences(text: str) -> list[tuple[int, int]]:
    """[start, end) of each sentence (cut after 。！？ and at line breaks), blanks left out:
    the model was taught NER on sentences, and on whole openings it finds far fewer."""
    bounds, start = [], 0
    for i, char in enumerate(text):
        if char in "。！？\n" or i == len(text) - 1:
            if text[start : i + 1].strip():
                bounds.append((start, i + 1))
            start = i + 1
    return bounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1500, help="train articles, spread")
    parser.add_argument("--chars", type=int, default=256, help="characters of each opening")
    parser.add_argument("--out", type=Path, default=Path("build/livedoor-joint/train.jsonl"))
    parser.add_argument("--sample", type=int, default=15, help="records printed for a hand check")
    args = parser.parse_args()
    configure_threads(None)

    articles = spread(load("livedoor", "train", "TC"), args.records)
    openings = [opening(a.text, args.chars).rstrip() for a in articles]
    parts = [(i, b) for i, text in enumerate(openings) for b in sentences(text)]
    asked = [
        Example(id=str(k), task="NER", text=openings[i][s:e]) for k, (i, (s, e)) in enumerate(parts)
    ]
    extractor = Extractor(None, batch_size=32)
    with record_progress() as bar:
        job = bar.add_task("labelling entities, sentence by sentence", total=len(asked))
        found = list(
            extractor.predict(asked, schema="stockmark", on_record=lambda _: bar.advance(job))
        )
    entities: list[list[Entity]] = [[] for _ in articles]
    for (i, (start, _)), p in zip(parts, found, strict=True):
        entities[i] += [
            e.model_copy(update={"start": e.start + start, "end": e.end + start, "score": None})
            for e in p.example.entities
        ]
    joint = [
        Example(id=a.id, task="NER", text=text, label=a.label, entities=ents)
        for a, text, ents in zip(articles, openings, entities, strict=True)
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out, joint)
    entities = sum(len(r.entities) for r in joint)
    print(
        f"{len(joint)} records, {entities} entities "
        f"({entities / len(joint):.1f} a record): {args.out}"
    )
    for record in joint[:: max(1, len(joint) // args.sample)][: args.sample]:
        ents = [(e.text, e.type) for e in record.entities]
        print(
            json.dumps(
                {"label": record.label, "text": record.text[:80], "entities": ents},
                ensure_ascii=False,
            )
        )


if __name__ == "__main__":
    main()
