"""The HTTP service: extraction with dynamic batching, and OpenAI-compatible completion routes.

One model sits behind one worker thread (a model generates one batch at a time). A request
becomes model inputs (its texts cut into the windows the model reads, or its prompts) that the
fair batcher (`giellm.service.batching`) interleaves with other requests' inputs, so a large
request never holds the model for long; windows are merged back into one record per text. A
client that disconnects cancels its work. On SIGINT/SIGTERM every accepted request is answered
within the shutdown bound (`giellm.service.server`): finished, or refused with 503 before its
work starts.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Hashable, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse

from giellm.errors import GiellmError
from giellm.inference.extractor import Completion, Extractor
from giellm.layout.scores import at_least
from giellm.layout.windows import merge
from giellm.schema import Example, example_to_dict
from giellm.service.batching import Batcher, Refused
from giellm.service.bodies import (
    BodyLimit,
    ChatRequest,
    CompletionRequest,
    ExtractRequest,
    ExtractResponse,
    GenerationOptions,
    render_chat,
)
from giellm.tasks import LabelSchema, restrict

MAX_WAIT_MS = 10_000.0  # the longest a request may wait for others to batch with


def create_app(
    extractor: Extractor,
    *,
    model_name: str = "giellm",
    max_batch: int = 64,
    max_wait_ms: float = 10.0,
    max_body_bytes: int = 2_000_000,
    max_request_inputs: int = 1024,
    max_queued_inputs: int = 8192,
    body_seconds: float = 30.0,
) -> FastAPI:
    """The FastAPI app serving `extractor` (run it with uvicorn, or `giellm serve`).

    An input is one window of text (`/extract`) or one prompt; a request over
    `max_request_inputs` gets 413, one that would queue more than `max_queued_inputs` 503.
    """
    if not 0 <= max_wait_ms <= MAX_WAIT_MS:  # also refuses nan and inf: a lone request
        raise GiellmError(f"max_wait_ms must be within 0 and {MAX_WAIT_MS}, not {max_wait_ms}")
    batcher = Batcher(
        _runner(extractor),
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

    # no /docs page: its assets come from a CDN, blank offline; the schema is /openapi.json
    app = FastAPI(
        title="giellm", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.batcher = batcher
    app.add_middleware(BodyLimit, limit=max_body_bytes, seconds=body_seconds)
    _add_error_handlers(app)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": model_name, "batching": vars(batcher.stats)}

    @app.head("/health", include_in_schema=False)  # load balancers probe with HEAD
    async def health_head() -> Response:
        return Response(status_code=200)

    _add_extract_route(app, extractor, batcher)
    _add_openai_routes(app, extractor, batcher, model_name)
    return app


def _runner(extractor: Extractor) -> Any:
    """What the batcher's worker runs for a batch of one key: windows or prompts."""

    def run(key: Hashable, inputs: list[Any]) -> list[Any]:
        kind, option, more = cast(tuple[str, Any, Any], key)
        if kind == "extract":
            task, label_schema = option, more
            records = [Example(id=str(i), task=task, text=t) for i, t in enumerate(inputs)]
            return [p.example for p in extractor.predict(records, schema=label_schema)]
        if kind == "scores":  # whole texts: label_scores reads their label windows itself
            task, label_schema = option, more
            records = [Example(id=str(i), task=task, text=t) for i, t in enumerate(inputs)]
            return extractor.label_scores(records, schema=label_schema)
        max_tokens, stop = option, more
        return extractor.complete(inputs, max_tokens=max_tokens, stop=stop)

    return run


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        kind = request.headers.get("content-type", "")
        if request.method == "POST" and "json" not in kind.lower():  # not a pydantic puzzle
            wrong = f"send the body as JSON with Content-Type: application/json (got {kind!r})"
            return JSONResponse({"detail": wrong}, status_code=415)
        # pydantic's errors echo the input, which may not even encode (a lone surrogate):
        # answer with where and why only
        detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        if _openai_route(request):  # the SDK reads error.message
            where = ".".join(str(part) for part in detail[0]["loc"][1:]) if detail else None
            message = "; ".join(f"{'.'.join(map(str, d['loc']))}: {d['msg']}" for d in detail)
            return _openai_error(422, message, "invalid_request", where or None)
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> JSONResponse:
        headers = None if exc.retry_after is None else {"Retry-After": str(exc.retry_after)}
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=headers)

    @app.exception_handler(GiellmError)
    async def unusable(request: Request, exc: GiellmError) -> JSONResponse:
        if _openai_route(request):
            return _openai_error(422, str(exc), "invalid_request")
        return JSONResponse({"detail": str(exc)}, status_code=422)  # e.g. schema lacks the task

    @app.exception_handler(ClientGone)
    async def gone(request: Request, exc: ClientGone) -> Response:
        return Response(status_code=499)  # nginx's "client closed request"; nobody reads it


def _add_extract_route(app: FastAPI, extractor: Extractor, batcher: Batcher) -> None:
    @app.post("/extract")
    async def extract(body: ExtractRequest, request: Request) -> ExtractResponse:
        texts = [body.texts] if isinstance(body.texts, str) else body.texts
        schema = _schema(extractor, body.task, body.label_schema, body.labels)
        if body.label_scores and not extractor.schema(body.task, schema).labels:
            raise GiellmError(
                f"label_scores: {body.task} has no closed label set here; give a schema"
            )
        records = await _extract(request, extractor, batcher, texts, body.task, schema)
        scores = None
        if body.label_scores:
            scores = await _answer(request, batcher, ("scores", body.task, schema), texts)
        if body.threshold is not None:
            records = [at_least(r, body.threshold) for r in records]
        return ExtractResponse(records=[example_to_dict(r) for r in records], label_scores=scores)


