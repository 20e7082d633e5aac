"""triowsgi: a WSGI (PEP 3333) HTTP/1.1 server on Trio and h11.

``trio.run(triowsgi.serve, app, 8090)`` serves ``app``; ``triowsgi.server(sock, app)`` is
a drop-in for ``eventlet.wsgi.server``.
"""

from ._config import DEFAULT_LOG_FORMAT, Config
from ._dates import format_date_time
from ._errors import ClientDisconnected, RequestBodyTimeout, SocketTimeout
from ._server import ServerHandle, serve, serve_listeners, server

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_LOG_FORMAT",
    "ClientDisconnected",
    "Config",
    "RequestBodyTimeout",
    "ServerHandle",
    "SocketTimeout",
    "format_date_time",
    "serve",
    "serve_listeners",
    "server",
]
