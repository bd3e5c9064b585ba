"""Few-shot prompting of any OpenAI-compatible endpoint (the paper's GPT-3.5-Turbo baseline).

Each query gets k solved examples from the train split, written in giellm's own layout (the
prompt, then the target), so the same decoder parses the answers and the same metrics score
them. `chat` mode sends a system message, the examples as user/assistant turns and the query;
`completions` mode sends them as one text. The key is read from an environment variable.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from giellm.errors import GiellmError
from giellm.families import get_family
from giellm.inference.extractor import Prediction
from giellm.layout.format import build_prompt, decode, encode_target
from giellm.schema import Example
from giellm.tasks import LabelSchema, get_task

Mode = Literal["chat", "completions"]


def instructions(task: str, schema: LabelSchema) -> str:
    """The system message: what to extract and the exact answer layout."""
    t = get_task(task)
    lines = [
        f"You are an information extraction system. Task: {t.description}.",
        "Answer in one line: the text-level label in <>, then the items separated by ';'.",
    ]
    if schema.labels:
        lines.append("Text-level labels: " + ", ".join(sorted(schema.labels)))
    lines += get_family(t.family).describe(schema)
    lines.append("Copy every span exactly as it appears in the text.")
    return "\n".join(lines)


def pick_shots(pool: Sequence[Example], k: int, *, seed: int = 0) -> list[Example]:
    """k train records, the same ones for every query (seeded), so runs are comparable."""
    if k > len(pool):
        raise GiellmError(f"asked for {k} examples but the train split has {len(pool)}")
    return random.Random(seed).sample(list(pool), k)


def chat_messages(
    shots: Sequence[Example], query: Example, schema: LabelSchema
) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": instructions(query.task, schema)}]
    for shot in shots:
        messages.append({"role": "user", "content": build_prompt(shot.text, shot.task)})
        messages.append({"role": "assistant", "content": encode_target(shot)})
    messages.append({"role": "user", "content": build_prompt(query.text, query.task)})
    return messages


def completion_prompt(shots: Sequence[Example], query: Example) -> str:
    solved = [build_prompt(s.text, s.task) + encode_target(s) for s in shots]
    return "\n\n".join([*solved, build_prompt(query.text, query.task)])


@dataclass
class FewShotClient:
    """Predicts records by asking an OpenAI-compatible endpoint with k in-context examples."""

    base_url: str
    model: str
    shots: Sequence[Example]
    schema: LabelSchema = field(default_factory=LabelSchema)
    mode: Mode = "chat"
    api_key_env: str = "OPENAI_API_KEY"
    max_tokens: int = 128
    concurrency: int = 8
    timeout: float = 600.0  # 8 long k-shot prompts batched on one CPU core took over 120 s

    def _post(self, client: httpx.Client, record: Example) -> str:
        query = Example(id=record.id, task=record.task, text=record.text)
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "temperature": 0,
            "stop": ["\n"],  # the answer is one line: stop there, not at max_tokens
        }
        if self.mode == "chat":
            body["messages"] = chat_messages(self.shots, query, self.schema)
            route = "/chat/completions"
        else:
            body["prompt"] = completion_prompt(self.shots, query)
            route = "/completions"
        try:
            response = client.post(self.base_url.rstrip("/") + route, json=body)
        except httpx.HTTPError as exc:
            raise GiellmError(f"{self.base_url}{route}: {exc}") from None
        if response.status_code != 200:
            raise GiellmError(
                f"{self.base_url}{route}: HTTP {response.status_code}: {response.text[:300]}"
            )
        choice = response.json()["choices"][0]
        text: str = choice["message"]["content"] if self.mode == "chat" else choice["text"]
        return text.strip().split("\n")[0]

    def predict(
        self, records: Sequence[Example], on_record: Callable[[Prediction], None] | None = None
    ) -> Iterator[Prediction]:
        """Predictions in input order; requests run `concurrency` at a time."""
        key = os.environ.get(self.api_key_env, "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        with (
            httpx.Client(headers=headers, timeout=self.timeout) as client,
            ThreadPoolExecutor(self.concurrency) as pool,
        ):
            answers = pool.map(lambda r: self._post(client, r), records)
            for record, answer in zip(records, answers, strict=True):
                source = Example(id=record.id, task=record.task, text=record.text)
                decoded = decode(answer, source, self.schema)
                prediction = Prediction(decoded.example, decoded.dropped)
                if on_record is not None:
                    on_record(prediction)
                yield prediction
