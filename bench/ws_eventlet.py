"""``python -m bench.ws_eventlet PORT MAX_SIZE``: eventlet.websocket's echo for
``bench.ws``, on eventlet.wsgi, monkey-patched first as eventlet applications are."""

import eventlet

eventlet.monkey_patch()

import sys  # noqa: E402

import eventlet.wsgi  # noqa: E402

from bench.ws import eventlet_app  # noqa: E402


def main() -> None:
    port, max_size = map(int, sys.argv[1:3])
    sock = eventlet.listen(("127.0.0.1", port), backlog=2048)
    eventlet.wsgi.server(sock, eventlet_app(), log_output=False, max_size=max_size)


if __name__ == "__main__":
    main()
