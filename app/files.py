"""Files written whole or not at all: one temporary name per writer, then a rename.

A reader that races the writer (a download as a job ends, a status poll during an experiment, a
second process exporting the same model) sees the old file, no file, or the whole new one."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed over ``path`` when the block ends
    without an error, removed otherwise. The folder must exist: a file is never written into a
    folder that was deleted meanwhile (a job's, as it is being deleted)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_whole(path: Path, data: bytes | str) -> None:
    with replacing(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data)
        else:
            tmp.write_bytes(data)


def folder_bytes(folder: Path) -> int:
    """Bytes in a folder's files (not its subfolders); 0 for a folder that is not there."""
    return sum(p.stat().st_size for p in folder.glob("*") if p.is_file()) if folder.is_dir() else 0
