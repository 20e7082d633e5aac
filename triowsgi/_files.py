"""PEP 3333's ``wsgi.file_wrapper``, and sending the file it wraps with ``os.sendfile``.

An app (Django's ``FileResponse``, werkzeug's ``wrap_file``, WhiteNoise) hands the server
an open file through ``environ["wsgi.file_wrapper"]``. Read as any iterable, every piece is
copied from the kernel into Python and back, and each batch of pieces costs a trip through
the app's thread. When the app returns the wrapper unchanged, the file is a regular file with a
descriptor, and the socket is a plain one, the file goes by non-blocking ``os.sendfile``
calls instead (the kernel copies from the page cache to the socket), as response bytes go
by direct writes (:mod:`._direct`): the app's thread makes the first call, which sends a
small file whole, and the connection task sends the rest, waiting for the socket in Trio
between calls as for any other write: no thread is held while a slow client reads.

The body is always Content-Length framed: the app's Content-Length, or the rest of the
file from its current position (``fstat``), which is exact for a regular file that does not
change while it is sent. A file shorter than that is the app's error, as any short body
is: the connection closes and the log says why. Anything else (TLS, a pipe, ``BytesIO``, a
text file, an empty or ``/proc`` file whose size says nothing, a response already started
with ``write()``) is read in ``block_size`` pieces like any iterable.

The response's framing (:mod:`._framing`) is told about the body with a :class:`FileSpan`
in place of its bytes: it counts only their ``len()``.
"""

from __future__ import annotations

import dataclasses
import io
import os
import stat
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final, final

from ._direct import DirectSocket
from ._framing import ResponseFraming

__all__ = [
    "SENDFILE",
    "FileEndedEarly",
    "FileSpan",
    "FileWrapper",
    "file_span",
    "send_span",
    "sendfile_now",
    "start_body",
]

# Linux, macOS and the BSDs have it; Windows does not (and has no direct socket either).
SENDFILE: Final = hasattr(os, "sendfile")
# The most one sendfile() call is asked for. A non-blocking socket takes only what fits in
# its buffer, but on loopback that can be several MiB; and on a cold page cache the call
# reads the file from disk on the Trio thread. Bounding it gives the other connections
# their turn in between, at the cost of one call per MiB.
SENDFILE_MAX: Final = 1024 * 1024
DEFAULT_BLOCK_SIZE: Final = 8192  # PEP 3333's example


@final
class FileWrapper:
    """``environ["wsgi.file_wrapper"]``: ``FileWrapper(filelike, block_size=8192)``.

    An iterable of ``filelike.read(block_size)`` pieces until one is empty, whose
    ``close()`` calls ``filelike.close()`` if it has one (PEP 3333, "Optional
    Platform-Specific File Handling"). Returned by the app unchanged, the server may send
    the file by ``os.sendfile`` instead of iterating it; ``close()`` is called either way.
    Middleware that iterates it, or wraps it in an iterable of its own, gets the pieces.
    """

    __slots__ = ("block_size", "filelike")

    def __init__(self, filelike: Any, block_size: int = DEFAULT_BLOCK_SIZE) -> None:
        self.filelike = filelike
        self.block_size = block_size

    def __iter__(self) -> Iterator[bytes]:
        read = self.filelike.read
        while data := read(self.block_size):
            yield data

    def close(self) -> None:
        """Close the file (``filelike.close()``, if it has one)."""
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()


@dataclasses.dataclass(frozen=True, slots=True)
class FileSpan:
    """``count`` bytes of the file open as ``fd``, from ``offset``: a body that goes by
    sendfile (its framing counts only its ``len()``)."""

    fd: int
    offset: int
    count: int

    def __len__(self) -> int:
        return self.count


class FileEndedEarly(Exception):
    """The file of a ``wsgi.file_wrapper`` response ended before its Content-Length:
    an application error, met after the head went out (the connection closes)."""


def file_span(result: object) -> FileSpan | None:
    """The rest of the file an app's ``result`` wraps, from its current position, when
    ``result`` is a :class:`FileWrapper` of a regular, non-empty binary file with a
    descriptor; None when the result must be iterated instead."""
    if type(result) is not FileWrapper:
        return None
    filelike = result.filelike
    if isinstance(filelike, io.TextIOBase):
        return None  # str pieces are the app's error; and tell() is an opaque cookie
    try:
        fd = filelike.fileno()
        if type(fd) is not int:
            return None
        status = os.fstat(fd)
        tell = getattr(filelike, "tell", None)
        # tell() counts what a buffered reader already read ahead; the descriptor's own
        # position would be past it.
        offset = tell() if tell is not None else os.lseek(fd, 0, os.SEEK_CUR)
    except (OSError, ValueError, AttributeError):  # BytesIO, a closed file, a socket-like
        return None
    if not stat.S_ISREG(status.st_mode) or type(offset) is not int:
        return None
    # st_size 0 may be a /proc or /sys file with content: only reading tells.
    count = status.st_size - offset
    return FileSpan(fd, offset, count) if count > 0 else None


def start_body(framing: ResponseFraming, span: FileSpan) -> None:
    """Tell ``framing`` that ``span``'s bytes are the body of the response it framed."""
    framing.file_body(len(span))  # (the Responder made the head Content-Length framed)


def sendfile_now(direct: DirectSocket, span: FileSpan) -> FileSpan | None:
    """One non-blocking ``sendfile`` of ``span`` (at most :data:`SENDFILE_MAX` bytes),
    from any thread; what is left of it, None when nothing.

    Raises:
        FileEndedEarly: the file has fewer bytes than ``span`` says.
        ClientDisconnected: the client went away (or the connection was closed).
        OSError: reading the file failed.
    """
    if not span.count:
        return None
    sent = direct.sendfile(span.fd, span.offset, min(span.count, SENDFILE_MAX))
    if sent is None:
        return span
    if sent == 0:
        raise FileEndedEarly(
            f"the file ended {span.count} bytes short of the response's Content-Length"
        )
    if sent == span.count:
        return None
    return FileSpan(span.fd, span.offset + sent, span.count - sent)


async def send_span(
    direct: DirectSocket, span: FileSpan, wait_writable: Callable[[], Awaitable[None]]
) -> None:
    """Send ``span`` from the Trio thread, awaiting ``wait_writable`` (the connection's
    limits on a client that does not read) whenever the socket is full. Between two
    calls the other connections get their turn.

    Raises:
        FileEndedEarly, ClientDisconnected, OSError: as :func:`sendfile_now`.
        Whatever ``wait_writable`` raises (a timeout).
    """
    while (rest := sendfile_now(direct, span)) is not None:
        span = rest
        await wait_writable()
