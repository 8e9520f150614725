"""Files of named arrays and one JSON header (model files, checkpoints): written
atomically, read without pickle.

A write goes to a temporary file beside the target (`.NAME.tmp`), is flushed to disk
and renamed over the target, so a crash mid-write leaves the previous file intact.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np


class Unreadable(ValueError):
    """The file is not an .npz with the expected JSON header; the message says why."""


def write(path: str | Path, header_key: str, header: dict[str, Any], arrays: dict) -> Path:
    """Writes `arrays` and `header` (JSON, under `header_key`) to `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **{header_key: np.array(json.dumps(header))}, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def read(path: str | Path, header_key: str) -> tuple[Any, dict[str, np.ndarray]]:
    """(header, arrays) of a file written by `write`; FileNotFoundError if there is no file,
    Unreadable if it is not one (a text file, a truncated or corrupt archive, no header)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise Unreadable("not an .npz archive (truncated, or another kind of file)")
    try:
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(str(z[header_key]))
            arrays = {k: z[k] for k in z.files if k != header_key}
    except KeyError:
        raise Unreadable(f"no {header_key!r} entry") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise Unreadable(f"corrupt: {e}") from e
    return header, arrays
