"""The FastAPI app over one resident model: routes, authentication, streaming (the jobs it runs: :mod:`.jobs`)."""

from __future__ import annotations

import asyncio
import copy
import hmac
import json
import logging
import math
import secrets
import signal
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import UsageError, short
from ..serve_config import DRAIN_TIMEOUT
from .body import BODIES_AT_ONCE, BodyBudget, check_off_loop, read_json
from .errors import ApiError, api_error_of, shutting_down
from .jobs import chat_job, images_job
from .jobs import decoding_batch as decoding_batch  # (re-exported: it was first here)
from .middleware import CleanPath, OriginCheck, missing_endpoint_hint
from .requests import ChatPlan, ServerConfig, notices_field, parse_chat, parse_images
from .responses import parse_responses, stream_events
from .tools import ToolStream
from .worker import Job, QueueFull, Worker

try:  # module level: FastAPI resolves the handlers' (string) annotations in these globals
    from fastapi import Request
except ImportError:  # pragma: no cover - serve checks for FastAPI before it gets here
    Request = None

log = logging.getLogger("showo2.serve")
#: the served names a request for another model is told (``/v1/models`` lists them all)
NAMES_SHOWN = 4


async def next_event(request: Request, job: Job, worker: Worker) -> tuple[str, Any]:
    """The job's next event; the job is cancelled if the client goes away meanwhile (looked at every
    0.25 s, however fast the events come)."""
    loop = asyncio.get_running_loop()
    while True:
        if loop.time() >= job.look_again:
            job.look_again = loop.time() + 0.25
            if await request.is_disconnected():
                worker.cancel(job)
                raise ApiError(499, "client disconnected", "cancelled")
        try:
            return await asyncio.wait_for(job.events.get(), timeout=0.25)
        except asyncio.TimeoutError:
            continue
        except asyncio.CancelledError:  # uvicorn gave up on the drain: answer, do not die in a 500
            worker.cancel(job)
            raise shutting_down() from None


# ---- the app --------------------------------------------------------------------------------------

