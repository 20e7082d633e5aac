"""PEP 3333: the environ, ``start_response``, ``write()`` and running the app's iterable.

:func:`build_environ` is a pure function of the parsed request. :class:`Responder` holds
one request's app-side state; its methods run in the app's worker thread and hand
:class:`Batch` es of response bytes back to the connection task.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar
from urllib.parse import unquote

from ._files import FileSpan, FileWrapper, file_span
from ._h11 import h11
from ._input import Input
from ._request import ABSOLUTE_FORM_RE
from ._response import ResponseHead, build_response

__all__ = [
    "AppBaseException",
    "Batch",
    "ConnectionInfo",
    "Responder",
    "WSGIApp",
    "build_environ",
    "call_posthooks",
    "in_app_thread",
]

if TYPE_CHECKING:
    from ._logging import ServerLog

T = TypeVar("T")

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
Write = Callable[[bytes], None]


class StartResponse(Protocol):
    def __call__(
        self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None, /
    ) -> Write: ...


WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

# Keys an app may set to change how its streamed output is batched (eventlet's is kept
# for migrating code).
CHUNK_SIZE_KEYS: Final = (
    "triowsgi.minimum_write_chunk_size",
    "eventlet.minimum_write_chunk_size",
)


@dataclasses.dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """What the environ needs to know about the connection a request came on."""

    url_scheme: str  # "http" or "https"
    server_name: str
    server_port: str
    remote_addr: str
    remote_port: str


def build_environ(
    request: h11.Request,
    info: ConnectionInfo,
    extra: Mapping[str, Any],
    wsgi_input: Input,
) -> dict[str, Any]:
    """The PEP 3333 environ for ``request``.

    ``extra`` (the ``environ`` option) goes on top of the ``wsgi.*`` defaults and under
    the per-request CGI keys, as in eventlet; an ``HTTP_*`` key in it gets the request's
    header appended (``"preset,sent"``).
    """
    posthooks: list[Any] = []
    environ: dict[str, Any] = {
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": info.url_scheme,
        "wsgi.input": wsgi_input,
        "eventlet.input": wsgi_input,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "wsgi.file_wrapper": FileWrapper,
        "triowsgi.posthooks": posthooks,
        "eventlet.posthooks": posthooks,
    }
    if info.url_scheme == "https":
        environ["HTTPS"] = "on"
    environ.update(extra)
    raw_path, query, authority = _split_target(request.target)
    environ.update(
        REQUEST_METHOD=request.method.decode("ascii"),
        SCRIPT_NAME="",
        RAW_PATH_INFO=raw_path,
        PATH_INFO=unquote(raw_path, encoding="latin-1"),
        SERVER_PROTOCOL="HTTP/" + request.http_version.decode("ascii"),
        SERVER_NAME=info.server_name,
        SERVER_PORT=info.server_port,
        REMOTE_ADDR=info.remote_addr,
        REMOTE_PORT=info.remote_port,
        GATEWAY_INTERFACE="CGI/1.1",
    )
    if query is not None:
        environ["QUERY_STRING"] = query
    _add_headers(environ, request.headers.raw_items())
    if authority is not None:
        # RFC 9112 §3.2.2: the target's authority, not the Host header, names the host.
        environ["HTTP_HOST"] = authority
    return environ


def _split_target(target: bytes) -> tuple[str, str | None, str | None]:
    """Path, query (``None`` without a ``?``) and authority (``None`` but in
    absolute-form) of a request target."""
    authority = None
    if target[:1] != b"/":  # origin-form, nearly always: no regex needed
        absolute = ABSOLUTE_FORM_RE.match(target)  # absolute-form, RFC 9112 §3.2.2
        if absolute is not None:
            authority = absolute[1].decode("ascii")  # h11 allows ASCII only in a target
            target = target[absolute.end() :]
    path, question, query = target.decode("latin-1").partition("?")
    # An absolute-form target may have an empty path ("http://host?q"): it means "/".
    return path or "/", (query if question else None), authority


def _add_headers(environ: dict[str, Any], raw_items: list[tuple[bytes, bytes]]) -> None:
    headers_raw = []
    first: dict[str, str] = {}  # CONTENT_TYPE/LENGTH: the first header, over any preset
    for raw_name, raw_value in raw_items:
        name = raw_name.decode("latin-1")
        value = raw_value.decode("latin-1")
        headers_raw.append((name, value))
        if "_" in name:
            continue  # X_Forwarded_For would collide with X-Forwarded-For: drop it
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            first.setdefault(key, value)
            continue
        key = "HTTP_" + key
        previous = environ.get(key)
        environ[key] = value if previous is None else f"{previous},{value}"
    environ.update(first)
    environ["headers_raw"] = tuple(headers_raw)


class ResponseChannel(Protocol):
    """What a :class:`Responder` needs of its connection (an object, not two bound
    methods: see :meth:`~._workers.WorkerPool.run` on objects held in flight)."""

    def must_close(self) -> bool:
        """Whether the connection ends with this response (for its head)."""

    def send_from_thread(self, batch: Batch) -> None:
        """In the app's thread: send ``batch``, blocking until it is written."""


