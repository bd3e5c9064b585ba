"""One output folder, one run: a lock while it trains, its settings kept with each checkpoint.

Without these, `--resume` took the newest checkpoint in the folder whoever wrote it (run A's
for run B), two runs into one folder both "succeeded" with interleaved logs, and a new run
appended to an old run's log and rotated its checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import IO, Any

from giellm.errors import GiellmError
from giellm.training.config import TrainConfig

LOCK_FILE = ".giellm-train.lock"
SETTINGS_FILE = "settings.json"  # in checkpoint-N/state/, beside the position
# what may change between a run and its resumption: how long it trains, how often it saves,
# logs and evaluates, and kernels that compute the same function
MAY_CHANGE = frozenset(
    {
        "output_dir",
        "resume",
        "epochs",
        "max_steps",
        "save_every",
        "eval_every",
        "eval_generate",
        "save_total_limit",
        "log_every",
        "compile",
        "attn_implementation",
        "gradient_checkpointing",
    }
)


def lock(out: Path) -> IO[str]:
    """Hold `out` for this run (released when the process ends); a second run fails now."""
    import fcntl

    handle = (out / LOCK_FILE).open("a", encoding="utf-8")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise GiellmError(
            f"{out}: another giellm train is writing to it; wait for it or choose another "
            "--output-dir"
        ) from None
    return handle


def check_fresh(out: Path) -> None:
    """A new run (no --resume) into a folder that holds another run is refused: it would
    append to that run's log and rotate its checkpoints away."""
    found = sorted(p.name for p in out.glob("checkpoint-*")) + [
        name for name in ("base", "final", "train_log.jsonl") if (out / name).exists()
    ]
    if found:
        raise GiellmError(
            f"{out}: holds an earlier run ({', '.join(found[:3])}); --resume continues it, "
            "or choose an empty --output-dir"
        )


def settings_of(config: TrainConfig) -> dict[str, Any]:
    """The settings a resumed run must share with the run it continues."""
    data = dataclasses.asdict(config)
    return {k: v for k, v in data.items() if k not in MAY_CHANGE}


def save_settings(config: TrainConfig, state: Path) -> None:
    text = json.dumps(settings_of(config), ensure_ascii=False, sort_keys=True, default=str)
    (state / SETTINGS_FILE).write_text(text, encoding="utf-8")


def check_resumable(config: TrainConfig, state: Path) -> None:
    """Refuse to resume `state` under other settings than the run that saved it (a checkpoint
    from before settings were kept resumes as it always did; a setting that only one of the two
    versions of giellm has, renamed or new, is not compared)."""
    saved = state / SETTINGS_FILE
    if not saved.exists():
        return
    before = json.loads(saved.read_text(encoding="utf-8"))
    now = json.loads(json.dumps(settings_of(config), ensure_ascii=False, default=str))
    changed = sorted(k for k in before.keys() & now.keys() if before[k] != now[k])
    if changed:
        name = changed[0]
        raise GiellmError(
            f"{state.parent}: was trained with {name}={before.get(name)!r}, not "
            f"{now.get(name)!r}; resume with the same settings (only "
            f"{', '.join(sorted(MAY_CHANGE - {'output_dir', 'resume'}))} may change) or "
            "start a new --output-dir"
        )
