"""The OpenAI routes as the real `openai` SDK uses them, against a real `giellm serve` on
loopback: streaming, content parts, the developer role, tasks answered as JSON records under the
layout grammar, and OpenAI's errors for what giellm cannot do."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from test_serve import Server, _start, _stop

TEXT = "ソニーは東京に本社を置く。"
MODEL = "giellm-default"  # what `giellm serve` with no --model calls its model


@pytest.fixture(scope="module")
def client() -> Iterator[openai.OpenAI]:
    running: Server = _start("--max-batch", "8", "--max-wait-ms", "20")
    yield openai.OpenAI(base_url=f"{running.url}/v1", api_key="unused", max_retries=0)
    _stop(running)


def test_the_sdk_lists_the_model_and_chats(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == [MODEL]
    done = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": TEXT}], max_tokens=8
    )
    assert done.choices[0].message.role == "assistant"
    assert isinstance(done.choices[0].message.content, str)
    assert done.usage is not None and 0 < done.usage.completion_tokens <= 8


def test_streamed_chunks_add_up_to_the_plain_answer(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": TEXT}]
    plain = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=messages,
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)  # the SDK parses Server-Sent Events; a plain body would fail here
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content  # greedy: the same answer
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == plain.choices[0].finish_reason
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0

    completion = client.completions.create(model=MODEL, prompt=TEXT, max_tokens=8, stream=True)
    pieces = list(completion)
    assert pieces and all(p.object == "text_completion" for p in pieces)
    whole = client.completions.create(model=MODEL, prompt=TEXT, max_tokens=8)
    assert "".join(p.choices[0].text for p in pieces) == whole.choices[0].text


def test_content_parts_and_the_developer_role_are_read(client: openai.OpenAI) -> None:
    def answer(role: str, content: Any) -> str | None:
        reply = client.chat.completions.create(
            model=MODEL,
            messages=[
                {"role": role, "content": "固有表現を抽出する。"},
                {"role": "user", "content": content},
            ],
            max_tokens=8,
        )
        return reply.choices[0].message.content

    parts = [{"type": "text", "text": "ソニーは"}, {"type": "text", "text": "東京に本社を置く。"}]
    assert answer("developer", parts) == answer("system", TEXT)


def _unscored(record: dict[str, Any]) -> dict[str, Any]:
    entities = [{k: v for k, v in e.items() if k != "score"} for e in record.get("entities", [])]
    return record | {"entities": entities}


def test_a_task_is_answered_as_one_valid_record(client: openai.OpenAI) -> None:
    asked = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": TEXT}],
        extra_body={"giellm": {"task": "NER", "schema": "stockmark"}},
    )
    record = json.loads(asked.choices[0].message.content or "")
    assert record["task"] == "NER" and record["text"] == TEXT
    for entity in record["entities"]:  # offsets into the user's text, by construction
        assert TEXT[entity["start"] : entity["end"]] == entity["text"]

    by_format = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": TEXT}],
        response_format={"type": "json_schema", "json_schema": {"name": "NER", "schema": {}}},
    )
    # same task, greedy: the same record; scores may differ (no schema here: the model's own
    # label sets, so each step's softmax runs over another set of names)
    assert _unscored(json.loads(by_format.choices[0].message.content or "")) == _unscored(record)

    only_people = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": TEXT}],
        extra_body={"giellm": {"task": "NER", "schema": "stockmark", "labels": ["人名"]}},
    )
    restricted = json.loads(only_people.choices[0].message.content or "")
    assert restricted["task"] == "NER"
    assert {e["type"] for e in restricted.get("entities", [])} <= {"人名"}

    with pytest.raises(openai.UnprocessableEntityError, match="not among the entity_types"):
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": TEXT}],
            extra_body={"giellm": {"task": "NER", "schema": "stockmark", "labels": ["惑星"]}},
        )


def test_what_giellm_cannot_do_gets_openai_errors(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": TEXT}]
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-4o", messages=messages)
    with pytest.raises(openai.BadRequestError, match="n > 1"):
        client.chat.completions.create(model=MODEL, messages=messages, n=2)
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    with pytest.raises(openai.BadRequestError, match="tools"):
        client.chat.completions.create(model=MODEL, messages=messages, tools=[tool])
    with pytest.raises(openai.UnprocessableEntityError, match="response_format"):
        client.chat.completions.create(
            model=MODEL, messages=messages, response_format={"type": "json_object"}
        )
    image = [{"type": "image_url", "image_url": {"url": "data:,"}}]
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": image}])
