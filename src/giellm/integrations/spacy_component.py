"""giellm as a spaCy pipeline component, for pipelines Japanese users already run (GiNZA).

    nlp = spacy.load("ja_ginza")
    nlp.add_pipe("giellm", config={"task": "NER", "schema": "stockmark"})

The factory is registered through the `spacy_factories` entry point, so `add_pipe("giellm")`
works after `pip install giellm`. For each Doc it extracts its task from `doc.text` and sets:

- `doc.ents`: the entities, as spans aligned to the Doc's tokens, beside the entities earlier
  components set (GiNZA's) where they do not clash, as spaCy's own entity ruler does: adding
  giellm never leaves a pipeline with fewer entities; `overwrite_ents = true` replaces them;
- `doc.spans[NAME]` (the component's name, "giellm" for the first): the entities that could
  not be `doc.ents` — edges inside a token
  (kept with `alignment_mode="expand"`: the smallest token span covering them) or overlapping
  another entity — counted in `component.counts`;
- `doc.cats`: for a closed set of text-level labels (TC, SA, fkc's genres) the model's
  probability of each label (`Extractor.label_scores`: they sum to 1; the predicted label in
  the record is the greedy one, nearly always the most probable); an open set: 1.0 on the one
  predicted;
- `span._.giellm_score` on each of its entity spans (in `doc.ents` and `doc.spans[NAME]`):
  the entity's score in [0, 1]; `threshold` leaves out entities scored below it;
- `doc._.giellm[NAME]`: the whole record in giellm's JSON form (relations, events, PAS too;
  None for a blank Doc), one key per giellm component in the pipeline: two components with one
  task (e.g. two NER models) never overwrite each other.

`nlp.pipe(n_process=2)` is refused with one line: a forked worker inherits torch's threads and
hangs; giellm batches the documents itself (`batch_size`), so one process is the fast way.

`nlp.pipe(batch_size=N)` hands the extractor N documents at a time, and it generates their
windows `batch_size` (the config's) at a time across documents. Serialisation keeps only the
config: the weights stay in the model directory or package named by `model`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path

from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.util import filter_spans

from giellm.errors import GiellmError
from giellm.families import family_of
from giellm.layout.scores import check_threshold
from giellm.schema import Example, example_to_dict
from giellm.tasks import get_task, restrict

EXTENSION = "giellm"
SCORE = "giellm_score"  # Span._.giellm_score: an entity's score (see giellm.layout.scores)


@Language.factory(  # type: ignore[untyped-decorator]
    "giellm",
    default_config={
        "task": "NER",
        "model": None,
        "schema": None,
        "batch_size": 64,
        "constrain": True,
        "overwrite_ents": False,
        "labels": None,
        "threshold": None,
        "max_new_tokens": None,
        "device": "cpu",
    },
    assigns=["doc.ents", "doc.cats", "doc.spans", f"doc._.{EXTENSION}"],
)
def make_giellm(
    nlp: Language,
    name: str,
    task: str,
    model: str | None,
    schema: str | None,
    batch_size: int,
    constrain: bool,
    overwrite_ents: bool,
    labels: list[str] | None,
    threshold: float | None,
    max_new_tokens: int | None,
    device: str,
) -> GiellmComponent:
    """The `giellm` factory: `model` is a giellm model directory or base name (None: the
    shipped default), `schema` a dataset whose label sets constrain the output, `labels` a
    subset of the task's labels to allow, `threshold` the least score an entity keeps."""
    return GiellmComponent(
        name,
        task=task,
        model=model,
        schema=schema,
        batch_size=batch_size,
        constrain=constrain,
        overwrite_ents=overwrite_ents,
        labels=labels,
        threshold=threshold,
        max_new_tokens=max_new_tokens,
        device=device,
    )


