"""The HTTP service: extraction with dynamic batching, and OpenAI-compatible completion routes.

One model sits behind one worker thread (a model generates one batch at a time). Concurrent
requests wait in a queue; the worker takes the oldest, gathers requests of the same kind that
arrive within `max_wait_ms` up to `max_batch` inputs, generates them as one batch and hands each
request its own results. On shutdown uvicorn stops accepting connections and the requests already
queued are finished before the worker stops.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Hashable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from giellm.errors import GiellmError
from giellm.generate import Completion, Extractor
from giellm.schema import Example, example_to_dict, unpaired_surrogate
from giellm.tasks import get_task

MAX_TEXTS = 256
MAX_CHARS = 100_000  # per text: longer ones would hold the model for minutes


@dataclass
class _Job:
    key: Hashable
    inputs: list[Any]
    future: asyncio.Future[list[Any]]


@dataclass
class BatchStats:
    """What the batcher did (served at /health; tests read it to see batching happen)."""

    requests: int = 0
    inputs: int = 0
    batches: int = 0
    largest_batch: int = 0
    errors: int = 0


@dataclass
class Batcher:
    """Merges concurrent jobs with the same key into one call of `run(key, inputs)`."""

    run: Callable[[Hashable, list[Any]], list[Any]]
    max_batch: int = 64
    max_wait: float = 0.01
    stats: BatchStats = field(default_factory=BatchStats)

    def __post_init__(self) -> None:
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._held: deque[_Job] = deque()  # jobs of another key, taken while gathering
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="giellm-model")
        self._task: asyncio.Task[None] | None = None

    async def submit(self, key: Hashable, inputs: Sequence[Any]) -> list[Any]:
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self.stats.requests += 1
        await self._queue.put(_Job(key, list(inputs), future))
        return await future

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """Finish every queued job, then stop the worker."""
        while self._held or not self._queue.empty():
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=True)

    async def _next(self, timeout: float | None) -> _Job | None:
        if self._held:
            return self._held.popleft()
        if timeout is None:
            return await self._queue.get()
        try:
            return await asyncio.wait_for(self._queue.get(), max(timeout, 0))
        except TimeoutError:
            return None

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._next(None)
            assert first is not None
            jobs, size = [first], len(first.inputs)
            deadline = loop.time() + self.max_wait
            others: list[_Job] = []
            while size < self.max_batch and (job := await self._next(deadline - loop.time())):
                if job.key == first.key and size + len(job.inputs) <= self.max_batch:
                    jobs.append(job)
                    size += len(job.inputs)
                else:
                    others.append(job)
                    if len(others) > self.max_batch:
                        break
            self._held.extend(others)
            inputs = [x for job in jobs for x in job.inputs]
            try:
                results = await loop.run_in_executor(self._executor, self.run, first.key, inputs)
            except Exception as exc:  # one failed batch fails its own requests, not the server
                self.stats.errors += 1
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            self.stats.batches += 1
            self.stats.inputs += size
            self.stats.largest_batch = max(self.stats.largest_batch, size)
            offset = 0
            for job in jobs:
                if not job.future.done():
                    job.future.set_result(results[offset : offset + len(job.inputs)])
                offset += len(job.inputs)


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
) -> FastAPI:
    """The FastAPI app serving `extractor` (run it with uvicorn, or `giellm serve`)."""

    def run(key: Hashable, inputs: list[Any]) -> list[Any]:
        kind, option, more = cast(tuple[str, Any, Any], key)
        if kind == "extract":
            task, label_schema = option, more
            records = [Example(id=str(i), task=task, text=t) for i, t in enumerate(inputs)]
            return [p.example for p in extractor.predict(records, schema=label_schema)]
        max_tokens, stop = option, more
        return extractor.complete(inputs, max_tokens=max_tokens, stop=stop)

    batcher = Batcher(run, max_batch=max_batch, max_wait=max_wait_ms / 1000)

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

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": model_name, "batching": vars(batcher.stats)}

    @app.post("/extract")
    async def extract(body: ExtractRequest) -> ExtractResponse:
        texts = [body.texts] if isinstance(body.texts, str) else body.texts
        key = ("extract", body.task, body.label_schema)
        try:
            found = await batcher.submit(key, texts)
        except GiellmError as exc:  # e.g. a schema with no label sets for this task
            return JSONResponse({"detail": str(exc)}, status_code=422)  # type: ignore[return-value]
        return ExtractResponse(records=[example_to_dict(r) for r in found])

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest) -> dict[str, Any]:
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        done: list[Completion] = await batcher.submit(body.batch_key(), prompts)
        choices = [
            {"index": i, "text": c.text, "finish_reason": c.finish_reason, "logprobs": None}
            for i, c in enumerate(done)
        ]
        return _envelope("cmpl", "text_completion", body.model or model_name, choices, done)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest) -> dict[str, Any]:
        prompt = render_chat(body.messages, extractor.tokenizer)
        done: list[Completion] = await batcher.submit(body.batch_key(), [prompt])
        message = {"role": "assistant", "content": done[0].text}
        choices = [{"index": 0, "message": message, "finish_reason": done[0].finish_reason}]
        return _envelope("chatcmpl", "chat.completion", body.model or model_name, choices, done)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_name, "object": "model"}]}

    return app


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
    """Serve until SIGINT/SIGTERM, finish the requests in flight, then return normally."""
    import uvicorn

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
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
