"""triowsgi: a WSGI (PEP 3333) HTTP/1.1 server on Trio and h11.

``trio.run(triowsgi.serve, app, 8090)`` serves ``app``; ``triowsgi.server(sock, app)`` is
a drop-in for ``eventlet.wsgi.server``. Where and why it differs from eventlet:
docs/decisions.md.

What an app can catch from ``wsgi.input`` reads and ``write()``: :class:`ClientDisconnected`
(the client went away), :class:`SocketTimeout` (``socket_timeout`` or ``send_timeout``
expired), :class:`RequestBodyTimeout` (the body came too slowly; a 408),
:class:`RequestTooLarge` (a chunked body past ``max_body_size``; a 413) and
:class:`BadRequest` (a malformed chunked body; a 400). The last three are
:class:`HTTPError` s: let one through and the client gets its ``status``.
"""

from ._config import DEFAULT_LOG_FORMAT, Config
from ._dates import format_date_time
from ._errors import (
    BadRequest,
    ClientDisconnected,
    HTTPError,
    RequestBodyTimeout,
    RequestTooLarge,
    SocketTimeout,
)
from ._server import ServerHandle, serve, serve_listeners, server

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_LOG_FORMAT",
    "BadRequest",
    "ClientDisconnected",
    "Config",
    "HTTPError",
    "RequestBodyTimeout",
    "RequestTooLarge",
    "ServerHandle",
    "SocketTimeout",
    "format_date_time",
    "serve",
    "serve_listeners",
    "server",
]
