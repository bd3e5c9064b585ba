"""The Format Converter: documented layouts, escaping, occurrence markers, forgiving decoding."""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from giellm.layout.format import build_prompt, decode, encode, encode_target
from giellm.layout.text import escape, unescape
from giellm.schema import Argument, Entity, Event, Example, Relation, Span
from giellm.tasks import LabelSchema


def ent(text: str, value: str, etype: str, nth: int = 0) -> Entity:
    start = -1
    for _ in range(nth + 1):
        start = text.index(value, start + 1)
    return Entity(text=value, type=etype, start=start, end=start + len(value))


def span(text: str, value: str, nth: int = 0) -> Span:
    e = ent(text, value, "x", nth)
    return Span(text=e.text, start=e.start, end=e.end)


def test_ner_layout_and_prompt() -> None:
    text = "山田太郎は日立製作所に入社した。"
    ex = Example(
        id="1",
        task="NER",
        text=text,
        label="社会",
        entities=[ent(text, "日立製作所", "法人名"), ent(text, "山田太郎", "人名")],
    )
    encoded = encode(ex)
    assert encoded.prompt == f"{text}\n固有表現抽出:\n"
    assert encoded.target == "<社会>人名:山田太郎;法人名:日立製作所"
    assert decode(encoded.target, ex).example == ex


def test_label_only_and_empty_label() -> None:
    ex = Example(id="1", task="SA", text="また利用したいです。", label="ポジティブ")
    assert encode_target(ex) == "<ポジティブ>"
    unlabeled = Example(id="2", task="NER", text="何もない。")
    assert encode_target(unlabeled) == "<>"
    assert decode("<>", unlabeled).example == unlabeled


def test_relation_and_event_layouts() -> None:
    text = "ソニー銀行はソニーの子会社。"
    rel = Example(
        id="r",
        task="RE",
        text=text,
        relations=[
            Relation(head=span(text, "ソニー銀行"), type="OwnedBy", tail=span(text, "ソニー", 1))
        ],
    )
    # the tail "ソニー" first occurs inside "ソニー銀行", so it needs the marker #2
    assert encode_target(rel) == "<>ソニー銀行,OwnedBy,ソニー#2"
    assert decode(encode_target(rel), rel).example == rel

    text = "A社がB社を買収した。"
    ee = Example(
        id="e",
        task="EE",
        text=text,
        events=[
            Event(
                trigger=span(text, "買収"),
                type="買収",
                arguments=[
                    Argument(role="買収者", **span(text, "A社").model_dump()),
                    Argument(role="対象", **span(text, "B社").model_dump()),
                ],
            )
        ],
    )
    assert encode_target(ee) == "<>買収:買収(買収者:A社,対象:B社)"
    assert decode(encode_target(ee), ee).example == ee

    pas = Example(
        id="p",
        task="PAS",
        text=text,
        events=[
            Event(
                trigger=span(text, "買収した。"),
                arguments=[Argument(role="ガ", **span(text, "A社").model_dump())],
            )
        ],
    )
    assert encode_target(pas) == "<>買収した。(ガ:A社)"
    assert decode(encode_target(pas), pas).example == pas


def test_repeated_strings_take_the_next_unused_occurrence() -> None:
    text = "東京から東京へ、そして大阪。"
    both = Example(
        id="1",
        task="NER",
        text=text,
        entities=[ent(text, "東京", "地名"), ent(text, "東京", "地名", 1)],
    )
    assert encode_target(both) == "<>地名:東京;地名:東京"  # no marker needed
    second_only = Example(id="2", task="NER", text=text, entities=[ent(text, "東京", "地名", 1)])
    assert encode_target(second_only) == "<>地名:東京#2"
    for ex in (both, second_only):
        assert decode(encode_target(ex), ex).example == ex


def test_separators_inside_spans_are_escaped() -> None:
    text = "C#言語(第2版);Re:ゼロ, 1,000円"
    ex = Example(
        id="1",
        task="NER",
        text=text,
        entities=[
            ent(text, "C#言語(第2版)", "製品名"),
            ent(text, "Re:ゼロ", "製品名"),
            ent(text, "1,000円", "金額"),
        ],
    )
    target = encode_target(ex)
    assert target == r"<>製品名:C\#言語\(第2版\);製品名:Re:ゼロ;金額:1\,000円"
    assert decode(target, ex).example == ex
    assert unescape(escape(text)) == text


