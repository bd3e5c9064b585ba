"""The service's request and response bodies, and the byte limit on what a request may send.

Every body is validated before any work: a string that is not valid Unicode anywhere in it is
refused (422), texts are bounded in number and length, and `BodyLimit` counts the bytes as they
arrive (413), whatever `Content-Length` says.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from giellm.errors import GiellmError
from giellm.schema import unpaired_surrogate
from giellm.tasks import get_task


def _task_name(value: str) -> str:
    """A task's canonical name, or a validation error naming the known ones."""
    try:
        return get_task(value).name
    except GiellmError as exc:
        raise ValueError(str(exc)) from None


TaskName = Annotated[str, AfterValidator(_task_name)]

MAX_TEXTS = 256
MAX_CHARS = 100_000  # per text: longer ones would hold the model for minutes


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413, refused from its declared
    `Content-Length` before any byte is read, and counted on the bytes as they arrive (the
    header may be absent, as with chunked transfer, or wrong); a body that takes longer than
    `seconds` to arrive gets 408 (a slow client holds no connection for ever)."""

    def __init__(self, app: Any, limit: int, seconds: float = 30.0) -> None:
        self.app, self.limit, self.seconds = app, limit, seconds

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        import asyncio

        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = JSONResponse(
            {"detail": f"request body is over {self.limit} bytes, the limit"}, status_code=413
        )
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.strip().isdigit() and int(declared) > self.limit:
            await too_big(scope, receive, send)
            return
        body, more = bytearray(), True
        deadline = asyncio.get_running_loop().time() + self.seconds
        while more:
            left = deadline - asyncio.get_running_loop().time()
            try:
                message = await asyncio.wait_for(receive(), timeout=max(left, 0.001))
            except TimeoutError:
                slow = {"detail": f"the request body did not arrive within {self.seconds:g} s"}
                await JSONResponse(slow, status_code=408)(scope, receive, send)
                return
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            if len(body) > self.limit:
                await too_big(scope, receive, send)
                return
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if replayed:
                return await receive()  # later calls wait for the disconnect, as usual
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


def _surrogate_in(value: Any, where: str) -> str | None:
    """The first string in a JSON value with a lone surrogate, as `where: why`."""
    if isinstance(value, str):
        bad = unpaired_surrogate(value)
        return None if bad is None else f"{where}: {bad}"
    if not isinstance(value, dict | list):
        return None
    for key, item in value.items() if isinstance(value, dict) else enumerate(value):
        if isinstance(key, str) and (bad := unpaired_surrogate(key)):
            return f"{where}: key {bad}"
        if found := _surrogate_in(item, f"{where}.{key}"):
            return found
    return None


class Body(BaseModel):
    """Every request body: a string that is not valid Unicode (a lone surrogate, anywhere:
    text, prompt, message, model, stop, an extra key) is refused before any work, so it never
    reaches the tokenizer and fails the other requests batched with it."""

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        if found := _surrogate_in(data, "body"):
            raise ValueError(found)
        return data


class ExtractRequest(Body):
    """`texts`: one text or a list; `schema`: a dataset whose label sets constrain the output."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    texts: str | Annotated[list[str], Field(min_length=1, max_length=MAX_TEXTS)]
    task: TaskName
    label_schema: str | None = Field(None, alias="schema")
    labels: list[str] | None = None  # a subset of the task's labels (see `restrict`)
    label_scores: bool = False  # also each text-level label's probability, per text
    threshold: float | None = Field(None, ge=0, le=1)  # items scored below it are left out

    @field_validator("texts", mode="after")
    @classmethod
    def _no_blank_text(cls, value: str | list[str]) -> str | list[str]:
        for i, text in enumerate([value] if isinstance(value, str) else value):
            if not text.strip():
                raise ValueError(f"text {i} is empty")
            if len(text) > MAX_CHARS:
                raise ValueError(
                    f"text {i} has {len(text):,} characters; the limit is {MAX_CHARS:,}"
                )
        return value

    @field_validator("label_schema", mode="after")
    @classmethod
    def _known_schema(cls, value: str | None) -> str | None:
        if value is not None:
            from giellm.data.registry import get_format

            try:
                get_format(value)
            except GiellmError as exc:
                raise ValueError(str(exc)) from None
        return value


class ExtractResponse(BaseModel):
    records: list[dict[str, Any]]
    label_scores: list[dict[str, float]] | None = None  # with "label_scores": true


class GenerationOptions(Body):
    """What OpenAI bodies share; sampling options are accepted, decoding is greedy."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    max_tokens: int = Field(64, ge=1, le=2048)
    stop: str | list[str] | None = None
    temperature: float | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int | None = Field(None, ge=1)
    tools: list[Any] | None = None

    def batch_key(self) -> tuple[str, int, tuple[str, ...]]:
        """Requests with the same settings can share a generation batch."""
        stops = (
            () if self.stop is None else (self.stop,) if isinstance(self.stop, str) else self.stop
        )
        return ("complete", self.max_tokens, tuple(stops))

    def unsupported(self) -> str | None:
        """Why this server cannot answer the request as OpenAI would, or None."""
        if self.n is not None and self.n > 1:
            return "n > 1 is not supported: decoding is greedy, every choice would be the same"
        if self.tools:
            return "tools are not supported: giellm extracts; ask for a task with `giellm`"
        return None


class CompletionRequest(GenerationOptions):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=MAX_TEXTS)]


class TextPart(Body):
    """One part of a message's content; only text parts exist for a text model."""

    type: Literal["text"]
    text: str


class ChatMessage(Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    @property
    def text(self) -> str:
        """The content as one string (parts joined, as OpenAI reads them)."""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class TaskRequest(Body):
    """The `giellm` extension of a chat body: run `task` on the last user message under the
    layout grammar; `labels` restricts the task's labels to a subset of the model's."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    task: TaskName
    label_schema: str | None = Field(None, alias="schema")
    labels: list[str] | None = None


class ChatRequest(GenerationOptions):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    response_format: dict[str, Any] | None = None
    giellm: TaskRequest | None = None

    def task(self) -> TaskRequest | None:
        """The extraction asked for: the `giellm` field, or a `json_schema` response format
        named after a task (`{"type": "json_schema", "json_schema": {"name": "NER", …}}`)."""
        if self.giellm is not None:
            return self.giellm
        form = self.response_format or {}
        if form.get("type") in (None, "text"):
            return None
        name = (form.get("json_schema") or {}).get("name")
        if form.get("type") != "json_schema" or name is None:
            raise GiellmError(
                "response_format: giellm answers JSON for a task: use "
                '{"type": "json_schema", "json_schema": {"name": TASK}} (TASK one of TC, SA, '
                'NER, RE, EE, PAS) or the giellm field {"task": TASK}'
            )
        try:
            return TaskRequest(task=name)
        except ValueError as exc:
            raise GiellmError(f"response_format.json_schema.name: {exc}") from None

    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user" and message.text.strip():
                return message.text
        raise GiellmError("messages: a task needs a user message with the text to read")


def render_chat(messages: Sequence[ChatMessage], tokenizer: Any) -> str:
    """Messages as one prompt: the tokenizer's chat template (a developer message is the
    system message of models that predate the role), else contents one per line."""
    if getattr(tokenizer, "chat_template", None):
        dicts = [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text}
            for m in messages
        ]
        rendered: str = tokenizer.apply_chat_template(
            dicts, tokenize=False, add_generation_prompt=True
        )
        return rendered
    return "\n".join(m.text for m in messages) + "\n"