def _schema(
    extractor: Extractor, task: str, name: str | None, labels: Sequence[str] | None
) -> LabelSchema | str | None:
    """The label sets a request asks for, checked now (a schema without the task, a label the
    model lacks: 422 before any work); the dataset's name where no labels narrow it, so that
    requests naming the same schema share batches."""
    schema = extractor.schema(task, name)
    return name if labels is None else restrict(schema, task, labels)


async def _extract(
    request: Request,
    extractor: Extractor,
    batcher: Batcher,
    texts: Sequence[str],
    task: str,
    schema: LabelSchema | str | None,
) -> list[Example]:
    """One record per text: its windows batched with other requests' work, merged back."""
    windows = [
        (i, start, end) for i, t in enumerate(texts) for start, end in extractor.windows_of(t, task)
    ]
    key = ("extract", task, schema)
    found = await _answer(request, batcher, key, [texts[i][s:e] for i, s, e in windows])
    parts: list[list[tuple[int, Example]]] = [[] for _ in texts]
    for (i, start, _), part in zip(windows, found, strict=True):
        parts[i].append((start, part))
    return [
        merge(Example(id=str(i), task=task, text=text), parts[i]) for i, text in enumerate(texts)
    ]


def _openai_route(request: Request) -> bool:
    return request.url.path.startswith("/v1/")


def _openai_error(status: int, message: str, code: str, param: str | None = None) -> JSONResponse:
    """An error as OpenAI's API writes it (the SDK reads `error.message`)."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    error = {"message": message, "type": kind, "param": param, "code": code}
    return JSONResponse({"error": error}, status_code=status)


def _refusal(body: GenerationOptions, model_name: str) -> JSONResponse | None:
    """A 404 for a model this server does not serve, a 400 for what it cannot do; else None."""
    if body.model is not None and body.model != model_name:
        message = f"The model `{body.model}` does not exist; this server serves `{model_name}`"
        return _openai_error(404, message, "model_not_found", "model")
    reason = body.unsupported()
    if reason is not None:
        return _openai_error(400, reason, "unsupported_parameter")
    return None


def _add_openai_routes(
    app: FastAPI, extractor: Extractor, batcher: Batcher, model_name: str
) -> None:
    @app.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest, request: Request) -> Any:
        if (refused := _refusal(body, model_name)) is not None:
            return refused
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        done: list[Completion] = await _answer(request, batcher, body.batch_key(), prompts)
        choices = [
            {"index": i, "text": c.text, "finish_reason": c.finish_reason, "logprobs": None}
            for i, c in enumerate(done)
        ]
        answer = _envelope("cmpl", "text_completion", model_name, choices, _usage(done))
        return _streamed(answer, body) if body.stream else answer

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatRequest, request: Request) -> Any:
        if (refused := _refusal(body, model_name)) is not None:
            return refused
        asked = body.task()
        if asked is not None:
            schema = _schema(extractor, asked.task, asked.label_schema, asked.labels)
            text = body.last_user_text()
            record = (await _extract(request, extractor, batcher, [text], asked.task, schema))[0]
            content = json.dumps(example_to_dict(record), ensure_ascii=False)
            finish, usage = "stop", None
        else:
            prompt = render_chat(body.messages, extractor.tokenizer)
            done: list[Completion] = await _answer(request, batcher, body.batch_key(), [prompt])
            content, finish, usage = done[0].text, done[0].finish_reason, _usage(done)
        message = {"role": "assistant", "content": content}
        choices = [{"index": 0, "message": message, "finish_reason": finish}]
        answer = _envelope("chatcmpl", "chat.completion", model_name, choices, usage)
        return _streamed(answer, body) if body.stream else answer

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_name, "object": "model"}]}


def _streamed(answer: dict[str, Any], body: GenerationOptions) -> StreamingResponse:
    """A finished answer as OpenAI's Server-Sent Events: a chunk with each choice's text, one
    with its finish reason, the usage where `stream_options.include_usage` asks, `[DONE]`.
    Generation is batched, so the text comes whole rather than token by token."""
    chat = answer["object"] == "chat.completion"
    kind = "chat.completion.chunk" if chat else "text_completion"
    head = {k: answer[k] for k in ("id", "created", "model")} | {"object": kind}
    chunks = []
    for choice in answer["choices"]:
        index = choice["index"]
        if chat:
            delta = {"role": "assistant", "content": choice["message"]["content"]}
            parts = [{"index": index, "delta": delta, "finish_reason": None}]
            parts.append({"index": index, "delta": {}, "finish_reason": choice["finish_reason"]})
        else:
            last = {"text": "", "finish_reason": choice["finish_reason"]}
            first = {"text": choice["text"], "finish_reason": None}
            parts = [{"index": index, "logprobs": None} | part for part in (first, last)]
        chunks += [head | {"choices": [part]} for part in parts]
    if (body.stream_options or {}).get("include_usage"):
        chunks.append(head | {"choices": [], "usage": answer["usage"]})
    lines = [f"data: {json.dumps(c, ensure_ascii=False)}\n\n" for c in chunks]
    lines.append("data: [DONE]\n\n")
    return StreamingResponse(iter(lines), media_type="text/event-stream")


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


def _usage(done: Sequence[Completion]) -> dict[str, int]:
    prompt = sum(c.prompt_tokens for c in done)
    completion = sum(c.completion_tokens for c in done)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _envelope(
    prefix: str, kind: str, model: str, choices: list[dict[str, Any]], usage: Any
) -> dict[str, Any]:
    return {
        "id": f"{prefix}-{uuid.uuid4().hex[:24]}",
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage,
    }


def _version() -> str:
    from importlib.metadata import version

    return version("giellm")
