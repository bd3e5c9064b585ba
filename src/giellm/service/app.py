"""The HTTP service: extraction with dynamic batching, and OpenAI-compatible completion routes.

One model sits behind one worker thread (a model generates one batch at a time). A request
becomes model inputs (its texts cut into the windows the model reads, or its prompts) that the
fair batcher (`giellm.service.batching`) interleaves with other requests' inputs, so a large request
never holds the model for long; windows are merged back into one record per text. A client
that disconnects cancels its work. On SIGINT/SIGTERM uvicorn stops accepting connections and
every accepted request is answered within the shutdown bound: finished, or refused with 503
before its work starts.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Hashable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Annotated, Any, Literal, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from giellm.errors import GiellmError
from giellm.inference.extractor import Completion, Extractor
from giellm.layout.windows import merge
from giellm.schema import Example, example_to_dict, unpaired_surrogate
from giellm.service.batching import Batcher, Refused
from giellm.tasks import get_task

MAX_TEXTS = 256
MAX_CHARS = 100_000  # per text: longer ones would hold the model for minutes


# --- request and response bodies ----------------------------------------------------------------


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413, counted on the bytes as
    they arrive (`Content-Length` may be absent, as with chunked transfer, or wrong)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            if len(body) > self.limit:
                detail = f"request body is over {self.limit} bytes, the limit"
                await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
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


class _Body(BaseModel):
    """Every request body: a string that is not valid Unicode (a lone surrogate, anywhere:
    text, prompt, message, model, stop, an extra key) is refused before any work, so it never
    reaches the tokenizer and fails the other requests batched with it."""

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        if found := _surrogate_in(data, "body"):
            raise ValueError(found)
        return data


class ExtractRequest(_Body):
    """`texts`: one text or a list; `schema`: a dataset whose label sets constrain the output."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    texts: str | Annotated[list[str], Field(min_length=1, max_length=MAX_TEXTS)]
    task: str
    label_schema: str | None = Field(None, alias="schema")

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

    @field_validator("task", mode="after")
    @classmethod
    def _known_task(cls, value: str) -> str:
        try:
            return get_task(value).name
        except GiellmError as exc:
            raise ValueError(str(exc)) from None

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


class _GenerationOptions(_Body):
    """What OpenAI bodies share; sampling options are accepted, decoding is greedy."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    max_tokens: int = Field(64, ge=1, le=2048)
    stop: str | list[str] | None = None
    temperature: float | None = None

    def batch_key(self) -> tuple[str, int, tuple[str, ...]]:
        """Requests with the same settings can share a generation batch."""
        stops = (
            () if self.stop is None else (self.stop,) if isinstance(self.stop, str) else self.stop
        )
        return ("complete", self.max_tokens, tuple(stops))


class CompletionRequest(_GenerationOptions):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=MAX_TEXTS)]


class ChatMessage(_Body):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(_GenerationOptions):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]


def render_chat(messages: Sequence[ChatMessage], tokenizer: Any) -> str:
    """Messages as one prompt: the tokenizer's chat template, else contents one per line."""
    if getattr(tokenizer, "chat_template", None):
        dicts = [m.model_dump() for m in messages]
        rendered: str = tokenizer.apply_chat_template(
            dicts, tokenize=False, add_generation_prompt=True
        )
        return rendered
    return "\n".join(m.content for m in messages) + "\n"


def _usage(done: Sequence[Completion]) -> dict[str, int]:
    prompt = sum(c.prompt_tokens for c in done)
    completion = sum(c.completion_tokens for c in done)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


# --- the app ------------------------------------------------------------------------------------


