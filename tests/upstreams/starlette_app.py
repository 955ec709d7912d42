"""Test upstream: a Starlette app under uvicorn (h11), routed by Starlette's
own router. scripts/upstreams.sh runs it:

    uvicorn --app-dir tests/upstreams starlette_app:app --http h11 ...

Handlers (the same four on every test upstream):

    /admin, /admin/...          admin
    /api/admin, /api/admin/...  api-admin
    /api, /api/...              api
    anything else               public

Each answers 200 JSON: the server, the handler that matched, the path as
Starlette saw it (uvicorn has percent-decoded it), the raw target as it
arrived, and every header with its name as uvicorn passed it (lower-cased
by h11), in order, repeated lines kept:

    {"server": "starlette", "handler": "admin", "path": "/admin/x",
     "raw": "/%61dmin/x?q=1", "headers": [["host", "app.example"], ...]}

GET /__received?prefix=P lists, one a line, the X-Request-Id of every
request that reached the app (also those no handler took) starting with P,
so that a test can count what arrived.
"""

import collections

from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
RECEIVED_PATH = "/__received"

# Request ids of what arrived, newest last (bounded: the server runs long).
received = collections.deque(maxlen=200_000)


def text(raw: bytes) -> str:
    # Latin-1 maps every byte to one character: nothing is lost or refused.
    return raw.decode("latin-1")


def handler(name):
    async def answer(request):
        scope = request.scope
        raw = text(scope.get("raw_path") or b"")
        query = text(scope.get("query_string") or b"")
        return JSONResponse(
            {
                "server": "starlette",
                "handler": name,
                "path": scope["path"],
                "raw": f"{raw}?{query}" if query else raw,
                "headers": [[text(k), text(v)] for k, v in scope["headers"]],
            }
        )

    return answer


async def list_received(request):
    prefix = request.query_params.get("prefix", "")
    lines = [rid for rid in received if rid.startswith(prefix)]
    return PlainTextResponse("".join(f"{rid}\n" for rid in lines))


class Recorder:
    """Notes the request id of every HTTP request before routing."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] != RECEIVED_PATH:
            ids = [text(v) for k, v in scope["headers"] if k == b"x-request-id"]
            received.append(ids[0] if ids else "-")
        await self.app(scope, receive, send)


routes = [Route(RECEIVED_PATH, list_received)]
for prefix, name in [("/admin", "admin"), ("/api/admin", "api-admin"), ("/api", "api")]:
    routes.append(Route(prefix, handler(name), methods=METHODS))
    routes.append(Route(prefix + "/{rest:path}", handler(name), methods=METHODS))
routes.append(Route("/{rest:path}", handler("public"), methods=METHODS))

app = Recorder(Starlette(routes=routes))
