"""Server load: `giellm serve` on loopback under 1, 8, 32 and 64 concurrent clients.

Starts the real server (embedded model, dynamic batching), then for each concurrency level sends
stockmark dev sentences as one-text /extract requests from that many client threads for a fixed
number of requests; records throughput, p50/p95 latency, errors, and that every answer carries
its own text back. Then head-of-line blocking: one client sends one-sentence requests back to
back while one large request (16 texts of 6,000 characters) runs, and their latency is recorded.
Writes results/serve_load.json.

The server is started as `python -m giellm serve` (the command, so it runs on jemalloc where
installed, as `giellm serve` does; `GIELLM_ALLOCATOR=system` measures glibc's malloc), so
`PYTHONPATH=OTHER/src` measures another checkout (a before/after comparison).

Run: OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/serve_load.py [--requests N]
     [--levels 1,8,32] [--soak-seconds S] [--large-texts N --large-chars C]
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from machine import describe
from rich.progress import Progress

from giellm.allocator import active_allocator
from giellm.data.registry import load

GIELLM = [sys.executable, "-m", "giellm"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(max_batch: int, max_wait_ms: float) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    command = [*GIELLM, "serve", "--port", str(port), "--max-batch", str(max_batch)]
    command += ["--max-wait-ms", str(max_wait_ms)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("server did not start")


def rss_mib(pid: int) -> float:
    """Resident memory of the server process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def level(url: str, texts: list[str], clients: int, progress: Progress) -> dict[str, object]:
    job = progress.add_task(f"{clients} clients", total=len(texts))
    latencies: list[float] = []
    errors = mismatched = 0

    def ask(text: str) -> tuple[float, bool, bool]:
        started = time.perf_counter()
        try:
            r = httpx.post(
                f"{url}/extract",
                json={"texts": text, "task": "NER", "schema": "stockmark"},
                timeout=300,
            )
            ok = r.status_code == 200
            same = ok and r.json()["records"][0]["text"] == text
        except httpx.HTTPError:
            ok = same = False
        progress.advance(job)
        return time.perf_counter() - started, ok, same

    before = httpx.get(f"{url}/health").json()["batching"]
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for seconds, ok, same in pool.map(ask, texts):
            latencies.append(seconds)
            errors += not ok
            mismatched += ok and not same
    wall = time.perf_counter() - started
    after = httpx.get(f"{url}/health").json()["batching"]
    batches = after["batches"] - before["batches"]
    cuts = statistics.quantiles(latencies, n=20)
    return {
        "clients": clients,
        "requests": len(texts),
        "errors": errors,
        "mismatched": mismatched,
        "wall_seconds": round(wall, 2),
        "requests_per_second": round(len(texts) / wall, 2),
        "latency_p50_s": round(statistics.median(latencies), 3),
        "latency_p95_s": round(cuts[18], 3),
        "mean_batch": round((after["inputs"] - before["inputs"]) / max(batches, 1), 2),
    }


def head_of_line(url: str, texts: list[str], count: int, chars: int) -> dict[str, object]:
    """Latency of one-sentence requests sent back to back while a large request (`count`
    texts of `chars` characters) runs."""
    import threading

    joined = "".join(texts)
    large = [(joined * 2)[i * 997 : i * 997 + chars] for i in range(count)]
    finished = threading.Event()
    large_seconds: list[float] = []

    def run_large() -> None:
        started = time.perf_counter()
        body = {"texts": large, "task": "NER", "schema": "stockmark"}
        status = httpx.post(f"{url}/extract", json=body, timeout=3600).status_code
        large_seconds.append(time.perf_counter() - started)
        finished.set()
        assert status == 200, status

    thread = threading.Thread(target=run_large)
    thread.start()
    time.sleep(1.0)  # the large request is taken first
    latencies: list[float] = []
    while not finished.is_set():
        text = texts[len(latencies) % len(texts)]
        started = time.perf_counter()
        r = httpx.post(f"{url}/extract", json={"texts": text, "task": "NER"}, timeout=3600)
        assert r.status_code == 200, r.text
        latencies.append(time.perf_counter() - started)
    thread.join()
    return {
        "large_request": f"{count} texts x {chars:,} characters",
        "large_seconds": round(large_seconds[0], 2),
        "small_requests_during_large": len(latencies),
        "small_latency_p50_s": round(statistics.median(latencies), 3),
        "small_latency_max_s": round(max(latencies), 3),
    }


def soak(url: str, pid: int, texts: list[str], clients: int, seconds: float) -> dict[str, object]:
    """`clients` threads sending requests back to back for `seconds`; RSS sampled every 5 s."""
    import threading

    deadline = time.monotonic() + seconds
    lock = threading.Lock()
    counts = {"served": 0, "errors": 0, "mismatched": 0}

    def client(k: int) -> None:
        i = k
        with httpx.Client(timeout=300) as http:
            while time.monotonic() < deadline:
                text = texts[i % len(texts)]
                i += clients
                try:
                    r = http.post(f"{url}/extract", json={"texts": text, "task": "NER"})
                    ok = r.status_code == 200
                    same = ok and r.json()["records"][0]["text"] == text
                except httpx.HTTPError:
                    ok = same = False
                with lock:
                    counts["served"] += ok
                    counts["errors"] += not ok
                    counts["mismatched"] += ok and not same

    workers = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for w in workers:
        w.start()
    samples = [rss_mib(pid)]
    while any(w.is_alive() for w in workers):
        time.sleep(5)
        samples.append(rss_mib(pid))
    return {"clients": clients, "seconds": seconds, **counts, "rss_mib_samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--levels", default="1,8,32,64")
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--max-wait-ms", type=float, default=20)
    parser.add_argument("--soak-seconds", type=float, default=60, help="64-client soak; 0: none")
    parser.add_argument("--large-texts", type=int, default=16, help="head-of-line request")
    parser.add_argument("--large-chars", type=int, default=6000, help="characters per text")
    parser.add_argument("--out", default="results/serve_load.json")
    args = parser.parse_args()
    texts = [r.text for r in load("stockmark", "dev", "NER")][: args.requests]
    process, url = start(args.max_batch, args.max_wait_ms)
    malloc = active_allocator(process.pid)  # the server is healthy: any re-execution is behind it
    rows = []
    try:
        with Progress() as progress:
            for clients in args.levels.split(","):
                rows.append(level(url, texts, int(clients), progress))
                rows[-1]["server_rss_mib_after"] = rss_mib(process.pid)
        soaked = soak(url, process.pid, texts, 64, args.soak_seconds) if args.soak_seconds else None
        every = [r.text for r in load("stockmark", "dev", "NER")]
        blocking = head_of_line(url, every, args.large_texts, args.large_chars)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    result = {
        "server": f"giellm serve --max-batch {args.max_batch} --max-wait-ms {args.max_wait_ms}",
        "model": "embedded default",
        "malloc": malloc,
        "levels": rows,
        "lost_or_mismatched": sum(r["errors"] + r["mismatched"] for r in rows),
        "soak": soaked,
        "head_of_line": blocking,
        "machine": describe(),
    }
    print(json.dumps(result, indent=1))
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