def create_app(
    extractor: Extractor,
    *,
    model_name: str = "giellm",
    max_batch: int = 64,
    max_wait_ms: float = 10.0,
    max_body_bytes: int = 2_000_000,
    max_request_inputs: int = 1024,
    max_queued_inputs: int = 8192,
) -> FastAPI:
    """The FastAPI app serving `extractor` (run it with uvicorn, or `giellm serve`).

    An input is one window of text (`/extract`) or one prompt; a request over
    `max_request_inputs` gets 413, one that would queue more than `max_queued_inputs` 503.
    """

    def run(key: Hashable, inputs: list[Any]) -> list[Any]:
        kind, option, more = cast(tuple[str, Any, Any], key)
        if kind == "extract":
            task, label_schema = option, more
            records = [Example(id=str(i), task=task, text=t) for i, t in enumerate(inputs)]
            return [p.example for p in extractor.predict(records, schema=label_schema)]
        max_tokens, stop = option, more
        return extractor.complete(inputs, max_tokens=max_tokens, stop=stop)

    batcher = Batcher(
        run,
        max_batch=max_batch,
        max_wait=max_wait_ms / 1000,
        max_request=max_request_inputs,
        max_queued=max_queued_inputs,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="giellm", version=_version(), lifespan=lifespan)
    app.state.batcher = batcher

    app.add_middleware(BodyLimit, limit=max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # pydantic's errors echo the input, which may not even encode (a lone surrogate):
        # answer with where and why only
        detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> JSONResponse:
        headers = None if exc.retry_after is None else {"Retry-After": str(exc.retry_after)}
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=headers)

    @app.exception_handler(GiellmError)
    async def unusable(request: Request, exc: GiellmError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)  # e.g. schema lacks the task

    @app.exception_handler(ClientGone)
    async def gone(request: Request, exc: ClientGone) -> Response:
        return Response(status_code=499)  # nginx's "client closed request"; nobody reads it

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": model_name, "batching": vars(batcher.stats)}

    @app.post("/extract")
    async def extract(body: ExtractRequest, request: Request) -> ExtractResponse:
        texts = [body.texts] if isinstance(body.texts, str) else body.texts
        extractor.schema(body.task, body.label_schema)  # refuse a schema without the task now
        windows = [
            (i, start, end)
            for i, t in enumerate(texts)
            for start, end in extractor.windows_of(t, body.task)
        ]
        key = ("extract", body.task, body.label_schema)
        found = await _answer(request, batcher, key, [texts[i][s:e] for i, s, e in windows])
        parts: list[list[tuple[int, Example]]] = [[] for _ in texts]
        for (i, start, _), part in zip(windows, found, strict=True):
            parts[i].append((start, part))
        records = [
            merge(Example(id=str(i), task=body.task, text=text), parts[i])
            for i, text in enumerate(texts)
        ]
        return ExtractResponse(records=[example_to_dict(r) for r in records])

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> dict[str, Any]:
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        done: list[Completion] = await _answer(request, batcher, body.batch_key(), prompts)
        choices = [
            {"index": i, "text": c.text, "finish_reason": c.finish_reason, "logprobs": None}
            for i, c in enumerate(done)
        ]
        return _envelope("cmpl", "text_completion", body.model or model_name, choices, done)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request) -> dict[str, Any]:
        prompt = render_chat(body.messages, extractor.tokenizer)
        done: list[Completion] = await _answer(request, batcher, body.batch_key(), [prompt])
        message = {"role": "assistant", "content": done[0].text}
        choices = [{"index": 0, "message": message, "finish_reason": done[0].finish_reason}]
        return _envelope("chatcmpl", "chat.completion", body.model or model_name, choices, done)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_name, "object": "model"}]}

    return app


class ClientGone(Exception):
    """The client disconnected before its answer; nothing is sent."""


async def _answer(request: Request, batcher: Batcher, key: Hashable, inputs: list[Any]) -> Any:
    """The batcher's results for `inputs`; if the client disconnects first, its work is
    cancelled (inputs not yet generated are dropped) instead of running on for nobody."""
    job = batcher.submit(key, inputs)
    gone: asyncio.Future[Any] = asyncio.ensure_future(_disconnected(request))
    waited: list[asyncio.Future[Any]] = [job.future, gone]
    try:
        await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not job.future.done():
            batcher.cancel(job)  # the client left, or this handler was cancelled
    if job.future.cancelled():
        raise ClientGone
    return job.future.result()


async def _disconnected(request: Request) -> None:
    """Returns once the client has gone (the body is read by now; what is left is that)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _envelope(
    prefix: str, kind: str, model: str, choices: list[dict[str, Any]], done: Sequence[Completion]
) -> dict[str, Any]:
    return {
        "id": f"{prefix}-{uuid.uuid4().hex[:24]}",
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": _usage(done),
    }


def _version() -> str:
    from importlib.metadata import version

    return version("giellm")


def run_server(app: FastAPI, *, host: str, port: int, grace_seconds: int = 60) -> None:
    """Serve until SIGINT/SIGTERM, answer every accepted request within `grace_seconds`
    (finished, or 503 before its work starts), then return normally."""
    import uvicorn

    batcher: Batcher = app.state.batcher
    # the batcher's own deadline leaves room for the last batch's answers to be written
    # before uvicorn cancels whatever is left at `grace_seconds`
    batcher_deadline = max(0.5 * grace_seconds, min(0.9 * grace_seconds, grace_seconds - 2))

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            batcher.begin_shutdown(batcher_deadline)
            super().handle_exit(sig, frame)
            # uvicorn re-raises the signal once shut down, turning a clean stop into a
            # KeyboardInterrupt traceback or a kill; the shutdown already was graceful
            self._captured_signals.clear()

    config = uvicorn.Config(app, host=host, port=port, timeout_graceful_shutdown=grace_seconds)
    _Server(config).run()


@contextmanager
def background_server(app: FastAPI, *, host: str = "127.0.0.1") -> Iterator[str]:
    """Run `app` with uvicorn on a free loopback port in a thread; yields its base URL."""
    import socket
    import threading

    import uvicorn

    with socket.socket() as probe:
        probe.bind((host, 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="giellm-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise GiellmError(f"the local server on {host}:{port} did not start")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
