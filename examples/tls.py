"""HTTPS with triowsgi: ``serve(..., ssl_context=...)`` on port 8443.

Run it with your own certificate and key (PEM files; the key may be in the certificate
file)::

    python examples/tls.py cert.pem key.pem

or with no arguments, to make a throwaway self-signed certificate for ``localhost`` with
trustme (``pip install trustme``); its CA is written to ``triowsgi-example-ca.pem`` in the
current directory. Then, from another terminal::

    curl --cacert triowsgi-example-ca.pem https://localhost:8443/

(``curl -k https://localhost:8443/`` skips verification instead.) Ctrl-C stops it.

eventlet's way, ``eventlet.wsgi.server(eventlet.wrap_ssl(sock, certfile=...,
keyfile=..., server_side=True), app)``, works too: ``triowsgi.server`` takes an
ssl-wrapped listening socket.
"""

from __future__ import annotations

import ssl
import sys
from collections.abc import Callable, Iterable
from typing import Any

CA_FILE = "triowsgi-example-ca.pem"


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = f"Hello over {environ['wsgi.url_scheme']} (HTTPS={environ.get('HTTPS')})\n"
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
    return [body.encode()]


def ssl_context(argv: list[str]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    if argv:
        certfile, keyfile = argv[0], (argv[1] if len(argv) > 1 else None)
        context.load_cert_chain(certfile, keyfile)
        return context
    import trustme  # only for the self-signed demo certificate

    ca = trustme.CA()
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    ca.cert_pem.write_to_path(CA_FILE)
    print(f"self-signed certificate; its CA is in {CA_FILE}", file=sys.stderr)
    return context


if __name__ == "__main__":
    import trio

    import triowsgi

    trio.run(lambda: triowsgi.serve(app, 8443, ssl_context=ssl_context(sys.argv[1:])))
