"""The real `giellm serve` on a free loopback port: concurrent extraction, errors, OpenAI routes,
graceful shutdown. The server runs the embedded default model in its own process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from conftest import GIELLM
from giellm.data.registry import get_format, load
from giellm.inference.extractor import Extractor
from giellm.schema import example_to_dict


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(*args: str, timeout: float = 120) -> Server:
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [GIELLM, "serve", "--port", str(port), *args]
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out = process.communicate()[0].decode()
            pytest.fail(f"giellm serve exited with {process.returncode}: {out}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return Server(url, process)
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    process.communicate()
    pytest.fail(f"giellm serve did not answer /health within {timeout:.0f} s")


def _stop(server: Server) -> str:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGINT)
    out, _ = server.process.communicate(timeout=60)
    return out.decode()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    running = _start("--max-batch", "16", "--max-wait-ms", "50")
    yield running
    _stop(running)


def _check_record(record: dict[str, object], text: str, task: str, types: frozenset[str]) -> None:
    assert record["text"] == text
    assert record["task"] == task
    for e in record.get("entities", []):  # type: ignore[attr-defined]
        assert text[e["start"] : e["end"]] == e["text"]
        assert e["type"] in types


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(
    server: Server, data_dir: Path
) -> None:
    gold = load("stockmark", "dev", "NER", data_dir)[:48]
    types = get_format("stockmark").schema("NER").entity_types
    assert types is not None

    def ask(i: int) -> tuple[int, httpx.Response]:
        body = {"texts": [gold[i].text], "task": "NER", "schema": "stockmark"}
        return i, httpx.post(f"{server.url}/extract", json=body, timeout=120)

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(ask, range(len(gold))))
    for i, response in answers:
        assert response.status_code == 200, response.text
        (record,) = response.json()["records"]
        _check_record(record, gold[i].text, "NER", types)
    stats = httpx.get(f"{server.url}/health").json()["batching"]
    assert stats["inputs"] >= len(gold)
    assert stats["largest_batch"] > 1  # concurrent requests shared a generation batch
    assert stats["batches"] < stats["requests"]


def test_many_texts_in_one_request_and_text_level_tasks(server: Server, data_dir: Path) -> None:
    news = load("livedoor", "dev", "TC", data_dir)[:3]
    body = {"texts": [r.text for r in news], "task": "tc", "schema": "livedoor"}
    response = httpx.post(f"{server.url}/extract", json=body | {"label_scores": True}, timeout=120)
    assert response.status_code == 200, response.text
    records, scores = response.json()["records"], response.json()["label_scores"]
    labels = get_format("livedoor").schema("TC").labels
    assert [r["text"] for r in records] == [r.text for r in news]
    assert all(r["task"] == "TC" and r["label"] in labels for r in records)
    assert len(scores) == 3 and all(set(s) == labels for s in scores)
    assert all(abs(sum(s.values()) - 1) < 1e-6 for s in scores)
    unlabelled = {"texts": "ソニーはソニー銀行を持つ。", "task": "RE", "label_scores": True}
    refused = httpx.post(f"{server.url}/extract", json=unlabelled, timeout=30)
    assert refused.status_code == 422 and "no closed label set" in refused.text


def test_labels_narrow_a_task_to_a_subset(server: Server) -> None:
    text = "ソフトバンクグループの孫正義会長は福岡市で記者会見を開いた。"
    body = {"texts": text, "task": "NER", "schema": "stockmark", "labels": ["地名"]}
    response = httpx.post(f"{server.url}/extract", json=body, timeout=120)
    assert response.status_code == 200, response.text
    (record,) = response.json()["records"]
    assert all(e["type"] == "地名" for e in record["entities"])  # the server runs the tiny model
    assert all(text[e["start"] : e["end"]] == e["text"] for e in record["entities"])
    refused = httpx.post(f"{server.url}/extract", json=body | {"labels": ["惑星"]}, timeout=30)
    assert refused.status_code == 422 and "惑星" in refused.text


def test_items_carry_scores_and_a_threshold_drops_low_ones(server: Server) -> None:
    text = "ソフトバンクグループの孫正義会長は福岡市で記者会見を開いた。"
    body = {"texts": text, "task": "NER", "schema": "stockmark"}
    (record,) = httpx.post(f"{server.url}/extract", json=body, timeout=120).json()["records"]
    scores = sorted(e["score"] for e in record["entities"])
    assert scores and all(0 < s <= 1 for s in scores)
    cut = scores[len(scores) // 2]
    response = httpx.post(f"{server.url}/extract", json=body | {"threshold": cut}, timeout=120)
    (kept,) = response.json()["records"]
    assert kept.get("entities", []) == [e for e in record["entities"] if e["score"] >= cut]
    refused = httpx.post(f"{server.url}/extract", json=body | {"threshold": 1.2}, timeout=30)
    assert refused.status_code == 422 and "threshold" in refused.text


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"texts": "   ", "task": "NER"}, 422, "text 0 is empty"),
        ({"texts": [], "task": "NER"}, 422, "at least 1"),
        ({"texts": "東京", "task": "POS"}, 422, "unknown task 'POS'"),
        ({"texts": "東京", "task": "NER", "schema": "nope"}, 422, "nope"),
        ({"texts": "東京", "task": "NER", "colour": 1}, 422, "colour"),
        ({"task": "NER"}, 422, "texts"),
        ({"texts": "東京\ud800", "task": "NER"}, 422, "unpaired surrogate U+D800"),
        ({"texts": ["東京", "あ" * 100_001], "task": "NER"}, 422, "text 1 has 100,001 characters"),
        ({"texts": ["東京"] * 257, "task": "NER"}, 422, "at most 256"),
    ],
)
def test_bad_requests_get_clear_4xx(
    server: Server, body: dict[str, object], status: int, message: str
) -> None:
    raw = json.dumps(body)  # ASCII with \u escapes: carries even a lone surrogate as JSON may
    headers = {"content-type": "application/json"}
    response = httpx.post(f"{server.url}/extract", content=raw, headers=headers, timeout=30)
    assert response.status_code == status
    assert message in response.text


def test_odd_but_valid_texts_get_records_with_true_offsets(server: Server) -> None:
    texts = [
        "<p>ＳＯＮＹと任天堂</p>",
        "\u0007制御\x1b文字\tと改行\nの混じる文",
        "半角ｶﾀｶﾅと全角カタカナ、English and 日本語 mixed 😀",
        "。",
    ]
    response = httpx.post(f"{server.url}/extract", json={"texts": texts, "task": "NER"}, timeout=60)
    assert response.status_code == 200, response.text
    records = response.json()["records"]
    assert [r["text"] for r in records] == texts
    for r in records:
        for e in r.get("entities", []):
            assert r["text"][e["start"] : e["end"]] == e["text"]


def test_oversize_body_is_refused(server: Server) -> None:
    body = {"texts": "あ" * 1_000_000, "task": "NER"}
    response = httpx.post(f"{server.url}/extract", json=body, timeout=30)
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]


def test_openai_compatible_routes(server: Server) -> None:
    done = httpx.post(
        f"{server.url}/v1/completions",
        json={"model": "giellm-default", "max_tokens": 8,
              "prompt": ["ソニーは東京に本社を置く。固有表現抽出\n", "今日は"]},
        timeout=60,
    )  # fmt: skip
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["object"] == "text_completion"
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert all(isinstance(c["text"], str) for c in body["choices"])
    assert 0 < body["usage"]["completion_tokens"] <= 16
    chat = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "ソニーは東京に本社を置く。固有表現抽出"}],
              "max_tokens": 8, "stop": ";"},
        timeout=60,
    )  # fmt: skip
    assert chat.status_code == 200, chat.text
    message = chat.json()["choices"][0]["message"]
    assert message["role"] == "assistant"
    assert ";" not in message["content"]
    bad = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": []}, timeout=30)
    assert bad.status_code == 422


def _batching(server: Server) -> dict[str, int]:
    stats: dict[str, int] = httpx.get(f"{server.url}/health", timeout=30).json()["batching"]
    return stats


def test_shutdown_finishes_requests_in_flight(data_dir: Path) -> None:
    server = _start("--max-batch", "4", "--max-wait-ms", "0")
    texts = [r.text for r in load("stockmark", "dev", "NER", data_dir)[:12]]

    def ask(text: str) -> httpx.Response:
        return httpx.post(f"{server.url}/extract", json={"texts": text, "task": "NER"}, timeout=120)

    with ThreadPoolExecutor(max_workers=12) as pool:
        futures = [pool.submit(ask, t) for t in texts]
        while _batching(server)["requests"] < len(texts):  # all accepted: queued or generating
            time.sleep(0.02)
        # three batches of 4 run one after another: the later ones are still queued now
        assert any(not f.done() for f in futures)  # the signal really meets work in flight
        server.process.send_signal(signal.SIGTERM)
        answers = [f.result() for f in futures]
    log = server.process.communicate(timeout=60)[0].decode()  # no second signal: wait
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    assert [a.json()["records"][0]["text"] for a in answers] == texts
    assert server.process.returncode == 0, log
    assert "Application shutdown complete" in log


def test_a_lone_surrogate_anywhere_fails_only_its_own_request(server: Server) -> None:
    """Bodies carry `\\ud800` as JSON escapes; each such request gets 422, its batch-mates 200."""
    bad_bodies = [
        ("/v1/completions", '{"prompt": "\\ud800", "max_tokens": 2}'),
        ("/v1/completions", '{"prompt": "東京", "model": "\\ud800", "max_tokens": 2}'),
        ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "a\\udfff"}]}'),
        ("/extract", '{"texts": ["東京"], "task": "NER", "extra\\ud800": 1}'),
    ]
    good = {"prompt": "東京都", "max_tokens": 2}
    headers = {"content-type": "application/json"}
    with ThreadPoolExecutor(16) as pool:
        bad = [
            pool.submit(httpx.post, server.url + route, content=body, headers=headers, timeout=60)
            for route, body in bad_bodies
        ]
        fine = [
            pool.submit(httpx.post, server.url + "/v1/completions", json=good, timeout=60)
            for _ in range(8)
        ]
        assert [f.result().status_code for f in bad] == [422] * len(bad_bodies)
        assert [f.result().status_code for f in fine] == [200] * 8
    assert "surrogate" in bad[0].result().text


def test_the_body_limit_counts_bytes_read_not_the_header(server: Server) -> None:
    """A chunked body has no Content-Length; 3 MB of it still gets 413 (limit 2 MB)."""

    def chunks() -> Iterator[bytes]:
        yield b'{"texts": ["'
        for _ in range(300):
            yield b"x" * 10_000
        yield b'"], "task": "NER"}'

    response = httpx.post(
        server.url + "/extract",
        content=chunks(),
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 413 and "limit" in response.json()["detail"]
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200


# --- fairness, bounds and shutdown under load (issue 14, items 3 and 4) ----------------------

WINDOW, STEP = 256, 208  # the embedded model's windows: 256 characters, 48 of overlap


def _long_text(data_dir: Path, windows: int) -> str:
    """Real stockmark sentences run together to a text the model reads as `windows` windows."""
    sentences = "".join(r.text for r in load("stockmark", "dev", "NER", data_dir))
    length = WINDOW + (windows - 1) * STEP
    return (sentences * (length // len(sentences) + 1))[:length]


def _send_raw(url: str, path: str, body: dict[str, object]) -> socket.socket:
    """POST without reading the answer, on a socket the test can close (a client leaving)."""
    host, port = url.removeprefix("http://").split(":")
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    sock = socket.create_connection((host, int(port)))
    sock.sendall(head.encode() + data)
    return sock


def _wait_for(server: Server, done: Callable[[dict[str, int]], bool]) -> dict[str, int]:
    """Poll /health until `done(stats)` (no time limit: the condition is what matters)."""
    while not done(stats := _batching(server)):
        assert server.process.poll() is None, "the server died"
        time.sleep(0.05)
    return stats


@pytest.fixture(scope="module")
def fair_server() -> Iterator[Server]:
    running = _start(
        "--max-batch", "4", "--max-wait-ms", "0",
        "--max-request-inputs", "300", "--max-queued-inputs", "400",
    )  # fmt: skip
    yield running
    _stop(running)


def _start_large(server: Server, data_dir: Path, windows: int) -> tuple[socket.socket, int]:
    """A large request, sent and running (its first batch generated); returns its socket and
    the server's generated-input count before it."""
    before = _batching(server)
    assert before["queued_inputs"] == 0
    body = {"texts": _long_text(data_dir, windows), "task": "NER"}
    sock = _send_raw(server.url, "/extract", body)
    _wait_for(
        server, lambda s: s["requests"] > before["requests"] and s["inputs"] > before["inputs"]
    )
    return sock, before["inputs"]