def create_app(model, config: ServerConfig):
    """The FastAPI app serving ``model`` (a loaded :class:`~showo2_cli.loading.Showo2`; a
    ``Showo2Pipeline``'s is ``pipe.model``)."""
    from fastapi import FastAPI

    from ..loading import Showo2, require_model

    if isinstance(model, (str, Path)) or isinstance(getattr(model, "model", None), Showo2):
        require_model(model)  # (a pipeline or a name here started a server that answered 500 to every request)
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    config.validate()  # a Python caller's limits as the command line's (max_queue=-1 refused all waiting)
    config.check_attention(getattr(getattr(model, "network", None), "attn", "sdpa"))
    worker = Worker(config.max_queue, config.parallel,
                    decoding_batch(model, config.max_num_batched_tokens) if config.parallel > 1 else None)
    budget = BodyBudget(BODIES_AT_ONCE * config.max_body_bytes)
    state = {"draining": False, "started": time.time()}

    @asynccontextmanager
    async def lifespan(app):
        worker.start()
        try:
            yield
        finally:
            state["draining"] = True
            await asyncio.to_thread(worker.stop)

    app = FastAPI(title="showo2", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.worker = worker
    app.state.server_state = state
    if config.allow_origins:  # browsers on these origins may call the API (the key is still checked)
        import inspect

        from starlette.middleware.cors import CORSMiddleware

        extra = {"allow_private_network": True} if "allow_private_network" in \
            inspect.signature(CORSMiddleware.__init__).parameters else {}
        # SDKs send their own headers; a page's SDK reads Retry-After (429, 503) and x-should-retry (a
        # 500 that would fail again) only when they are exposed
        app.add_middleware(CORSMiddleware, allow_origins=list(config.allow_origins), allow_methods=["GET", "POST"],
                           allow_headers=["*"], expose_headers=["Retry-After", "x-should-retry"], max_age=600,
                           **extra)
    app.router.redirect_slashes = False
    app.add_middleware(CleanPath)
    app.add_middleware(OriginCheck, allowed=config.allow_origins)  # outermost: before anything runs

    def error(exc: BaseException) -> JSONResponse:
        err = api_error_of(exc)
        headers = {"Retry-After": "1"} if err.status in (429, 503) else None
        if err.status == 408:  # the rest of a body that came too slowly is not read: no next request
            headers = {"Connection": "close"}
        if err.status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        if err.retry is not None:  # the OpenAI SDKs retry every 500 twice: not one that would fail again
            headers = {**(headers or {}), "x-should-retry": "true" if err.retry else "false"}
        return JSONResponse(err.body(), status_code=err.status if err.status != 499 else 400, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = "no such endpoint" if exc.status_code == 404 else str(exc.detail)
        message = f"{message}: {request.method} '{short(request.url.path, 120)}'"
        if exc.status_code == 404:
            message += missing_endpoint_hint(request.url.path)
        response = error(ApiError(exc.status_code, message, code))
        response.headers.update(getattr(exc, "headers", None) or {})  # 405: Starlette's Allow header
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc):
        return error(ApiError(400, "invalid request", "invalid_request"))

    @app.exception_handler(Exception)
    async def unexpected(request, exc):
        return error(exc)

    def check(request: Request) -> None:
        if state["draining"]:
            raise ApiError(503, "the server is shutting down", "shutting_down", type_="server_error")
        if config.api_key:
            header = request.headers.get("authorization", "")
            scheme, _, token = header.partition(" ")
            good = hmac.compare_digest(token.strip().encode(), config.api_key.encode())
            if scheme.lower() != "bearer" or not good:
                what = "no API key given" if not header else "wrong API key"
                raise ApiError(401, f"{what}: send 'Authorization: Bearer KEY'", "invalid_api_key")

    def check_model(body: dict) -> None:
        name = body.get("model")
        if name is None or name == "":  # absent or empty: the served model (vLLM's rule for "")
            return
        if not isinstance(name, str):
            raise ApiError(400, "'model' must be a string", "invalid_type", "model")
        if name not in names:  # a few of the names, each shortened: 3,000 aliases made a 1.3 MB error
            served = ", ".join(f"'{short(n, 80)}'" for n in names[:NAMES_SHOWN])
            if len(names) > NAMES_SHOWN:
                served += f" and {len(names) - NAMES_SHOWN:,} more names: GET /v1/models lists them"
            raise ApiError(404, f"model {name[:80]!r} is not served here (this server serves {served})",
                           "model_not_found", "model")

    async def request_body(request: Request) -> dict:
        """A POST's JSON object, after the key and drain checks, for the served model."""
        check(request)
        body = await read_json(request, config.max_body_bytes, config.request_timeout, budget)
        check_model(body)
        return body

    names = (config.model_id, *dict.fromkeys(a for a in config.model_aliases if a != config.model_id))

    def model_card(name: str) -> dict:
        return {"id": name, "object": "model", "created": int(state["started"]), "owned_by": "showo2"}

    def submit(fn, generation: bool = False) -> Job:
        job = Job(fn, asyncio.get_running_loop(), generation)
        try:
            worker.submit(job)
        except QueueFull:
            raise ApiError(429, f"the server is busy ({worker.waiting} requests waiting): retry later",
                           "queue_full", type_="rate_limit_error") from None
        return job

    async def outcome(request: Request, job: Job):
        """Wait for the job's result (skipping streamed pieces); raise its error."""
        while True:
            kind, value = await next_event(request, job, worker)
            if kind == "done":
                return value
            if kind == "error":
                raise value

    @app.api_route("/health", methods=["GET", "HEAD"])
    async def health():
        return JSONResponse({"status": "draining" if state["draining"] else "ok", "model": config.model_id,
                             "version": __version__, "running": worker.running is not None,
                             "running_jobs": len(worker.jobs), "parallel": config.parallel,
                             "queued": worker.waiting, "max_queue": config.max_queue,
                             **{**worker.counts, "rejected": worker.counts["rejected"] + budget.rejected}},
                            status_code=503 if state["draining"] else 200)

    @app.api_route("/v1/models", methods=["GET", "HEAD"])
    async def list_models(request: Request):
        try:
            check(request)
            return JSONResponse({"object": "list", "data": [model_card(n) for n in names]})  # (vLLM's: each name)
        except Exception as e:
            return error(e)

    @app.api_route("/v1/models/{name:path}", methods=["GET", "HEAD"])
    async def get_model(name: str, request: Request):
        try:
            check(request)
            check_model({"model": name})
            return JSONResponse(model_card(name))
        except Exception as e:
            return error(e)

    def check_bias(plan: ChatPlan) -> None:
        outside = sorted(t for t in plan.logit_bias or {} if t >= model.spec.vocab_size)
        if outside:
            raise ApiError(400, f"'logit_bias': token id {outside[0]} is not in the vocabulary (0 to "
                                f"{model.spec.vocab_size - 1})", "invalid_value", "logit_bias")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        try:
            body = await request_body(request)
            plan = await check_off_loop(parse_chat, body, config)  # (a tool's grammar may take seconds)
            check_bias(plan)
            job = submit(lambda job: chat_job(model, config, plan, job))
            rid = "chatcmpl-" + secrets.token_hex(12)
            created = int(time.time())
            if not plan.stream:
                result = await outcome(request, job)
                return JSONResponse({
                    "id": rid, "object": "chat.completion", "created": created, "model": config.model_id,
                    "system_fingerprint": f"showo2-{__version__}",
                    "choices": [{"index": 0, "message": _message(result), "logprobs": None,
                                 "finish_reason": result["finish_reason"]}],
                    "usage": _usage(result), **notices_field(result)})
            first = await next_event(request, job, worker)  # an error before the first token keeps its status
            if first[0] == "error":
                raise first[1]
        except Exception as e:
            return error(e)
        return StreamingResponse(_sse(request, job, first, rid, created, plan),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def chunk(rid: str, created: int, delta: dict, finish: str | None = None, extra: dict | None = None) -> str:
        payload = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": config.model_id,
                   "system_fingerprint": f"showo2-{__version__}",
                   "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
                   **(extra or {})}
        return f"data: {json.dumps(payload)}\n\n"

    async def _sse(request: Request, job: Job, first, rid: str, created: int, plan: ChatPlan):
        event = first
        split = ToolStream(plan.tools)
        try:
            yield chunk(rid, created, {"role": "assistant", "content": ""})
            while True:
                kind, value = event
                if kind in ("text", "done"):
                    parts = split.feed(value) if kind == "text" else split.finish(value["content"],
                                                                                  value["tool_calls"])
                    for delta in filter(None, map(_delta, parts)):
                        yield chunk(rid, created, delta)
                if kind == "done":
                    yield chunk(rid, created, {}, value["finish_reason"], notices_field(value))
                    if plan.include_usage:
                        usage = {"id": rid, "object": "chat.completion.chunk", "created": created,
                                 "model": config.model_id, "choices": [], "usage": _usage(value)}
                        yield f"data: {json.dumps(usage)}\n\n"
                    break
                elif kind == "error":
                    yield f"data: {json.dumps(api_error_of(value).body())}\n\n"
                    break
                event = await job.events.get()
            yield "data: [DONE]\n\n"
        finally:
            if not (event and event[0] in ("done", "error")):
                worker.cancel(job)  # the client went away (or the server is cancelling): stop generating

    @app.post("/v1/responses")
    async def responses(request: Request):
        plan = None
        try:
            plan = await check_off_loop(parse_responses, await request_body(request), config)
            check_bias(plan.chat)
            job = submit(lambda job: chat_job(model, config, plan.chat, job))
            if not plan.chat.stream:
                result = await outcome(request, job)
                return JSONResponse(plan.response(text=result["content"], result=result))
            first = await next_event(request, job, worker)  # an error before the first token keeps its status
            if first[0] == "error":
                raise first[1]
        except Exception as e:
            return error(e if plan is None else plan.renamed(e))
        return StreamingResponse(stream_events(plan, first, job.events.get, lambda: worker.cancel(job)),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/v1/images/generations")
    async def images_generations(request: Request):
        try:
            body = await request_body(request)
            plan = parse_images(body, config, model.spec)
            job = submit(lambda job: images_job(model, plan, job), generation=True)
            data = await outcome(request, job)
            return JSONResponse({"created": int(time.time()), "data": data})
        except Exception as e:
            return error(e)

    return app


def _message(result: dict) -> dict:
    """A chat answer's ``message``: its text, and the tools it calls."""
    calls = [{"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
             for c in result["tool_calls"]]
    return {"role": "assistant", "content": result["content"], **({"tool_calls": calls} if calls else {})}


def _delta(event: tuple) -> dict | None:
    """A :class:`~showo2_cli.serve.tools.ToolStream` event as a chunk's ``delta`` (None: nothing to send)."""
    kind, *rest = event
    if kind == "content":
        return {"content": rest[0]}
    if kind == "call":
        k, call = rest
        return {"tool_calls": [{"index": k, "id": call["id"], "type": "function",
                                "function": {"name": call["name"], "arguments": ""}}]}
    if kind == "arguments" and rest[1]:
        return {"tool_calls": [{"index": rest[0], "function": {"arguments": rest[1]}}]}
    return None


def _usage(result: dict) -> dict:
    p, c = result["prompt_tokens"], result["completion_tokens"]
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


# ---- running it -------------------------------------------------------------------------------------

def log_config(log_level: str | int) -> dict:
    """uvicorn's logging config (its lines on stderr, the access log on stdout) with the server's own
    logger, ``showo2.serve`` (dropped slow clients, stopped requests, internal errors), on uvicorn's
    stderr handler and format at ``log_level``: without a handler its INFO lines were lost and its
    warnings came out bare. A :class:`UsageError` for a level uvicorn does not know."""
    from uvicorn.config import LOG_LEVELS, LOGGING_CONFIG

    if isinstance(log_level, str) and log_level.lower() in LOG_LEVELS:
        level = LOG_LEVELS[log_level.lower()]
    elif isinstance(log_level, int) and not isinstance(log_level, bool) and 0 <= log_level <= logging.CRITICAL:
        level = log_level
    else:
        raise UsageError(f"log_level must be one of {', '.join(LOG_LEVELS)} (or a logging level number), "
                         f"got {short(log_level)}")
    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"][log.name] = {"handlers": ["default"], "level": level, "propagate": False}
    return config


def serve(model, config: ServerConfig, sock, drain_timeout: float = DRAIN_TIMEOUT, log_level: str = "info",
          on_ready: Callable[[str], None] | None = None) -> None:
    """Run the server on ``sock`` until SIGTERM/SIGINT, then drain: no new connections, running and
    queued requests finish (at most ``drain_timeout`` seconds, then they are cancelled)."""
    from .connections import FileLimitNotice, more_open_files

    more_open_files()
    notice = FileLimitNotice()  # out of file descriptors: one line now and then, not a traceback per accept()
    logging.getLogger("asyncio").addFilter(notice)
    try:
        server_for(model, config, sock, drain_timeout, log_level, on_ready).run(sockets=[sock])
    finally:
        logging.getLogger("asyncio").removeFilter(notice)


def server_for(model, config: ServerConfig, sock, drain_timeout: float = DRAIN_TIMEOUT, log_level: str = "info",
               on_ready: Callable[[str], None] | None = None):
    """The uvicorn server :func:`serve` runs (``.run(sockets=[sock])``; ``should_exit`` stops it)."""
    import uvicorn

    from .connections import timed_protocol

    if isinstance(drain_timeout, bool) or not isinstance(drain_timeout, (int, float)) or not 0 <= drain_timeout <= 86400:
        raise UsageError(f"drain_timeout must be between 0 and 86400 seconds, got {short(drain_timeout)}")
    logs = log_config(log_level)  # (a wrong level was a KeyError from uvicorn)
    app = create_app(model, config)

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            if not app.state.server_state["draining"]:
                app.state.server_state["draining"] = True
                # at the drain timeout the jobs still there are stopped and answered 503 (streams get an
                # error event), a little before uvicorn itself cancels the requests
                timer = threading.Timer(drain_timeout, app.state.worker.abandon)
                timer.daemon = True
                timer.start()
            super().handle_exit(sig, frame)
            # drained: exit normally instead of re-raising the signal afterwards
            getattr(self, "_captured_signals", []).clear()

        @contextmanager
        def capture_signals(self):
            # SIGHUP (the terminal closed, an ssh session dropped, a service manager's hang-up) drains as
            # SIGTERM does: uvicorn handles SIGINT and SIGTERM only, and the command line's handler raised
            # its interruption inside the event loop (a traceback, the running requests cut off)
            hangup = getattr(signal, "SIGHUP", None)
            before = None
            if hangup is not None and threading.current_thread() is threading.main_thread() \
                    and signal.getsignal(hangup) not in (None, signal.SIG_IGN):  # nohup's stays ignored
                before = signal.signal(hangup, self.handle_exit)
            try:
                with super().capture_signals():
                    yield
            finally:
                if before is not None:
                    signal.signal(hangup, before)

        async def shutdown(self, sockets=None):
            await super().shutdown(sockets=sockets)
            if self.force_exit:  # uvicorn skips the app's shutdown, whose task then died cancelled at the
                # loop's end: a traceback in the log. Stop the jobs (at their next step: the thread must not
                # be running the model as the interpreter ends) and shut the app down instead
                app.state.worker.abandon("forced exit (a second Ctrl-C)")
                await self.lifespan.shutdown()

        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            if on_ready is not None and not self.should_exit:
                host, port = sock.getsockname()[:2]
                shown = f"[{host}]" if ":" in host else host
                on_ready(f"http://{shown}:{port}")

    cfg = uvicorn.Config(app, log_level=log_level, log_config=logs, lifespan="on", server_header=False,
                         http=timed_protocol(config.request_timeout, keep_alive=config.keep_alive_timeout),
                         timeout_keep_alive=config.keep_alive_timeout,
                         timeout_graceful_shutdown=math.ceil(drain_timeout) + 5,
                         access_log=logs["loggers"][log.name]["level"] <= logging.INFO)  # ("INFO" too)
    return Server(cfg)
