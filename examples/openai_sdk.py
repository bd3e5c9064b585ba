"""The OpenAI Python SDK against `giellm serve`: a streamed chat completion printed chunk by
chunk, then a structured NER request whose JSON record is checked against the text.

    giellm serve --port 8000 &
    python examples/openai_sdk.py [http://127.0.0.1:8000/v1]
"""

from __future__ import annotations

import json
import sys

from openai import OpenAI

TEXT = "ソフトバンクグループの孫正義会長は福岡市で記者会見を開いた。"


def main(base_url: str) -> None:
    client = OpenAI(base_url=base_url, api_key="unused")
    model = client.models.list().data[0].id
    print(f"model: {model}")

    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": f"{TEXT}\n固有表現:\n"}],
        max_tokens=32,
        stream=True,
    )
    for number, chunk in enumerate(stream):
        choice = chunk.choices[0] if chunk.choices else None
        delta = None if choice is None else choice.delta.content
        finish = None if choice is None else choice.finish_reason
        print(f"chunk {number}: content={delta!r} finish_reason={finish}")

    answer = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": TEXT}],
        extra_body={"giellm": {"task": "NER", "schema": "stockmark"}},
    )
    record = json.loads(answer.choices[0].message.content or "{}")
    for entity in record["entities"]:
        assert TEXT[entity["start"] : entity["end"]] == entity["text"], entity
        print(f"{entity['type']}: {entity['text']} [{entity['start']}, {entity['end']})")
    print(f"{len(record['entities'])} entities, every offset matches the text")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000/v1")