def test_decoder_is_forgiving_and_reports_what_it_dropped() -> None:
    text = "山田太郎は日立製作所に入社した。"
    source = Example(id="1", task="NER", text=text)
    schema = LabelSchema.of(labels=["社会", "経済"], entity_types=["人名", "法人名"])
    decoded = decode(
        "<スポーツ>人名:山田太郎;法人名:トヨタ;地名:日立;人名; 法人名: 日立製作所 ;;",
        source,
        schema,
    )
    assert decoded.example.label is None
    assert [(e.type, e.text, e.start) for e in decoded.example.entities] == [
        ("人名", "山田太郎", 0),
        ("法人名", "日立製作所", 5),
    ]
    reasons = [d.split(":")[0] for d in decoded.dropped]
    assert reasons == ["unknown label", "span not in text", "unknown entity type", "no type"]


def test_decoder_without_label_and_with_bad_markers() -> None:
    text = "東京と東京"
    source = Example(id="1", task="NER", text=text)
    decoded = decode("地名:東京#9;地名:東京#x", source)
    # #9 does not exist -> default placement; "東京#x" is not a marker and not in the text
    assert [(e.start, e.end) for e in decoded.example.entities] == [(0, 2)]
    assert len(decoded.dropped) == 1


def test_build_prompt_accepts_task_names() -> None:
    assert build_prompt("文。", "pas").endswith("述語項構造解析:\n")


JAPANESE = st.text(
    alphabet=st.sampled_from("東京大阪山田太郎はがをにで。、社会（）()<>:;,#\\ 1０a\n"), max_size=40
)


@settings(max_examples=400, deadline=None)
@given(
    text=JAPANESE.filter(lambda t: t.strip()),
    generated=st.text(max_size=80),
    task=st.sampled_from(["TC", "SA", "NER", "RE", "EE", "PAS"]),
)
def test_decode_never_raises_and_offsets_match(text: str, generated: str, task: str) -> None:
    source = Example(id="x", task=task, text=text)
    for candidate in (generated, text + generated, "<a>" + ";".join(text.split("、"))):
        example = decode(candidate, source).example
        for _, s in example.spans():
            assert text[s.start : s.end] == s.text


@st.composite
def records(draw: st.DrawFn) -> Example:
    text = draw(JAPANESE.filter(lambda t: t.strip() and len(t) >= 2))
    task = draw(st.sampled_from(["NER", "RE", "EE", "PAS"]))
    names = st.text(alphabet=string.ascii_letters + "人名;,():#\\", min_size=1, max_size=4)

    def any_span() -> Span:
        start = draw(st.integers(0, len(text) - 1))
        end = draw(st.integers(start + 1, len(text)))
        return Span(text=text[start:end], start=start, end=end)

    def typed(name: str) -> str:
        value = draw(names)
        return value.replace(":", "") or name  # types and roles never hold the ':' separator

    label = draw(st.one_of(st.none(), st.sampled_from(["社会", "スポーツ"])))
    n = draw(st.integers(0, 4))
    fields: dict[str, object] = {}
    if task == "NER":
        fields["entities"] = [Entity(type=typed("T"), **any_span().model_dump()) for _ in range(n)]
    elif task == "RE":
        fields["relations"] = [
            Relation(head=any_span(), type=typed("R"), tail=any_span()) for _ in range(n)
        ]
    else:
        fields["events"] = [
            Event(
                trigger=any_span(),
                type=typed("E") if task == "EE" else None,
                # an argument repeated with the same role and span says nothing new: the
                # decoder drops repeats (small models loop), so records hold each once
                arguments=list(
                    dict.fromkeys(
                        Argument(role=typed("R"), **any_span().model_dump())
                        for _ in range(draw(st.integers(0, 3)))
                    )
                ),
            )
            for _ in range(n)
        ]
    return Example(id="h", task=task, text=text, label=label, **fields)  # type: ignore[arg-type]


@settings(max_examples=400, deadline=None)
@given(example=records())
def test_round_trip_on_generated_records(example: Example) -> None:
    decoded = decode(encode_target(example), example)
    assert decoded.dropped == ()
    assert decoded.example == example
