"""Small file-system facts every writer shares: the umask, a file's SHA-256, a writable folder."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def umask() -> int:
    """The process's umask (reading it means setting it: put straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_of(path: Path) -> str:
    """The hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def probe_folder(path: Path) -> None:
    """Make `path` (with its parents) and write a throwaway file in it; raises `OSError` when
    it cannot be written (no permission, a read-only mount, a file in the way). Permission
    bits say little to root, so the probe is a real write."""
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=path):
        pass
