"""Posthooks: ``environ['triowsgi.posthooks']`` (alias ``eventlet.posthooks``, the same list)
holds ``(func, args, kwargs)``; after the response has been sent, each is called as
``func(environ, *args, **kwargs)``, in order, in a worker thread, and then the access line
is written.

Covered elsewhere: the alias is the same list object and every request gets a fresh one
(test_wsgi.py); a failing hook is logged and the next still runs (test_hostile_apps.py);
hooks run after a client vanished mid-body or mid-response (test_hostile_clients.py).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import trio
import trio.testing
from conftest import RawClient, StartServer, hello_app

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
OK = b"HTTP/1.1 200 OK"

Environ = dict[str, Any]


class Recorder:
    """A ``log`` option (an object with ``info``/``debug``/``error``) and a posthook that
    write to one list, so that their order can be checked."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.done = threading.Event()

    def info(self, message: str) -> None:
        self.events.append(("log", message))

    debug = error = info

    def hook(self, environ: Environ, *args: Any, **kwargs: Any) -> None:
        main = threading.current_thread() is threading.main_thread()
        self.events.append(("hook", environ["PATH_INFO"], args, kwargs, main))
        self.done.set()

    async def wait(self) -> None:
        assert await trio.to_thread.run_sync(self.done.wait, 5)

    @property
    def hooks(self) -> list[Any]:
        return [event[1:] for event in self.events if event[0] == "hook"]


async def get(port: int, request: bytes = GET) -> tuple[bytes, bytes]:
    client = await RawClient.connect(port)
    await client.send(request)
    with trio.fail_after(5):
        status, _, body = await client.read_response()
    await client.aclose()
    return status, body


async def test_hooks_run_in_order_with_their_arguments_after_the_response_in_a_thread(
    start_server: StartServer,
) -> None:
    release, all_ran = threading.Event(), threading.Event()
    calls: list[Any] = []

    def blocking_hook(environ: Environ, tag: str, *, key: str) -> None:
        # The test releases this only once it has read the whole response.
        assert release.wait(5)
        calls.append((tag, key, environ["app.marker"], threading.current_thread()))

    def hook(environ: Environ, *args: Any, **kwargs: Any) -> None:
        calls.append((args, kwargs, environ["app.marker"], threading.current_thread()))
        if len(calls) == 3:
            all_ran.set()

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        environ["app.marker"] = "the app's environ"
        environ["triowsgi.posthooks"].append((blocking_hook, ("first",), {"key": "k"}))
        environ["eventlet.posthooks"].append((hook, (1, 2), {}))  # the same list
        environ["triowsgi.posthooks"].append((hook, (), {"a": 3}))
        return hello_app(environ, start_response)

    server = await start_server(app)
    status, body = await get(server.port)  # complete while the first hook still blocks
    assert (status, body) == (OK, b"Hello, world!\n")
    assert calls == []
    release.set()
    assert await trio.to_thread.run_sync(all_ran.wait, 5)
    marker = "the app's environ"
    assert [call[:-1] for call in calls] == [
        ("first", "k", marker),
        ((1, 2), {}, marker),
        ((), {"a": 3}, marker),
    ]
    assert all(call[-1] is not threading.main_thread() for call in calls)


async def test_hooks_run_after_an_app_error(start_server: StartServer) -> None:
    recorder = Recorder()

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        environ["triowsgi.posthooks"].append((recorder.hook, ("after-500",), {}))
        raise RuntimeError("boom")

    server = await start_server(app, log=recorder)
    status, _ = await get(server.port, b"GET /fails HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == b"HTTP/1.1 500 Internal Server Error"
    await recorder.wait()
    assert recorder.hooks == [("/fails", ("after-500",), {}, False)]


async def test_the_access_line_comes_after_the_hooks(start_server: StartServer) -> None:
    recorder = Recorder()

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        environ["eventlet.posthooks"].append((recorder.hook, (), {}))
        return hello_app(environ, start_response)

    server = await start_server(app, log=recorder, log_format="access %(status_code)s")
    assert (await get(server.port))[0] == OK
    await recorder.wait()
    with trio.fail_after(5):  # the access line is written in the server's task
        while ("log", "access 200") not in recorder.events:
            await trio.testing.wait_all_tasks_blocked(cushion=0.01)
    kinds = [event[0] if event[0] == "hook" else event[1] for event in recorder.events]
    assert kinds.index("hook") < kinds.index("access 200")


@pytest.mark.parametrize("key", ["triowsgi.posthooks", "eventlet.posthooks"])
async def test_an_app_that_replaces_the_list_gets_its_new_list_run(
    start_server: StartServer, key: str
) -> None:
    recorder = Recorder()

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        environ[key] = [(recorder.hook, ("replaced",), {})]  # looked up after the response
        return hello_app(environ, start_response)

    server = await start_server(app)
    assert (await get(server.port))[0] == OK
    await recorder.wait()
    assert recorder.hooks == [("/", ("replaced",), {}, False)]