def test_a_small_request_is_answered_while_a_large_one_runs(
    fair_server: Server, data_dir: Path
) -> None:
    """Before: the large request held the model worker until all its windows were done."""
    large, _ = _start_large(fair_server, data_dir, windows=250)  # ~63 batches of 4
    with large:
        small = httpx.post(
            f"{fair_server.url}/extract",
            json={"texts": "東京の新しい店は評判が良い。", "task": "SA"},
            timeout=120,
        )
        assert small.status_code == 200, small.text
        assert small.json()["records"][0]["task"] == "SA"
        assert _batching(fair_server)["queued_inputs"] > 0  # the large one is still running
    _wait_for(fair_server, lambda s: s["queued_inputs"] == 0)


def test_a_client_that_leaves_cancels_its_work(fair_server: Server, data_dir: Path) -> None:
    """Before: the work of a request whose client had gone ran on to the end."""
    cancelled = _batching(fair_server)["cancelled"]
    large, generated_before = _start_large(fair_server, data_dir, windows=250)
    large.close()
    stats = _wait_for(fair_server, lambda s: s["queued_inputs"] == 0)
    assert stats["cancelled"] == cancelled + 1
    assert stats["inputs"] - generated_before < 250  # the rest was dropped, not generated


def test_work_per_request_and_in_flight_is_bounded(fair_server: Server, data_dir: Path) -> None:
    url = f"{fair_server.url}/extract"
    too_large = httpx.post(
        url, json={"texts": _long_text(data_dir, 301), "task": "NER"}, timeout=60
    )
    assert too_large.status_code == 413
    assert "301 model inputs" in too_large.json()["detail"]
    assert "limit is 300" in too_large.json()["detail"]
    large, _ = _start_large(fair_server, data_dir, windows=300)
    with large:
        second = httpx.post(
            url, json={"texts": _long_text(data_dir, 200), "task": "NER"}, timeout=60
        )
        assert second.status_code == 503, second.text
        assert "queued" in second.json()["detail"] and second.headers["retry-after"] == "1"
    _wait_for(fair_server, lambda s: s["queued_inputs"] == 0)


