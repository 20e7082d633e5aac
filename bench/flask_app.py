"""The Flask route of the ``flask`` load: what a JSON API's handler does on every request.

``GET /flask/users/<int:user_id>?fields=...&page=N`` with an ``X-Request-Id`` header: Flask
routes the path (a converter), reads the query string and the header, and answers with
``jsonify``. No database: the framework's and the server's costs are what is measured.
"""

from __future__ import annotations

from typing import Final

from flask import Flask, Response, jsonify, request

ITEMS: Final = 10  # list entries in each answer, as a page of a listing would have

app = Flask(__name__)


@app.get("/flask/users/<int:user_id>")
def user(user_id: int) -> Response:
    fields = request.args.get("fields", "name").split(",")
    page = request.args.get("page", 1, type=int)
    return jsonify(
        id=user_id,
        fields=fields,
        page=page,
        request_id=request.headers.get("X-Request-Id", ""),
        items=[{"n": n, "name": f"item {n}", "active": n % 2 == 0} for n in range(ITEMS)],
    )
