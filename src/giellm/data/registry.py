"""The dataset formats giellm reads, with their tasks, label sets and usual files."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from giellm.data import jacred, jrte, ku, livedoor, mre_csv, stockmark
from giellm.data.jsonl import read_jsonl
from giellm.errors import GiellmError
from giellm.families import project
from giellm.schema import Example
from giellm.tasks import LabelSchema, get_task

# every reader: (path, task, notes) -> records; `notes` counts what it had to leave out
Reader = Callable[[Path, str, Counter[str]], Iterator[Example]]


@dataclass(frozen=True)
class DatasetFormat:
    """A readable source format; `folder` and `splits` locate it inside a shared data dir."""

    name: str
    description: str
    tasks: tuple[str, ...]
    reader: Reader
    schemas: dict[str, LabelSchema]
    folder: str | None = None
    splits: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()

    def schema(self, task: str) -> LabelSchema:
        return self.schemas.get(get_task(task).name, LabelSchema())

    def read(
        self, path: str | Path, task: str, notes: Counter[str] | None = None
    ) -> Iterator[Example]:
        """Read records for `task`; readers that leave anything out count it in `notes`."""
        return self.reader(Path(path), task, Counter() if notes is None else notes)


def _read_unified(path: Path, task: str, notes: Counter[str]) -> Iterator[Example]:
    return (project(example, task) for example in read_jsonl(path))


_NO_LABEL: frozenset[str] = frozenset()
_IREX = LabelSchema.of(labels=_NO_LABEL, entity_types=ku.IREX_TYPES)
_PAS = LabelSchema.of(labels=_NO_LABEL, roles=ku.CASES)
_FKC = {
    "TC": LabelSchema.of(labels=ku.FKC_GENRES),
    "NER": LabelSchema.of(labels=ku.FKC_GENRES, entity_types=ku.IREX_TYPES),
    "PAS": LabelSchema.of(labels=ku.FKC_GENRES, roles=ku.CASES),
}
_JSONL_SPLITS = {"train": "train.jsonl", "dev": "dev.jsonl"}

_KU_SCHEMAS = {"NER": _IREX, "PAS": _PAS}


def _ku(name: str, description: str, schemas: dict[str, LabelSchema], folder: str) -> DatasetFormat:
    """The KU corpora share one layout; they differ in tasks (fkc adds TC) and label sets."""
    tasks = tuple(schemas)
    aliases = (folder,) if folder != name else ()
    return DatasetFormat(
        name,
        description,
        tasks,
        ku.reader(name, tasks),
        schemas,
        folder,
        _JSONL_SPLITS,
        aliases,
    )


FORMATS: dict[str, DatasetFormat] = {
    f.name: f
    for f in [
        DatasetFormat(
            "stockmark",
            "Stockmark Wikipedia NER (JSON array)",
            stockmark.TASKS,
            stockmark.read,
            {"NER": LabelSchema.of(labels=_NO_LABEL, entity_types=stockmark.ENTITY_TYPES)},
            "stockmark_ner_wikipedia",
            {"train": "train.json", "dev": "dev.json"},
            ("stockmark_ner_wikipedia",),
        ),
        _ku("kwdlc", "KWDLC web leads: IREX NER + predicate-argument", _KU_SCHEMAS, "kwdlc"),
        _ku(
            "wac",
            "KU Wikipedia Annotated Corpus: IREX NER + predicate-argument",
            _KU_SCHEMAS,
            "wikipedia_annotated_corpus",
        ),
        _ku("fkc", "Annotated FKC complaints: genre + IREX NER + PAS", _FKC, "fkc_complaints"),
        DatasetFormat(
            "jacred",
            "JacRED document-level RE (mentions for NER, relations for RE)",
            jacred.TASKS,
            jacred.read,
            {
                "NER": LabelSchema.of(labels=_NO_LABEL, entity_types=jacred.ENTITY_TYPES),
                "RE": LabelSchema.of(labels=_NO_LABEL, relation_types=jacred.RELATIONS.values()),
            },
            "jacred",
            {"train": "train.json", "dev": "dev.json"},
        ),
        DatasetFormat(
            "livedoor",
            "livedoor news, 9 categories (JSONL articles)",
            livedoor.TASKS,
            livedoor.read,
            {"TC": LabelSchema.of(labels=livedoor.CATEGORIES)},
            "livedoor_news",
            _JSONL_SPLITS,
            ("livedoor_news",),
        ),
        DatasetFormat(
            "livedoor-joint",
            "livedoor categories + silver stockmark entities (unified JSONL; "
            "scripts/livedoor_joint.py builds it)",
            ("TC", "NER"),
            _read_unified,
            {
                "TC": LabelSchema.of(labels=livedoor.CATEGORIES),
                "NER": LabelSchema.of(
                    labels=livedoor.CATEGORIES, entity_types=stockmark.ENTITY_TYPES
                ),
            },
        ),
        DatasetFormat(
            "jrte",
            "JRTE sentiment polarity (TSV)",
            jrte.TASKS,
            jrte.read,
            {"SA": LabelSchema.of(labels=jrte.POLARITY.values())},
            "jrte_pn",
            {"train": "train.tsv", "dev": "dev.tsv"},
            ("jrte_pn",),
        ),
        DatasetFormat(
            "jsonl",
            "giellm's unified JSONL (records are projected onto --task)",
            ("TC", "SA", "NER", "RE", "EE", "PAS"),
            _read_unified,
            {},
        ),
        DatasetFormat(
            "mre-csv",
            "the GIELLM paper's MRE-mix CSV (input/output strings)",
            mre_csv.TASKS,
            mre_csv.read,
            {},
        ),
    ]
}


# the terms each shared dataset comes under (from its SOURCE.md); the model card and
# configs/giellm-ja-open.yaml say which of them allow commercial use
LICENSES = {
    "stockmark": "CC BY-SA 3.0",
    "wac": "CC BY-SA 4.0",
    "livedoor": "CC BY-ND 2.1 JP (articles)",
    "jrte": "CC BY-NC-SA 4.0 (non-commercial research)",
    "fkc": "CC BY-NC-SA 4.0 (academic research)",
    "kwdlc": "none stated: research use only",
    "jacred": "none stated: research use only",
}


def get_format(name: str) -> DatasetFormat:
    """Look a format up by name or alias, with a clear error for an unknown one."""
    key = name.lower().replace("_", "-")
    for fmt in FORMATS.values():
        if key == fmt.name or key in {a.replace("_", "-") for a in fmt.aliases}:
            return fmt
    raise GiellmError(f"unknown format {name!r}; known formats: {', '.join(FORMATS)}")


def shared_data_dir() -> Path | None:
    """Where the shared datasets are: $GIELLM_DATA, else ../shared/data beside the checkout."""
    candidates = [os.environ.get("GIELLM_DATA")]
    here = Path(__file__).resolve()
    candidates += [str(p / "shared" / "data") for p in here.parents]
    candidates.append(str(Path.cwd().parent / "shared" / "data"))
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def dataset_path(fmt: DatasetFormat, split: str, data_dir: Path) -> Path:
    if fmt.folder is None or split not in fmt.splits:
        raise GiellmError(f"format {fmt.name!r} has no {split!r} split in the shared data")
    return data_dir / fmt.folder / fmt.splits[split]


def load(name: str, split: str, task: str, data_dir: Path | None = None) -> list[Example]:
    """All records of one shared dataset split for one task."""
    fmt = get_format(name)
    data_dir = data_dir or shared_data_dir()
    if data_dir is None:
        raise GiellmError("no shared data directory found; set GIELLM_DATA")
    return list(fmt.read(dataset_path(fmt, split, data_dir), task))