def test_long_texts_are_windowed_by_the_server_as_by_the_library(
    fair_server: Server, data_dir: Path, embedded: Extractor
) -> None:
    """The server cuts texts into windows itself (to interleave them): same records as
    `Extractor.extract`, which windows inside."""
    texts = [
        _long_text(data_dir, 3),
        "日立製作所の山田太郎社長が会見した。",
        _long_text(data_dir, 5),
    ]
    served = httpx.post(
        f"{fair_server.url}/extract", json={"texts": texts, "task": "NER"}, timeout=120
    )
    assert served.status_code == 200, served.text
    local = embedded.configured(batch_size=4).extract(texts, task="NER")
    expected = json.loads(json.dumps([example_to_dict(r) for r in local]))
    records = served.json()["records"]
    # scores agree to float rounding (batches of other shapes sum in another order)
    scores = [[e.pop("score") for e in r.get("entities", [])] for r in (records, expected)[0]]
    wanted = [[e.pop("score") for e in r.get("entities", [])] for r in expected]
    assert records == expected
    assert scores == [pytest.approx(s, abs=1e-4) for s in wanted]


def test_sigterm_answers_every_accepted_request_within_the_bound(data_dir: Path) -> None:
    """12 requests of 60 windows (~180 batches) and a 6 s shutdown bound. Before: requests
    still queued when uvicorn's grace ran out got 500 or no answer."""
    grace = 6
    server = _start("--max-batch", "4", "--max-wait-ms", "0", "--grace-seconds", str(grace))
    body = {"texts": _long_text(data_dir, 60), "task": "NER"}

    def ask() -> httpx.Response:
        return httpx.post(f"{server.url}/extract", json=body, timeout=300)

    with ThreadPoolExecutor(max_workers=12) as pool:
        futures = [pool.submit(ask) for _ in range(12)]
        _wait_for(server, lambda s: s["requests"] == 12 and s["batches"] > 0)
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        answers = [f.result() for f in futures]
    log = server.process.communicate(timeout=120)[0].decode()
    took = time.monotonic() - signalled
    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {200, 503}, [a.text for a in answers]
    assert 503 in statuses  # the work did not fit: the rest was refused, not cut off
    for a in answers:
        if a.status_code == 503:
            assert "shutting down" in a.json()["detail"]
        else:
            assert a.json()["records"][0]["text"] == body["texts"]
    assert server.process.returncode == 0, log
    assert "timeout graceful shutdown exceeded" not in log  # uvicorn never had to cut work
    assert took < grace + 30, f"shutdown took {took:.0f} s"  # the bound, plus process exit