class GiellmComponent:
    """Extracts one task per Doc with a giellm model (see the module docstring)."""

    def __init__(
        self,
        name: str = "giellm",
        *,
        task: str = "NER",
        model: str | None = None,
        schema: str | None = None,
        batch_size: int = 64,
        constrain: bool = True,
        overwrite_ents: bool = False,
        labels: list[str] | None = None,
        threshold: float | None = None,
        max_new_tokens: int | None = None,
        device: str = "cpu",
    ) -> None:
        self.name = name
        from giellm.inference.extractor import (  # spaCy imports this module for every pipeline
            Extractor,
            dataset_schema,
        )
        from giellm.models.loading import check_device

        self.task = get_task(task).name  # an unknown task fails here, before the model loads
        if schema is not None:
            dataset_schema(schema, self.task)  # so does a schema without the task
        check_device(device)
        self.threshold = check_threshold(threshold)
        self.overwrite_ents = overwrite_ents
        self.pid = os.getpid()
        self.extractor = Extractor(
            model,
            device=device,
            constrained=constrain,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
        )
        chosen = self.extractor.schema(self.task, schema)  # checks the schema too
        self.schema = chosen if labels is None else restrict(chosen, self.task, labels)
        self.labels = self.schema.labels
        self.counts = {"docs": 0, "entities": 0, "misaligned": 0, "overlapping": 0}
        if not Doc.has_extension(EXTENSION):
            Doc.set_extension(EXTENSION, default=None)
        if not Span.has_extension(SCORE):
            Span.set_extension(SCORE, getter=entity_score)

    def __call__(self, doc: Doc) -> Doc:
        (done,) = self.pipe([doc], batch_size=1)
        return done

    def pipe(self, stream: Iterable[Doc], *, batch_size: int | None = None) -> Iterator[Doc]:
        """Annotate docs in order, `batch_size` documents per extraction (spaCy passes
        `nlp.pipe`'s; default: the model batch)."""
        if os.getpid() != self.pid:
            raise GiellmError(
                f"{self.name}: nlp.pipe(n_process>1) is not supported (a forked worker inherits "
                "torch's threads and hangs); use n_process=1: giellm batches documents itself"
            )
        size = batch_size or self.extractor.batch_size
        docs = iter(stream)
        while chunk := list(islice(docs, size)):
            records = [
                Example(id=str(i), task=self.task, text=doc.text)
                for i, doc in enumerate(chunk)
                if doc.text.strip()  # a blank Doc has nothing to extract
            ]
            predicted = self.extractor.predict(
                records, schema=self.schema, threshold=self.threshold
            )
            found = {p.example.id: p.example for p in predicted}
            cats = {}
            if self.labels:  # a closed label set: the model's distribution over it
                scores = self.extractor.label_scores(records, schema=self.schema)
                cats = {r.id: c for r, c in zip(records, scores, strict=True)}
            for i, doc in enumerate(chunk):
                self.annotate(doc, found.get(str(i)), cats.get(str(i)))
                yield doc

    def annotate(
        self, doc: Doc, record: Example | None, cats: dict[str, float] | None = None
    ) -> None:
        """Set the Doc's entities, categories (`cats`: each label's probability) and extension
        from its giellm record (None for a blank Doc: the extension says so, nothing else
        changes)."""
        self.counts["docs"] += 1
        if doc._.get(EXTENSION) is None:
            doc._.set(EXTENSION, {})
        doc._.get(EXTENSION)[self.name] = None if record is None else example_to_dict(record)
        if record is None:
            return
        if cats is not None:
            doc.cats.update(cats)
        elif self.labels:
            doc.cats.update({label: float(label == record.label) for label in self.labels})
        elif record.label is not None:  # an open label set: the one predicted
            doc.cats[record.label] = 1.0
        if family_of(self.task).field != "entities":
            return
        aligned, misaligned = [], []
        for entity in record.entities:
            span = doc.char_span(entity.start, entity.end, label=entity.type)
            if span is not None:
                aligned.append(span)
                continue
            expanded = doc.char_span(
                entity.start, entity.end, label=entity.type, alignment_mode="expand"
            )
            misaligned += [expanded] if expanded is not None else []
        kept = [] if self.overwrite_ents else list(doc.ents)
        ours = [s for s in filter_spans(aligned) if not _clashes(s, kept)]
        overlapping = [s for s in aligned if s not in ours]
        doc.ents = sorted(kept + ours, key=lambda s: s.start)
        doc.spans[self.name] = misaligned + overlapping
        self.counts["entities"] += len(record.entities)
        self.counts["misaligned"] += len(misaligned)
        self.counts["overlapping"] += len(overlapping)

    # spaCy calls these on nlp.to_disk / from_disk: the config (the factory's arguments) is
    # what is saved, by spaCy itself; the weights stay where `model` names them

    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)

    def from_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> GiellmComponent:
        return self


def entity_score(span: Span) -> float | None:
    """`span._.giellm_score`: the score a giellm component gave this span's entity (same
    label; an expanded span: the entity inside it), from the records in `doc._.giellm`; None
    for spans giellm did not predict, such as GiNZA's own. (A stored span extension is keyed
    by offsets alone, so GiNZA's span at the same place would show giellm's score.)"""
    inside = []
    for record in (span.doc._.get(EXTENSION) or {}).values():
        for e in (record or {}).get("entities", ()):
            if e["type"] != span.label_:
                continue
            if (e["start"], e["end"]) == (span.start_char, span.end_char):
                return e.get("score")  # type: ignore[no-any-return]
            if span.start_char <= e["start"] and e["end"] <= span.end_char:
                inside.append(e)
    if not inside:
        return None
    return max(inside, key=lambda e: e["end"] - e["start"]).get("score")  # type: ignore[no-any-return]


def _clashes(span: Span, others: list[Span]) -> bool:
    return any(span.start < o.end and o.start < span.end for o in others)
