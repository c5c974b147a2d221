"""Atomic file writes: every file lenet writes (model files aside, which the engine writes the same way) goes to a
temporary file in the target's folder, is flushed to disk, and only then renamed over the target, so a user's
file is never left half-written."""
from __future__ import annotations

import os
import tempfile


def write_atomic(path, write, *, binary: bool = True) -> None:
    """write(file) fills a temporary file beside `path` (bytes or str are written as they are); then it replaces
    `path`. On any error the temporary file is removed and `path` is untouched."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            if isinstance(write, (bytes, bytearray, str)):
                f.write(write)
            else:
                write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
