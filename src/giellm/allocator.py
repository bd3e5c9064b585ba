"""jemalloc for CPU training and batch inference, where the system has it.

Training: glibc's malloc slows steps 1.2-2.1x.

A training step on the CPU allocates and frees activations of every shape its batches have
(rows x length vary from step to step). glibc's malloc hands much of that back to the kernel and
faults it in again, and fragments the rest. Measured on Gemma 3 270M LoRA, same batches, 2 cores:
11.96 records/s with glibc against 14.55 with jemalloc keeping its freed pages on an idle host;
6.1 against 12.8 while the hypervisor stole CPU time (22M page faults in 2.5 minutes); memory
growing to 15 GB over a run with glibc, flat at 6.3-6.9 GB with jemalloc. The allocator is
chosen when the process starts, so `giellm train` re-executes itself once with jemalloc
preloaded (`LD_PRELOAD`) when it is installed (Debian/Ubuntu: `apt install libjemalloc2`) and
nothing else was preloaded.

Inference (`predict`, `serve`, `report`): glibc keeps much of the KV caches' and activations'
freed memory (534 stockmark dev sentences at batch 64: peak RSS 2,027-2,100 MiB; a server under
64 clients climbs from 1.8 to 2.1 GB in its first minute); jemalloc with its default decay hands
freed pages back within seconds (1,848-1,862 MiB; the server 1.6-1.9 GB), at the same speed
within this box's noise (`benchmarks/predict_allocator.py`, `benchmarks/serve_load.py`). These
commands re-execute the same way, without training's keep-everything setting.
`GIELLM_ALLOCATOR=system` keeps the system's malloc.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

JEMALLOC_PATHS = tuple(
    Path(d) / "libjemalloc.so.2"
    for d in (
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
        "/usr/local/lib",
    )
)
# training: freed pages stay with jemalloc for the next step's tensors instead of going back to
# the kernel; inference: jemalloc's own defaults (freed pages decay back within seconds)
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"
INFERENCE_COMMANDS = frozenset({"predict", "serve", "report"})
PRELOADED = ("jemalloc", "tcmalloc", "mimalloc")


def find_jemalloc(paths: tuple[Path, ...] = JEMALLOC_PATHS) -> Path | None:
    return next((p for p in paths if p.is_file()), None)


def jemalloc_environment(
    environ: Mapping[str, str], library: Path | None, conf: str | None = JEMALLOC_CONF
) -> dict[str, str] | None:
    """The environment to re-execute with, or None to run as is (no jemalloc, the user chose,
    an allocator already preloaded, or this is the re-executed process). A user's own
    MALLOC_CONF wins over `conf` (None: jemalloc's defaults)."""
    if library is None or environ.get("GIELLM_ALLOCATOR", "jemalloc") != "jemalloc":
        return None
    if any(name in environ.get("LD_PRELOAD", "") for name in PRELOADED):
        return None
    preload = " ".join(filter(None, (str(library), environ.get("LD_PRELOAD"))))
    chosen = dict(environ, LD_PRELOAD=preload)
    conf = environ.get("MALLOC_CONF") or conf
    if conf:
        chosen["MALLOC_CONF"] = conf
    return chosen


def _giellm_is_main() -> bool:
    """This process is the `giellm` command (not a test runner or an application calling the
    command in process, which re-executing would replace)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    command = Path(sys.argv[0]).name == "giellm"
    return command or (spec is not None and spec.name.startswith("giellm"))


def use_jemalloc(command: str | None) -> None:
    """Re-execute this command with jemalloc preloaded, where that applies (Linux only):
    `train` with freed pages kept, the batch inference commands with jemalloc's defaults."""
    if command != "train" and command not in INFERENCE_COMMANDS:
        return
    if not sys.platform.startswith("linux") or not _giellm_is_main():
        return
    conf = JEMALLOC_CONF if command == "train" else None
    environment = jemalloc_environment(os.environ, find_jemalloc(), conf)
    if environment is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environment)


def active_allocator(pid: int | str = "self") -> str:
    """The malloc a process (this one by default) runs on, for logs and benchmarks."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return "unknown"
    return next((name for name in PRELOADED if f"lib{name}" in maps), "system")
