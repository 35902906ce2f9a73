"""The app's outer layers and its 404s: :class:`OriginCheck` (a web page's request refused before it
runs), :class:`CleanPath` (the paths clients write, served as the routes they mean) and
:func:`missing_endpoint_hint` (what a client calling an endpoint that is not here should do)."""

from __future__ import annotations

import re
from urllib.parse import unquote

from ..errors import short
from .errors import ApiError


class OriginCheck:
    """Refuse (403) a request whose ``Origin`` header names a web page not let in by
    ``--allow-origin``, before it runs: a page may send a "simple" cross-site POST that skips the
    CORS preflight, and the job would run even though the page cannot read the answer (ollama
    refuses such requests too). Clients that are not browsers send no ``Origin``."""

    def __init__(self, app, allowed: tuple[str, ...] = ()):
        self.app, self.allowed = app, set(allowed)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and "*" not in self.allowed:
            origin = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"origin"), None)
            if origin is not None and origin not in self.allowed:
                from fastapi.responses import JSONResponse

                shown = short(origin, 80)
                body = ApiError(403, f"web pages on origin '{shown}' may not call this server (start it with "
                                     f"--allow-origin {shown} to let them)", "origin_not_allowed").body()
                await JSONResponse(body, status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


#: an absolute-form request target's scheme and authority (``http://host:port``), which h11 passes on
ABSOLUTE_FORM = re.compile(r"https?://[^/]*", re.IGNORECASE)


class CleanPath:
    """Serve ``/v1/chat/completions/`` and ``/v1//chat/completions`` as ``/v1/chat/completions``
    (clients join a base URL ending in ``/``): the path is taken without repeated or trailing
    slashes, where Starlette would answer a 307 whose ``Location`` comes from the client's
    ``Host`` header, with no body. An absolute-form target (``http://host/v1/models``) is served
    by its path."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            scope = self.cleaned(scope)
        await self.app(scope, receive, send)

    @staticmethod
    def cleaned(scope: dict) -> dict:
        """The scope with the slashes the client wrote cleaned; an escaped one (``%2F``) is part of
        a name and stays, as in the id of a model served from ``/abs/path`` that
        ``client.models.retrieve(id)`` asks for as ``/v1/models/%2Fabs%2Fpath``."""
        raw = scope.get("raw_path")
        try:  # uvicorn's path is the raw path, percent-decoded
            written = raw.decode("ascii") if isinstance(raw, bytes) else None
        except UnicodeDecodeError:
            written = None
        path = scope.get("path", "") if written is None else written  # no raw path: the decoded one
        origin = ABSOLUTE_FORM.match(path)
        if origin:  # `GET http://host/v1/models` (a client told this server is its proxy): routed by its
            path = path[origin.end():] or "/"  # path, as RFC 9112 3.2.2 asks (uvicorn's httptools protocol and nginx do)
            scope = {**scope, "path": unquote(path) if written is not None else path}
            if written is not None:
                scope["raw_path"] = path.encode("ascii")
        if len(path) <= 1 or not (path.endswith("/") or "//" in path):
            return scope
        trimmed = re.sub(r"/{2,}", "/", path).rstrip("/") or "/"  # also a base URL's '/' + '/v1/...'
        if written is None:
            return {**scope, "path": trimmed}
        return {**scope, "path": unquote(trimmed), "raw_path": trimmed.encode("ascii")}


#: what this server serves, for the hint of a 404
_ROUTES = ("/v1/chat/completions", "/v1/responses", "/v1/images/generations", "/v1/models")
#: OpenAI endpoints this server does not have, and what to say to a client that calls one
_NOT_SERVED = (
    (re.compile(r"/v1/completions$"), "the legacy completions API is not served here: send 'messages' to POST "
                                      "/v1/chat/completions"),
    (re.compile(r"/v1/embeddings$"), "embeddings are not served here: Show-o2 generates text and images"),
    (re.compile(r"/v1/responses/"), "this server stores no responses (store is off): POST /v1/responses answers "
                                    "at once, or as a stream"),
    (re.compile(r"/v1/messages(/|$)"), "Anthropic's Messages API is not served here: use an OpenAI client, with "
                                       "base URL http://HOST:PORT/v1, and POST /v1/chat/completions"),
    (re.compile(r"/v1/images/(edits|variations)$"), "image edits and variations are not served here: POST "
                                                     "/v1/images/generations makes images from a prompt"),
    (re.compile(r"/openai/deployments/"), "Azure OpenAI paths are not served here: use the OpenAI client, not the "
                                          "Azure one, with base URL http://HOST:PORT/v1"),
    # Ollama's own API (Open WebUI's and Continue's Ollama connections, LiteLLM's ollama/ models, the ollama
    # libraries probe /api/version, /api/tags, /api/show, then post to /api/chat or /api/generate)
    (re.compile(r"(/v1)?/api(/|$)"), "Ollama's API is not served here: this server speaks OpenAI's; set the client up "
                                 "as an OpenAI-compatible connection with base URL http://HOST:PORT/v1 (in LiteLLM "
                                 "the model 'openai/NAME', not 'ollama/NAME')"),
    (re.compile(r"(/v1)?/?$"), "this is showo2's OpenAI-compatible API: POST /v1/chat/completions, POST /v1/responses, POST "
                               "/v1/images/generations, GET /v1/models, GET /health"),
)


def missing_endpoint_hint(path: str) -> str:
    """What a client calling an endpoint that is not here should do instead ('' when nothing useful)."""
    for pattern, hint in _NOT_SERVED:
        if pattern.match(path):
            return f" ({hint})"
    if not path.startswith("/v1/") and any(r == "/v1" + path or (r == "/v1/models" and path.startswith("/models/"))
                                           for r in _ROUTES):
        return f" (the API is under /v1: is the client's base URL missing '/v1'? Try /v1{path})"
    return ""
