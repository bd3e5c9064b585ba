"""GiNZA (spaCy + SudachiPy, `ja-ginza`) as the classic NER baseline.

GiNZA tags Sekine's Extended Named Entity (ENE) types (`Person`, `Company`, `City`, …). Each
dataset's types are coarser; the tables below map ENE types onto them by the ENE hierarchy
(organisations, locations, facilities, products, events, times, numbers). An ENE type a table
does not list has no counterpart in that dataset (e.g. `Position_Vocation`, `Animal`) and its
entities are left out; the tables are the documented, reviewable part of this baseline.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from giellm.errors import GiellmError
from giellm.schema import Entity, Example

_PERSON = ["Person"]
_COMPANY = ["Company", "Company_Group", "Corporation_Other"]
_POLITICAL = [
    "Government", "Political_Party", "Cabinet", "Military", "Political_Organization_Other",
    "International_Organization",
]  # fmt: skip
_OTHER_ORG = [
    "Organization_Other", "School", "Research_Institute", "Public_Institution",
    "Sports_Organization_Other", "Pro_Sports_Organization", "Sports_League", "Show_Organization",
]  # fmt: skip
_PLACE = [
    "City", "Country", "Province", "County", "GPE_Other", "Continental_Region", "Domestic_Region",
    "Region_Other", "Location_Other", "Geological_Region_Other", "Mountain", "Island", "River",
    "Lake", "Sea", "Bay", "Countx_Other", "Astral_Body_Other", "Planet", "Water_Route",
]  # fmt: skip
_FACILITY = [
    "Facility_Other", "Airport", "Station", "Port", "Car_Stop", "Bridge", "Tunnel", "Road",
    "Railroad", "Park", "Museum", "Theater", "Sports_Facility", "Worship_Place", "Zoo",
    "Amusement_Park", "GOE_Other", "Line_Other", "Canal", "Tumulus", "Spa",
]  # fmt: skip
_PRODUCT = [
    "Product_Other", "Car", "Train", "Aircraft", "Ship", "Spaceship", "Vehicle_Other", "Drug",
    "Weapon", "Clothing", "Food_Other", "Book", "Newspaper", "Magazine", "Movie", "Music",
    "Broadcast_Program", "Show", "Game", "Art_Other", "Printing_Other", "Character",
]  # fmt: skip
_EVENT = [
    "Event_Other", "Occasion_Other", "Conference", "Religious_Festival", "Incident_Other", "War",
    "Natural_Disaster", "Earthquake", "Sport",
]  # fmt: skip
_ARTIFACT = [*_PRODUCT, "Law", "Treaty", "Award", "Rule_Other", "Title_Other"]
_DATE = ["Date", "Era", "Day_Of_Week", "Period_Day", "Period_Week", "Period_Month", "Period_Year"]
_TIME = ["Time", "Period_Time"]


def _table(groups: dict[str, list[str]]) -> dict[str, str]:
    return {ene: target for target, enes in groups.items() for ene in enes}


IREX = {
    "PERSON": _PERSON,
    "ORGANIZATION": _COMPANY + _POLITICAL + _OTHER_ORG,
    "LOCATION": _PLACE + _FACILITY,
    "ARTIFACT": _ARTIFACT,
    "DATE": _DATE,
    "TIME": _TIME,
    "MONEY": ["Money"],
    "PERCENT": ["Percent"],
}
JACRED_NAMES = {
    "PERSON": "PER", "ORGANIZATION": "ORG", "LOCATION": "LOC", "ARTIFACT": "ART",
    "DATE": "DAT", "TIME": "TIM", "MONEY": "MON", "PERCENT": "%",
}  # fmt: skip

#: ENE type -> the dataset's entity type, per dataset (datasets absent here have no NER).
MAPPINGS: dict[str, dict[str, str]] = {
    "stockmark": _table(
        {
            "人名": _PERSON,
            "法人名": _COMPANY,
            "政治的組織名": _POLITICAL,
            "その他の組織名": _OTHER_ORG,
            "地名": _PLACE,
            "施設名": _FACILITY,
            "製品名": _PRODUCT,
            "イベント名": _EVENT,
        }
    ),
    "kwdlc": _table(IREX),
    "wac": _table(IREX),
    "fkc": _table(IREX),
    "jacred": _table({JACRED_NAMES[k]: v for k, v in IREX.items()}),
}


class GinzaNER:
    """GiNZA's NER with its ENE types mapped onto one dataset's entity types."""

    def __init__(self, dataset: str, *, model: str = "ja_ginza", batch_size: int = 64) -> None:
        from giellm.data.registry import get_format

        name = get_format(dataset).name
        if name not in MAPPINGS:
            raise GiellmError(
                f"GiNZA baseline: no type mapping for {dataset!r} ({', '.join(MAPPINGS)})"
            )
        self.mapping = MAPPINGS[name]
        self.batch_size = batch_size
        try:
            import spacy

            # only the NER path runs: the parser and the rest cost time and change nothing here
            self.nlp: Any = spacy.load(
                model, exclude=["parser", "compound_splitter", "bunsetu_recognizer"]
            )
        except (ImportError, OSError) as exc:
            raise GiellmError(
                f"GiNZA is not installed ({exc}); pip install 'giellm[baselines]'"
            ) from None

    def predict(self, records: Iterable[Example]) -> Iterator[Example]:
        """Entities of each record (its gold fields are ignored), same ids, in order."""
        records = list(records)
        texts = (r.text for r in records)
        for rec, doc in zip(records, self.nlp.pipe(texts, batch_size=self.batch_size), strict=True):
            entities = [
                Entity(text=e.text, type=self.mapping[e.label_], start=e.start_char, end=e.end_char)
                for e in doc.ents
                if e.label_ in self.mapping and e.text.strip()
            ]
            yield Example(id=rec.id, task="NER", text=rec.text, entities=tuple(entities))
