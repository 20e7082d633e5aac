"""One view answering JSON, one reading a POST body."""

from django.http import HttpRequest, JsonResponse
from django.urls import path


def hello(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"framework": "django", "path": request.path})


def echo(request: HttpRequest) -> JsonResponse:
    # No CSRF middleware in these settings, so a plain POST reaches the view.
    return JsonResponse({"method": request.method, "body": request.body.decode()})


urlpatterns = [
    path("hello/", hello),
    path("echo/", echo),
]
