"""One view: a user's page, rendered from a template with a context."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path

ITEMS = 10  # rows of the page's table


def user(request: HttpRequest, user_id: int) -> HttpResponse:
    context = {
        "user_id": user_id,
        "page": request.GET.get("page", "1"),
        "request_id": request.headers.get("X-Request-Id", ""),
        "items": [{"n": n, "name": f"item {n}", "active": n % 2 == 0} for n in range(ITEMS)],
    }
    return render(request, "user.html", context)


urlpatterns = [path("django/users/<int:user_id>/", user)]
