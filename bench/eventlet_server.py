"""``python -m bench.eventlet_server PORT MAX_SIZE BACKLOG``: eventlet.wsgi serving
:func:`bench.apps.app` the way eventlet applications run, monkey-patched."""

import eventlet

eventlet.monkey_patch()

import sys  # noqa: E402

import eventlet.wsgi  # noqa: E402

from bench.apps import app  # noqa: E402


def main() -> None:
    port, max_size, backlog = map(int, sys.argv[1:4])
    sock = eventlet.listen(("127.0.0.1", port), backlog=backlog)
    eventlet.wsgi.server(sock, app, log_output=False, max_size=max_size)


if __name__ == "__main__":
    main()