@dataclasses.dataclass(slots=True)
class Batch:
    """Response bytes for the connection task to send.

    ``head`` is set when the response head has not gone out yet; ``done`` means the
    app's iterable is exhausted (and closed).
    """

    head: ResponseHead | None
    chunks: list[bytes]
    done: bool


class Responder:
    """One request's side of the app: ``start_response``, ``write()`` and the iterable.

    Every method except the constructor runs in a worker thread. ``write()`` sends its
    :class:`Batch` through ``channel`` from that thread. The result's ``close()`` is
    called exactly once, by whichever of :meth:`call_app`, :meth:`next_batch` or
    :meth:`close` sees the end.

    With ``sendfile``, a ``wsgi.file_wrapper`` result of a regular file is not iterated:
    :meth:`call_app` returns its head and sets :attr:`file` to the bytes the connection
    sends by sendfile before it calls :meth:`close`.
    """

    def __init__(
        self,
        app: WSGIApp,
        environ: dict[str, Any],
        *,
        method: bytes,
        minimum_chunk_size: int,
        capitalize_names: bool,
        channel: ResponseChannel,
        sendfile: bool = False,
    ) -> None:
        self._app = app
        self.environ = environ
        self._method = method
        self._chunk_size = minimum_chunk_size
        self._capitalize = capitalize_names
        self._channel = channel
        self._sendfile = sendfile
        # start_response's arguments as the app gave them (the head's building checks
        # them): typed for what may come, not for what should, as compiled code checks.
        self.status: object = None
        self.headers: Sequence[object] = ()  # as a list
        self.status_code = 0
        self.head_sent = False
        # The app took the connection over (see _upgrade.py): nothing of its response
        # is sent, whatever it returns.
        self.taken = False
        self._result: Iterable[object] | None = None
        self._iterator: Iterator[object] | None = None
        self._closed = False
        # Set by call_app when the body is a file for the connection task to send by
        # sendfile; the result is then closed by close() once it went out.
        self.file: FileSpan | None = None

    def start_response(
        self,
        status: object,
        headers: Iterable[object],
        exc_info: ExcInfo | None = None,
    ) -> Write:
        """PEP 3333's ``start_response``."""
        if exc_info is not None:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # break the frame <-> traceback cycle
        elif self.status is not None:
            raise AssertionError("start_response() called twice without exc_info")
        self.status = status
        self.headers = list(headers)
        return self.write

    def write(self, data: object) -> None:
        """PEP 3333's ``write()`` callable: sends ``data`` (and the head, the first time)."""
        if self.status is None:
            raise AssertionError("write() called before start_response()")
        self._channel.send_from_thread(Batch(self._head(None), [_as_bytes(data)], done=False))

    def call_app(self) -> Batch:
        """Call the app and collect its first batch (for a list: the whole response)."""
        try:
            result: Iterable[object] = self._app(self.environ, self.start_response)
            self._result = result
            if self.taken:
                self.close()
                return Batch(None, [], done=True)
            if isinstance(result, (list, tuple)):
                chunks = [_as_bytes(item) for item in result]
                length = sum(map(len, chunks))
                self.close()
                return Batch(self._head(length), chunks, done=True)
            self._iterator = iter(result)
            if self._sendfile and not self.head_sent and (span := file_span(result)):
                return self._file_batch(span)
            for key in CHUNK_SIZE_KEYS:
                if key in self.environ:
                    self._chunk_size = int(self.environ[key])
                    break
            return self._collect()
        except BaseException:
            self.close()
            raise

    def next_batch(self) -> Batch:
        """The next batch of a streamed result, at least ``minimum_chunk_size`` bytes
        unless the iterable ended."""
        try:
            return self._collect()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Call the result's ``close()``, if it has one and it was not called yet."""
        if self._closed:
            return
        self._closed = True
        close = getattr(self._result, "close", None)
        if close is not None:
            close()

    def _file_batch(self, span: FileSpan) -> Batch:
        """The head of a response whose body is ``span`` (:attr:`file`), Content-Length
        framed: the app's Content-Length, else the rest of the file. Without one (a 204
        or 304; a Transfer-Encoding the app set) the result is iterated as usual."""
        head = self._head(span.count)
        assert head is not None
        if head.content_length is not None and not head.chunked:
            self.file = FileSpan(span.fd, span.offset, head.content_length)
        return Batch(head, [], done=False)

    def _collect(self) -> Batch:
        assert self._iterator is not None
        chunks: list[bytes] = []
        size = 0
        for item in self._iterator:
            if item:
                data = _as_bytes(item)
                chunks.append(data)
                size += len(data)
                # HEAD sends no content: the first item is enough to know the headers.
                if size >= self._chunk_size or self._method == b"HEAD":
                    return Batch(self._head(None), chunks, done=False)
        self.close()
        return Batch(self._head(size if not self.head_sent else None), chunks, done=True)

    def _head(self, content_length: int | None) -> ResponseHead | None:
        """The response head, built once; ``None`` when it already went out."""
        if self.head_sent:
            return None
        if self.status is None:
            raise AssertionError("the application returned without calling start_response()")
        head = build_response(
            self.status,
            self.headers,
            capitalize_names=self._capitalize,
            content_length=content_length,
            close=self._channel.must_close(),
        )
        self.status_code = head.status_code
        self.head_sent = True
        return head


