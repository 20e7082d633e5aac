"""One view answering JSON, one reading a POST body, one sending a file."""

import io
import os
import sys
from typing import Any

from django.core.signals import request_finished
from django.http import FileResponse, HttpRequest, JsonResponse
from django.urls import path


def hello(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"framework": "django", "path": request.path})


def echo(request: HttpRequest) -> JsonResponse:
    # No CSRF middleware in these settings, so a plain POST reaches the view.
    return JsonResponse({"method": request.method, "body": request.body.decode()})


class ReportingReader(io.BufferedReader):
    """A file that says on stderr when Python reads it (sendfile does not)."""

    def read(self, size: int | None = -1) -> bytes:
        print("django file read", file=sys.stderr, flush=True)
        return super().read(size)


def download(request: HttpRequest) -> FileResponse:
    """The file named by $TRIOWSGI_TEST_FILE from its tenth byte on."""
    file = ReportingReader(io.FileIO(os.environ["TRIOWSGI_TEST_FILE"]))
    file.seek(10)
    return FileResponse(file)


def _finished(sender: Any, **kwargs: Any) -> None:
    # Sent by the response's close(): the server closed what the app returned.
    print("django request finished", file=sys.stderr, flush=True)


request_finished.connect(_finished)

urlpatterns = [
    path("hello/", hello),
    path("echo/", echo),
    path("download/", download),
]
