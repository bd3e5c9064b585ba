"""Shared fixtures: the real datasets in ../shared/data and helpers to run the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from giellm.data.registry import FORMATS, DatasetFormat, dataset_path, shared_data_dir

GIELLM = str(Path(sys.executable).parent / "giellm")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared data; CI always has it, so its absence fails there and skips elsewhere."""
    found = shared_data_dir()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("../shared/data is missing in CI")
        pytest.skip("no shared data directory (set GIELLM_DATA)")
    return found


def shared_cases() -> list[tuple[DatasetFormat, str, str]]:
    """Every (format, task, split) of the shared datasets."""
    return [
        (fmt, task, split)
        for fmt in FORMATS.values()
        if fmt.folder
        for task in fmt.tasks
        for split in fmt.splits
    ]


def shared_path(data_dir: Path, fmt_name: str, split: str) -> Path:
    return dataset_path(FORMATS[fmt_name], split, data_dir)


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed `giellm` command for real."""
    return subprocess.run(
        [GIELLM, *args], capture_output=True, text=True, cwd=cwd, timeout=120, check=False
    )
