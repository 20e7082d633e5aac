"""The ``file`` scenario's file: where it is, its size, and writing it once.

Apart from :mod:`bench.apps` so that the harness can write it without importing the app
(and with it Flask and Django).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Final

__all__ = ["FILE_BLOCK_SIZE", "FILE_PATH", "FILE_SIZE", "ensure_file"]

FILE_SIZE: Final = 16 * 1024 * 1024
# PEP 3333's example block size, and werkzeug's wrap_file's (Flask's send_file).
FILE_BLOCK_SIZE: Final = 8192
FILE_PATH: Final = Path(tempfile.gettempdir()) / f"triowsgi-bench-{FILE_SIZE}.bin"


def ensure_file() -> Path:
    """Write the ``file`` scenario's file if it is missing (atomically: servers may race)."""
    if not (FILE_PATH.exists() and FILE_PATH.stat().st_size == FILE_SIZE):
        part = FILE_PATH.with_name(f"{FILE_PATH.name}.{os.getpid()}")
        part.write_bytes(bytes(range(256)) * (FILE_SIZE // 256))
        os.replace(part, FILE_PATH)
    return FILE_PATH