def _as_bytes(item: object) -> bytes:
    if type(item) is bytes:
        return item
    if isinstance(item, (bytearray, memoryview)):
        return bytes(item)
    raise TypeError(
        f"WSGI response body items must be bytes, not {type(item).__name__}: {item!r:.60}"
    )


class AppBaseException(Exception):
    """A ``BaseException`` (``KeyboardInterrupt``, ``SystemExit``, ...) raised by the app,
    carried as an ordinary application error: a 500 or an aborted body, and a log line."""


def in_app_thread(fn: Callable[..., T], *args: Any) -> T:
    # Python delivers signals to the main thread only, so a BaseException raised in a
    # worker thread is the app's own, never Ctrl-C; unwrapped it would cross every
    # `except Exception` on its way up and stop the whole server.
    try:
        return fn(*args)
    except Exception:
        raise
    except BaseException as exc:
        raise AppBaseException(f"the application raised {type(exc).__name__}") from exc


def call_posthooks(hooks: list[Any], environ: dict[str, Any], log: ServerLog) -> None:
    """Run each ``(func, args, kwargs)`` as ``func(environ, *args, **kwargs)``, in order;
    an exception is logged and the next hook still runs."""
    for hook in hooks:
        try:
            func, args, kwargs = hook
            func(environ, *args, **kwargs)
        except BaseException as exc:  # a worker thread: this can't be Ctrl-C
            log.exception(f"error in posthook {hook!r}", exc)
